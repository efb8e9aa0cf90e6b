"""Numerical differentiation and gradient descent (the book's chapter 4).

``numerical_gradient`` runs on the active backend: the plain loop by default,
and a backend may run it compiled (the numba backend does when ``f`` is a
Numba-compiled function; see its documentation).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy

from .checks import floating, real
from .backend import get_backend
from .backend.loops import numerical_gradient_loop

__all__ = ["numerical_diff", "numerical_gradient", "numerical_gradient_loop", "gradient_descent"]

Array = Any


def numerical_diff(f: Callable[[Any], Any], x: Any, h: float = 1e-4) -> Any:
    """Central difference (f(x+h) - f(x-h)) / 2h of a one-variable function."""
    return (f(x + h) - f(x - h)) / (2 * h)


def _check_float_array(x: Any, name: str) -> Array:
    why = "a perturbation of 1e-4 would be rounded away (write e.g. np.array([3.0, 4.0]))"
    return floating(get_backend(), x, name, why)


def numerical_gradient(f: Callable[[Array], Any], x: Array, h: float = 1e-4) -> Array:
    """Gradient of scalar `f` at `x` (any shape) by central differences.

    Each element of `x` is perturbed in place by +h and -h and restored
    exactly afterwards, so `f` may read `x` (or arrays that alias it).
    """
    if not callable(f):
        raise TypeError(f"f must be a function of x returning a number, got {type(f).__name__}")
    h = real(h, "h", positive=True)
    x = _check_float_array(x, "x")
    try:
        return get_backend().numerical_gradient(f, x, h)
    except (TypeError, ValueError):
        _check_scalar(f, x)  # only on the error path: say what was wrong with f
        raise


def _check_scalar(f: Callable[[Array], Any], x: Array) -> None:
    value = f(x)
    if numpy.ndim(value) != 0:
        raise ValueError(
            f"f must return a single number (the loss), got a value of shape {numpy.shape(value)}; "
            f"sum it or take its mean"
        ) from None


def gradient_descent(
    f: Callable[[Array], Any],
    init_x: Array,
    lr: float = 0.01,
    step_num: int = 100,
    *,
    return_history: bool = False,
) -> Array | tuple[Array, Array]:
    """Minimise `f` from `init_x` with `step_num` steps of ``x -= lr * grad``.

    Returns the final x; with ``return_history=True`` also the array of the
    points visited before each step (shape (step_num, *x.shape)), for plots.
    Unlike the book, `init_x` itself is left unchanged.
    """
    if not isinstance(step_num, (int, numpy.integer)) or step_num < 0:
        raise ValueError(f"step_num must be a non-negative integer, got {step_num!r}")
    lr = real(lr, "lr", positive=True)
    x = _check_float_array(init_x, "init_x").copy()
    xp = get_backend().xp
    history = []
    for _ in range(step_num):
        if return_history:
            history.append(x.copy())
        x -= lr * numerical_gradient(f, x)
    if return_history:
        return x, (xp.stack(history) if history else xp.empty((0, *x.shape), x.dtype))
    return x
