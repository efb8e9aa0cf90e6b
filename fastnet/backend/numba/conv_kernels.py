"""Compiled im2col, col2im and max pooling: the same values as the book's NumPy code.

Each kernel is a copy, a max or a per-pixel sum taken in the reference's
order (col2im adds the patches in (y, x) filter order, starting from zero),
so splitting the batch over threads (``prange``) changes no bits.
"""

from __future__ import annotations

import types

import numba
import numpy as np

__all__ = ["KERNELS", "PARALLEL_MIN"]

# Below this many output elements a kernel runs on one thread: starting the
# thread team costs more than the work, and on a busy machine far more.
PARALLEL_MIN = 1 << 16


def _im2col(x, fh, fw, stride, pad, oh, ow, col):  # type: ignore[no-untyped-def]
    """col[(n*oh + i)*ow + j, (c*fh + y)*fw + x] = padded x[n, c, i*stride + y, j*stride + x]."""
    n, c, h, w = x.shape
    zero = col.dtype.type(0)
    for b in numba.prange(n):
        for i in range(oh):
            r0 = i * stride - pad
            for j in range(ow):
                s0 = j * stride - pad
                row = (b * oh + i) * ow + j
                if r0 >= 0 and s0 >= 0 and r0 + fh <= h and s0 + fw <= w:  # no padding under the filter
                    k = 0
                    for ch in range(c):
                        for y in range(fh):
                            for xx in range(fw):
                                col[row, k] = x[b, ch, r0 + y, s0 + xx]
                                k += 1
                    continue
                k = 0
                for ch in range(c):
                    for y in range(fh):
                        r = r0 + y
                        for xx in range(fw):
                            s = s0 + xx
                            col[row, k] = x[b, ch, r, s] if (0 <= r < h and 0 <= s < w) else zero
                            k += 1


def _col2im(col, c, fh, fw, stride, oh, ow, img):  # type: ignore[no-untyped-def]
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


@numba.njit(cache=True, inline="always")
def _window_max(x, b, ch, r0, s0, ph, pw):  # type: ignore[no-untyped-def]
    """(max, first position of it) of one window, padding read as 0; a NaN wins, as in argmax."""
    h, w = x.shape[2], x.shape[3]
    zero = x.dtype.type(0)
    best = zero
    where = 0
    k = 0
    for y in range(ph):
        for xx in range(pw):
            v = x[b, ch, r0 + y, s0 + xx] if (0 <= r0 + y < h and 0 <= s0 + xx < w) else zero
            if k == 0 or v > best or (np.isnan(v) and not np.isnan(best)):
                best = v
                where = k
            k += 1
    return best, where


@numba.njit(cache=True, inline="always")
def _both_zeros(x, b, ch, r0, s0, ph, pw):  # type: ignore[no-untyped-def]
    """Whether a window (padding read as 0.0) holds both 0.0 and -0.0."""
    h, w = x.shape[2], x.shape[3]
    signs = 0
    for y in range(ph):
        for xx in range(pw):
            if 0 <= r0 + y < h and 0 <= s0 + xx < w:
                v = x[b, ch, r0 + y, s0 + xx]
                if v == 0:
                    signs |= 2 if np.signbit(v) else 1
            else:
                signs |= 1
    return signs == 3


def _pool_forward(x, ph, pw, stride, pad, out, arg_max):  # type: ignore[no-untyped-def]
    """out (N, C, oh, ow) = window maxima, arg_max their first position (a NaN wins, as in argmax).

    Returns how many windows have a NaN maximum or hold both 0.0 and -0.0 as
    their maximum: NumPy's max may return either sign there (and its own NaN
    bits), so the caller must not trust `out`.
    2x2 windows without padding (the conv nets' pools) take an unrolled path.
    """
    n, c = x.shape[0], x.shape[1]
    _, _, oh, ow = out.shape
    ambiguous = 0
    if ph == 2 and pw == 2 and pad == 0:
        for b in numba.prange(n):
            for ch in range(c):
                for i in range(oh):
                    r = i * stride
                    for j in range(ow):
                        s = j * stride
                        v0 = x[b, ch, r, s]
                        v1 = x[b, ch, r, s + 1]
                        v2 = x[b, ch, r + 1, s]
                        v3 = x[b, ch, r + 1, s + 1]
                        best, where = v0, 0
                        if v1 > best:
                            best, where = v1, 1
                        if v2 > best:
                            best, where = v2, 2
                        if v3 > best:
                            best, where = v3, 3
                        total = v0 + v1 + v2 + v3
                        if np.isnan(total):  # rare: a NaN (or inf - inf) in the window
                            best, where = _window_max(x, b, ch, r, s, 2, 2)
                            if np.isnan(best):
                                ambiguous += 1
                        elif best == 0 and _both_zeros(x, b, ch, r, s, 2, 2):
                            ambiguous += 1
                        out[b, ch, i, j] = best
                        arg_max[((b * oh + i) * ow + j) * c + ch] = where
        return ambiguous
    for b in numba.prange(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    r0 = i * stride - pad
                    s0 = j * stride - pad
                    best, where = _window_max(x, b, ch, r0, s0, ph, pw)
                    out[b, ch, i, j] = best
                    arg_max[((b * oh + i) * ow + j) * c + ch] = where
                    if np.isnan(best) or (best == 0 and _both_zeros(x, b, ch, r0, s0, ph, pw)):
                        ambiguous += 1
    return ambiguous


def _pool_backward(dout, arg_max, ph, pw, stride, img):  # type: ignore[no-untyped-def]
    """The book's scatter-then-col2im in one pass: each pixel gets 0 + its windows' shares in (y, x) order."""
    n, c, oh, ow = dout.shape
    zero = img.dtype.type(0)
    if stride >= ph and stride >= pw:  # windows do not overlap: one share per pixel at most
        for b in numba.prange(n):
            for ch in range(c):
                for i in range(oh):
                    for j in range(ow):
                        where = arg_max[((b * oh + i) * ow + j) * c + ch]
                        g = dout[b, ch, i, j]
                        k = 0
                        for y in range(ph):
                            for xx in range(pw):
                                img[b, ch, y + stride * i, xx + stride * j] = zero + (g if k == where else zero)
                                k += 1
        return
    for b in numba.prange(n):
        for ch in range(c):
            for y in range(ph):
                for xx in range(pw):
                    k = y * pw + xx
                    for i in range(oh):
                        for j in range(ow):
                            hit = arg_max[((b * oh + i) * ow + j) * c + ch] == k
                            img[b, ch, y + stride * i, xx + stride * j] += dout[b, ch, i, j] if hit else zero


def _nhwc_rows(d, rows):  # type: ignore[no-untyped-def]
    """rows[(n*H + i)*W + j, f] = d[n, f, i, j]: ``d.transpose(0, 2, 3, 1).reshape(-1, F)``."""
    n, f, h, w = d.shape
    for b in numba.prange(n):
        for i in range(h):
            for j in range(w):
                row = (b * h + i) * w + j
                for ch in range(f):
                    rows[row, ch] = d[b, ch, i, j]


def _bias_nchw(rows, bias, out):  # type: ignore[no-untyped-def]
    """out[n, f, i, j] = rows[(n*H + i)*W + j, f] + bias[f]: the reference's ``dot + b``, laid out NCHW."""
    n, f, h, w = out.shape
    for b in numba.prange(n):
        for ch in range(f):
            bf = bias[ch]
            for i in range(h):
                for j in range(w):
                    out[b, ch, i, j] = rows[(b * h + i) * w + j, ch] + bf


def _bias_relu_nchw(rows, bias, out, mask):  # type: ignore[no-untyped-def]
    """``_bias_nchw`` then the ReLU definition: mask = v <= 0, out = 0 there, else v."""
    n, f, h, w = out.shape
    zero = out.dtype.type(0)
    for b in numba.prange(n):
        for i in range(h):
            for j in range(w):
                row = (b * h + i) * w + j
                for ch in range(f):
                    v = rows[row, ch] + bias[ch]
                    m = v <= 0
                    mask[b, ch, i, j] = m
                    out[b, ch, i, j] = zero if m else v


def _masked_nhwc_rows(d, mask, rows):  # type: ignore[no-untyped-def]
    """``_nhwc_rows`` of d with zeros where mask is set (the ReLU's backward)."""
    n, f, h, w = d.shape
    zero = rows.dtype.type(0)
    for b in numba.prange(n):
        for i in range(h):
            for j in range(w):
                row = (b * h + i) * w + j
                for ch in range(f):
                    rows[row, ch] = zero if mask[b, ch, i, j] else d[b, ch, i, j]


def _compile(fn):  # type: ignore[no-untyped-def]
    """(one thread, the batch split over threads): the same body compiled twice.

    The one-thread twin gets its own name: Numba's cache files are named
    after the function, and its index does not tell the two builds apart.
    """
    serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial")
    serial.__qualname__ = fn.__qualname__ + "_serial"
    return numba.njit(cache=True)(serial), numba.njit(cache=True, parallel=True)(fn)


KERNELS = {name: _compile(fn) for name, fn in (
    ("im2col", _im2col), ("col2im", _col2im), ("pool_forward", _pool_forward),
    ("pool_backward", _pool_backward), ("nhwc_rows", _nhwc_rows), ("bias_nchw", _bias_nchw),
    ("bias_relu_nchw", _bias_relu_nchw), ("masked_nhwc_rows", _masked_nhwc_rows))}
