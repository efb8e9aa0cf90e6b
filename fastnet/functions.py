"""Activations and losses under the book's names, run on the active backend."""

from __future__ import annotations

from typing import Any

from .backend import get_backend

__all__ = [
    "identity_function",
    "step_function",
    "sigmoid",
    "sigmoid_grad",
    "relu",
    "relu_grad",
    "softmax",
    "mean_squared_error",
    "sum_squared_error",
    "cross_entropy_error",
]

Array = Any


def identity_function(x: Array) -> Array:
    """Return `x` unchanged (the output activation of a regression net)."""
    return x


def step_function(x: Array) -> Array:
    """1 where x > 0, else 0, as integers."""
    backend = get_backend()
    return backend.step_function(backend.check(x, "x"))


def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)), elementwise."""
    backend = get_backend()
    return backend.sigmoid(backend.check(x, "x"))


def sigmoid_grad(x: Array) -> Array:
    """Derivative of the sigmoid at x: (1 - sigmoid(x)) * sigmoid(x)."""
    backend = get_backend()
    return backend.sigmoid_grad(backend.check(x, "x"))


def relu(x: Array) -> Array:
    """max(0, x), elementwise."""
    backend = get_backend()
    return backend.relu(backend.check(x, "x"))


def relu_grad(x: Array) -> Array:
    """1 where x >= 0, else 0 (the book's convention at 0)."""
    backend = get_backend()
    return backend.relu_grad(backend.check(x, "x"))


def softmax(x: Array) -> Array:
    """Softmax over the last axis of a vector or a batch of rows; overflow-safe."""
    backend = get_backend()
    return backend.softmax(backend.check(x, "x"))


def _pair(y: Array, t: Array) -> tuple[Any, Array, Array]:
    backend = get_backend()
    return backend, backend.check(y, "y"), backend.check(t, "t")


def mean_squared_error(y: Array, t: Array) -> Array:
    """0.5 * sum((y - t)**2): the book's sum-of-squares error."""
    backend, y, t = _pair(y, t)
    if y.shape != t.shape:
        raise ValueError(f"y and t must have the same shape, got y {y.shape} and t {t.shape}")
    return backend.mean_squared_error(y, t)


sum_squared_error = mean_squared_error


def cross_entropy_error(y: Array, t: Array) -> Array:
    """Mean over the batch of -log(y[label] + 1e-7).

    `y` holds probabilities, one row per sample (or a single 1-D sample);
    `t` holds one-hot rows of the same shape or one class index per sample.
    """
    backend, y, t = _pair(y, t)
    rows = 1 if y.ndim == 1 else y.shape[0]
    one_hot = t.size == y.size
    if y.ndim not in (1, 2) or (not one_hot and t.size != rows):
        raise ValueError(
            f"t must be one-hot with y's shape {y.shape} or hold {rows} class "
            f"index(es), got t of shape {t.shape}"
        )
    if not one_hot and t.dtype.kind not in "iu":
        raise TypeError(f"class indices in t must be integers, got dtype {t.dtype}")
    return backend.cross_entropy_error(y, t)
