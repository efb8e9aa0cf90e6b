"""The fused CUDA paths take exactly the built-in definitions, nothing else.

A subclass of a built-in optimizer, an optimizer instance with its own
``step_scalars``, or a user-defined activation runs the inherited generic code
and gets the NumPy backend's results; tanh and AdamW run fused. All on the
CPU emulator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import fastnet
from fastnet import activations
from fastnet import optimizers as opt
from fastnet.activations import RELU, TANH
from fastnet.backend.cupy.cuda import RULES
from fastnet.backend.spec import MLPSpec

from cupy_helpers import REF, make_batch, make_params, needs_cxx, worst

pytestmark = needs_cxx


class ClippedSGD(opt.SGD):
    """A user's SGD: every gradient clipped to [-clip, clip], then the built-in update."""

    def __init__(self, lr: float = 0.01, clip: float = 0.01) -> None:
        super().__init__(lr)
        self.clip = clip

    def update(self, params: dict[str, Any], grads: dict[str, Any]) -> None:
        super().update(params, {k: g.clip(-self.clip, self.clip) for k, g in grads.items()})


class Softsign(activations.Activation):
    """x / (1 + |x|): an activation fastnet does not ship."""

    name = "softsign"

    def forward(self, xp: Any, x: Any) -> tuple[Any, Any]:
        return x / (1 + xp.abs(x)), x

    def backward(self, xp: Any, dout: Any, x: Any) -> Any:
        return dout / (1 + xp.abs(x)) ** 2


class MyRelu(type(RELU)):  # type: ignore[misc]
    """A subclass of the built-in ReLU: not the built-in object, so not its kernels."""


def fused_stages(backend: Any) -> set[str]:
    return {p.layout.stage for p in backend.engine.plans.values()}


def nets(backend: Any, activation: Any = "relu") -> tuple[Any, Any]:
    kw = dict(weight_init_std=0.3, seed=0, dtype=np.float64, activation=activation)
    return (fastnet.TwoLayerNet(12, 7, 4, backend=backend, **kw),
            fastnet.TwoLayerNet(12, 7, 4, backend="numpy", **kw))


def test_subclassed_optimizer_runs_its_own_update(emu_backend):
    ours, ref = nets(emu_backend)
    plain, _ = nets("numpy")
    o1, o2, o3 = ClippedSGD(lr=0.5), ClippedSGD(lr=0.5), opt.SGD(lr=0.5)
    assert opt.builtin(o1) is None
    for step in range(3):
        x, t = make_batch(6, (12, 7, 4), onehot=False, seed=step)
        ours.train_step(x, t, o1)
        ref.train_step(x, t, o2)
        plain.train_step(x, t, o3)
    assert "train" not in fused_stages(emu_backend)  # the fused step was not taken
    assert "grad" in fused_stages(emu_backend)  # the gradient still was
    assert worst(ours.params, ref.params) < 1e-13
    assert worst(ours.params, plain.params) > 1e-3  # the clipping happened


def test_subclass_epoch_and_instance_hook_run_step_by_step(emu_backend):
    rng = np.random.default_rng(4)
    X, T = rng.random((40, 12)), rng.integers(0, 4, 40)
    batches = np.stack([rng.choice(40, 5, replace=False) for _ in range(4)])

    def hooked(lr: float) -> opt.SGD:
        o = opt.SGD(lr=lr)
        o.step_scalars = lambda: (o.lr * 0.5,)  # type: ignore[method-assign]
        return o

    for make in (ClippedSGD, hooked):
        ours, ref = nets(emu_backend)
        o1, o2 = make(lr=0.5), make(lr=0.5)
        spec = ours.spec()
        assert emu_backend.engine.train_batches(spec, X, T, batches, o1) is None
        ours.train_batches(X, T, batches, o1)
        for i in batches:
            ref.train_step(X[i], T[i], o2)
        assert worst(ours.params, ref.params) < 1e-13, make


@pytest.mark.parametrize("activation", [Softsign(), MyRelu()], ids=["user-defined", "subclass-of-relu"])
def test_user_activation_runs_the_generic_code_bit_for_bit(emu_backend, emu, activation):
    assert activations.builtin(activation) is None
    ours, ref = nets(emu_backend, activation)
    x, t = make_batch(6, (12, 7, 4), onehot=False)
    launches = emu.launches
    np.testing.assert_array_equal(ours.predict(x), ref.predict(x))
    assert float(ours.loss(x, t)) == float(ref.loss(x, t))
    g1, g2 = ours.gradient(x, t), ref.gradient(x, t)
    assert all(np.array_equal(g1[k], g2[k]) for k in g2)
    assert emu.launches == launches and not emu_backend.engine.plans  # nothing fused
    n1, n2 = ours.numerical_gradient(x, t), ref.numerical_gradient(x, t)
    assert all(np.array_equal(n1[k], n2[k]) for k in n2)
    o1, o2 = opt.SGD(lr=0.1), opt.SGD(lr=0.1)
    for _ in range(2):
        ours.train_step(x, t, o1)
        ref.train_step(x, t, o2)
    assert emu.launches > launches  # the built-in SGD's own kernel ran, one launch a parameter
    assert all(np.array_equal(ours.params[k], ref.params[k]) for k in ref.params)


def test_tanh_runs_fused(engine, emu):
    sizes = (20, 8, 6, 5)
    params = make_params(sizes)
    x, t = make_batch(7, sizes, onehot=True)
    spec = MLPSpec(params, 3, TANH, 0.02)
    launches = emu.launches
    np.testing.assert_allclose(engine.predict(spec, x), REF.mlp_predict(spec, x), rtol=0, atol=1e-13)
    grads, loss = engine.gradient(spec, x, t)
    ref_grads, ref_loss = REF.mlp_gradient(spec, x, t)
    assert worst(grads, ref_grads) < 1e-13 and abs(float(loss) - float(ref_loss)) < 1e-13
    assert emu.launches > launches
    ours = engine.numerical_gradient(spec, x, t, 1e-4)
    assert ours is not None and worst(ours, REF.mlp_numerical_gradient(spec, x, t)) < 1e-9


@pytest.mark.parametrize("rule", RULES)
def test_single_launch_updates_equal_numpy_bits_in_float64(emu_backend, emu, rule):
    rng = np.random.default_rng(0)
    ours = {"W": rng.standard_normal((5, 3)), "b": rng.standard_normal(3)}
    ref = {k: v.copy() for k, v in ours.items()}
    o1, o2 = opt.OPTIMIZERS[rule](lr=0.05), opt.OPTIMIZERS[rule](lr=0.05)
    o1.backend, o2.backend = emu_backend, REF
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape) for k, v in ours.items()}
        launches = emu.launches
        o1.update(ours, grads)
        o2.update(ref, grads)
        assert emu.launches == launches + 2  # one launch per parameter
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k])
    for name in o2.state_names:
        for k in ref:
            np.testing.assert_array_equal(o1.state[name][k], o2.state[name][k])


def test_subclass_update_launches_nothing(emu_backend, emu):
    rng = np.random.default_rng(1)
    ours = {"W": rng.standard_normal((5, 3))}
    ref = {"W": ours["W"].copy()}
    o1, o2 = ClippedSGD(lr=0.1, clip=0.2), ClippedSGD(lr=0.1, clip=0.2)
    o1.backend, o2.backend = emu_backend, REF
    grads = {"W": rng.standard_normal((5, 3))}
    launches = emu.launches
    o1.update(ours, grads)
    o2.update(ref, grads)
    assert emu.launches == launches
    np.testing.assert_array_equal(ours["W"], ref["W"])
