"""exp and log for float64 written without branches or calls, so loops vectorise.

libm's exp/log are function calls: a loop that calls them runs one element at
a time (5-9 ns each here). These versions are plain arithmetic that LLVM can
vectorise, and stay within 1 ulp of libm over the whole double range
(``tests/test_numba.py`` checks that). Only the numerical-gradient kernels use
them; the training kernels leave exp/log to NumPy, so they match it bit for bit.

exp(x): x = k ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 split into a part
whose products with k are exact and a small correction), e^r by its Taylor
series to r^13 (truncation < 0.05 ulp), then 2^k applied as two exact powers
of two so neither overflows nor underflows before the final rounding.

exp_small(v), |v| <= 1/16: the Taylor series to v^9 alone (the numerical
gradient's e^(z + dz) = e^z e^dz, with dz small).

log(x): x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1, s = f / (2 + f);
log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)) with R(z) = sum 2 z^k / (2k + 1),
k = 1..11 (the series of 2 atanh(s) - 2s, truncated below 1e-19).
"""

from __future__ import annotations

import numba

from .bits import as_float64, as_int64, fma

__all__ = ["SMALL", "exp64", "exp_small", "log64"]

_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # 32 significant bits: k * _LN2_HI is exact for |k| < 2**21
_LN2_LO = 1.9082149292705877e-10  # ln2 - _LN2_HI
_ROUND = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer kept in the low bits
_EXP_HI = 709.782712893384  # largest x with a finite exp
_EXP_LO = -745.1332191019412  # exp(x) rounds to 0 below this
_TWO52 = 4503599627370496.0
_SQRT2 = 1.4142135623730951
_SMALLEST_NORMAL = 2.2250738585072014e-308
_TWO54 = 18014398509481984.0
_INF = float("inf")
_NAN = float("nan")

# 1/k! for k = 13 down to 2
_E13 = 1.0 / 6227020800.0
_E12 = 1.0 / 479001600.0
_E11 = 1.0 / 39916800.0
_E10 = 1.0 / 3628800.0
_E9 = 1.0 / 362880.0
_E8 = 1.0 / 40320.0
_E7 = 1.0 / 5040.0
_E6 = 1.0 / 720.0
_E5 = 1.0 / 120.0
_E4 = 1.0 / 24.0
_E3 = 1.0 / 6.0
_E2 = 0.5


@numba.njit(cache=True, inline="always", error_model="numpy")
def exp64(x: float) -> float:
    """e**x, within 1 ulp of libm for every float64 (inf, nan and subnormals included)."""
    xc = min(max(x, -746.0), 710.0)  # keeps k in [-1077, 1025]; specials fixed below
    kd = xc * _LOG2E + _ROUND
    ki = as_int64(kd)
    kd = kd - _ROUND
    r = fma(-kd, _LN2_HI, xc)
    r = fma(-kd, _LN2_LO, r)
    p = fma(_E13, r, _E12)
    p = fma(p, r, _E11)
    p = fma(p, r, _E10)
    p = fma(p, r, _E9)
    p = fma(p, r, _E8)
    p = fma(p, r, _E7)
    p = fma(p, r, _E6)
    p = fma(p, r, _E5)
    p = fma(p, r, _E4)
    p = fma(p, r, _E3)
    p = fma(p, r, _E2)
    y = 1.0 + fma(r * r, p, r)
    k = (ki << 32) >> 32  # the integer sits in the low 32 bits of kd's pattern
    k1 = k >> 1
    k2 = k - k1
    res = y * as_float64((k1 + 1023) << 52) * as_float64((k2 + 1023) << 52)
    if x > _EXP_HI:
        res = _INF
    if x < _EXP_LO:
        res = 0.0
    if x != x:
        res = x
    return res


SMALL = 1.0 / 16.0  # the range of exp_small


@numba.njit(cache=True, inline="always", error_model="numpy")
def exp_small(v: float) -> float:
    """e**v for |v| <= SMALL: its Taylor series to v^9 (truncation < 0.002 ulp), no range reduction.

    A third of exp64's arithmetic; the caller checks the range.
    """
    p = fma(_E9, v, _E8)
    p = fma(p, v, _E7)
    p = fma(p, v, _E6)
    p = fma(p, v, _E5)
    p = fma(p, v, _E4)
    p = fma(p, v, _E3)
    p = fma(p, v, _E2)
    p = fma(p, v, 1.0)
    return fma(p, v, 1.0)


# 2 / (2k + 1) for k = 11 down to 1
_L11 = 2.0 / 23.0
_L10 = 2.0 / 21.0
_L9 = 2.0 / 19.0
_L8 = 2.0 / 17.0
_L7 = 2.0 / 15.0
_L6 = 2.0 / 13.0
_L5 = 2.0 / 11.0
_L4 = 2.0 / 9.0
_L3 = 2.0 / 7.0
_L2 = 2.0 / 5.0
_L1 = 2.0 / 3.0


@numba.njit(cache=True, inline="always", error_model="numpy")
def log64(x: float) -> float:
    """Natural log, within 1 ulp of libm for every float64 (0, negatives, inf, nan included)."""
    sub = x < _SMALLEST_NORMAL
    xs = x * _TWO54 if sub else x
    bits = as_int64(xs)
    e_bits = (bits >> 52) & 0x7FF
    e = as_float64(e_bits | 0x4330000000000000) - _TWO52 - 1023.0
    e = e - 54.0 if sub else e
    m = as_float64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)  # in [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    rz = fma(_L11, z, _L10)
    rz = fma(rz, z, _L9)
    rz = fma(rz, z, _L8)
    rz = fma(rz, z, _L7)
    rz = fma(rz, z, _L6)
    rz = fma(rz, z, _L5)
    rz = fma(rz, z, _L4)
    rz = fma(rz, z, _L3)
    rz = fma(rz, z, _L2)
    rz = fma(rz, z, _L1)
    rz = rz * z
    hfsq = 0.5 * f * f
    res = e * _LN2_HI - ((hfsq - (s * (hfsq + rz) + e * _LN2_LO)) - f)
    res = -_INF if x == 0.0 else res
    res = _NAN if x < 0.0 else res
    res = x if x == _INF else res
    res = x if x != x else res
    return res
