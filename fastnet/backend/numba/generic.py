"""The book's numerical-gradient loop, compiled, for a Numba-compiled f.

When ``f`` is itself an ``@numba.njit`` function, the loop can call it
without Python in between: the loop is compiled once per distinct ``f``
(not cached on disk: Numba cannot cache a function that takes another
compiled function as an argument). Each element is perturbed in place and
restored exactly as in the book, so ``f`` sees the same arrays; the loop is
serial because ``f`` reads the one array being perturbed.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(error_model="numpy")
def central_differences(f, x, h, h_own, grad):  # type: ignore[no-untyped-def]
    """grad[idx] = (f(x + h e_idx) - f(x - h e_idx)) / 2h for every idx, in place.

    ``h_own`` is h in x's dtype: the book's ``x[idx] = tmp - h`` subtracts in
    x's dtype, while ``x[idx] = float(tmp) + h`` adds in float64.
    """
    for idx in np.ndindex(x.shape):
        tmp = x[idx]
        x[idx] = np.float64(tmp) + h
        fxh1 = f(x)
        x[idx] = tmp - h_own
        fxh2 = f(x)
        # the book's loop gets f's float32 as a Python float: the difference is float64's
        grad[idx] = (np.float64(fxh1) - np.float64(fxh2)) / (2 * h)
        x[idx] = tmp


def is_compiled(f: Any) -> bool:
    """True when f is a CPU function compiled by ``numba.njit``."""
    from numba.core.registry import CPUDispatcher

    return isinstance(f, CPUDispatcher)


def compiled_gradient(f: Any, x: np.ndarray, h: float) -> np.ndarray | None:
    """The compiled loop's result, or None when it cannot be compiled for f or f does not
    return a float (an integer or bool difference is Python's, exact and unbounded)."""
    args = (numba.typeof(x),)
    errors = (numba.core.errors.TypingError, numba.core.errors.UnsupportedError)
    try:
        f.compile(args)
    except errors:
        return None  # the plain loop calls it from Python, and raises what Python raises
    returns = [sig.return_type for sig in f.nopython_signatures if tuple(sig.args) == args]
    if not returns or not all(isinstance(r, numba.types.Float) for r in returns):
        return None
    grad = np.zeros_like(x)
    try:
        central_differences(f, x, float(h), x.dtype.type(h), grad)
    except errors:
        return None  # e.g. f returns an array: the plain loop handles it
    return grad
