"""Compiled versions of the built-in activations (``fastnet.activations``), bit for bit NumPy's.

For each built-in, by its ``kernel`` name:

* ``bias_forward(a, b)``: a = act(a + b) in place (a net's hidden layer);
* ``forward(x) -> (out, cache)`` and ``backward(dout, cache)``: the layer's
  pair, as the definition's ``forward``/``backward`` return them;
* ``backward_sums(d, out, db)``: d = act'(...) * d in place from the
  output, and db = the column sums of the new d (the next bias's gradient);
* ``code``: how the numerical-gradient kernels name it (``numgrad_terms``).

exp and tanh stay NumPy's own ufuncs applied in place (their bits differ from
a compiled libm call on some CPUs); everything else is one compiled pass in
NumPy's order of operations, with constants of the array's dtype.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numba
import numpy as np

from .kernels import add_bias
from .reduce import column_sums

_jit = numba.njit(cache=True, error_model="numpy")


class Compiled(NamedTuple):
    bias_forward: Callable[[Any, Any], None]
    forward: Callable[[Any], tuple[Any, Any]]
    backward: Callable[[Any, Any], Any]
    backward_sums: Callable[[Any, Any, Any], None]
    code: int


# ------------------------------------------------------------------ relu


@_jit
def bias_relu(a, b):  # type: ignore[no-untyped-def]
    """a = relu(a + b) in place; 0 wherever a + b <= 0, as the definition's forward gives."""
    zero = a.dtype.type(0)
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            v = a[i, j] + b[j]
            a[i, j] = zero if v <= 0 else v


@_jit
def _relu_forward(x, out, mask):  # type: ignore[no-untyped-def]
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        off = v <= 0
        mask[i] = off
        out[i] = zero if off else v


@_jit
def _relu_backward(d, mask):  # type: ignore[no-untyped-def]
    zero = d.dtype.type(0)
    for i in range(d.size):
        if mask[i]:
            d[i] = zero


@_jit
def relu_backward_sums(d, out, db):  # type: ignore[no-untyped-def]
    """d = 0 where the relu output is 0 (its input was <= 0); db = sum of d over axis 0."""
    zero = d.dtype.type(0)
    n, m = d.shape
    for j in range(m):
        db[j] = zero
    for i in range(n):
        for j in range(m):
            v = zero if out[i, j] == 0 else d[i, j]
            d[i, j] = v
            db[j] += v
    if m == 1:  # one column: NumPy sums it pairwise
        column_sums(d, db)


def relu_forward(x: Any) -> tuple[Any, Any]:
    out = np.empty_like(x)
    mask = np.empty(x.shape, np.bool_)
    _relu_forward(x.reshape(-1), out.reshape(-1), mask.reshape(-1))
    return out, mask


def relu_backward(d: Any, mask: Any) -> Any:
    _relu_backward(d.reshape(-1), mask.reshape(-1))
    return d


# --------------------------------------------------------------- sigmoid


@_jit
def bias_negate(a, b):  # type: ignore[no-untyped-def]
    """a = -(a + b) in place: the argument of the sigmoid's exp."""
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            a[i, j] = -(a[i, j] + b[j])


@_jit
def _negate(x, out):  # type: ignore[no-untyped-def]
    for i in range(x.size):
        out[i] = -x[i]


@_jit
def sigmoid_finish(e):  # type: ignore[no-untyped-def]
    """e = 1 / (1 + e) in place, once e holds exp(-x)."""
    one = e.dtype.type(1)
    flat = e.reshape(-1)
    for i in range(flat.size):
        flat[i] = one / (one + flat[i])


@_jit
def _sigmoid_backward(d, out):  # type: ignore[no-untyped-def]
    one = d.dtype.type(1)
    for i in range(d.size):
        d[i] = d[i] * (one - out[i]) * out[i]


@_jit
def sigmoid_backward_sums(d, out, db):  # type: ignore[no-untyped-def]
    """d = d * (1 - out) * out in place; db = sum of d over axis 0."""
    one = d.dtype.type(1)
    n, m = d.shape
    for j in range(m):
        db[j] = d.dtype.type(0)
    for i in range(n):
        for j in range(m):
            v = d[i, j] * (one - out[i, j]) * out[i, j]
            d[i, j] = v
            db[j] += v
    if m == 1:
        column_sums(d, db)


def sigmoid_bias_forward(a: Any, b: Any) -> None:
    bias_negate(a, b)
    np.exp(a, out=a)
    sigmoid_finish(a)


def sigmoid_forward(x: Any) -> tuple[Any, Any]:
    out = np.empty_like(x)
    _negate(x.reshape(-1), out.reshape(-1))
    np.exp(out, out=out)
    sigmoid_finish(out)
    return out, out


def sigmoid_backward(d: Any, out: Any) -> Any:
    _sigmoid_backward(d.reshape(-1), out.reshape(-1))
    return d


# ------------------------------------------------------------------ tanh


@_jit
def _tanh_backward(d, out):  # type: ignore[no-untyped-def]
    one = d.dtype.type(1)
    for i in range(d.size):
        d[i] = d[i] * (one - out[i] * out[i])


@_jit
def tanh_backward_sums(d, out, db):  # type: ignore[no-untyped-def]
    """d = d * (1 - out * out) in place; db = sum of d over axis 0."""
    one = d.dtype.type(1)
    n, m = d.shape
    for j in range(m):
        db[j] = d.dtype.type(0)
    for i in range(n):
        for j in range(m):
            o = out[i, j]
            v = d[i, j] * (one - o * o)
            d[i, j] = v
            db[j] += v
    if m == 1:
        column_sums(d, db)


def tanh_bias_forward(a: Any, b: Any) -> None:
    add_bias(a, b)
    np.tanh(a, out=a)


def tanh_forward(x: Any) -> tuple[Any, Any]:
    out = np.tanh(x)
    return out, out


def tanh_backward(d: Any, out: Any) -> Any:
    _tanh_backward(d.reshape(-1), out.reshape(-1))
    return d


# The numerical-gradient kernels' codes (``numgrad_terms.activate``).
RELU, SIGMOID, TANH = 0, 1, 2

KERNELS: dict[str, Compiled] = {
    "relu": Compiled(bias_relu, relu_forward, relu_backward, relu_backward_sums, RELU),
    "sigmoid": Compiled(sigmoid_bias_forward, sigmoid_forward, sigmoid_backward, sigmoid_backward_sums, SIGMOID),
    "tanh": Compiled(tanh_bias_forward, tanh_forward, tanh_backward, tanh_backward_sums, TANH),
}
