"""Numerical differentiation and gradient descent: the book's ch.4 values."""

from __future__ import annotations

import numpy as np
import pytest
from hostarrays import host

from fastnet.gradient import gradient_descent, numerical_diff, numerical_gradient


def function_1(x):
    return 0.01 * x**2 + 0.1 * x


def function_2(x):
    return x[0] ** 2 + x[1] ** 2


def test_numerical_diff_book_values():
    assert numerical_diff(function_1, 5) == pytest.approx(0.1999999999990898, abs=1e-12)
    assert numerical_diff(function_1, 10) == pytest.approx(0.2999999999986347, abs=1e-12)


@pytest.mark.parametrize(
    "point, expected", [((3.0, 4.0), (6.0, 8.0)), ((0.0, 2.0), (0.0, 4.0)), ((3.0, 0.0), (6.0, 0.0))]
)
def test_numerical_gradient_book_values(backend, point, expected):
    x = backend.asarray(np.array(point))
    grad = host(numerical_gradient(function_2, x))
    np.testing.assert_allclose(grad, expected, atol=1e-7)
    assert host(x).tolist() == list(point)  # restored exactly


def test_numerical_gradient_any_shape_restores_x(backend):
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((2, 3, 4))
    x = backend.asarray(x0.copy())
    grad = host(numerical_gradient(lambda a: (a**3).sum(), x))
    np.testing.assert_allclose(grad, 3 * x0**2, rtol=1e-6, atol=1e-8)
    assert np.array_equal(host(x), x0)


def test_numerical_gradient_rejects_integer_arrays():
    with pytest.raises(TypeError, match="floating-point"):
        numerical_gradient(function_2, np.array([3, 4]))


def test_gradient_descent_book_value(backend):
    init = backend.asarray(np.array([-3.0, 4.0]))
    x = host(gradient_descent(function_2, init, lr=0.1, step_num=100))
    np.testing.assert_allclose(x, [-6.11110793e-10, 8.14814391e-10], rtol=1e-6)
    assert host(init).tolist() == [-3.0, 4.0]  # unlike the book, the start is kept


def test_gradient_descent_history_and_bad_rates():
    x, hist = gradient_descent(function_2, np.array([-3.0, 4.0]), lr=0.1, step_num=20, return_history=True)
    assert hist.shape == (20, 2)
    assert hist[0].tolist() == [-3.0, 4.0]
    big = gradient_descent(function_2, np.array([-3.0, 4.0]), lr=10.0, step_num=100)
    assert abs(big[0]) > 1e10  # the book's "too large" example diverges
    small = gradient_descent(function_2, np.array([-3.0, 4.0]), lr=1e-10, step_num=100)
    np.testing.assert_allclose(small, [-3.0, 4.0], atol=1e-6)  # ... and "too small" barely moves
    with pytest.raises(ValueError, match="step_num"):
        gradient_descent(function_2, np.array([1.0, 1.0]), step_num=-1)
