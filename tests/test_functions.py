"""The book's printed values for activations and losses, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hostarrays import host

import fastnet
from fastnet import functions as F

T = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
Y_GOOD = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]
Y_BAD = [0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0]


def arr(backend, values, dtype=np.float64):
    return backend.asarray(np.array(values, dtype=dtype))


def test_step_function(backend):
    out = host(F.step_function(arr(backend, [-1.0, 1.0, 2.0])))
    assert out.tolist() == [0, 1, 1]
    assert out.dtype.kind == "i"


def test_sigmoid_and_grad(backend):
    x = arr(backend, [-1.0, 1.0, 2.0])
    np.testing.assert_allclose(host(F.sigmoid(x)), [0.26894142, 0.73105858, 0.88079708], atol=1e-8)
    s = 1 / (1 + np.exp(-np.array([-1.0, 1.0, 2.0])))
    np.testing.assert_allclose(host(F.sigmoid_grad(x)), (1 - s) * s, rtol=1e-15)


def test_relu_and_grad(backend):
    x = arr(backend, [-1.0, 0.0, 2.0])
    assert host(F.relu(x)).tolist() == [0.0, 0.0, 2.0]
    assert host(F.relu_grad(x)).tolist() == [0.0, 1.0, 1.0]  # the book counts 0 as active


def test_identity():
    x = np.array([1.0, -2.0])
    assert F.identity_function(x) is x


def test_softmax_book_values(backend):
    y = host(F.softmax(arr(backend, [0.3, 2.9, 4.0])))
    np.testing.assert_allclose(y, [0.01821127, 0.24519181, 0.73659691], atol=1e-8)
    assert y.sum() == pytest.approx(1.0)


def test_softmax_batch_and_huge_logits(backend):
    x = arr(backend, [[1010.0, 1000.0, 990.0], [0.3, 2.9, 4.0]])
    y = host(F.softmax(x))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=1), [1.0, 1.0])
    np.testing.assert_allclose(y[1], [0.01821127, 0.24519181, 0.73659691], atol=1e-8)


def test_mean_squared_error_book_values(backend):
    assert float(F.mean_squared_error(arr(backend, Y_GOOD), arr(backend, T))) == pytest.approx(0.0975)
    assert float(F.sum_squared_error(arr(backend, Y_BAD), arr(backend, T))) == pytest.approx(0.5975)


def test_cross_entropy_book_values(backend):
    good = float(F.cross_entropy_error(arr(backend, Y_GOOD), arr(backend, T)))
    bad = float(F.cross_entropy_error(arr(backend, Y_BAD), arr(backend, T)))
    assert good == pytest.approx(0.510825457099338, rel=1e-14)
    assert bad == pytest.approx(2.302584092994546, rel=1e-14)


def test_cross_entropy_labels_equal_one_hot(backend):
    rng = np.random.default_rng(0)
    y = rng.random((4, 10))
    y /= y.sum(axis=1, keepdims=True)
    labels = np.array([2, 7, 0, 9])
    one_hot = np.eye(10)[labels]
    a = float(F.cross_entropy_error(backend.asarray(y), backend.asarray(one_hot)))
    b = float(F.cross_entropy_error(backend.asarray(y), backend.asarray(labels)))
    assert a == b
    assert a == pytest.approx(-np.mean(np.log(y[np.arange(4), labels] + 1e-7)), rel=1e-14)


def test_cross_entropy_bad_shapes():
    with pytest.raises(ValueError, match="t must match y of shape"):
        F.cross_entropy_error(np.full((4, 10), 0.1), np.array([1, 2]))
    with pytest.raises(TypeError, match="integers"):
        F.cross_entropy_error(np.full((2, 10), 0.1), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="same shape"):
        F.mean_squared_error(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize(
    "y, t, message",
    [
        # y's size in another shape: used to give 1.7533 for this pair
        (np.full((2, 2), 0.5), np.array([[1, 0, 0, 1]]), r"got shape \(1, 4\): y's size in another shape"),
        # a transposed one-hot: used to end in a bare IndexError
        (np.full((2, 3), 1 / 3), np.eye(3)[[0, 2]].T, r"got shape \(3, 2\): y's size in another shape"),
        # labels of the wrong count: used to end in an AxisError
        (np.full((3, 4), 0.25), np.array([[0, 1, 2, 3]]), r"one-hot rows \(3, 4\) or 3 class indices \(3,\), got shape \(1, 4\)"),
        (np.full((3, 4), 0.25), np.array([0, 1]), "got 2 class indices but y has 3 rows"),
        (np.full((3, 4), 0.25), np.zeros(12, dtype=int), r"got shape \(12,\): y's size"),
    ],
)
def test_cross_entropy_target_shape_must_match(y, t, message):
    with pytest.raises(ValueError, match=message):
        F.cross_entropy_error(y, t)


def test_three_layer_forward_ch3(backend):
    """The book's ch.3 three-layer network, forward only."""
    W1 = arr(backend, [[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]])
    b1 = arr(backend, [0.1, 0.2, 0.3])
    W2 = arr(backend, [[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]])
    b2 = arr(backend, [0.1, 0.2])
    W3 = arr(backend, [[0.1, 0.3], [0.2, 0.4]])
    b3 = arr(backend, [0.1, 0.2])
    x = arr(backend, [1.0, 0.5])
    z1 = F.sigmoid(x @ W1 + b1)
    z2 = F.sigmoid(z1 @ W2 + b2)
    y = F.identity_function(z2 @ W3 + b3)
    np.testing.assert_allclose(host(y), [0.31682708, 0.69627909], atol=1e-8)


def test_functions_accept_lists_on_cpu(cpu_backend):
    np.testing.assert_allclose(fastnet.sigmoid([0.0]), [0.5])
