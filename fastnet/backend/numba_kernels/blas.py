"""NumPy's own BLAS ``gemm``, callable from compiled kernels.

A training step makes a handful of small matrix products; through
``numpy.dot`` each one is a Python call with its own checks, between kernel
calls that are Python calls too. Calling the very ``cblas_?gemm`` NumPy calls,
with the arguments ``numpy.dot`` would pass, lets one compiled kernel run a
whole forward or backward pass: same library, same thread pool, same bits.

Only NumPy builds that bundle an ILP64 OpenBLAS with suffixed symbols (the
PyPI wheels: ``scipy_cblas_dgemm64_``) are recognised; anything else returns
no address and the step keeps calling ``numpy.dot``. ``matches_dot`` checks a
product shape against ``numpy.dot`` bit for bit before a plan relies on it.
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from typing import Any

import numba
import numpy as np

from ._intrinsics import gemm

NO_TRANS, TRANS = 111, 112  # CBLAS_TRANSPOSE
_SYMBOLS = {"d": ("scipy_cblas_dgemm64_", "cblas_dgemm64_"), "f": ("scipy_cblas_sgemm64_", "cblas_sgemm64_")}


def _numpy_blas_paths() -> list[str]:
    """Files of the OpenBLAS libraries loaded from NumPy's own folders."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - a dependency of fastnet
        return []
    root = os.path.dirname(os.path.realpath(np.__file__))
    homes = (root + os.sep, root + ".libs" + os.sep)  # numpy/ and numpy.libs/ beside it
    paths = []
    for lib in threadpool_info():
        path = os.path.realpath(lib.get("filepath") or "")
        if lib.get("internal_api") == "openblas" and path.startswith(homes):
            paths.append(path)
    return paths


@lru_cache(maxsize=None)
def gemm_address(char: str) -> int:
    """Address of NumPy's ILP64 cblas gemm for dtype char 'd' or 'f'; 0 when not found."""
    for path in _numpy_blas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in _SYMBOLS.get(char, ()):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                return int(ctypes.cast(fn, ctypes.c_void_p).value or 0)
    return 0


@numba.njit(cache=True, nogil=True, inline="always")
def dot_into(addr, trans_a, trans_b, a, b, c):  # type: ignore[no-untyped-def]
    """c = op(a) @ op(b) for C-ordered a, b, c (op: transpose when trans is TRANS), as numpy.dot.

    Like NumPy, c is zeroed first. gemm overwrites it anyway (beta is 0), but
    on this project's 2-core VM, while moving cache lines between the cores
    is slow, a 784x50 x.T@dh took 167 µs without the zeroing and 110-113 µs
    with it, as with numpy.dot: the zeroing brings c's lines to this core
    before the BLAS threads write.
    """
    flat = c.reshape(-1)
    for i in range(flat.size):
        flat[i] = 0
    m, n = c.shape
    k = a.shape[0] if trans_a == TRANS else a.shape[1]
    gemm(addr, trans_a, trans_b, m, n, k, a, a.shape[1], b, b.shape[1], c, n)


@numba.njit(cache=True, nogil=True)
def _product(addr, trans_a, trans_b, a, b, c):  # type: ignore[no-untyped-def]
    dot_into(addr, trans_a, trans_b, a, b, c)


@lru_cache(maxsize=256)
def matches_dot(char: str, trans_a: bool, trans_b: bool, m: int, n: int, k: int) -> bool:
    """Whether ``gemm`` gives ``numpy.dot``'s bits for this product shape (checked once)."""
    addr = gemm_address(char)
    if not addr or min(m, n, k) < 2:  # NumPy takes gemv or dot paths for vectors
        return False
    rng = np.random.default_rng(m * 1000003 + n * 1009 + k)
    dtype = np.dtype(char)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    want = np.dot(a.T if trans_a else a, b.T if trans_b else b)
    got = np.empty((m, n), dtype)
    _product(addr, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, a, b, got)
    return bool(np.array_equal(want.view(np.uint8), got.view(np.uint8)))


def product(a: Any, b: Any, c: Any, trans_a: bool = False, trans_b: bool = False) -> None:
    """c = op(a) @ op(b) through ``gemm`` (tests and checks; kernels call ``dot_into``)."""
    addr = gemm_address(c.dtype.char)
    if not addr:
        raise RuntimeError("NumPy's BLAS gemm was not found")
    arrays = (a, b, c)
    if not all(type(v) is np.ndarray and v.ndim == 2 and v.flags.c_contiguous and v.dtype == c.dtype
               for v in arrays):
        raise ValueError("a, b and c must be C-contiguous 2-D arrays of one float dtype")
    m, k = a.shape[::-1] if trans_a else a.shape
    k_b, n = b.shape[::-1] if trans_b else b.shape
    if k != k_b or c.shape != (m, n):
        raise ValueError(f"shapes do not match: op(a) {(m, k)}, op(b) {(k_b, n)}, c {c.shape}")
    _product(addr, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, a, b, c)
