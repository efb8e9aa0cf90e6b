"""Definitions changed after import, arrays that alias, compiled user functions: the numba backend
gives the NumPy backend's result, bit for bit, because it runs its own version of an operation only
for the library's definition, on arrays it may update in its own order."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import activations, layers
from fastnet import optimizers as opt

if not fastnet.available_backends()["numba"].available:
    pytest.skip("numba unavailable", allow_module_level=True)

import numba  # noqa: E402

RNG = np.random.default_rng(0)
X, T = RNG.normal(size=(8, 4)), RNG.integers(0, 3, 8)


def on_both(run):
    out = []
    for name in ("numpy", "numba"):
        with fastnet.use_backend(name):
            out.append(run(name))
    return out


def assert_same(a, b):
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], strict=True)


@pytest.mark.parametrize("kind", list(opt.OPTIMIZERS))
def test_update_with_grads_that_are_the_params(kind):
    """update(params, params) minimises |p|^2 / 2; the rule's later statements see p's new values."""
    def run(name):
        optimizer, params = opt.OPTIMIZERS[kind](lr=0.1), {"x": np.array([3.0, -2.0, 0.5])}
        for _ in range(3):
            optimizer.update(params, params)
        return params

    assert_same(*on_both(run))


def test_sgd_class_patched_after_import_is_not_fused(monkeypatch):
    """A notebook's ``SGD.update = clipped`` must run on numba too, not the fused SGD."""
    plain = opt.SGD.update

    def clipped(self, params, grads):
        plain(self, params, {k: np.clip(g, -1e-3, 1e-3) for k, g in grads.items()})

    def run(name):
        net = fastnet.TwoLayerNet(4, 5, 3, seed=0, weight_init_std=1.0, backend=name)
        net.train_step(X, T, opt.SGD(1.0))
        return net.params

    before = on_both(run)
    monkeypatch.setattr(opt.SGD, "update", clipped)
    assert opt.builtin(opt.SGD(1.0)) is None
    after = on_both(run)
    assert_same(*after)
    assert not np.array_equal(before[0]["W1"], after[0]["W1"])  # the patch took effect
    monkeypatch.undo()
    assert opt.builtin(opt.SGD(1.0)) == "sgd"  # restored: the definition again


def test_builtin_activation_with_a_replaced_method(monkeypatch):
    def leaky(xp, x):
        mask = x <= 0
        out = x.copy()
        out[mask] *= 0.1
        return out, mask

    monkeypatch.setattr(activations.RELU, "forward", leaky)
    assert activations.builtin(activations.RELU) is None
    numpy_out, numba_out = on_both(
        lambda name: {"y": fastnet.TwoLayerNet(4, 5, 3, seed=0, weight_init_std=1.0, backend=name).predict(X)})
    assert_same(numpy_out, numba_out)
    assert (numpy_out["y"] != 0).all()  # the leaky forward ran


def test_layer_class_patched_after_import(monkeypatch):
    """A net whose Affine class was changed runs its layers one by one on both backends."""
    forward = layers.Affine.forward
    monkeypatch.setattr(layers.Affine, "forward", lambda self, x: forward(self, x) * 0.5)

    def run(name):
        net = fastnet.TwoLayerNet(4, 5, 3, seed=0, weight_init_std=1.0, backend=name)
        assert net.spec() is None
        return {"y": net.predict(X), **net.gradient(X, T)}

    assert_same(*on_both(run))


@numba.njit
def total(x):
    return np.sum(x)


@numba.njit
def below_zero(x):
    return np.uint8(x[0] < 0)


def test_numerical_gradient_of_compiled_functions():
    """The book's loop sees a compiled f's float32 as a Python float, and its integers exactly."""
    x32 = np.array([0.0, -0.00021350423], dtype=np.float32)
    a, b = on_both(lambda name: {"g": fastnet.numerical_gradient(total, x32.copy())})
    assert_same(a, b)
    np.testing.assert_array_equal(a["g"], np.float32(0.99999994))
    a, b = on_both(lambda name: {"g": fastnet.numerical_gradient(below_zero, np.array([0.0, 1.0]))})
    assert_same(a, b)
    assert a["g"][0] == -5000.0
