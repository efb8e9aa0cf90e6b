"""CupyBackend's own methods on the emulator: nets, updates, the trainer."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fastnet
from fastnet import optimizers as opt
from fastnet.backend.cupy.cuda import RULES

from cupy_helpers import REF, make_batch, needs_cxx, worst


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
@pytest.mark.parametrize("kind", RULES)
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
@pytest.mark.parametrize("kind", RULES)
def test_backend_updates_with_grads_that_are_the_params(emu_backend, kind):
    """update(params, params): the rule's later statements see p's new values, as NumPy's do."""
    ours = {"x": np.array([3.0, -2.0, 0.5])}
    ref = copy.deepcopy(ours)
    o1, o2 = opt.OPTIMIZERS[kind](lr=0.1), opt.OPTIMIZERS[kind](lr=0.1)
    o1.backend, o2.backend = emu_backend, REF
    for _ in range(3):
        o1.update(ours, ours)
        o2.update(ref, ref)
    assert worst(ours, ref) < 1e-15


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

