"""The book's SoftmaxWithLoss as compiled passes, NumPy's bits (the activations: ``activations.py``).

What a layer returns stays a fresh array, as in the book; the gain is fewer
passes over memory: softmax and the picked probabilities come out of one pass
(the reference computes exp twice), and the backward is one pass. exp and log
stay NumPy's ufuncs, sums keep NumPy's order (``reduce.py``). Affine keeps the
reference code: its time is its two or three matrix products, which must be
NumPy's own anyway.

The backend calls these only for NumPy float32/float64 arrays that are
C-contiguous and of one dtype (``fits``); anything else takes the generic path.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .reduce import pairwise

_jit = numba.njit(cache=True, error_model="numpy")
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def fits(*arrays: Any) -> bool:
    """NumPy float arrays of one dtype, C-contiguous: what the passes below were written for."""
    dtype = arrays[0].dtype
    if dtype not in FLOATS:
        return False
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous:
            return False
    return True


@_jit
def _shift_rows(x, z):  # type: ignore[no-untyped-def]
    """z = x - rowmax(x) (NumPy's max propagates nan)."""
    n, m = x.shape
    for i in range(n):
        top = x[i, 0]
        for k in range(1, m):
            v = x[i, k]
            if v > top or v != v:
                top = v
        for k in range(m):
            z[i, k] = x[i, k] - top


@_jit
def _softmax_picked(e, labels, picked):  # type: ignore[no-untyped-def]
    """e = e / rowsum(e) in place (rowsum in NumPy's pairwise order); picked[n] = y[n, t[n]] + 1e-7."""
    n, m = e.shape
    delta = e.dtype.type(1e-7)
    for i in range(n):
        total = e.dtype.type(0) + pairwise(e[i], 0, m, False)
        for k in range(m):
            e[i, k] = e[i, k] / total
        label = labels[i]
        if label < 0 or label >= m:
            raise IndexError("class label out of range")
        picked[i] = e[i, label] + delta


def softmax_cross_entropy(x: Any, t: Any) -> tuple[Any, Any]:
    """(loss, softmax(x)) as the reference computes them, for labels or one-hot rows."""
    y = np.empty_like(x)
    _shift_rows(x, y)
    np.exp(y, out=y)
    labels = t if t.ndim == 1 else t.argmax(axis=1)
    picked = np.empty(x.shape[0], x.dtype)
    _softmax_picked(y, labels, picked)
    np.log(picked, out=picked)
    return -np.sum(picked) / x.shape[0], y


@_jit
def _backward_labels(y, t, dx):  # type: ignore[no-untyped-def]
    n, m = y.shape
    one = y.dtype.type(1)
    batch = y.dtype.type(n)
    for i in range(n):
        for k in range(m):
            v = y[i, k]
            dx[i, k] = (v - one) / batch if k == t[i] else v / batch


@_jit
def _backward_onehot(y, t, dx):  # type: ignore[no-untyped-def]
    n, m = y.shape
    batch = y.dtype.type(n)
    for i in range(n):
        for k in range(m):
            dx[i, k] = (y[i, k] - t[i, k]) / batch


def softmax_cross_entropy_backward(y: Any, t: Any) -> Any:
    dx = np.empty_like(y)
    (_backward_labels if t.ndim == 1 else _backward_onehot)(y, t, dx)
    return dx
