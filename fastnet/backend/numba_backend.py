"""Numba backend: NumPy arrays, with hot kernels compiled by Numba.

Subclasses the NumPy backend and overrides only the kernels it accelerates;
everything else falls back to the reference implementation.
"""

from __future__ import annotations

from .numpy_backend import NumpyBackend


def unavailable_reason() -> str | None:
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        return f"numba cannot be imported ({exc}); install it with: pip install numba"
    return None


class NumbaBackend(NumpyBackend):
    name = "numba"


Backend = NumbaBackend
