"""The fused engine on the CPU emulator, against the NumPy backend."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from fastnet import optimizers as opt
from fastnet.activations import RELU, SIGMOID, TANH
from fastnet.backend.cupy import numgrad
from fastnet.backend.cupy import plan as plan_mod
from fastnet.backend.cupy.cuda import RULES
from fastnet.backend.cupy.engine import FusedEngine
from fastnet.backend.cupy.launch import Hardware, choose_split, rows_shape
from fastnet.backend.cupy.plan_tiled import TiledPlan
from fastnet.backend.spec import MLPSpec

import cuda_checks as checks
import cuda_emulator as emulator
from cupy_helpers import REF, make_batch, make_params, needs_cxx, plan_kinds, worst


STEP_CASES = [
    ("sgd", (130, 9, 5), RELU, False, 0.0),  # K=130: the first layer splits K in two
    ("momentum", (12, 7, 6, 4), SIGMOID, True, 0.0),
    ("nesterov", (12, 7, 4), RELU, True, 0.05),
    ("adagrad", (12, 7, 4), SIGMOID, False, 0.0),
    ("rmsprop", (12, 5, 6, 3), RELU, False, 0.01),
    ("adam", (12, 7, 4), SIGMOID, True, 0.1),
    ("adamw", (12, 7, 5, 4), TANH, False, 0.02),
]


@needs_cxx
@pytest.mark.parametrize("kind,sizes,activation,onehot,lam", STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_emulated_train_steps_match_numpy(engine, emu, kind, sizes, activation, onehot, lam):
    assert {c[0] for c in STEP_CASES} == set(RULES)
    ours, ref = make_params(sizes), make_params(sizes)
    spec = MLPSpec(ours, len(sizes) - 1, activation, lam)
    ref_spec = MLPSpec(ref, len(sizes) - 1, activation, lam)
    o1, o2 = opt.OPTIMIZERS[kind](lr=0.05), opt.OPTIMIZERS[kind](lr=0.05)
    o1.backend = o2.backend = REF
    launches = emu.launches
    for step in range(3):
        x, t = make_batch(6, sizes, onehot, seed=step)
        loss = engine.train_step(spec, x, t, o1)
        ref_loss = REF.mlp_train_step(ref_spec, x, t, o2)
        assert loss.shape == () and abs(float(loss) - float(ref_loss)) < 1e-12
    assert emu.launches > launches  # the fused kernels ran (strict: no silent fallback)
    assert plan_kinds(engine) == {"RowsPlan" if engine.mode == "rows" else "TiledPlan"}
    assert worst(ours, ref) < 1e-12
    for name in o2.state_names:
        assert worst(o1.state[name], o2.state[name]) < 1e-12
    assert getattr(o1, "iter", 0) == getattr(o2, "iter", 0)


@needs_cxx
def test_emulated_split_k_is_used():
    layout = plan_mod.Layout((130, 9, 5), 6, "float64", "relu", False, 0.0, "train", "sgd")
    p = TiledPlan(checks.DryDevice(), layout, emulator.H100)
    assert "gemm_reduce" in p.names  # so the sgd case above ran the split path


@needs_cxx
def test_emulated_steps_on_ever_new_buffers_fall_back_to_copying(engine):
    """Batches at new addresses every step: bound runs first, then the copying path; same results."""
    sizes = (12, 7, 4)
    ours, ref = make_params(sizes), make_params(sizes)
    spec, ref_spec = MLPSpec(ours, 2, RELU, 0.0), MLPSpec(ref, 2, RELU, 0.0)
    o1, o2 = opt.SGD(lr=0.1), opt.SGD(lr=0.1)
    o1.backend = o2.backend = REF
    kept = []  # alive, so no address repeats
    for step in range(plan_mod.BOUND_MISSES + 4):
        x, t = make_batch(6, sizes, onehot=False, seed=step)
        kept.append((x, t))
        assert abs(float(engine.train_step(spec, x, t, o1)) - float(REF.mlp_train_step(ref_spec, x, t, o2))) < 1e-12
    (plan,) = engine.plans.values()
    assert plan.batch_misses > plan_mod.BOUND_MISSES  # gave up binding: now copies each batch
    assert worst(ours, ref) < 1e-12


@needs_cxx
@pytest.mark.parametrize("change", ["tied", "overlapping", "extra"])
def test_emulated_steps_refuse_params_the_reference_updates_one_by_one(engine, change):
    """Tied or overlapping parameters, or an extra entry: no fused step (the caller's path runs)."""
    sizes = (6, 6, 6)
    params = make_params(sizes)
    if change == "tied":
        params["W2"] = params["W1"]
    elif change == "overlapping":
        flat = np.zeros(40)
        params["b1"], params["b2"] = flat[:6], flat[3:9]
    else:
        params["scale"] = np.ones(3)
    x, t = make_batch(5, sizes, onehot=False)
    sgd = opt.SGD(lr=0.1)
    sgd.backend = REF
    spec = MLPSpec(params, 2, RELU, 0.1)
    assert engine.train_step(spec, x, t, sgd) is None
    assert engine.train_batches(spec, x, t, np.arange(5)[None, :], sgd) is None
    if change != "extra":
        assert engine.predict(spec, x) is not None  # reading them is fine


@needs_cxx
def test_emulated_gradient_of_a_large_batch(engine):
    """400 rows: kernel B splits each parameter's sum over the batch between threads."""
    sizes = (12, 7, 4)
    params = make_params(sizes)
    x, t = make_batch(400, sizes, onehot=False)
    spec = MLPSpec(params, 2, RELU, 0.01)
    grads, loss = engine.gradient(spec, x, t)
    ref, ref_loss = REF.mlp_gradient(spec, x, t)
    assert worst(grads, ref) < 1e-13 and abs(float(loss) - float(ref_loss)) < 1e-13


@needs_cxx
def test_emulated_predict_loss_gradient_float64(engine):
    sizes = (20, 8, 6, 5)
    params = make_params(sizes)
    x, t = make_batch(7, sizes, onehot=True)
    spec = MLPSpec(params, 3, SIGMOID, 0.02)
    np.testing.assert_allclose(engine.predict(spec, x), REF.mlp_predict(spec, x), rtol=0, atol=1e-13)
    assert abs(float(engine.loss(spec, x, t)) - float(REF.mlp_loss(spec, x, t))) < 1e-13
    grads, loss = engine.gradient(spec, x, t)
    ref_grads, ref_loss = REF.mlp_gradient(spec, x, t)
    assert worst(grads, ref_grads) < 1e-13 and abs(float(loss) - float(ref_loss)) < 1e-13
    engine.gradient(spec, x[::-1].copy(), t[::-1].copy())  # reuses the plan's buffers
    assert worst(grads, ref_grads) < 1e-13  # the first result is a copy, not the plan's buffer


@needs_cxx
def test_emulated_float32_within_1e5_relative(engine):
    sizes = (30, 8, 5)
    p32 = make_params(sizes, np.float32)
    p64 = {k: v.astype(np.float64) for k, v in p32.items()}
    x, t = make_batch(9, sizes, onehot=False, dtype=np.float32)
    grads, loss = engine.gradient(MLPSpec(p32, 2, RELU, 0.0), x, t)
    ref, ref_loss = REF.mlp_gradient(MLPSpec(p64, 2, RELU, 0.0), x.astype(np.float64), t)
    for k in ref:
        assert grads[k].dtype == np.float32
        assert np.max(np.abs(grads[k] - ref[k])) <= 1e-5 * np.max(np.abs(ref[k])), k
    assert abs(float(loss) - float(ref_loss)) <= 1e-5 * abs(float(ref_loss))


@needs_cxx
def test_emulated_cublas_path_matches(engine):
    """Layers above the size crossover use matmul + epilogue kernels (eager only)."""
    engine.blas_min_flops = 1.0  # every layer counts as big
    sizes = (12, 7, 6, 4)
    ours, ref = make_params(sizes), make_params(sizes)
    o1, o2 = opt.Momentum(lr=0.1), opt.Momentum(lr=0.1)
    o1.backend = o2.backend = REF
    for step in range(2):
        x, t = make_batch(5, sizes, onehot=False, seed=step)
        engine.train_step(MLPSpec(ours, 3, RELU, 0.03), x, t, o1)
        REF.mlp_train_step(MLPSpec(ref, 3, RELU, 0.03), x, t, o2)
    (p,) = engine.plans.values()
    assert not p.capturable and "matmul_fwd0" in p.names and "colsum0" in p.names
    assert worst(ours, ref) < 1e-13


@needs_cxx
def test_emulated_epoch_reads_a_different_adam_rate_every_step(engine):
    """Adam's step_scalars() change every step: the epoch uploads a row per step and still equals NumPy."""
    sizes = (12, 6, 4)
    rng = np.random.default_rng(4)
    X, T = rng.random((40, 12)), rng.integers(0, 4, 40)
    batches = np.stack([rng.choice(40, 5, replace=False) for _ in range(4)])
    ours, ref = make_params(sizes), make_params(sizes)
    o1, o2 = opt.AdamW(lr=0.05), opt.AdamW(lr=0.05)
    o1.backend = o2.backend = REF
    for epoch in range(2):
        if epoch == 1:
            o1.lr = o2.lr = 0.01  # a schedule between epochs reaches the kernels
        losses = engine.train_batches(MLPSpec(ours, 2, TANH, 0.0), X, T, batches, o1)
        ref_losses = REF.mlp_train_batches(MLPSpec(ref, 2, TANH, 0.0), X, T, batches, o2)
        np.testing.assert_allclose(losses, [float(v) for v in ref_losses], atol=1e-13)
    assert worst(ours, ref) < 1e-13 and o1.iter == o2.iter == 8
    for name in ("m", "v"):
        assert worst(o1.state[name], o2.state[name]) < 1e-13


@needs_cxx
def test_emulated_settings_and_clear_apply_from_the_next_call(emu):
    engine = FusedEngine(emu, strict=True)
    sizes = (12, 7, 4)
    params = make_params(sizes)
    x, t = make_batch(6, sizes, onehot=False)
    sgd = opt.SGD(lr=0.1)
    sgd.backend = REF
    engine.train_step(MLPSpec(params, 2, RELU, 0.0), x, t, sgd)
    assert plan_kinds(engine) == {"RowsPlan"}
    engine.rows_max_traffic = 0.0  # a setting: the next step must see it
    engine.train_step(MLPSpec(params, 2, RELU, 0.0), x, t, sgd)
    assert "TiledPlan" in plan_kinds(engine)
    engine.clear()
    assert not engine.plans
    engine.train_step(MLPSpec(params, 2, RELU, 0.0), x, t, sgd)
    assert plan_kinds(engine) == {"TiledPlan"}


def test_launch_shapes_follow_the_device_numbers():
    h100 = emulator.H100
    s32 = rows_shape((784, 50, 10), 100, 4, h100)
    assert (s32.per_block, s32.splits(0), s32.blocks) == (1, 20, 100)
    assert rows_shape((784, 50, 10), 1000, 4, h100).per_block == 4  # 250 blocks: two share an SM
    # rows_b: threads per parameter while one wave holds them all (39,760 parameters)
    assert rows_shape((784, 50, 10), 100, 4, h100).b_split == 4
    assert rows_shape((784, 50, 10), 1000, 4, h100).b_split == 4
    assert rows_shape((30, 20, 5), 1000, 4, h100).b_split == 16  # few parameters: about 16 rows each
    assert rows_shape((30, 20, 5), 8, 4, h100).b_split == 1
    # a device with half the SMs: two rows a block at B=100, and a smaller wave for rows_b
    half = Hardware(sms=66, threads_per_sm=2048)
    assert rows_shape((784, 50, 10), 100, 4, half).per_block == 2
    assert rows_shape((784, 50, 10), 100, 4, half).b_split == 2
    assert choose_split(16, 16, 65536, h100) == 256 and choose_split(16, 16, 65536, half) == 128


@needs_cxx
def test_emulated_epoch_gathers_on_the_device(engine):
    sizes = (12, 6, 4)
    rng = np.random.default_rng(3)
    X = rng.random((40, 12))
    T = rng.integers(0, 4, 40).astype(np.int32)  # converted once, not per epoch
    batches = [rng.choice(40, 5, replace=False) for _ in range(4)]
    batches[1][0] = -1  # NumPy's negative index counts from the end; so does the gather kernel
    ours, ref = make_params(sizes), make_params(sizes)
    o1, o2 = opt.Adam(lr=0.01), opt.Adam(lr=0.01)
    o1.backend = o2.backend = REF
    for epoch in range(2):
        given = batches if epoch == 0 else np.stack(batches)  # a list, then a (steps, rows) array
        losses = engine.train_batches(MLPSpec(ours, 2, RELU, 0.0), X, T, given, o1)
        ref_losses = REF.mlp_train_batches(MLPSpec(ref, 2, RELU, 0.0), X, T, batches, o2)
        assert losses.shape == (4,)  # one device array, not a list of scalars
        np.testing.assert_allclose(losses, [float(v) for v in ref_losses], atol=1e-13)
    assert len(engine.plans) == 1  # the second epoch reused the first one's plan
    assert worst(ours, ref) < 1e-13 and o1.iter == o2.iter == 8


@needs_cxx
def test_emulated_losses_survive_ring_rollover(engine, monkeypatch):
    """Each returned loss is a 0-d view of its own slot; a full ring starts a new one."""
    monkeypatch.setattr(plan_mod, "RING_SIZE", 3)
    sizes = (12, 6, 4)
    ours, ref = make_params(sizes), make_params(sizes)
    o1, o2 = opt.SGD(lr=0.5), opt.SGD(lr=0.5)
    got, want = [], []
    for step in range(7):
        x, t = make_batch(5, sizes, onehot=False, seed=step)
        got.append(engine.train_step(MLPSpec(ours, 2, RELU, 0.0), x, t, o1))
        want.append(float(REF.mlp_train_step(MLPSpec(ref, 2, RELU, 0.0), x, t, o2)))
    assert all(isinstance(v, np.ndarray) and v.shape == () for v in got)
    np.testing.assert_allclose([float(v) for v in got], want, atol=1e-13)
    assert len(set(want)) == 7  # distinct values, so an overwritten slot would show


@needs_cxx
def test_emulated_hyperparameter_changes_reach_the_kernels(engine):
    sizes = (12, 6, 4)
    ours, ref = make_params(sizes), make_params(sizes)
    o1, o2 = opt.Adam(lr=0.01), opt.Adam(lr=0.01)
    o1.backend = o2.backend = REF
    for step in range(6):
        if step == 2:
            o1.lr = o2.lr = 0.003  # a schedule: re-uploaded, no rebuild
        if step == 4:
            o1.iter = o2.iter = 0  # a reset step count: the device count follows
        x, t = make_batch(5, sizes, onehot=False, seed=step)
        engine.train_step(MLPSpec(ours, 2, RELU, 0.0), x, t, o1)
        REF.mlp_train_step(MLPSpec(ref, 2, RELU, 0.0), x, t, o2)
    assert len(engine.plans) == 1
    assert worst(ours, ref) < 1e-13


@needs_cxx
def test_emulated_step_follows_rebound_parameters_and_optimizer_state(engine):
    sizes = (12, 6, 4)
    ours, ref = make_params(sizes), make_params(sizes)
    x, t = make_batch(5, sizes, onehot=False)
    o1, o2 = opt.Momentum(lr=0.1), opt.Momentum(lr=0.1)
    o1.backend = o2.backend = REF
    for change in (None, "param", None, "state", None, "clear", None):
        if change == "param":  # a new array: the old plan's pointers are stale
            ours["W1"] = ours["W1"] * 0.5
            ref["W1"] = ref["W1"] * 0.5
        elif change == "state":  # a new velocity array: a binding of its own
            for o in (o1, o2):
                o.state["v"]["W1"] = o.state["v"]["W1"] * 0.0
        elif change == "clear":  # velocities forgotten: both start again from zeros
            for o in (o1, o2):
                o.state["v"].clear()
        engine.train_step(MLPSpec(ours, 2, RELU, 0.0), x, t, o1)
        REF.mlp_train_step(MLPSpec(ref, 2, RELU, 0.0), x, t, o2)
        assert worst(ours, ref) < 1e-13 and worst(o1.state["v"], o2.state["v"]) < 1e-13
    (plan,) = engine.plans.values()
    assert len(plan.bindings) == 4  # one per set of bound arrays


@needs_cxx
def test_emulated_failed_capture_warns_once_and_stays_eager(tmp_path):
    dev = emulator.EmuDevice(str(tmp_path))
    dev.can_capture = True  # the emulator's capture raises, as a driver refusing capture would
    engine = FusedEngine(dev, strict=True)
    sizes = (12, 6, 4)
    ours, ref = make_params(sizes), make_params(sizes)
    x, t = make_batch(5, sizes, onehot=False)
    o1, o2 = opt.SGD(lr=0.1), opt.SGD(lr=0.1)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed") as caught:
        for _ in range(4):
            engine.train_step(MLPSpec(ours, 2, RELU, 0.0), x, t, o1)
            REF.mlp_train_step(MLPSpec(ref, 2, RELU, 0.0), x, t, o2)
    assert len([w for w in caught if "capture failed" in str(w.message)]) == 1
    (plan,) = engine.plans.values()
    assert plan.capture_failed and all(b.graph is None for b in plan.bindings.values())
    assert worst(ours, ref) < 1e-13


@needs_cxx
def test_emulated_gradient_reuses_its_plan_until_a_parameter_is_rebound(engine):
    sizes = (12, 6, 4)
    params = make_params(sizes)
    x, t = make_batch(5, sizes, onehot=False)
    for _ in range(2):  # the second call reuses the binding
        grads, _ = engine.gradient(MLPSpec(params, 2, RELU, 0.0), x, t)
        want, _ = REF.mlp_gradient(MLPSpec(params, 2, RELU, 0.0), x, t)
        assert worst(grads, want) < 1e-13
    (plan,) = engine.plans.values()
    assert len(plan.bindings) == 1
    params["W2"] = params["W2"] * 0.5  # a new array: a binding of its own, not the old one
    grads, _ = engine.gradient(MLPSpec(params, 2, RELU, 0.0), x, t)
    want, _ = REF.mlp_gradient(MLPSpec(params, 2, RELU, 0.0), x, t)
    assert len(plan.bindings) == 2 and worst(grads, want) < 1e-13
    params["W2"][...] = 0.0  # in place: the plan reads the array where it is
    grads, _ = engine.gradient(MLPSpec(params, 2, RELU, 0.0), x, t)
    want, _ = REF.mlp_gradient(MLPSpec(params, 2, RELU, 0.0), x, t)
    assert len(plan.bindings) == 2 and worst(grads, want) < 1e-13


@needs_cxx
@pytest.mark.parametrize(
    "sizes,activation,onehot,lam",
    [((9, 4), RELU, False, 0.0), ((15, 6, 4), RELU, False, 0.0), ((9, 6, 5, 3), SIGMOID, True, 0.1)],
    ids=["depth1", "depth2-relu", "depth3-sigmoid-decay"],
)
def test_emulated_numerical_gradient_within_1e9(engine, sizes, activation, onehot, lam):
    params = make_params(sizes)
    x, t = make_batch(6, sizes, onehot)
    spec = MLPSpec(params, len(sizes) - 1, activation, lam)
    before = copy.deepcopy(params)
    ours = engine.numerical_gradient(spec, x, t, 1e-4)
    ref = REF.mlp_numerical_gradient(spec, x, t)  # the book's loop
    assert worst(ours, ref) < 1e-9
    assert worst(params, before) == 0.0  # nothing perturbed in place
    backprop, _ = REF.mlp_gradient(spec, x, t)
    assert worst(ours, backprop) > 1e-12  # a difference quotient, not backprop in disguise


def test_batched_numerical_gradient_every_layer_matches_the_loop():
    """The array version (used for the layers before the last two) on its own, NumPy only."""
    sizes = (7, 5, 4, 3)
    params = make_params(sizes)
    x, t = make_batch(5, sizes, onehot=False)
    for activation, lam in ((RELU, 0.0), (SIGMOID, 0.2)):
        spec = MLPSpec(params, 3, activation, lam)
        ref = REF.mlp_numerical_gradient(spec, x, t)
        pb = numgrad.Problem(np, [params[k] for k in spec.names()], x, t, activation.kernel, lam)
        for i in range(3):
            flat = numgrad.layer_gradient(pb, i, 1e-4, chunk_bytes=2000)  # several chunks
            want = np.concatenate([ref[f"W{i + 1}"].ravel(), ref[f"b{i + 1}"]])
            assert np.max(np.abs(flat - want)) < 1e-9, (activation, i)


@needs_cxx
def test_unsupported_cases_fall_back(engine):
    sizes = (12, 6, 4)
    params = make_params(sizes, np.float16)
    x, t = make_batch(5, sizes, onehot=False, dtype=np.float16)
    assert engine.gradient(MLPSpec(params, 2, RELU, 0.0), x, t) is None  # float16

    class Custom(opt.SGD):
        kind = "custom"

    p64 = make_params(sizes)
    x, t = make_batch(5, sizes, onehot=False)
    assert engine.train_step(MLPSpec(p64, 2, RELU, 0.0), x, t, Custom(lr=0.1)) is None
    ragged = [np.arange(5), np.arange(3)]
    assert engine.train_batches(MLPSpec(p64, 2, RELU, 0.0), x, t, ragged, opt.SGD()) is None


def test_a_product_past_the_devices_grid_takes_no_plan(emu):
    """A tiled product needing more row blocks than MaxGridDimY (here 2, so 32 rows) is not planned:
    the batch (forward) and a layer's fan-in + 1 (its weight gradient) both count."""
    sizes = (12, 6, 4)
    params = make_params(sizes)
    spec = MLPSpec(params, 2, RELU, 0.0)
    engine = FusedEngine(emu, hardware=Hardware(132, 2048, grid_y=2), rows_max_traffic=0.0)
    for rows, planned in ((32, True), (33, False)):
        x, t = make_batch(rows, sizes, onehot=False)
        assert (engine._layout(spec, x, t, "train", "sgd") is not None) == planned, rows
    wide = make_params((31, 6, 4))
    x, t = make_batch(5, (31, 6, 4), onehot=False)
    assert engine._layout(MLPSpec(wide, 2, RELU, 0.0), x, t, "train", "sgd") is not None  # 32 rows
    wide = make_params((32, 6, 4))
    x, t = make_batch(5, (32, 6, 4), onehot=False)
    assert engine._layout(MLPSpec(wide, 2, RELU, 0.0), x, t, "train", "sgd") is None  # 33 rows


@needs_cxx
def test_failure_warns_falls_back_and_leaves_the_step_count(emu, monkeypatch):
    engine = FusedEngine(emu)  # not strict
    sizes = (12, 6, 4)
    params = make_params(sizes)
    x, t = make_batch(5, sizes, onehot=False)
    optimizer = opt.Adam(lr=0.01)

    def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("launch failed")

    monkeypatch.setattr(plan_mod.Binding, "launch", broken)
    with pytest.warns(RuntimeWarning, match="fused CUDA training step failed"):
        assert engine.train_step(MLPSpec(params, 2, RELU, 0.0), x, t, optimizer) is None
    assert optimizer.iter == 0 and not engine.plans  # the caller's fallback will count the step
    engine.strict = True
    with pytest.raises(RuntimeError, match="launch failed"):
        engine.train_step(MLPSpec(params, 2, RELU, 0.0), x, t, optimizer)

