"""Property-based checks of functions, layers and nets over random shapes and values."""

from __future__ import annotations

import numpy as np
from hostarrays import host
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fastnet import MultiLayerNet, TwoLayerNet
from fastnet import functions as F
from fastnet.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
finite = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(x=arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 12)), elements=finite))
def test_softmax_rows_sum_to_one_even_for_huge_logits(backend, x):
    y = host(F.softmax(backend.asarray(x)))
    assert np.all(np.isfinite(y)) and np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-12)
    rows = np.arange(len(x))
    assert np.all(y[rows, x.argmax(axis=1)] == y.max(axis=1))  # the largest logit wins


@SETTINGS
@given(
    logits=arrays(np.float64, st.tuples(st.integers(1, 6), st.just(5)), elements=st.floats(-50, 50)),
    data=st.data(),
)
def test_cross_entropy_is_non_negative(backend, logits, data):
    labels = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(logits), max_size=len(logits))))
    y = F.softmax(backend.asarray(logits))
    loss = float(F.cross_entropy_error(y, backend.asarray(labels)))
    # -log(p + 1e-7) >= -log(1 + 1e-7), a hair below 0 when p == 1
    assert loss >= -1e-7


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(2, 4)),
    batch=st.integers(1, 4),
    activation=st.sampled_from(["relu", "sigmoid"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_backprop_matches_numerical_gradient(backend, sizes, batch, activation, seed):
    n_in, n_hidden, n_out = sizes
    net = TwoLayerNet(n_in, n_hidden, n_out, weight_init_std=1.0, activation=activation,
                      seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    x0, labels = rng.standard_normal((batch, n_in)), rng.integers(0, n_out, batch)
    W1, b1 = (host(net.params[k]) for k in ("W1", "b1"))
    # Away from ReLU kinks (no pre-activation within reach of h) and from tiny
    # probabilities (the book's +1e-7 inside the log, which backprop ignores,
    # moves each sample's term by up to 1e-7 / p), the two gradients must agree closely.
    assume(np.abs(x0 @ W1 + b1).min() > 1e-3)
    probs = host(F.softmax(net.predict(backend.asarray(x0))))
    assume(probs[np.arange(batch), labels].min() > 1e-2)
    x, t = backend.asarray(x0), backend.asarray(labels)
    num, grad = net.numerical_gradient(x, t), net.gradient(x, t)
    for key in grad:
        g, n = host(grad[key]), host(num[key])
        np.testing.assert_allclose(n, g, rtol=1e-3, atol=2e-5, err_msg=key)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), activation=st.sampled_from(["relu", "sigmoid"]))
def test_small_step_lowers_the_loss(backend, seed, activation):
    net = TwoLayerNet(6, 5, 3, weight_init_std=0.5, activation=activation, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    x = backend.asarray(rng.standard_normal((8, 6)))
    t = backend.asarray(rng.integers(0, 3, 8))
    before = float(net.loss(x, t))
    grads = net.gradient(x, t)
    norm2 = sum(float((host(g) ** 2).sum()) for g in grads.values())
    assume(norm2 > 1e-20)  # a zero gradient has nothing to descend
    for key in grads:
        net.params[key] -= 1e-3 * grads[key]
    assert float(net.loss(x, t)) < before


# ------------------------------------------------------------------- layers
# Each layer's backward against central differences of its own forward, on
# random shapes: for an upstream gradient dout, backward(dout) must be the
# gradient of sum(forward(x) * dout).

LAYER_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
shapes = st.tuples(st.integers(1, 4), st.integers(1, 5))


def numerical(f, x):
    from fastnet.gradient import numerical_gradient

    return host(numerical_gradient(lambda _: float(f()), x))


@LAYER_SETTINGS
@given(shape=shapes, n_out=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_affine_backward_matches_numerical(cpu_backend, shape, n_out, seed):
    rng = np.random.default_rng(seed)
    x = cpu_backend.asarray(rng.standard_normal(shape))
    W = cpu_backend.asarray(rng.standard_normal((shape[1], n_out)))
    b = cpu_backend.asarray(rng.standard_normal(n_out))
    dout = cpu_backend.asarray(rng.standard_normal((shape[0], n_out)))
    layer = Affine(W, b)  # holds W and b themselves, so perturbing them moves the layer

    def f():
        return (layer.forward(x) * dout).sum()

    layer.forward(x)
    dx = host(layer.backward(dout))
    dW, db = host(layer.dW), host(layer.db)
    for analytic, wrt in ((dx, x), (dW, W), (db, b)):
        np.testing.assert_allclose(analytic, numerical(f, wrt), rtol=1e-6, atol=1e-8)


@LAYER_SETTINGS
@given(shape=shapes, kind=st.sampled_from(["relu", "sigmoid"]), seed=st.integers(0, 2**32 - 1))
def test_activation_backward_matches_numerical(cpu_backend, shape, kind, seed):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal(shape) * 3
    assume(kind == "sigmoid" or np.abs(x0).min() > 1e-3)  # away from ReLU's kink
    x, dout = cpu_backend.asarray(x0), cpu_backend.asarray(rng.standard_normal(shape))
    layer = Relu() if kind == "relu" else Sigmoid()

    def f():
        return (layer.forward(x) * dout).sum()

    layer.forward(x)
    dx = host(layer.backward(dout))
    np.testing.assert_allclose(dx, numerical(f, x), rtol=1e-5, atol=1e-8)


@LAYER_SETTINGS
@given(shape=st.tuples(st.integers(1, 5), st.integers(2, 6)), one_hot=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_softmax_with_loss_backward_matches_numerical(cpu_backend, shape, one_hot, seed):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal(shape) * 2
    labels = rng.integers(0, shape[1], shape[0])
    p = np.exp(x0 - x0.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assume(p[np.arange(shape[0]), labels].min() > 1e-2)  # where the book's +1e-7 in the log is negligible
    t = np.eye(shape[1])[labels] if one_hot else labels
    x, t = cpu_backend.asarray(x0), cpu_backend.asarray(t)
    layer = SoftmaxWithLoss()
    loss = float(layer.forward(x, t))
    assert loss >= 0
    dx = host(layer.backward())
    np.testing.assert_allclose(dx, numerical(lambda: layer.forward(x, t), x), rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------- MultiLayerNet


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hidden=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    sizes=st.tuples(st.integers(1, 4), st.integers(2, 4)),
    batch=st.integers(1, 4),
    activation=st.sampled_from(["relu", "sigmoid"]),
    decay=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**32 - 1),
)
def test_multilayer_backprop_matches_numerical(cpu_backend, hidden, sizes, batch, activation, decay, seed):
    n_in, n_out = sizes
    net = MultiLayerNet(n_in, hidden, n_out, activation=activation, weight_init_std=1.0,
                        weight_decay_lambda=decay, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    x0, labels = rng.standard_normal((batch, n_in)), rng.integers(0, n_out, batch)
    h = x0
    for i in range(1, net.depth + 1):  # stay away from ReLU kinks in every hidden layer
        a = h @ host(net.params[f"W{i}"]) + host(net.params[f"b{i}"])
        if i < net.depth:
            # h moves a layer's inputs by up to ~1e-4 * |x|, and deeper layers amplify that
            assume(activation == "sigmoid" or np.abs(a).min() > 1e-2)
            h = np.maximum(a, 0) if activation == "relu" else 1 / (1 + np.exp(-a))
    probs = np.exp(a - a.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assume(probs[np.arange(batch), labels].min() > 1e-2)
    x, t = cpu_backend.asarray(x0), cpu_backend.asarray(labels)
    num, grad = net.numerical_gradient(x, t), net.gradient(x, t)
    for key in grad:
        np.testing.assert_allclose(host(num[key]), host(grad[key]), rtol=1e-3, atol=2e-5, err_msg=key)
