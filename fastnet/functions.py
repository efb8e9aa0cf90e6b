"""Activations and losses under the book's names, run on the active backend."""

from __future__ import annotations

from typing import Any

from .checks import numeric, same_shape
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
    return backend.step_function(numeric(backend, x, "x"))


def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)), elementwise."""
    backend = get_backend()
    return backend.sigmoid(numeric(backend, x, "x"))


def sigmoid_grad(x: Array) -> Array:
    """Derivative of the sigmoid at x: (1 - sigmoid(x)) * sigmoid(x)."""
    backend = get_backend()
    return backend.sigmoid_grad(numeric(backend, x, "x"))


def relu(x: Array) -> Array:
    """max(0, x), elementwise."""
    backend = get_backend()
    return backend.relu(numeric(backend, x, "x"))


def relu_grad(x: Array) -> Array:
    """1 where x >= 0, else 0 (the book's convention at 0)."""
    backend = get_backend()
    return backend.relu_grad(numeric(backend, x, "x"))


def softmax(x: Array) -> Array:
    """Softmax over the last axis of a vector or a batch of rows; overflow-safe."""
    backend = get_backend()
    return backend.softmax(numeric(backend, x, "x"))


def _pair(y: Array, t: Array) -> tuple[Any, Array, Array]:
    backend = get_backend()
    return backend, numeric(backend, y, "y"), numeric(backend, t, "t")


def mean_squared_error(y: Array, t: Array) -> Array:
    """0.5 * sum((y - t)**2): the book's sum-of-squares error."""
    backend, y, t = _pair(y, t)
    same_shape(y, t, "y", "t")
    return backend.mean_squared_error(y, t)


sum_squared_error = mean_squared_error


def cross_entropy_error(y: Array, t: Array) -> Array:
    """Mean over the batch of -log(y[label] + 1e-7).

    `y` holds probabilities, one row per sample (or a single 1-D sample);
    `t` holds one-hot rows of the same shape or one class index per sample.
    """
    backend, y, t = _pair(y, t)
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be one sample (k,) or a batch (N, k) of probabilities, got shape {y.shape}")
    rows = 1 if y.ndim == 1 else y.shape[0]
    if y.size == 0:
        raise ValueError(f"y is an empty batch (shape {y.shape})")
    # Decided by shape, not size: a t of y's size in another shape (transposed,
    # flattened) would otherwise pick the wrong entries and give a wrong number.
    shape = tuple(t.shape)
    one_hot = shape == tuple(y.shape)
    labels = shape == (rows,) or (y.ndim == 1 and shape == ())
    if not one_hot and not labels:
        k = y.shape[-1]
        want = f"one-hot ({k},) or one class index" if y.ndim == 1 else f"one-hot rows {tuple(y.shape)} or {rows} class indices ({rows},)"
        if t.size == y.size:
            got = f"shape {shape}: y's size in another shape (a transposed or reshaped one-hot?)"
        elif t.ndim == 1 and y.ndim == 2:
            got = f"{shape[0]} class indices but y has {rows} rows"
        else:
            got = f"shape {shape}"
        raise ValueError(f"t must match y of shape {tuple(y.shape)}: expected {want}, got {got}")
    if not one_hot and t.dtype.kind not in "iu":
        raise TypeError(f"class indices in t must be integers, got dtype {t.dtype}")
    # labels in 0..k-1 and one-hot rows really one-hot; otherwise the loss is silently wrong
    backend.check_targets(t.reshape(rows, -1) if one_hot else t.reshape(-1), y.shape[-1])
    return backend.cross_entropy_error(y, t)
