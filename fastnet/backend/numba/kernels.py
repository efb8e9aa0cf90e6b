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

from .reduce import column_sums, pairwise, pairwise_sum, pairwise_sum_squares  # noqa: F401 - the plan sums through here

_jit = numba.njit(cache=True, error_model="numpy")

# ------------------------------------------------------------------ forward


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
    return e.dtype.type(0) + pairwise(e[i], 0, m, False)


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
def add_decay(g, w, lam):  # type: ignore[no-untyped-def]
    """g = g + lam * w (the L2 term of a weight's gradient), flat arrays."""
    for i in range(g.size):
        g[i] = g[i] + lam * w[i]


# ------------------------------------------------------------------ updates


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
