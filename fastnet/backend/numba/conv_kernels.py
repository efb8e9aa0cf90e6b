"""Compiled im2col, col2im and max pooling: the same values as the book's NumPy code.

Each kernel is a copy, a max or a per-pixel sum taken in the reference's
order (col2im adds the patches in (y, x) filter order, starting from zero),
so splitting the batch over threads (``prange``) changes no bits.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["im2col", "col2im", "pool_forward", "pool_backward", "nhwc_rows"]


@numba.njit(cache=True, parallel=True)
def im2col(x, fh, fw, stride, pad, oh, ow, col):  # type: ignore[no-untyped-def]
    """col[(n*oh + i)*ow + j, (c*fh + y)*fw + x] = padded x[n, c, i*stride + y, j*stride + x]."""
    n, c, h, w = x.shape
    zero = col.dtype.type(0)
    for b in numba.prange(n):
        for i in range(oh):
            for j in range(ow):
                row = (b * oh + i) * ow + j
                k = 0
                for ch in range(c):
                    for y in range(fh):
                        r = i * stride + y - pad
                        for xx in range(fw):
                            s = j * stride + xx - pad
                            if 0 <= r < h and 0 <= s < w:
                                col[row, k] = x[b, ch, r, s]
                            else:
                                col[row, k] = zero
                            k += 1


@numba.njit(cache=True, parallel=True)
def col2im(col, c, fh, fw, stride, oh, ow, img):  # type: ignore[no-untyped-def]
    """img (zeroed, padded, grown by stride - 1) += each patch of col, in (y, x) filter order."""
    n = img.shape[0]
    for b in numba.prange(n):
        for ch in range(c):
            for y in range(fh):
                for xx in range(fw):
                    k = (ch * fh + y) * fw + xx
                    for i in range(oh):
                        for j in range(ow):
                            img[b, ch, y + stride * i, xx + stride * j] += col[(b * oh + i) * ow + j, k]


@numba.njit(cache=True, parallel=True)
def pool_forward(x, ph, pw, stride, pad, out, arg_max):  # type: ignore[no-untyped-def]
    """out (N, oh, ow, C) = window maxima, arg_max their first position (a NaN wins, as in argmax).

    Returns how many windows hold both 0.0 and -0.0 as their maximum: NumPy's
    max may return either sign there, so the caller must not trust `out`.
    """
    n, c, h, w = x.shape
    _, oh, ow, _ = out.shape
    zero = out.dtype.type(0)
    ambiguous = 0
    for b in numba.prange(n):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    best = zero
                    where = 0
                    neg_zero = False
                    pos_zero = False
                    k = 0
                    for y in range(ph):
                        r = i * stride + y - pad
                        for xx in range(pw):
                            s = j * stride + xx - pad
                            v = x[b, ch, r, s] if (0 <= r < h and 0 <= s < w) else zero
                            if v == 0:
                                if np.signbit(v):
                                    neg_zero = True
                                else:
                                    pos_zero = True
                            if k == 0 or v > best or (np.isnan(v) and not np.isnan(best)):
                                best = v
                                where = k
                            k += 1
                    out[b, i, j, ch] = best
                    arg_max[((b * oh + i) * ow + j) * c + ch] = where
                    if best == 0 and neg_zero and pos_zero:
                        ambiguous += 1
    return ambiguous


@numba.njit(cache=True, parallel=True)
def pool_backward(dout, arg_max, ph, pw, stride, img):  # type: ignore[no-untyped-def]
    """The book's scatter-then-col2im in one pass: each pixel gets 0 + its windows' shares in (y, x) order."""
    n, c, oh, ow = dout.shape
    zero = img.dtype.type(0)
    for b in numba.prange(n):
        for ch in range(c):
            for y in range(ph):
                for xx in range(pw):
                    k = y * pw + xx
                    for i in range(oh):
                        for j in range(ow):
                            hit = arg_max[((b * oh + i) * ow + j) * c + ch] == k
                            img[b, ch, y + stride * i, xx + stride * j] += dout[b, ch, i, j] if hit else zero


@numba.njit(cache=True, parallel=True)
def nhwc_rows(d, rows):  # type: ignore[no-untyped-def]
    """rows[(n*H + i)*W + j, f] = d[n, f, i, j]: ``d.transpose(0, 2, 3, 1).reshape(-1, F)``."""
    n, f, h, w = d.shape
    for b in numba.prange(n):
        for i in range(h):
            for j in range(w):
                row = (b * h + i) * w + j
                for ch in range(f):
                    rows[row, ch] = d[b, ch, i, j]
