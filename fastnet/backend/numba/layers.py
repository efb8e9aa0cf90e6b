"""The book's layers (Affine, the activations, SoftmaxWithLoss) as compiled passes, NumPy's bits.

What a layer returns stays a fresh array, as in the book (a caller may keep
``dW`` or ``dx``); the gain is fewer passes over memory: the bias is added
into the product's output, softmax and the picked probabilities come out of
one pass, and the backward of softmax-with-loss is one pass. exp and log stay
NumPy's ufuncs, sums keep NumPy's order (``reduce.py``).

The backend calls these only for NumPy float32/float64 arrays that are
C-contiguous and of one dtype (``fits``); anything else takes the generic path.

Large results come from a ``Pool``: an array handed out before is written
again only once nothing but the pool refers to it (``sys.getrefcount``), so a
caller who keeps a result, or a view of it, always keeps its values. Fresh
arrays this large are mapped anew by the allocator on every call and each
page faults in again; reusing them is what makes the layer-by-layer ch.5 net
faster than NumPy's (``benchmarks/bench_step.py``, ``layers`` cases).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numba
import numpy as np

from .kernels import add_bias
from .reduce import pairwise, column_sums

_jit = numba.njit(cache=True, error_model="numpy")
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


POOLED_BYTES = 64 * 1024  # smaller arrays come from malloc's free lists, cheaply
_PER_SHAPE = 4


class Pool:
    """Arrays handed out before, reused once nobody else refers to them; one per thread."""

    def __init__(self) -> None:
        self.local = threading.local()

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        if np.prod(shape) * np.dtype(dtype).itemsize < POOLED_BYTES:
            return np.empty(shape, dtype)
        table = self.local.__dict__.setdefault("arrays", {})
        arrays = table.setdefault((shape, np.dtype(dtype).char), [])
        for a in arrays:
            if sys.getrefcount(a) == 3:  # the list, this loop and the call's argument: free
                return a
        a = np.empty(shape, dtype)
        if len(arrays) < _PER_SHAPE:
            arrays.append(a)
        return a


POOL = Pool()


def fits(*arrays: Any) -> bool:
    """NumPy float arrays of one dtype, C-contiguous: what the passes below were written for."""
    dtype = arrays[0].dtype
    if dtype not in FLOATS:
        return False
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous:
            return False
    return True


def affine_forward(x: Any, W: Any, b: Any) -> Any:
    out = np.dot(x, W, out=POOL.empty((x.shape[0], W.shape[1]), x.dtype))
    add_bias(out, b)
    return out


def affine_backward(dout: Any, x: Any, W: Any, need_dx: bool) -> tuple[Any, Any, Any]:
    dx = np.dot(dout, W.T, out=POOL.empty((dout.shape[0], W.shape[0]), dout.dtype)) if need_dx else None
    dW = np.dot(x.T, dout, out=POOL.empty(W.shape, dout.dtype))
    db = np.empty(dout.shape[1], dout.dtype)
    column_sums(dout, db)
    return dx, dW, db


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
