"""Inputs off the fast paths' beaten track: the numba backend still gives the NumPy backend's
result (or its error), bit for bit. Each case once slipped through a fast path."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import DeepConvNet, SimpleConvNet, TwoLayerNet
from fastnet.layers import Convolution, Pooling

if not fastnet.available_backends()["numba"].available:
    pytest.skip("numba unavailable", allow_module_level=True)

BACKENDS = ("numpy", "numba")
RNG = np.random.default_rng(0)
X, T = RNG.random((16, 6)), RNG.integers(0, 4, 16)


def each_backend(run, errors=False):
    """run(backend) on both backends; with `errors`, an exception (its type and message) is a result too."""
    out = []
    for name in BACKENDS:
        try:
            out.append(run(name))
        except Exception as exc:
            if not errors or isinstance(exc, AssertionError):
                raise
            out.append((type(exc), str(exc)))
    return out


def assert_same(a, b):
    if isinstance(a, tuple) and a and isinstance(a[0], type):
        assert a == b
        return
    for u, v in zip(np.atleast_1d(a) if not isinstance(a, (tuple, list)) else a,
                    np.atleast_1d(b) if not isinstance(b, (tuple, list)) else b):
        np.testing.assert_array_equal(u, v, strict=True)


@pytest.mark.parametrize("setter", ["lr", "momentum", "weight_decay_lambda"])
def test_numpy_scalars_as_hyper_parameters_mean_what_a_float_means(setter):
    x32 = RNG.random((64, 6)).astype(np.float32)
    t = RNG.integers(0, 4, 64)

    def run(backend):
        net = fastnet.MultiLayerNet(6, [5], 4, weight_init_std=0.5, seed=0, dtype=np.float32, backend=backend,
                                    weight_decay_lambda=0.1)
        opt = fastnet.Momentum(0.1)
        for lr in np.linspace(0.1, 0.01, 4):  # float64 scalars, as a schedule makes them
            if setter == "lr":
                opt.lr = lr
            elif setter == "momentum":
                opt.momentum = np.float64(0.8)
            else:
                net.weight_decay_lambda = np.float64(0.05)
            net.train_step(x32, t, opt)
        assert type(opt.lr) is float and type(opt.momentum) is float and type(net.weight_decay_lambda) is float
        return net.params["W1"], net.gradient(x32, t)["W1"]

    assert_same(*each_backend(run))


def test_hyper_parameters_are_checked_when_assigned():
    opt = fastnet.Adam()
    with pytest.raises(ValueError, match="beta1 must be in"):
        opt.beta1 = 1.5
    with pytest.raises(ValueError, match="lr must be a positive number"):
        opt.lr = -0.1
    net = TwoLayerNet(6, 5, 4, seed=0)
    with pytest.raises(ValueError, match="weight_decay_lambda must be a number >= 0"):
        net.weight_decay_lambda = -1


def test_tied_and_extra_parameters_take_the_reference_path():
    def tied(backend):
        net = fastnet.MultiLayerNet(6, [6], 6, seed=0, backend=backend, weight_decay_lambda=0.1)
        net.params["W2"] = net.params["W1"]
        opt = fastnet.SGD(0.5)
        losses = [net.train_step(X, T, opt) for _ in range(3)]
        return net.params["W1"], np.array(losses)

    def extra(backend):
        net = TwoLayerNet(6, 5, 4, seed=0, backend=backend)
        net.params["scale"] = np.ones(3)
        return net.train_step(X, T, fastnet.SGD(0.1))

    assert_same(*each_backend(tied))
    a, b = each_backend(extra, errors=True)
    assert a[0] is KeyError and a == b


def test_optimizers_that_are_not_builtin_instances():
    class PlainSGD:  # any object with update(params, grads)
        lr = 0.1

        def update(self, params, grads):
            for k in params:
                params[k] -= self.lr * grads[k]

    def run(backend):
        net = TwoLayerNet(6, 5, 4, seed=0, backend=backend)
        net.train_step(X, T, PlainSGD())
        opt = fastnet.SGD(0.1)
        opt._check_pair = lambda key, p, g: (p, g * 0)  # a method replaced on the instance
        net.train_step(X, T, opt)
        return net.params["W2"]

    assert_same(*each_backend(run))
    net = TwoLayerNet(6, 5, 4, seed=0)
    with pytest.raises(TypeError, match="must be an instance, e.g. SGD"):
        net.train_step(X, T, fastnet.SGD)


def test_targets_of_odd_dtypes_and_a_single_class():
    onehot16 = np.eye(4, dtype=np.float16)[T]
    assert_same(*each_backend(lambda b: TwoLayerNet(6, 5, 4, seed=0, backend=b).loss(X, onehot16)))
    one_class = np.zeros(16, dtype=int)
    a, b = each_backend(lambda b: TwoLayerNet(6, 5, 1, seed=0, backend=b).loss(X, one_class))
    assert not isinstance(a, tuple)  # labels for one class: a loss, not the one-hot path's AxisError
    assert_same(a, b)


@pytest.mark.parametrize("where", ["b2", "x"])
def test_numerical_gradient_with_non_finite_values(where):
    def run(backend):
        net = TwoLayerNet(6, 5, 4, seed=0, backend=backend)
        x = X.copy()
        if where == "x":
            x[0, 0] = np.nan
        else:
            net.params["b2"][0] = -np.inf
        g = net.numerical_gradient(x, T)
        return tuple(g[k] for k in net.params)

    assert_same(*each_backend(run))


def test_numerical_gradient_refuses_read_only_params_by_name():
    for backend in BACKENDS:
        net = TwoLayerNet(6, 5, 4, seed=0, backend=backend)
        net.params["W1"].flags.writeable = False
        with pytest.raises(ValueError, match=r"params\['W1'\] is read-only; numerical_gradient"):
            net.numerical_gradient(X, T)


def test_replacing_a_parameter_with_another_shape_names_it():
    net = TwoLayerNet(6, 5, 4, seed=0, backend="numba")
    opt = fastnet.Adam()
    net.train_step(X, T, opt)
    net.params.update(W1=np.zeros((6, 7)), b1=np.zeros(7), W2=np.zeros((7, 4)))
    with pytest.raises(ValueError, match=r"params\['W1'\] has shape \(6, 7\) but this optimizer's state"):
        net.train_step(X, T, opt)


def test_batch_index_errors_say_which_index():
    net = TwoLayerNet(6, 5, 4, seed=0, backend="numba")
    with pytest.raises(IndexError, match="index 99 is out of bounds for axis 0 with size 16"):
        net.train_batches(X, T, [np.array([0, 99])], fastnet.SGD(0.1))


def test_a_layer_is_not_an_activation():
    with pytest.raises(TypeError, match=r"expected forward\(xp, x\).*pass 'relu'"):
        TwoLayerNet(6, 5, 4, activation=fastnet.layers.Relu())


# ------------------------------------------------------------------ conv nets
IMAGES = RNG.standard_normal((3, 1, 8, 8))
LABELS = np.array([0, 1, 2])


def small_convnet(backend):
    return SimpleConvNet((1, 8, 8), dict(filter_num=3, filter_size=3, pad=1, stride=1), hidden_size=3,
                         output_size=3, weight_init_std=0.3, seed=1, backend=backend)


@pytest.mark.parametrize("bias", [np.array([0.5]), np.array([0.1, 0.2, 0.3, 0.4]), np.array([[0.1, 0.2, 0.3]])])
def test_a_convolution_bias_numpy_broadcasts(bias):
    W = RNG.standard_normal((3, 1, 3, 3))

    def run(backend):
        layer = Convolution(W, np.zeros(3), backend=backend)
        layer.b = bias
        return layer.forward(IMAGES)

    assert_same(*each_backend(run, errors=True))


@pytest.mark.parametrize("change", ["extra", "tied", "float32", "bias-shape", "nan-image"])
def test_conv_numerical_gradient_off_the_book_net(change):
    def run(backend):
        net, x = small_convnet(backend), IMAGES.copy()
        if change == "extra":
            net.params["extra"] = np.ones(5)
        elif change == "tied":
            net.params["b2"][:] = [0.1, -0.2, 0.3]
            net.params["b3"] = net.params["b2"]
        elif change == "float32":
            net.params["W2"] = net.params["W2"].astype(np.float32)
        elif change == "bias-shape":
            net.params["b1"] = np.array([0.2])
        else:
            x[0, 0, 0, 0] = np.nan
        g = net.numerical_gradient(x, LABELS)
        return tuple(g[k] for k in net.params)

    assert_same(*each_backend(run))


def test_deep_convnet_numerical_gradient_with_an_extra_param():
    def run(backend):
        tiny = {f"conv_param_{i}": dict(filter_num=2, filter_size=3, pad=1, stride=1) for i in range(1, 7)}
        net = DeepConvNet((1, 8, 8), **tiny, hidden_size=4, output_size=3, seed=0, backend=backend)
        net.params["extra"] = np.ones(2)
        return net.numerical_gradient(IMAGES[:2], LABELS[:2])["extra"]

    assert_same(*each_backend(run))


def test_convolution_backward_of_a_channel_major_dout():
    W = RNG.standard_normal((8, 3, 3, 3))
    x = RNG.standard_normal((4, 3, 6, 6))
    dout = RNG.standard_normal((8, 4, 4, 4)).swapaxes(0, 1)  # an F-ordered view

    def run(backend):
        layer = Convolution(W, np.zeros(8), backend=backend)
        layer.forward(x)
        return layer.backward(dout), layer.dW, layer.db

    assert_same(*each_backend(run))


@pytest.mark.parametrize("pool", [(2, 2, 2), (3, 3, 1)])
def test_max_pooling_of_nan_windows(pool):
    x = RNG.standard_normal((2, 2, 6, 6))
    x[0, 0, 0, 0] = -np.nan
    x[1, 1, 2, 3] = np.array([0x7FF8000000000123], dtype=np.uint64).view(np.float64)[0]  # a NaN payload
    x[1, 0, 4, 4] = np.inf
    x[1, 0, 4, 5] = -np.inf

    def run(backend):
        out = Pooling(*pool, backend=backend).forward(x)
        return out, np.signbit(out)

    assert_same(*each_backend(run))
