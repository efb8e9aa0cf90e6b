"""Layers: the ch.5 computational-graph examples and forward/backward by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hostarrays import host

from fastnet.layers import (
    AddLayer,
    Affine,
    BatchNormalization,
    Dropout,
    MulLayer,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)


def test_buy_apple():
    apple, apple_num, tax = 100, 2, 1.1
    mul_apple, mul_tax = MulLayer(), MulLayer()
    price = mul_tax.forward(mul_apple.forward(apple, apple_num), tax)
    dapple_price, dtax = mul_tax.backward(1)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert price == pytest.approx(220)
    assert (dapple, int(dapple_num), dtax) == (pytest.approx(2.2), 110, 200)


def test_buy_apple_orange():
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()
    all_price = add.forward(mul_apple.forward(apple, apple_num), mul_orange.forward(orange, orange_num))
    price = mul_tax.forward(all_price, tax)
    dall, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add.backward(dall)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert price == pytest.approx(715)
    assert (dapple_num, dapple, dorange, dorange_num, dtax) == pytest.approx((110, 2.2, 3.3, 165, 650))


def test_relu_layer(backend):
    x = backend.asarray(np.array([[1.0, -0.5], [-2.0, 3.0]]))
    layer = Relu()
    assert host(layer.forward(x)).tolist() == [[1.0, 0.0], [0.0, 3.0]]
    dout = backend.asarray(np.ones((2, 2)))
    assert host(layer.backward(dout)).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert host(dout).tolist() == [[1.0, 1.0], [1.0, 1.0]]  # the caller's dout is untouched


def test_sigmoid_layer(backend):
    x0 = np.array([[-1.0, 0.0, 2.0]])
    layer = Sigmoid()
    y = host(layer.forward(backend.asarray(x0)))
    s = 1 / (1 + np.exp(-x0))
    np.testing.assert_allclose(y, s, rtol=1e-15)
    dx = host(layer.backward(backend.asarray(np.full((1, 3), 2.0))))
    np.testing.assert_allclose(dx, 2.0 * (1 - s) * s, rtol=1e-15)


def test_affine_layer_flattens(backend):
    rng = np.random.default_rng(0)
    x0, W0, b0 = rng.standard_normal((2, 3, 4)), rng.standard_normal((12, 5)), rng.standard_normal(5)
    layer = Affine(backend.asarray(W0), backend.asarray(b0))
    out = host(layer.forward(backend.asarray(x0)))
    np.testing.assert_allclose(out, x0.reshape(2, 12) @ W0 + b0, rtol=1e-12)
    dout = rng.standard_normal((2, 5))
    dx = host(layer.backward(backend.asarray(dout)))
    assert dx.shape == (2, 3, 4)
    np.testing.assert_allclose(dx, (dout @ W0.T).reshape(2, 3, 4), rtol=1e-12)
    np.testing.assert_allclose(host(layer.dW), x0.reshape(2, 12).T @ dout, rtol=1e-12)
    np.testing.assert_allclose(host(layer.db), dout.sum(axis=0), rtol=1e-12)


def test_affine_wrong_width():
    layer = Affine(np.zeros((4, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="expects 4"):
        layer.forward(np.zeros((3, 5)))


@pytest.mark.parametrize("one_hot", [True, False])
def test_softmax_with_loss(backend, one_hot):
    x0 = np.array([[0.3, 2.9, 4.0], [1.0, 1.0, 1.0]])
    labels = np.array([2, 0])
    t0 = np.eye(3)[labels] if one_hot else labels
    layer = SoftmaxWithLoss()
    loss = float(layer.forward(backend.asarray(x0), backend.asarray(t0)))
    y = np.exp(x0) / np.exp(x0).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(y[[0, 1], labels] + 1e-7)), rel=1e-12)
    np.testing.assert_allclose(host(layer.backward()), (y - np.eye(3)[labels]) / 2, atol=1e-15)


def test_dropout(backend):
    x = backend.asarray(np.ones((200, 50)))
    layer = Dropout(0.5, seed=0)
    y = host(layer.forward(x))
    kept = (y != 0).mean()
    assert 0.4 < kept < 0.6
    assert np.array_equal(host(layer.backward(x)), y)
    np.testing.assert_allclose(host(layer.forward(x, train_flg=False)), 0.5)
    with pytest.raises(ValueError, match="dropout_ratio"):
        Dropout(1.5)


def test_batchnorm_forward_backward(backend):
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((8, 4)) * 3 + 1
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    layer = BatchNormalization(backend.asarray(gamma), backend.asarray(beta))
    y = host(layer.forward(backend.asarray(x0)))
    xn = (x0 - x0.mean(0)) / np.sqrt(x0.var(0) + 10e-7)
    np.testing.assert_allclose(y, gamma * xn + beta, rtol=1e-10, atol=1e-12)

    # backward against a central difference of sum(y * w)
    w = rng.standard_normal((8, 4))
    dx = host(layer.backward(backend.asarray(w)))

    def f(x):
        m, v = x.mean(0), x.var(0)
        return np.sum((gamma * (x - m) / np.sqrt(v + 10e-7) + beta) * w)

    num = np.zeros_like(x0)
    for idx in np.ndindex(*x0.shape):
        xp_, xm = x0.copy(), x0.copy()
        xp_[idx] += 1e-6
        xm[idx] -= 1e-6
        num[idx] = (f(xp_) - f(xm)) / 2e-6
    np.testing.assert_allclose(dx, num, atol=1e-6)
    np.testing.assert_allclose(host(layer.dgamma), np.sum(xn * w, axis=0), rtol=1e-10)
