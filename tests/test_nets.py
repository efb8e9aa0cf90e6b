"""TwoLayerNet: the book's API, its gradient check, and one net on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hostarrays import host

import fastnet
from fastnet import TwoLayerNet


def batch(n=3, d=784, k=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    labels = rng.integers(0, k, n)
    return x, labels, np.eye(k)[labels]


def test_params_and_shapes(backend):
    net = TwoLayerNet(784, 50, 10, seed=0)
    assert {k: v.shape for k, v in net.params.items()} == {
        "W1": (784, 50), "b1": (50,), "W2": (50, 10), "b2": (10,)
    }
    assert net.backend is backend
    assert all(backend.owns(v) for v in net.params.values())
    assert net.dtype == np.dtype(backend.default_dtype)


def test_same_seed_same_start_on_every_backend(backend):
    with fastnet.use_backend("numpy"):
        ref = TwoLayerNet(20, 7, 3, seed=42)
    net = TwoLayerNet(20, 7, 3, seed=42, dtype=np.float64)
    for k in ref.params:
        assert np.array_equal(host(net.params[k]), ref.params[k])


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_gradient_check_ch5(backend, activation):
    """The book's gradient_check.py: numerical vs backprop on 3 samples."""
    # 30 inputs rather than 784 keep the plain loop fast while checking every parameter.
    small = TwoLayerNet(30, 10, 10, activation=activation, seed=1, dtype=np.float64)
    x, labels, one_hot = batch(3, 30)
    xs, one_hot = backend.asarray(x), backend.asarray(one_hot)
    grad_numerical = small.numerical_gradient(xs, one_hot)
    grad_backprop = small.gradient(xs, one_hot)
    for key in small.params:
        diff = np.abs(host(grad_backprop[key]) - host(grad_numerical[key])).mean()
        # not 0: the book's loss has +1e-7 inside the log, its backprop ignores it
        assert diff < 1e-6, (key, diff)


def test_labels_and_one_hot_agree(backend):
    net = TwoLayerNet(16, 8, 10, seed=3, dtype=np.float64)
    x, labels, one_hot = batch(5, 16)
    x = backend.asarray(x)
    a = net.gradient(x, backend.asarray(labels))
    b = net.gradient(x, backend.asarray(one_hot))
    for k in a:
        np.testing.assert_allclose(host(a[k]), host(b[k]), rtol=1e-12, atol=1e-15)
    assert float(net.loss(x, backend.asarray(labels))) == pytest.approx(
        float(net.loss(x, backend.asarray(one_hot))), rel=1e-14
    )


def test_backend_path_equals_layer_path(backend):
    """The fused whole-net kernels give the book's layer-by-layer results."""
    for activation in ("relu", "sigmoid"):
        net = TwoLayerNet(784, 50, 10, activation=activation, seed=5, dtype=np.float64)
        x, labels, _ = batch(100, seed=2)
        x, t = backend.asarray(x), backend.asarray(labels)
        fused, layered = net.gradient(x, t), net.gradient_layers(x, t)
        for k in fused:
            np.testing.assert_allclose(host(fused[k]), host(layered[k]), rtol=1e-10, atol=1e-14)


def test_params_are_live(backend):
    net = TwoLayerNet(6, 4, 3, seed=0, dtype=np.float64)
    x, labels, _ = batch(4, 6, 3)
    x, t = backend.asarray(x), backend.asarray(labels)
    before = float(net.loss(x, t))
    net.params["W2"] *= 100.0  # in place, as the book's update does
    assert float(net.loss(x, t)) != before
    net.params["W2"] = net.params["W2"] / 100.0  # rebinding is seen too
    assert float(net.loss(x, t)) == pytest.approx(before, rel=1e-12)
    grads = net.gradient_layers(x, t)  # layers follow a rebound parameter
    np.testing.assert_allclose(host(grads["W2"]), host(net.gradient(x, t)["W2"]), rtol=1e-12)


def test_sgd_training_lowers_loss_and_accuracy_counts(backend):
    net = TwoLayerNet(2, 16, 3, weight_init_std=1.0, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((90, 2))
    labels = (x0[:, 0] > 0).astype(int) + (x0[:, 1] > 0).astype(int)
    x, t = backend.asarray(x0), backend.asarray(labels)
    first = float(net.loss(x, t))
    for _ in range(200):
        grads = net.gradient(x, t)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= 0.5 * grads[key]
    assert float(net.loss(x, t)) < first / 2
    acc = net.accuracy(x, t)
    pred = host(net.predict(x)).argmax(axis=1)
    assert acc == pytest.approx((pred == labels).mean())
    assert acc > 0.8


def test_float32_net(backend):
    net = TwoLayerNet(784, 50, 10, seed=0, dtype=np.float32)
    x, labels, _ = batch(10)
    grads = net.gradient(backend.asarray(x.astype(np.float32)), backend.asarray(labels))
    assert all(g.dtype == np.float32 for g in grads.values())
    assert net.predict(backend.asarray(x)).dtype == np.float32


def test_bad_inputs_name_the_argument():
    net = TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 4\)"):
        net.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="reshape"):
        net.predict(np.zeros(4))
    with pytest.raises(ValueError, match="2 samples but t has 3"):
        net.loss(np.zeros((2, 4)), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="one-hot t"):
        net.loss(np.zeros((2, 4)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty batch"):
        net.predict(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="hidden_size"):
        TwoLayerNet(4, 0, 2)
    with pytest.raises(ValueError, match="activation"):
        TwoLayerNet(4, 3, 2, activation="swish")
    with pytest.raises(TypeError, match="dtype"):
        TwoLayerNet(4, 3, 2, dtype=np.int32)


def test_nd_input_is_flattened():
    net = TwoLayerNet(784, 10, 10, seed=0)
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    np.testing.assert_array_equal(net.predict(x), net.predict(x.reshape(2, 784)))


def test_labels_as_a_column_are_labels():
    """ch07/gradient_check.py passes its label as a (1, 1) column; the book reads it as a label."""
    net = fastnet.TwoLayerNet(6, 4, 3, seed=0)
    x = np.random.default_rng(0).random((2, 6))
    assert float(net.loss(x, np.array([[2], [0]]))) == float(net.loss(x, np.array([2, 0])))
    with pytest.raises(TypeError, match="labels given as a column, which must be integers"):
        net.loss(x, np.array([[2.0], [0.0]]))
    trainer = fastnet.Trainer(net, x, np.array([[2], [0]], dtype=np.int32), epochs=1, mini_batch_size=2,
                              verbose=False)
    assert trainer.t_train.shape == (2,) and trainer.t_train.dtype == np.int64


class DoubledTanh(fastnet.layers.Tanh):
    """A user's layer: a Tanh subclass computing something else (smooth, so gradients can be checked)."""

    def forward(self, x):
        return 2 * super().forward(x)

    def backward(self, dout):
        return super().backward(2 * dout)


@pytest.mark.parametrize("cpu", ["numpy", "numba"])
@pytest.mark.parametrize("make", [lambda bk: TwoLayerNet(6, 5, 3, seed=0, backend=bk),
                                  lambda bk: fastnet.MultiLayerNet(6, [5, 4], 3, seed=0, backend=bk)],
                         ids=["two", "multi"])
def test_a_swapped_layer_is_what_the_net_runs(cpu, make):
    """The book's nets run their layers: a layer swapped in after construction is used by
    predict, gradient, numerical_gradient and train_step (the whole-net kernels step aside)."""
    if not fastnet.available_backends()[cpu].available:
        pytest.skip(f"{cpu} unavailable")
    net = make(cpu)
    name = next(k for k, layer in net.layers.items() if isinstance(layer, fastnet.layers.Activation))
    net.layers[name] = DoubledTanh(backend=cpu)
    x, _, t = batch(4, 6, 3, seed=2)
    y = x
    for layer in net.layers.values():
        y = layer.forward(y)
    np.testing.assert_array_equal(net.predict(x), y)
    grads, numerical = net.gradient(x, t), net.numerical_gradient(x, t)
    for k in grads:
        np.testing.assert_allclose(grads[k], numerical[k], rtol=1e-5, atol=1e-7, err_msg=k)  # the loss's +1e-7
    ref = make("numpy")  # the numpy backend's layer path gives the same bits
    ref.layers[name] = DoubledTanh(backend="numpy")
    for k, g in ref.gradient(x, t).items():
        np.testing.assert_array_equal(grads[k], g, err_msg=k)
    before = {k: p.copy() for k, p in net.params.items()}
    net.train_step(x, t, fastnet.SGD(lr=0.5))
    assert any(not np.array_equal(net.params[k], before[k]) for k in before)
