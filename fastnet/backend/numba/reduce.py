"""Sums in exactly NumPy's order, so Numba kernels reproduce NumPy bit for bit.

NumPy adds a contiguous run of values pairwise: runs of fewer than 8 values
left to right, runs of up to 128 with eight interleaved partial sums combined
as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)) plus the leftovers, longer runs split
in two (the first half rounded down to a multiple of 8) and the halves added.
A sum over axis 0 of a C-ordered matrix instead adds whole rows in order
(unless it has one column: then the column is one contiguous run).
Both reductions start from 0 (so a lone -0.0 sums to 0.0, as in NumPy).

Numba's own ``sum`` is a plain left-to-right loop, which rounds differently.
The split is written as a loop with an explicit stack: a self-recursive
``cache=True`` function crashed when loaded from Numba's cache here.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["column_sums", "pairwise_sum", "pairwise_sum_squares"]

_BLOCK = 128


@numba.njit(cache=True, inline="always")
def _value(a, i, square):  # type: ignore[no-untyped-def]
    return a[i] * a[i] if square else a[i]


@numba.njit(cache=True, inline="always")
def _block_sum(a, start, n, square):  # type: ignore[no-untyped-def]
    """NumPy's sum of a[start:start+n] for n <= 128 (of the squares if `square`)."""
    if n < 8:
        res = a.dtype.type(0)
        for i in range(start, start + n):
            res += _value(a, i, square)
        return res
    r0 = _value(a, start, square)
    r1 = _value(a, start + 1, square)
    r2 = _value(a, start + 2, square)
    r3 = _value(a, start + 3, square)
    r4 = _value(a, start + 4, square)
    r5 = _value(a, start + 5, square)
    r6 = _value(a, start + 6, square)
    r7 = _value(a, start + 7, square)
    i = start + 8
    stop = start + n - n % 8
    while i < stop:
        r0 += _value(a, i, square)
        r1 += _value(a, i + 1, square)
        r2 += _value(a, i + 2, square)
        r3 += _value(a, i + 3, square)
        r4 += _value(a, i + 4, square)
        r5 += _value(a, i + 5, square)
        r6 += _value(a, i + 6, square)
        r7 += _value(a, i + 7, square)
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < start + n:
        res += _value(a, i, square)
        i += 1
    return res


@numba.njit(cache=True)
def pairwise(a, start, n, square):  # type: ignore[no-untyped-def]
    if n <= _BLOCK:
        return _block_sum(a, start, n, square)
    # Walk NumPy's recursion tree depth-first with explicit stacks.
    starts = np.empty(64, dtype=np.int64)
    sizes = np.empty(64, dtype=np.int64)
    stage = np.zeros(64, dtype=np.int64)  # 0: left half next, 1: right half next, 2: combine
    partial = np.empty(64, dtype=a.dtype)  # the finished left half of each frame
    result = np.empty(64, dtype=a.dtype)  # what each frame returned
    top = 0
    starts[0], sizes[0], stage[0] = start, n, 0
    while True:
        s, m = starts[top], sizes[top]
        half = m // 2
        half -= half % 8
        if stage[top] == 0:
            stage[top] = 1
            if half <= _BLOCK:
                result[top + 1] = _block_sum(a, s, half, square)
            else:
                top += 1
                starts[top], sizes[top], stage[top] = s, half, 0
                continue
        if stage[top] == 1:
            partial[top] = result[top + 1]
            stage[top] = 2
            if m - half <= _BLOCK:
                result[top + 1] = _block_sum(a, s + half, m - half, square)
            else:
                top += 1
                starts[top], sizes[top], stage[top] = s + half, m - half, 0
                continue
        # stage 2: both halves known
        value = partial[top] + result[top + 1]
        if top == 0:
            return value
        result[top] = value
        top -= 1


@numba.njit(cache=True)
def pairwise_sum(a):  # type: ignore[no-untyped-def]
    """``numpy.sum(a)`` of a contiguous 1-D array, bit for bit."""
    if a.size == 0:
        return a.dtype.type(0)
    return a.dtype.type(0) + pairwise(a, 0, a.size, False)


@numba.njit(cache=True)
def pairwise_sum_squares(a):  # type: ignore[no-untyped-def]
    """``numpy.sum(a ** 2)`` of a contiguous 1-D array, bit for bit."""
    if a.size == 0:
        return a.dtype.type(0)
    return a.dtype.type(0) + pairwise(a, 0, a.size, True)


@numba.njit(cache=True)
def column_sums(d, out):  # type: ignore[no-untyped-def]
    """out[:] = ``numpy.sum(d, axis=0)`` for a C-ordered 2-D array: rows added in order.

    A single column is one contiguous run, which NumPy sums pairwise instead.
    """
    n, m = d.shape
    if m == 1:
        out[0] = d.dtype.type(0) + pairwise(d.reshape(n), 0, n, False)
        return
    for j in range(m):
        out[j] = 0
    for i in range(n):
        for j in range(m):
            out[j] += d[i, j]
