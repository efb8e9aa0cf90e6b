"""Property-based checks of functions and nets over random shapes and values."""

from __future__ import annotations

import numpy as np
from conftest import host
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fastnet import TwoLayerNet
from fastnet import functions as F

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
    # probabilities (where the book's +1e-7 inside the log, which backprop
    # ignores, matters), the two gradients must agree closely.
    assume(np.abs(x0 @ W1 + b1).min() > 1e-3)
    probs = host(F.softmax(net.predict(backend.asarray(x0))))
    assume(probs[np.arange(batch), labels].min() > 1e-3)
    x, t = backend.asarray(x0), backend.asarray(labels)
    num, grad = net.numerical_gradient(x, t), net.gradient(x, t)
    for key in grad:
        g, n = host(grad[key]), host(num[key])
        np.testing.assert_allclose(n, g, rtol=1e-3, atol=1e-6, err_msg=key)


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
