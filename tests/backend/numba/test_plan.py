"""The numba step plans: they run only the exact built-in definitions, with numpy's bits.

A plan runs a net's forward and backward as NumPy's ``dot`` into reused
buffers plus compiled elementwise kernels. It is taken only for a built-in
activation object and fuses the update only for exactly the built-in SGD;
a subclass or a user-defined activation takes the generic path.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnet

pytest.importorskip("numba")
if not fastnet.available_backends()["numba"].available:  # pragma: no cover
    pytest.skip("numba backend unavailable", allow_module_level=True)

from fastnet import TwoLayerNet, activations
from fastnet.optimizers import SGD, AdamW

NB = fastnet.backend.registry.instance("numba")


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _plan(net, x):
    return NB._plan(net.spec(), x)


def _problem(seed=0, n=16, d=30, k=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


class ClippedSGD(SGD):
    """A user's optimizer: SGD on gradients clipped to [-0.01, 0.01]."""

    def update(self, params, grads):
        super().update(params, {k: np.clip(g, -0.01, 0.01) for k, g in grads.items()})


class Softsign:
    """A user-defined activation written against the array module."""

    name = "softsign"

    def forward(self, xp, x):
        return x / (1 + xp.abs(x)), x

    def backward(self, xp, dout, x):
        return dout / (1 + xp.abs(x)) ** 2


class SlowRelu(type(activations.RELU)):
    """A subclass of the built-in relu: not the built-in object, so no compiled kernels."""


@pytest.mark.parametrize("make_opt", [lambda: ClippedSGD(0.5), lambda: AdamW(0.01, weight_decay=0.1)])
@pytest.mark.parametrize("activation", ["relu", "tanh", Softsign(), SlowRelu()], ids=str)
def test_train_step_and_trainer_epoch_give_numpys_bits(make_opt, activation):
    x, t = _problem()
    nets = [TwoLayerNet(30, 12, 5, activation=activation, seed=1, backend=b, weight_init_std=0.5)
            for b in ("numba", "numpy")]
    opts = [make_opt(), make_opt()]
    for _ in range(3):
        losses = [net.train_step(x, t, opt) for net, opt in zip(nets, opts)]
        assert same(*losses)
    idx = np.random.default_rng(4).integers(0, 16, (5, 8))
    for net, opt in zip(nets, opts):
        net.train_batches(x, t, list(idx), opt)
    for name in nets[0].params:
        assert same(nets[0].params[name], nets[1].params[name]), name


def test_plans_only_for_builtin_activation_objects():
    x, _ = _problem()
    assert _plan(TwoLayerNet(30, 12, 5, activation="tanh", backend="numba"), x) is not None
    assert _plan(TwoLayerNet(30, 12, 5, activation=SlowRelu(), backend="numba"), x) is None
    assert _plan(TwoLayerNet(30, 12, 5, activation=Softsign(), backend="numba"), x) is None


def test_sgd_is_fused_only_when_it_is_exactly_the_builtin(monkeypatch):
    x, t = _problem()
    net = TwoLayerNet(30, 12, 5, seed=1, backend="numba")
    plan = _plan(net, x)
    seen = []
    original = type(plan).backward

    def spy(self, x, lam, sgd_lr=None, fresh=False):
        seen.append(sgd_lr)
        return original(self, x, lam, sgd_lr=sgd_lr, fresh=fresh)

    monkeypatch.setattr(type(plan), "backward", spy)
    net.train_step(x, t, SGD(0.1))
    net.train_step(x, t, ClippedSGD(0.1))
    hooked = SGD(0.1)
    hooked.update = lambda params, grads: None  # an instance-level override: nothing may move
    before = {k: v.copy() for k, v in net.params.items()}
    net.train_step(x, t, hooked)
    assert seen == [0.1, None, None]
    assert all(same(before[k], net.params[k]) for k in before)


def test_a_batch_of_the_wrong_width_gets_numpys_error_not_a_wild_read():
    net = TwoLayerNet(20, 8, 3, seed=0, backend="numba")
    x = np.random.default_rng(0).random((5, 20))
    spec = net.spec()
    NB.mlp_loss(spec, x, np.zeros(5, np.int64))  # builds the plan for batch 5
    with pytest.raises(ValueError):
        NB.mlp_loss(spec, np.random.default_rng(1).random((5, 30)), np.zeros(5, np.int64))


def test_frozen_parameters_and_reshaped_weights_are_handled_not_misread():
    rng = np.random.default_rng(2)
    net, ref = (TwoLayerNet(30, 12, 5, seed=1, backend=name) for name in ("numba", "numpy"))
    x, t = rng.random((8, 30)), rng.integers(0, 5, 8)
    for params in (net.params, ref.params):
        for value in params.values():
            value.flags.writeable = False  # read-only parameters: loss and gradient still work
    assert same(net.loss(x, t), ref.loss(x, t))
    for name, grad in net.gradient(x, t).items():
        assert same(grad, ref.gradient(x, t)[name]), name
    for candidate in (net, ref):  # training read-only parameters: one clear error on both backends
        with pytest.raises(ValueError, match="read-only"):
            candidate.train_step(x, t, SGD(0.1))
    net.params["W2"].flags.writeable = True  # a plan built for these arrays, then one flag changes
    net.params["W2"].shape = (5, 12)  # the same array, another shape: no plan may keep trusting it
    with pytest.raises(ValueError):
        net.loss(x, t)
