"""What every backend's generic path shares: the book's numerical-gradient loop, BLAS threads."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Any, Callable, Iterator

import numpy

Array = Any

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: Any = None
_controller: Any = None


def numerical_gradient_loop(f: Callable[[Array], Any], x: Array, h: float = 1e-4) -> Array:
    """The book's loop, element by element; works on any backend's arrays."""
    grad = x.copy()  # same shape, dtype and array module as x, whatever the backend
    grad.fill(0)
    for idx in numpy.ndindex(*x.shape):
        tmp_val = x[idx].copy()  # CuPy's x[idx] is a 0-d view: it would follow the writes below
        x[idx] = float(tmp_val) + h
        fxh1 = f(x)
        x[idx] = tmp_val - h
        fxh2 = f(x)
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        x[idx] = tmp_val
    return grad


def _threadpools() -> Any:
    """threadpoolctl's view of the loaded thread pools, found once (finding them costs ~0.2 ms)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


def blas_threads() -> int:
    """The most threads any BLAS loaded in this process may use now (as threadpoolctl reads them;
    1 if none is found): NumPy's is the one the kernels share the cores with."""
    return max((pool["num_threads"] for pool in _threadpools().select(user_api="blas").info()), default=1)


@functools.cache
def idle_threads_sleep() -> bool:
    """Whether the environment tells idle BLAS and Numba threads to give their cores back at once.

    By default OpenBLAS's threads spin for 2**28 cycles after each product
    and Numba's OpenMP threads spin after each parallel loop, so threaded
    kernels between products wait for cores. True when every BLAS loaded is
    OpenBLAS, ``OPENBLAS_THREAD_TIMEOUT`` is 1 to 16 (0 keeps OpenBLAS's
    default) and Numba's OpenMP threads wait passively
    (``OMP_WAIT_POLICY=passive``). OpenBLAS reads its variable when it loads:
    set both before Python starts. Read once; it only decides speed, never
    results.
    """
    try:
        timeout = int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "").strip())
    except ValueError:
        return False
    if not 1 <= timeout <= 16 or os.environ.get("OMP_WAIT_POLICY", "").strip().lower() != "passive":
        return False
    pools = _threadpools().select(user_api="blas").info()
    return bool(pools) and all(pool.get("internal_api") == "openblas" for pool in pools)


def cores_free_between_products() -> bool:
    """Whether a threaded kernel run between NumPy's products finds the cores free: BLAS on one
    thread, or idle threads that sleep at once (``idle_threads_sleep``)."""
    return idle_threads_sleep() or blas_threads() == 1


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Hold BLAS to one thread while any thread is inside this block.

    threadpoolctl's limits are process-wide: nested or concurrent uses share
    one limit, set by the first to enter and lifted by the last to leave (so
    two threads never leave BLAS limited after both are done).
    """
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = _threadpools().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None
