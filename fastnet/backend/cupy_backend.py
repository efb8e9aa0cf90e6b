"""CuPy backend: the same kernels on an NVIDIA GPU.

Inherits every kernel from the NumPy backend (they are written against
``self.xp``), with CuPy as the array module; faster fused kernels override them.
"""

from __future__ import annotations

from typing import Any

import numpy

from ..errors import BackendMismatchError
from .numpy_backend import NumpyBackend

INSTALL_HINT = "install CuPy with: pip install 'fastnet[cuda12]' (or 'fastnet[cuda13]')"


def unavailable_reason() -> str | None:
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc}); {INSTALL_HINT}"
    except Exception as exc:  # a broken CUDA install raises other errors at import
        return f"CuPy failed to import ({type(exc).__name__}: {exc})"
    try:
        if not cupy.cuda.is_available():
            return "CuPy is installed but no CUDA device is visible (check the driver and nvidia-smi)"
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CUDA is not usable ({type(exc).__name__}: {exc}); check the NVIDIA driver"
    return None


class CupyBackend(NumpyBackend):
    name = "cupy"
    is_gpu = True
    default_dtype: Any = numpy.float32

    def __init__(self) -> None:
        import cupy

        self.xp = cupy

    def owns(self, x: object) -> bool:
        return isinstance(x, self.xp.ndarray)

    def check(self, x: object, name: str) -> Any:
        if isinstance(x, self.xp.ndarray):
            return x
        if isinstance(x, numpy.ndarray):
            raise BackendMismatchError(
                f"{name} is a NumPy (host) array but the active backend is 'cupy'; move it "
                f"to the GPU once with fastnet.get_backend().asarray({name}) (not inside a loop)"
            )
        return self.xp.asarray(x)

    def asarray(self, x: object, dtype: Any = None) -> Any:
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> numpy.ndarray:
        return self.xp.asnumpy(x)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def step_function(self, x: Any) -> Any:
        return (x > 0).astype(self.xp.int64)

    def rng(self, seed: int | None = None) -> Any:
        return self.xp.random.default_rng(seed)


Backend = CupyBackend
