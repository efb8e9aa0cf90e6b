"""Fused elementwise kernels of a training step, bit-for-bit equal to NumPy's.

The backend does the matrix products with NumPy's ``dot`` (NumPy's BLAS, into
reused buffers) and exp/log with NumPy's ufuncs in place; these kernels do the
rest in one pass each. Every formula keeps NumPy's association and types:
constants arrive as scalars of the array's dtype (a float64 literal would
promote float32 arithmetic), divisions stay divisions, no fastmath, sums in
NumPy's order (``reduce.py``). error_model="numpy": x/0 gives inf or nan as
in NumPy, and it lets loops vectorise.
"""

from __future__ import annotations

import numba
import numpy as np

from ._intrinsics import flush_line
from .reduce import _pairwise, column_sums, pairwise_sum, pairwise_sum_squares

_jit = numba.njit(cache=True, error_model="numpy")

# ------------------------------------------------------------------ forward


@_jit
def bias_relu(a, b):  # type: ignore[no-untyped-def]
    """a = relu(a + b) in place; 0 wherever a + b <= 0, as relu_forward does."""
    zero = a.dtype.type(0)
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            v = a[i, j] + b[j]
            a[i, j] = zero if v <= 0 else v


@_jit
def bias_negate(a, b):  # type: ignore[no-untyped-def]
    """a = -(a + b) in place: the argument of the sigmoid's exp."""
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            a[i, j] = -(a[i, j] + b[j])


@_jit
def sigmoid_finish(e):  # type: ignore[no-untyped-def]
    """e = 1 / (1 + e) in place, once e holds exp(-(x W + b))."""
    one = e.dtype.type(1)
    n, m = e.shape
    for i in range(n):
        for j in range(m):
            e[i, j] = one / (one + e[i, j])


@_jit
def add_bias(a, b):  # type: ignore[no-untyped-def]
    """a += b (broadcast over rows)."""
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            a[i, j] = a[i, j] + b[j]


@_jit
def bias_shift_rows(z, b):  # type: ignore[no-untyped-def]
    """z = (z + b) - rowmax(z + b) in place: softmax's overflow-safe shift."""
    n, m = z.shape
    for i in range(n):
        top = z[i, 0] + b[0]
        z[i, 0] = top
        for k in range(1, m):
            v = z[i, k] + b[k]
            z[i, k] = v
            if v > top or v != v:  # NumPy's max propagates nan
                top = v
        for k in range(m):
            z[i, k] = z[i, k] - top


# ------------------------------------------------- softmax + cross-entropy


@numba.njit(cache=True, inline="always")
def _row_total(e, i):  # type: ignore[no-untyped-def]
    m = e.shape[1]
    return e.dtype.type(0) + _pairwise(e[i], 0, m, False)


@_jit
def softmax_ce_labels(e, t, picked, dz, db):  # type: ignore[no-untyped-def]
    """From e = exp(shifted scores): picked[n] = y[n, t[n]] + 1e-7, dz = dL/dscores, db = sum(dz, 0).

    y = e / rowsum(e); dz is the book's backward: (y - onehot(t)) / batch, and
    db the last bias's gradient. Pass an empty dz to skip the backward part.
    """
    n, m = e.shape
    one = e.dtype.type(1)
    delta = e.dtype.type(1e-7)
    batch = e.dtype.type(n)
    backward = dz.shape[0] == n
    if backward:
        for k in range(m):
            db[k] = 0
    for i in range(n):
        label = t[i]
        if label < 0 or label >= m:
            raise IndexError("class label out of range")
        total = _row_total(e, i)
        picked[i] = e[i, label] / total + delta
        if backward:
            for k in range(m):
                y = e[i, k] / total
                v = (y - one) / batch if k == label else y / batch
                dz[i, k] = v
                db[k] += v
    if backward and m == 1:
        column_sums(dz, db)


@numba.njit(cache=True, inline="always")
def _argmax_row(t, i):  # type: ignore[no-untyped-def]
    """NumPy's argmax of row i: the first nan if there is one, else the first maximum."""
    m = t.shape[1]
    nan = False
    top = t[i, 0]
    for k in range(m):  # branch-free passes (they vectorise); the last one is short
        v = t[i, k]
        nan |= v != v
        top = max(top, v)
    for k in range(m):
        v = t[i, k]
        if (v != v) if nan else (v == top):
            return k
    return 0


@_jit
def softmax_ce_onehot(e, t, picked, dz, db):  # type: ignore[no-untyped-def]
    """As ``softmax_ce_labels`` for one-hot rows t: the loss picks argmax(t[n]),
    the backward is (y - t) / batch, as the book computes them."""
    n, m = e.shape
    delta = e.dtype.type(1e-7)
    batch = e.dtype.type(n)
    backward = dz.shape[0] == n
    if backward:
        for k in range(m):
            db[k] = 0
    for i in range(n):
        label = _argmax_row(t, i)
        total = _row_total(e, i)
        picked[i] = e[i, label] / total + delta
        if backward:
            for k in range(m):
                v = (e[i, k] / total - t[i, k]) / batch
                dz[i, k] = v
                db[k] += v
    if backward and m == 1:
        column_sums(dz, db)


# ----------------------------------------------------------------- backward


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
    if m == 1:  # one column: NumPy sums it pairwise
        column_sums(d, db)


@_jit
def add_decay(g, w, lam):  # type: ignore[no-untyped-def]
    """g = g + lam * w (the L2 term of a weight's gradient), flat arrays."""
    for i in range(g.size):
        g[i] = g[i] + lam * w[i]


# ------------------------------------------------------------------ updates
# Flat, contiguous arrays; scalars already of the arrays' dtype. Each line
# repeats one in-place NumPy statement of NumpyBackend's update kernels.


@_jit
def sgd_layer(W, gW, b, gb, lr, lam):  # type: ignore[no-untyped-def]
    """SGD on one affine layer: W -= lr * (gW + lam * W) (no decay term when lam == 0), b -= lr * gb."""
    n, m = W.shape
    if lam == 0:
        for i in range(n):
            for j in range(m):
                W[i, j] = W[i, j] - lr * gW[i, j]
    else:
        for i in range(n):
            for j in range(m):
                W[i, j] = W[i, j] - lr * (gW[i, j] + lam * W[i, j])
    for j in range(m):
        b[j] = b[j] - lr * gb[j]


# Updating W in place right after a threaded product is slow when W is also
# cached by the other BLAS thread's core (it read W in the forward product):
# every store waits for that core's copy to be invalidated, in order. On this
# project's shared 2-core VM that cost moves between ~16 µs and ~130 µs for a
# 784x50 float64 W, depending on where the host runs the two vCPUs.
# ``clflushopt`` drops those copies first, many lines at a time, and the
# update then fetches W back (~20 µs either way). Neither is always faster:
# the plan times both (``plan.FasterWay``) and keeps the faster. Flushing
# changes no value, so the choice never changes a result, only the time.
@_jit
def flush_lines(a):  # type: ignore[no-untyped-def]
    """clflushopt over every cache line of a C-contiguous array; changes no value."""
    flat = a.reshape(-1)
    n = flat.size
    for i in range(0, n, 8):  # 8 float64 or 16 float32 per 64-byte line, at least
        flush_line(flat, i)
    if n:
        flush_line(flat, n - 1)


@_jit
def sgd(p, g, lr):  # type: ignore[no-untyped-def]
    for i in range(p.size):
        p[i] = p[i] - lr * g[i]


@_jit
def sgd_decay(p, g, lr, lam):  # type: ignore[no-untyped-def]
    """SGD on the gradient g + lam * p, without storing that sum."""
    for i in range(p.size):
        p[i] = p[i] - lr * (g[i] + lam * p[i])


@_jit
def momentum(p, g, v, lr, mom):  # type: ignore[no-untyped-def]
    for i in range(p.size):
        vi = v[i] * mom
        vi = vi - lr * g[i]
        v[i] = vi
        p[i] = p[i] + vi


@_jit
def nesterov(p, g, v, lr, mom, mom2, lr_ahead):  # type: ignore[no-untyped-def]
    """mom2 = momentum**2 and lr_ahead = (1 + momentum) * lr, as Python computes them."""
    for i in range(p.size):
        vi = v[i] * mom
        vi = vi - lr * g[i]
        v[i] = vi
        pi = p[i] + mom2 * vi
        p[i] = pi - lr_ahead * g[i]


@_jit
def adagrad(p, g, h, lr, eps):  # type: ignore[no-untyped-def]
    for i in range(p.size):
        hi = h[i] + g[i] * g[i]
        h[i] = hi
        p[i] = p[i] - lr * g[i] / (np.sqrt(hi) + eps)


@_jit
def rmsprop(p, g, h, lr, decay, rest, eps):  # type: ignore[no-untyped-def]
    """rest = 1 - decay, as Python computes it."""
    for i in range(p.size):
        hi = h[i] * decay
        hi = hi + rest * g[i] * g[i]
        h[i] = hi
        p[i] = p[i] - lr * g[i] / (np.sqrt(hi) + eps)


@_jit
def adam(p, g, m, v, lr_t, rest1, rest2, eps):  # type: ignore[no-untyped-def]
    """rest1 = 1 - beta1, rest2 = 1 - beta2, as Python computes them."""
    for i in range(p.size):
        gi = g[i]
        mi = m[i] + rest1 * (gi - m[i])
        vi = v[i] + rest2 * (gi * gi - v[i])
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - lr_t * mi / (np.sqrt(vi) + eps)


# ------------------------------------------------------------------ batches


@_jit
def take_rows(x, idx, out):  # type: ignore[no-untyped-def]
    """out = x[idx] for a 2-D x and 1-D integer idx (negative indices count from the end)."""
    n = x.shape[0]
    for r in range(idx.shape[0]):
        i = idx[r]
        if i < 0:
            i += n
        if i < 0 or i >= n:
            raise IndexError("batch index out of range")
        for j in range(x.shape[1]):
            out[r, j] = x[i, j]


@_jit
def take(x, idx, out):  # type: ignore[no-untyped-def]
    """out = x[idx] for 1-D x and idx."""
    n = x.shape[0]
    for r in range(idx.shape[0]):
        i = idx[r]
        if i < 0:
            i += n
        if i < 0 or i >= n:
            raise IndexError("batch index out of range")
        out[r] = x[i]


# ------------------------------------------------------------------ checks


@_jit
def labels_in_range(t, n_classes):  # type: ignore[no-untyped-def]
    """True when every label is in 0..n_classes-1 (one pass, no temporaries)."""
    for i in range(t.shape[0]):
        if t[i] < 0 or t[i] >= n_classes:
            return False
    return True


@_jit
def rows_one_hot(t):  # type: ignore[no-untyped-def]
    """True when every row holds exactly one 1 and zeros elsewhere."""
    n, m = t.shape
    for i in range(n):
        ones = 0
        other = False
        for k in range(m):  # branch-free, so it vectorises
            v = t[i, k]
            ones += v == 1
            other |= (v != 0) & (v != 1)
        if other or ones != 1:
            return False
    return True
