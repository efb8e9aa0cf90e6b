"""Argument checks shared by the public entry points.

Each runs once per public call, on shapes and dtypes (host metadata, no
device sync) and, for targets, one pass over the labels. Nothing here is
called inside a kernel or a per-step loop of a backend.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

__all__ = ["Number", "floating", "need_forward", "numeric", "real", "same_shape", "targets"]

Array = Any


def numeric(backend: Any, x: Any, name: str) -> Array:
    """`x` as `backend`'s array, refusing strings, objects and complex numbers."""
    x = backend.check(x, name)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def floating(backend: Any, x: Any, name: str, why: str = "") -> Array:
    """`x` as `backend`'s array of a floating-point dtype; `why` says what an integer array would break."""
    x = backend.check(x, name)
    if x.dtype.kind != "f":
        hint = why or f"convert it once with {name}.astype(numpy.float64)"
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}; {hint}")
    return x


def same_shape(a: Array, b: Array, name_a: str, name_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {name_a} {tuple(a.shape)} "
            f"and {name_b} {tuple(b.shape)}"
        )


def targets(
    backend: Any, t: Any, n: int, k: int, name: str = "t", x_name: str = "x", *, once: bool = False
) -> Array:
    """Check targets for a batch of `n` samples and `k` classes; return them as an array.

    Class labels: integers of shape (n,) (or a column (n, 1)) in 0..k-1. One-hot: shape (n, k),
    each row exactly one 1 and the rest 0. ``once``: data checked a single
    time (a trainer's), so a GPU backend checks values too.
    """
    if t is None:
        raise TypeError(f"{name} is missing: give class labels (N,) or one-hot rows (N, {k})")
    t = backend.check(t, name)
    if t.ndim == 2 and t.shape[1] == 1 and k != 1:  # labels as a column, as ch07/gradient_check.py passes them
        if t.dtype.kind not in "iu":
            raise TypeError(
                f"{name} of shape {tuple(t.shape)} reads as class labels given as a column, which must be "
                f"integers, got dtype {t.dtype}; use {name}.astype(int) (or one-hot rows of shape ({n}, {k}))"
            )
        t = t.reshape(-1)
    if t.ndim == 1:
        if t.shape[0] != n:
            raise ValueError(f"{x_name} has {n} samples but {name} has {t.shape[0]} labels")
        if t.dtype.kind not in "iu":
            raise TypeError(
                f"class labels {name} must be integers, got dtype {t.dtype}; "
                f"use {name}.astype(int) (or one-hot rows of shape ({n}, {k}))"
            )
    elif t.ndim == 2:
        if tuple(t.shape) != (n, k):
            raise ValueError(f"one-hot {name} must have shape ({n}, {k}), got {tuple(t.shape)}")
        if t.dtype.kind not in "biuf":
            raise TypeError(f"one-hot {name} must hold numbers, got dtype {t.dtype}")
    else:
        raise ValueError(
            f"{name} must hold labels ({n},) or one-hot rows ({n}, {k}), got shape {tuple(t.shape)}"
        )
    if n:
        (backend.check_targets_once if once else backend.check_targets)(t, k, name)
    return t


def need_forward(state: Any, layer: object) -> None:
    """Refuse ``backward`` before ``forward`` (the book's layers keep state in between)."""
    if state is None:
        raise RuntimeError(
            f"{type(layer).__name__}.backward was called before forward: run forward on the batch first"
        )


def real(value: Any, name: str, *, positive: bool = False) -> float:
    """A finite real number (not a bool); with `positive`, also > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    number = float(value)
    if positive and not number > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def fraction(value: Any, name: str) -> float:
    """A number in [0, 1) (momentum, decay rates, Adam's betas)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def non_negative(value: Any, name: str) -> float:
    """A finite number >= 0 (weight decay)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


class Number:
    """A hyper-parameter attribute, checked on every assignment and kept as a Python float.

    A NumPy scalar set later (a learning-rate schedule from ``numpy.linspace``)
    would make NumPy compute a float32 net's update in float64, while a
    compiled kernel rounds the number to float32 first; stored as a float, the
    number means the same on every backend.
    """

    def __init__(self, check: Callable[[Any, str], float], default: float | None = None) -> None:
        self.check, self.default = check, default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__.get(self.name, self.default)
        if value is None:
            raise AttributeError(self.name)
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = self.check(value, self.name)


def layer_params(backend: Any, params: Any, depth: int, *, train: bool = False) -> None:
    """Refuse parameters a user replaced with the wrong kind, shape or type.

    W1..Wn must be floating matrices chained by shape and b1..bn vectors of
    their W's width; with `train`, all must be writable (updated in place).
    The error names the parameter and what was expected.
    """
    width = None
    for i in range(1, depth + 1):
        for name in (f"W{i}", f"b{i}"):
            value = params.get(name) if hasattr(params, "get") else None
            if value is None:
                raise ValueError(f"params has no {name!r}: the net needs W1..W{depth} and b1..b{depth}")
            if not backend.owns(value):
                backend.check(value, f"params[{name!r}]")  # another backend's array: names the fix
                raise TypeError(
                    f"params[{name!r}] must be a {backend.xp.__name__} array, got {type(value).__name__}; "
                    f"assign an array (e.g. numpy.asarray(...)) of the net's dtype"
                )
            if value.dtype.kind != "f":
                raise TypeError(f"params[{name!r}] must be floating point, got dtype {value.dtype}")
            if train and not getattr(value.flags, "writeable", True):
                raise ValueError(
                    f"params[{name!r}] is read-only; training updates it in place (assign a writable copy)"
                )
        W, b = params[f"W{i}"], params[f"b{i}"]
        if W.ndim != 2 or (width is not None and W.shape[0] != width):
            want = f"({width}, n)" if width is not None else "(inputs, n)"
            raise ValueError(f"params['W{i}'] must be a matrix of shape {want}, got shape {tuple(W.shape)}")
        width = W.shape[1]
        if tuple(b.shape) != (width,):
            raise ValueError(
                f"params['b{i}'] must have shape ({width},) to match W{i} {tuple(W.shape)}, "
                f"got {tuple(b.shape)}"
            )


def all_finite(backend: Any, arrays: Any) -> bool:
    """Whether every array holds only finite numbers (on a GPU, one sync per array)."""
    xp = backend.xp
    return all(bool(xp.isfinite(a).all()) for a in arrays)


def writable_params(params: Any, why: str = "training updates it in place") -> None:
    """Refuse read-only parameters before a training step (or a numerical gradient) changes them in place."""
    for name, value in params.items():
        if not getattr(getattr(value, "flags", None), "writeable", True):
            raise ValueError(f"params[{name!r}] is read-only; {why} (assign a writable copy)")
