"""The CuPy backend: selection errors, the fused kernels, and the GPU checks.

Three kinds of test, each saying why when it skips:

* selection: ``available_backends()`` / ``set_backend("cupy")`` reasons, with
  a fake ``cupy`` module put in ``sys.modules`` (run everywhere);
* the generated CUDA C: compiled by nvcc and by NVRTC when they are here, and
  *run* on the CPU emulator (one OS thread per CUDA thread, needs g++)
  against the NumPy backend: steps, optimizers, epochs, numerical gradient;
* on a GPU (skipped without one): float64 within 1e-10 of NumPy, float32
  within 1e-5 relative, the numerical gradient within 1e-9 of NumPy's, a
  captured-graph step equal to the eager one, and one MNIST epoch within
  0.5% accuracy of NumPy's (with FASTNET_DATA).
"""

from __future__ import annotations

import copy
import sys
import types
from typing import Any

import numpy as np
import pytest

import fastnet
from fastnet import optimizers as opt
from fastnet.backend import cupy_backend, registry
from fastnet.backend.cupy_kernels import checks, emulator, numgrad
from fastnet.backend.cupy_kernels import plan as plan_mod
from fastnet.backend.cupy_kernels.engine import FusedEngine
from fastnet.backend.cupy_kernels.source import OPTIMIZER_KINDS
from fastnet.backend.numpy_backend import NumpyBackend
from fastnet.backend.spec import MLPSpec


# ====================================================================== selection
def fake_cupy(driver: int = 13000, runtime: int = 13000, devices: int = 1, nvrtc: bool = True) -> types.ModuleType:
    """A stand-in ``cupy`` with just what ``unavailable_reason`` asks."""
    cupy = types.ModuleType("cupy")
    rt = types.SimpleNamespace(
        driverGetVersion=lambda: driver,
        runtimeGetVersion=lambda: runtime,
        getDeviceCount=lambda: devices,
    )

    def nvrtc_version() -> tuple[int, int]:
        if not nvrtc:
            raise OSError("libnvrtc.so.13: cannot open shared object file")
        return (13, 0)

    cupy.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        runtime=rt, is_available=lambda: devices > 0, nvrtc=types.SimpleNamespace(getVersion=nvrtc_version)
    )
    cupy.ndarray = type("ndarray", (), {})  # type: ignore[attr-defined]
    return cupy


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing a test selects here leaks into the process-wide registry."""
    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.setattr(registry, "_default", registry._default)


def _reason(monkeypatch: pytest.MonkeyPatch, module: Any) -> str:
    monkeypatch.setitem(sys.modules, "cupy", module)
    return fastnet.available_backends()["cupy"].reason


def test_no_cupy_names_both_extras(monkeypatch, isolated_registry):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    status = fastnet.available_backends()["cupy"]
    assert not status.available
    assert "fastnet[cuda12]" in status.reason and "fastnet[cuda13]" in status.reason
    with pytest.raises(fastnet.BackendUnavailableError, match=r"cuda12.*cuda13"):
        fastnet.set_backend("cupy")


def test_no_driver(monkeypatch, isolated_registry):
    reason = _reason(monkeypatch, fake_cupy(driver=0))
    assert "no NVIDIA driver" in reason
    with pytest.raises(fastnet.BackendUnavailableError, match="no NVIDIA driver"):
        fastnet.set_backend("cupy")


def test_driver_too_old_for_the_cupy_build(monkeypatch, isolated_registry):
    reason = _reason(monkeypatch, fake_cupy(driver=12040, runtime=13000))
    assert "driver supports CUDA 12.4" in reason and "needs CUDA 13.0" in reason
    assert "fastnet[cuda12]" in reason  # the build that this driver can run


def test_newer_minor_runtime_is_accepted(monkeypatch, isolated_registry):
    # CUDA's minor-version compatibility: a 13.2 build runs on a 13.0 driver
    assert _reason(monkeypatch, fake_cupy(driver=13000, runtime=13020)) == ""


def test_cupy_without_a_device(monkeypatch, isolated_registry):
    reason = _reason(monkeypatch, fake_cupy(devices=0))
    assert "sees no CUDA device" in reason and "CUDA_VISIBLE_DEVICES" in reason
    with pytest.raises(fastnet.BackendUnavailableError, match="no CUDA device"):
        fastnet.set_backend("cupy")


def test_nvrtc_missing(monkeypatch, isolated_registry):
    reason = _reason(monkeypatch, fake_cupy(nvrtc=False))
    assert "NVRTC" in reason and "libnvrtc" in reason


def test_working_fake_is_available_and_auto_prefers_it(monkeypatch, isolated_registry):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    assert fastnet.available_backends()["cupy"].available
    assert registry.resolve("auto") == "cupy"


def test_broken_import_is_reported(monkeypatch, isolated_registry):
    class Broken(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("CUDA_ERROR_NO_DEVICE in cupy.cuda")

    reason = _reason(monkeypatch, Broken("cupy"))
    assert "CUDA is not usable" in reason and "CUDA_ERROR_NO_DEVICE" in reason


# ====================================================================== CUDA source
def test_sources_compile_with_nvcc():
    """Every kernel kind, epilogue, dtype, activation and optimizer, under -Werror."""
    if checks.nvcc() is None:
        pytest.skip("nvcc not found: cannot compile the generated CUDA here")
    for label, text in checks.variants():
        try:
            checks.compile_nvcc(text)
        except RuntimeError as exc:
            pytest.fail(f"{label}: {exc}")


def test_sources_compile_with_nvrtc():
    """NVRTC is what CuPy compiles with at run time; it needs no GPU, only the library."""
    try:
        import cupy  # noqa: F401
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:
        pytest.skip(f"CuPy with NVRTC not importable here ({type(exc).__name__}: {exc})")
    for label, text in checks.variants():
        try:
            checks.compile_nvrtc(text)
        except Exception as exc:
            pytest.fail(f"{label}: {exc}")


# ====================================================================== CPU emulator
needs_cxx = pytest.mark.skipif(emulator.compiler() is None, reason="no C++ compiler (g++) for the CUDA emulator")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> emulator.EmuDevice:
    return emulator.EmuDevice(str(tmp_path_factory.mktemp("emu")))


@pytest.fixture(params=["rows", "tiled"])
def engine(request: pytest.FixtureRequest, emu: emulator.EmuDevice) -> FusedEngine:
    """Both fused layouts: the two-kernel step (small nets) and the tiled kernels."""
    # strict: a failure raises instead of falling back
    eng = FusedEngine(emu, strict=True, rows_max_traffic=2.0**26 if request.param == "rows" else 0.0)
    eng.mode = request.param
    return eng


def plan_kinds(engine: FusedEngine) -> set[str]:
    return {type(p).__name__ for p in engine.plans.values()}


REF = NumpyBackend()


def make_params(sizes: tuple[int, ...], dtype: Any = np.float64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
        params[f"W{i}"] = (0.3 * rng.standard_normal((a, b))).astype(dtype)
        params[f"b{i}"] = (0.1 * rng.standard_normal(b)).astype(dtype)
    return params


def make_batch(rows: int, sizes: tuple[int, ...], onehot: bool, dtype: Any = np.float64, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.random((rows, sizes[0])).astype(dtype)
    x[:, ::3] = 0  # zero inputs, like MNIST's background pixels
    labels = rng.integers(0, sizes[-1], rows)
    return x, (np.eye(sizes[-1], dtype=dtype)[labels] if onehot else labels)


def worst(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in b)


# one case per optimizer, the other features rotated over them so each is covered
STEP_CASES = [
    ("sgd", (130, 9, 5), "relu", False, 0.0),  # K=130: the first layer splits K in two
    ("momentum", (12, 7, 6, 4), "sigmoid", True, 0.0),
    ("nesterov", (12, 7, 4), "relu", True, 0.05),
    ("adagrad", (12, 7, 4), "sigmoid", False, 0.0),
    ("rmsprop", (12, 5, 6, 3), "relu", False, 0.01),
    ("adam", (12, 7, 4), "sigmoid", True, 0.1),
]


@needs_cxx
@pytest.mark.parametrize("kind,sizes,activation,onehot,lam", STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_emulated_train_steps_match_numpy(engine, emu, kind, sizes, activation, onehot, lam):
    assert {c[0] for c in STEP_CASES} == set(OPTIMIZER_KINDS)
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
    assert plan_kinds(engine) == {"RowsPlan" if engine.mode == "rows" else "Plan"}
    assert worst(ours, ref) < 1e-12
    for name in o2.state_names:
        assert worst(o1.state[name], o2.state[name]) < 1e-12
    assert getattr(o1, "iter", 0) == getattr(o2, "iter", 0)


@needs_cxx
def test_emulated_split_k_is_used():
    layout = plan_mod.Layout((130, 9, 5), 6, "float64", "relu", False, 0.0, "train", "sgd")
    dev = checks.DryDevice()
    params = list(make_params((130, 9, 5)).values())
    p = plan_mod.Plan(dev, layout, params, [], None)
    assert "fwd0_reduce" in p.names  # so the sgd case above ran the split path


@needs_cxx
def test_emulated_steps_on_ever_new_buffers_fall_back_to_copying(engine):
    """Batches at new addresses every step: bound runs first, then the copying path; same results."""
    sizes = (12, 7, 4)
    ours, ref = make_params(sizes), make_params(sizes)
    spec, ref_spec = MLPSpec(ours, 2, "relu", 0.0), MLPSpec(ref, 2, "relu", 0.0)
    o1, o2 = opt.SGD(lr=0.1), opt.SGD(lr=0.1)
    o1.backend = o2.backend = REF
    kept = []  # alive, so no address repeats
    for step in range(plan_mod.BOUND_MISSES + 4):
        x, t = make_batch(6, sizes, onehot=False, seed=step)
        kept.append((x, t))
        assert abs(float(engine.train_step(spec, x, t, o1)) - float(REF.mlp_train_step(ref_spec, x, t, o2))) < 1e-12
    (plan,) = engine.plans.values()
    assert plan.bound_misses > plan_mod.BOUND_MISSES  # gave up binding: now copies each batch
    assert worst(ours, ref) < 1e-12


@needs_cxx
def test_emulated_gradient_of_a_large_batch(engine):
    """400 rows: kernel B splits each parameter's sum over the batch between threads."""
    sizes = (12, 7, 4)
    params = make_params(sizes)
    x, t = make_batch(400, sizes, onehot=False)
    spec = MLPSpec(params, 2, "relu", 0.01)
    grads, loss = engine.gradient(spec, x, t)
    ref, ref_loss = REF.mlp_gradient(spec, x, t)
    assert worst(grads, ref) < 1e-13 and abs(float(loss) - float(ref_loss)) < 1e-13


@needs_cxx
def test_emulated_predict_loss_gradient_float64(engine):
    sizes = (20, 8, 6, 5)
    params = make_params(sizes)
    x, t = make_batch(7, sizes, onehot=True)
    spec = MLPSpec(params, 3, "sigmoid", 0.02)
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
    grads, loss = engine.gradient(MLPSpec(p32, 2, "relu", 0.0), x, t)
    ref, ref_loss = REF.mlp_gradient(MLPSpec(p64, 2, "relu", 0.0), x.astype(np.float64), t)
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
        engine.train_step(MLPSpec(ours, 3, "relu", 0.03), x, t, o1)
        REF.mlp_train_step(MLPSpec(ref, 3, "relu", 0.03), x, t, o2)
    (p,) = engine.plans.values()
    assert not p.capturable and "matmul_fwd0" in p.names and "colsum0" in p.names
    assert worst(ours, ref) < 1e-13


class DecayingSGD(opt.SGD):
    """A rate that changes every step (in the per-step hook): an epoch cannot bake one rate in."""

    def _begin_step(self) -> None:
        self.lr *= 0.8


def sgd_with_hook_on_instance(lr: float) -> opt.SGD:
    o = opt.SGD(lr=lr)

    def hook() -> None:
        o.lr *= 0.8

    o._begin_step = hook  # type: ignore[method-assign]
    return o


@needs_cxx
@pytest.mark.parametrize("make", [DecayingSGD, sgd_with_hook_on_instance], ids=["subclass", "instance-hook"])
def test_emulated_epoch_with_a_rate_changing_every_step(engine, make):
    sizes = (12, 6, 4)
    rng = np.random.default_rng(4)
    X, T = rng.random((40, 12)), rng.integers(0, 4, 40)
    batches = np.stack([rng.choice(40, 5, replace=False) for _ in range(4)])
    ours, ref = make_params(sizes), make_params(sizes)
    o1, o2 = make(lr=0.5), make(lr=0.5)
    o1.backend = o2.backend = REF
    for _ in range(2):
        losses = engine.train_batches(MLPSpec(ours, 2, "relu", 0.0), X, T, batches, o1)
        ref_losses = REF.mlp_train_batches(MLPSpec(ref, 2, "relu", 0.0), X, T, batches, o2)
        np.testing.assert_allclose(losses, [float(v) for v in ref_losses], atol=1e-13)
    assert worst(ours, ref) < 1e-13 and o1.lr == o2.lr
    assert o1.lr == pytest.approx(0.5 * 0.8**8, rel=1e-12)  # the hook ran once per step: 2 epochs of 4


@needs_cxx
def test_emulated_settings_and_clear_reach_the_memoised_step(emu):
    engine = FusedEngine(emu, strict=True)
    sizes = (12, 7, 4)
    params = make_params(sizes)
    x, t = make_batch(6, sizes, onehot=False)
    sgd = opt.SGD(lr=0.1)
    sgd.backend = REF
    engine.train_step(MLPSpec(params, 2, "relu", 0.0), x, t, sgd)
    assert plan_kinds(engine) == {"RowsPlan"}
    engine.rows_max_traffic = 0.0  # a setting: the next step must see it
    engine.train_step(MLPSpec(params, 2, "relu", 0.0), x, t, sgd)
    assert "Plan" in plan_kinds(engine)
    engine.clear()
    assert not engine.plans
    engine.train_step(MLPSpec(params, 2, "relu", 0.0), x, t, sgd)
    assert plan_kinds(engine) == {"Plan"}  # rebuilt, not a memo of a dropped plan


def test_engine_settings_are_checked():
    engine = FusedEngine(checks.DryDevice())
    with pytest.raises(ValueError, match="rows_threads must be a power of two"):
        engine.rows_threads = 96
    with pytest.raises(ValueError, match="rows_per_block must be 1, 2, 4, 8"):
        engine.rows_per_block = 3
    with pytest.raises(ValueError, match="rows_split must be 0"):
        engine.rows_split = 3
    with pytest.raises(ValueError, match="rows_prefetch must be True or False"):
        engine.rows_prefetch = 1
    engine.rows_threads, engine.rows_per_block, engine.rows_split, engine.rows_compact = 256, None, 4, False


def test_row_kernel_loads_weights_early_where_registers_allow():
    from fastnet.backend.cupy_kernels.source_rows import rows_shape

    s32 = rows_shape((784, 50, 10), 100, 4, threads=1024)
    assert (s32.splits(0), s32.first_in_registers()) == (20, 31)  # 31 of its 40 weights
    assert s32.staged_weights() == 50 + 500 + 10  # b1, W2, b2
    assert rows_shape((784, 50, 10), 100, 8, threads=1024).first_in_registers() == 13
    assert rows_shape((784, 50, 10), 100, 4, threads=512).first_in_registers() == 79  # its whole slice
    off = rows_shape((784, 50, 10), 100, 4, threads=1024, prefetch=False)
    assert off.first_in_registers() == 0 and off.staged_weights() == 0
    assert rows_shape((784, 50, 10), 100, 4, threads=128).first_in_registers() == 0  # 7 passes over W1
    big = rows_shape((784, 50, 10), 1000, 4, threads=1024)  # 250 blocks: two share an SM
    assert big.per_block == 4 and big.first_in_registers() == 0 and big.staged_weights() == 0
    # kernel B: threads per parameter while one wave holds them all (39,760 parameters)
    assert rows_shape((784, 50, 10), 100, 4).b_split == 4
    assert rows_shape((784, 50, 10), 1000, 4).b_split == 4
    assert rows_shape((30, 20, 5), 1000, 4).b_split == 16  # few parameters: about 16 rows each
    assert rows_shape((30, 20, 5), 8, 4).b_split == 1
    assert rows_shape((784, 50, 10), 100, 4, split=8).b_split == 8


@needs_cxx
def test_emulated_row_kernel_variants_agree(emu):
    """Early weight loads and the compact batch copy change no bit; other splits stay within 1e-13."""
    sizes = (300, 100, 4)  # 1024 threads: W1 split 10 ways, 30 weights a thread, 13 in registers (float64)
    rng = np.random.default_rng(5)
    X, T = rng.random((30, 300)), rng.integers(0, 4, 30)
    batches = np.stack([rng.choice(30, 8, replace=False) for _ in range(3)])
    ref = make_params(sizes)
    o_ref = opt.Momentum(lr=0.05)
    o_ref.backend = REF
    REF.mlp_train_batches(MLPSpec(ref, 2, "relu", 0.0), X, T, list(batches), o_ref)
    results = {}
    for prefetch, compact, split in ((True, True, 0), (False, True, 0), (True, False, 0), (True, True, 2)):
        engine = FusedEngine(emu, strict=True)
        engine.rows_prefetch, engine.rows_compact, engine.rows_split = prefetch, compact, split
        ours = make_params(sizes)
        o = opt.Momentum(lr=0.05)
        o.backend = REF
        engine.train_batches(MLPSpec(ours, 2, "relu", 0.0), X, T, batches, o)
        (plan,) = engine.plans.values()
        assert type(plan).__name__ == "RowsPlan"
        if prefetch:
            assert 0 < plan.shape.first_in_registers() < 30 and plan.shape.staged_weights() > 0
        assert worst(ours, ref) < 1e-13
        results[(prefetch, compact, split)] = ours
    base = results[(True, True, 0)]
    for key in ((False, True, 0), (True, False, 0)):
        assert all(np.array_equal(results[key][k], base[k]) for k in base), key


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
        losses = engine.train_batches(MLPSpec(ours, 2, "relu", 0.0), X, T, given, o1)
        ref_losses = REF.mlp_train_batches(MLPSpec(ref, 2, "relu", 0.0), X, T, batches, o2)
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
        got.append(engine.train_step(MLPSpec(ours, 2, "relu", 0.0), x, t, o1))
        want.append(float(REF.mlp_train_step(MLPSpec(ref, 2, "relu", 0.0), x, t, o2)))
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
        engine.train_step(MLPSpec(ours, 2, "relu", 0.0), x, t, o1)
        REF.mlp_train_step(MLPSpec(ref, 2, "relu", 0.0), x, t, o2)
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
        elif change == "state":  # a new velocity array: the memo must not take the old plan
            for o in (o1, o2):
                o.state["v"]["W1"] = o.state["v"]["W1"] * 0.0
        elif change == "clear":  # velocities forgotten: both start again from zeros
            for o in (o1, o2):
                o.state["v"].clear()
        engine.train_step(MLPSpec(ours, 2, "relu", 0.0), x, t, o1)
        REF.mlp_train_step(MLPSpec(ref, 2, "relu", 0.0), x, t, o2)
        assert worst(ours, ref) < 1e-13 and worst(o1.state["v"], o2.state["v"]) < 1e-13
    assert len(engine.plans) == 4  # one per set of bound arrays


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
            engine.train_step(MLPSpec(ours, 2, "relu", 0.0), x, t, o1)
            REF.mlp_train_step(MLPSpec(ref, 2, "relu", 0.0), x, t, o2)
    assert len([w for w in caught if "capture failed" in str(w.message)]) == 1
    (plan,) = engine.plans.values()
    assert plan.capture_failed and not any(plan.bound.values())
    assert worst(ours, ref) < 1e-13


@needs_cxx
def test_emulated_gradient_reuses_its_plan_until_a_parameter_is_rebound(engine):
    sizes = (12, 6, 4)
    params = make_params(sizes)
    x, t = make_batch(5, sizes, onehot=False)
    for _ in range(2):  # the second call takes the memo
        grads, _ = engine.gradient(MLPSpec(params, 2, "relu", 0.0), x, t)
        want, _ = REF.mlp_gradient(MLPSpec(params, 2, "relu", 0.0), x, t)
        assert worst(grads, want) < 1e-13
    assert len(engine.plans) == 1
    params["W2"] = params["W2"] * 0.5  # a new array: the memo must not take the old plan
    grads, _ = engine.gradient(MLPSpec(params, 2, "relu", 0.0), x, t)
    want, _ = REF.mlp_gradient(MLPSpec(params, 2, "relu", 0.0), x, t)
    assert len(engine.plans) == 2 and worst(grads, want) < 1e-13
    params["W2"][...] = 0.0  # in place: the plan reads the array where it is
    grads, _ = engine.gradient(MLPSpec(params, 2, "relu", 0.0), x, t)
    want, _ = REF.mlp_gradient(MLPSpec(params, 2, "relu", 0.0), x, t)
    assert len(engine.plans) == 2 and worst(grads, want) < 1e-13


@needs_cxx
@pytest.mark.parametrize(
    "sizes,activation,onehot,lam",
    [((9, 4), "relu", False, 0.0), ((15, 6, 4), "relu", False, 0.0), ((9, 6, 5, 3), "sigmoid", True, 0.1)],
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
    for activation, lam in (("relu", 0.0), ("sigmoid", 0.2)):
        spec = MLPSpec(params, 3, activation, lam)
        ref = REF.mlp_numerical_gradient(spec, x, t)
        pb = numgrad.Problem(np, [params[k] for k in spec.names()], x, t, activation, lam)
        for i in range(3):
            flat = numgrad.layer_gradient(pb, i, 1e-4, chunk_bytes=2000)  # several chunks
            want = np.concatenate([ref[f"W{i + 1}"].ravel(), ref[f"b{i + 1}"]])
            assert np.max(np.abs(flat - want)) < 1e-9, (activation, i)


@needs_cxx
def test_unsupported_cases_fall_back(engine):
    sizes = (12, 6, 4)
    params = make_params(sizes, np.float16)
    x, t = make_batch(5, sizes, onehot=False, dtype=np.float16)
    assert engine.gradient(MLPSpec(params, 2, "relu", 0.0), x, t) is None  # float16

    class Custom(opt.SGD):
        kind = "custom"

    p64 = make_params(sizes)
    x, t = make_batch(5, sizes, onehot=False)
    assert engine.train_step(MLPSpec(p64, 2, "relu", 0.0), x, t, Custom(lr=0.1)) is None
    ragged = [np.arange(5), np.arange(3)]
    assert engine.train_batches(MLPSpec(p64, 2, "relu", 0.0), x, t, ragged, opt.SGD()) is None


@needs_cxx
def test_failure_warns_falls_back_and_leaves_the_step_count(emu, monkeypatch):
    engine = FusedEngine(emu)  # not strict
    sizes = (12, 6, 4)
    params = make_params(sizes)
    x, t = make_batch(5, sizes, onehot=False)
    optimizer = opt.Adam(lr=0.01)

    def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("launch failed")

    monkeypatch.setattr(plan_mod.Plan, "run", broken)
    with pytest.warns(RuntimeWarning, match="fused CUDA training step failed"):
        assert engine.train_step(MLPSpec(params, 2, "relu", 0.0), x, t, optimizer) is None
    assert optimizer.iter == 0 and not engine.plans  # the caller's fallback will count the step
    engine.strict = True
    with pytest.raises(RuntimeError, match="launch failed"):
        engine.train_step(MLPSpec(params, 2, "relu", 0.0), x, t, optimizer)


# ====================================================================== the backend class
class EmulatedCupyBackend(cupy_backend.CupyBackend):
    """CupyBackend's own methods over NumPy arrays and the emulated kernels."""

    name = "cupy-emulated"

    def __init__(self, device: emulator.EmuDevice) -> None:  # no CuPy import
        self.xp = np
        self.fused, self.use_graphs, self.strict = True, False, True
        self._engine = FusedEngine(device, strict=True)
        self._updates = emulator.EmuUpdateKernels(device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def synchronize(self) -> None:
        pass


@pytest.fixture
def emu_backend(emu: emulator.EmuDevice) -> EmulatedCupyBackend:
    return EmulatedCupyBackend(emu)


@needs_cxx
def test_backend_nets_run_the_fused_path(emu_backend, emu):
    """TwoLayerNet's public methods reach the fused kernels through CupyBackend."""
    ours = fastnet.TwoLayerNet(20, 8, 4, weight_init_std=0.3, seed=0, dtype=np.float64, backend=emu_backend)
    ref = fastnet.TwoLayerNet(20, 8, 4, weight_init_std=0.3, seed=0, dtype=np.float64, backend="numpy")
    x, t = make_batch(6, (20, 8, 4), onehot=False)
    launches = emu.launches
    np.testing.assert_allclose(ours.predict(x), ref.predict(x), atol=1e-13)
    assert abs(float(ours.loss(x, t)) - float(ref.loss(x, t))) < 1e-13
    assert ours.accuracy(x, t) == ref.accuracy(x, t)
    assert worst(ours.gradient(x, t), ref.gradient(x, t)) < 1e-13
    assert worst(ours.numerical_gradient(x, t), ref.numerical_gradient(x, t)) < 1e-9
    o1, o2 = opt.Momentum(lr=0.1), opt.Momentum(lr=0.1)
    for _ in range(2):
        ours.train_step(x, t, o1)
        ref.train_step(x, t, o2)
    assert emu.launches > launches
    assert worst(ours.params, ref.params) < 1e-13


@needs_cxx
@pytest.mark.parametrize("kind", OPTIMIZER_KINDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backend_single_launch_updates_match_numpy(emu_backend, kind, dtype):
    """optimizer.update on this backend: one elementwise kernel per parameter, as CuPy binds it."""
    rng = np.random.default_rng(0)
    ours = {"W": rng.standard_normal((5, 3)).astype(dtype), "b": rng.standard_normal(3).astype(dtype)}
    ref = copy.deepcopy(ours)
    o1, o2 = opt.OPTIMIZERS[kind](lr=0.05), opt.OPTIMIZERS[kind](lr=0.05)
    o1.backend, o2.backend = emu_backend, REF
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in ours.items()}
        o1.update(ours, grads)
        o2.update(ref, grads)
    tol = 1e-15 if dtype == np.float64 else 1e-6
    assert worst(ours, ref) < tol
    for name in o2.state_names:
        assert worst(o1.state[name], o2.state[name]) < tol


@needs_cxx
def test_backend_trainer_epoch_uses_device_batches(emu_backend):
    from fastnet.train import Trainer

    rng = np.random.default_rng(0)
    x = rng.random((50, 12))
    t = rng.integers(0, 4, 50)
    runs = {}
    for name, bk in (("fused", emu_backend), ("numpy", "numpy")):
        net = fastnet.TwoLayerNet(12, 6, 4, weight_init_std=0.3, seed=0, dtype=np.float64, backend=bk)
        trainer = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=10, optimizer="adam",
                          optimizer_param={"lr": 0.01}, seed=1, progress=False)
        runs[name] = (trainer.train(), net)
    (h1, n1), (h2, n2) = runs["fused"], runs["numpy"]
    np.testing.assert_allclose(h1.step_loss, h2.step_loss, atol=1e-13)
    assert len(h1.step_loss) == 10 and worst(n1.params, n2.params) < 1e-13
    assert len(emu_backend.engine.plans) >= 1


@needs_cxx
def test_label_values_checked_once_by_the_trainer_not_per_call(emu_backend):
    """Per-call label checks would sync the GPU every step; the trainer checks its data once."""
    from fastnet.train import Trainer

    x, bad = np.random.default_rng(0).random((20, 12)), np.full(20, 7)
    net = fastnet.TwoLayerNet(12, 6, 4, seed=0, dtype=np.float64, backend=emu_backend)
    emu_backend.check_targets(bad, 4)  # no value check (and so no device sync) per call
    with pytest.raises(ValueError, match="labels from 7 to 7"):
        Trainer(net, x, bad, epochs=1, progress=False)


# ====================================================================== on a GPU
def _gpu_reason() -> str | None:
    status = fastnet.available_backends()["cupy"]
    return None if status.available else status.reason


gpu = pytest.mark.skipif(_gpu_reason() is not None, reason=f"no usable GPU: {_gpu_reason()}")


@pytest.fixture
def cupy_bk():
    with fastnet.use_backend("cupy") as bk:
        engine = bk.engine
        saved = engine.strict
        engine.strict = True  # a fused path that fails must fail the test, not fall back
        yield bk
        engine.strict = saved


def _host_params(net: Any) -> dict[str, np.ndarray]:
    return {k: fastnet.to_numpy(v) for k, v in net.params.items()}


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("kind", OPTIMIZER_KINDS)
def test_gpu_float64_steps_match_numpy(cupy_bk, kind):
    sizes, rows = (784, 50, 10), 100
    gpu_net = fastnet.TwoLayerNet(*sizes, seed=0, dtype=np.float64, backend="cupy")
    cpu_net = fastnet.TwoLayerNet(*sizes, seed=0, dtype=np.float64, backend="numpy")
    o_gpu, o_cpu = opt.OPTIMIZERS[kind](lr=0.05), opt.OPTIMIZERS[kind](lr=0.05)
    for step in range(5):
        x, t = make_batch(rows, sizes, onehot=step % 2 == 0, seed=step)
        loss = gpu_net.train_step(cupy_bk.asarray(x), cupy_bk.asarray(t), o_gpu)
        ref = cpu_net.train_step(x, t, o_cpu)
        assert isinstance(loss, cupy_bk.xp.ndarray) and loss.shape == ()
        assert abs(float(loss) - float(ref)) < 1e-10
    assert worst(_host_params(gpu_net), cpu_net.params) < 1e-10
    x, t = make_batch(rows, sizes, onehot=False, seed=9)
    xg = cupy_bk.asarray(x)
    np.testing.assert_allclose(fastnet.to_numpy(gpu_net.predict(xg)), cpu_net.predict(x), atol=1e-10)
    g, _ = gpu_net.gradient_and_loss(xg, cupy_bk.asarray(t))
    assert worst({k: fastnet.to_numpy(v) for k, v in g.items()}, cpu_net.gradient(x, t)) < 1e-10


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("rows", [100, 1000])
def test_gpu_float32_within_1e5_relative(cupy_bk, rows):
    sizes = (784, 50, 10)
    gpu_net = fastnet.TwoLayerNet(*sizes, seed=0, dtype=np.float32, backend="cupy")
    cpu_net = fastnet.TwoLayerNet(*sizes, seed=0, dtype=np.float64, backend="numpy")
    for k in cpu_net.params:  # the same float32 start on both
        cpu_net.params[k][...] = fastnet.to_numpy(gpu_net.params[k])
    x, t = make_batch(rows, sizes, onehot=True, dtype=np.float32)
    g, loss = gpu_net.gradient_and_loss(cupy_bk.asarray(x), cupy_bk.asarray(t))
    ref, ref_loss = cpu_net.gradient_and_loss(x.astype(np.float64), t.astype(np.float64))
    for k in ref:
        scale = np.max(np.abs(ref[k]))
        assert np.max(np.abs(fastnet.to_numpy(g[k]) - ref[k])) <= 1e-5 * scale, k
    assert abs(float(loss) - float(ref_loss)) <= 1e-5 * abs(float(ref_loss))


@gpu
@pytest.mark.gpu
def test_gpu_numerical_gradient_within_1e9_of_numpy(cupy_bk):
    sizes = (64, 20, 10)  # small enough for the book's loop on NumPy
    gpu_net = fastnet.TwoLayerNet(*sizes, weight_init_std=0.3, seed=0, dtype=np.float64, backend="cupy")
    cpu_net = fastnet.TwoLayerNet(*sizes, weight_init_std=0.3, seed=0, dtype=np.float64, backend="numpy")
    x, t = make_batch(16, sizes, onehot=True)
    ours = gpu_net.numerical_gradient(cupy_bk.asarray(x), cupy_bk.asarray(t))
    ref = cpu_net.numerical_gradient(x, t)
    assert worst({k: fastnet.to_numpy(v) for k, v in ours.items()}, ref) < 1e-9


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_gpu_graph_step_equals_eager_step(cupy_bk, kind):
    from fastnet.backend.cupy_kernels.device import CupyDevice

    sizes = (784, 50, 10)
    eager_engine = FusedEngine(CupyDevice(), use_graphs=False, strict=True)
    graph_net = fastnet.TwoLayerNet(*sizes, seed=0, backend="cupy")
    eager_net = fastnet.TwoLayerNet(*sizes, seed=0, backend="cupy")
    o_graph, o_eager = opt.OPTIMIZERS[kind](lr=0.05), opt.OPTIMIZERS[kind](lr=0.05)
    batches = []
    for step in range(2 + plan_mod.BOUND_MISSES + 4):
        x, t = make_batch(100, sizes, onehot=False, dtype=np.float32, seed=step)
        batches.append((cupy_bk.asarray(x), cupy_bk.asarray(t)))
    # two buffers used in turn: graphs captured on the callers' own addresses;
    # then every batch a new address: the plan goes back to copying into its own
    order = [0, 1] * 3 + list(range(2, len(batches)))
    for i in order:
        x, t = batches[i]
        graph_net.train_step(x, t, o_graph)
        eager_engine.train_step(eager_net.spec(), x, t, o_eager)
    plans = list(cupy_bk.engine.plans.values())
    assert any(g is not None for p in plans for g in p.bound.values()), "no step was captured on the callers' buffers"
    assert any(p.graph is not None for p in plans), "the copying path was not captured"
    for k in graph_net.params:  # the same kernels on the same data: bitwise equal
        np.testing.assert_array_equal(fastnet.to_numpy(graph_net.params[k]), fastnet.to_numpy(eager_net.params[k]))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_gpu_epoch_graph_equals_step_by_step(cupy_bk, kind):
    """Three epochs (run eagerly, captured as one graph, replayed) against the same batches one step at a time."""
    sizes = (784, 50, 10)
    x_host, labels = make_batch(400, sizes, onehot=False, dtype=np.float32, seed=3)
    x, t = cupy_bk.asarray(x_host), cupy_bk.asarray(labels)
    epoch_net = fastnet.TwoLayerNet(*sizes, seed=0, backend="cupy")
    step_net = fastnet.TwoLayerNet(*sizes, seed=0, backend="cupy")
    o_epoch, o_step = opt.OPTIMIZERS[kind](lr=0.05), opt.OPTIMIZERS[kind](lr=0.05)
    tables = [np.random.default_rng(e).permutation(400).reshape(20, 20) for e in range(3)]
    losses = [epoch_net.train_batches(x, t, cupy_bk.asarray(tab), o_epoch) for tab in tables]
    assert any(p.epoch_graphs for p in cupy_bk.engine.plans.values()), "no epoch was captured"
    step_losses = [[step_net.train_step(x[cupy_bk.asarray(row)], t[cupy_bk.asarray(row)], o_step) for row in tab]
                   for tab in tables]
    for k in epoch_net.params:  # the same kernels on the same batches: bitwise equal
        np.testing.assert_array_equal(fastnet.to_numpy(epoch_net.params[k]), fastnet.to_numpy(step_net.params[k]))
    np.testing.assert_array_equal(fastnet.to_numpy(losses[-1]), np.array([float(v) for v in step_losses[-1]]))
    assert getattr(o_epoch, "iter", 0) == getattr(o_step, "iter", 0)


@gpu
@pytest.mark.gpu
@pytest.mark.mnist
def test_gpu_one_mnist_epoch_matches_numpy_accuracy(cupy_bk, mnist_dir, monkeypatch):
    from fastnet.datasets import load_mnist

    monkeypatch.setenv("FASTNET_OFFLINE", "1")
    (x_train, t_train), (x_test, t_test) = load_mnist(data_dir=mnist_dir, normalize=True, download=False)
    batches = np.random.default_rng(0).permutation(60000).reshape(600, 100)
    accuracy = {}
    for name, dtype in (("numpy", np.float64), ("cupy", np.float32)):
        bk = fastnet.get_backend() if name == "cupy" else REF
        net = fastnet.TwoLayerNet(784, 50, 10, seed=0, dtype=dtype, backend=name)
        xs, ts = bk.asarray(x_train, dtype=dtype), bk.asarray(t_train.astype(np.int64))
        net.train_batches(xs, ts, [bk.asarray(b) for b in batches], opt.SGD(lr=0.1))
        accuracy[name] = net.accuracy(bk.asarray(x_test, dtype=dtype), bk.asarray(t_test.astype(np.int64)))
    assert accuracy["numpy"] > 0.85
    assert abs(accuracy["cupy"] - accuracy["numpy"]) <= 0.005, accuracy
