"""CuPy backend: the same kernels on an NVIDIA GPU, whole-net work fused.

Inherits every kernel from the NumPy backend (they are written against
``self.xp``), with CuPy as the array module. On top of that:

* whole-net work (predict, loss, gradient, training step, an epoch of
  steps, the numerical gradient) runs as a few fused CUDA kernels
  (``kernels/``), a step replayed as one CUDA graph (``engine``, ``plan``);
  only for the built-in activation objects and optimizer classes
  themselves: anything else (other dtypes, a subclass, an activation of
  your own) runs the inherited code and gets the NumPy backend's results;
* a built-in optimizer's update of one parameter is one launch
  (``updates``), the same rule code as the fused step;
* convolution and pooling move their data with one launch each (``conv``),
  the products left to cuBLAS, giving the reference path's values.

Modules: ``engine`` (what the backend calls), ``plan`` / ``plan_tiled`` /
``plan_rows`` (launches over static buffers), ``launch`` (layout and launch
shapes from the device's numbers), ``cuda`` (the kernel files), ``source``
(a plan's module text), ``device``, ``numgrad``.

``fused = False`` (or ``FASTNET_CUPY_FUSED=0``) runs the book's algorithm on
CuPy arrays instead, the reference the fused path is measured against.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy

from ...errors import BackendMismatchError
from ..numpy_backend import NumpyBackend
from ..spec import MLPSpec, overlapping
from .conv import CupyConvOps

INSTALL_HINT = "install CuPy with: pip install 'fastnet[cuda12]' (or 'fastnet[cuda13]')"


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def unavailable_reason() -> str | None:
    """Why CuPy cannot run here (and how to fix it), or None when it can."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc}); {INSTALL_HINT}"
    except Exception as exc:  # a broken CUDA install raises other errors at import
        return f"CuPy failed to import ({type(exc).__name__}: {exc}); reinstall it: {INSTALL_HINT}"
    try:
        runtime = cupy.cuda.runtime
        driver = runtime.driverGetVersion()  # 0 when no NVIDIA driver is loaded
        built = runtime.runtimeGetVersion()
    except Exception as exc:
        return f"CUDA is not usable ({type(exc).__name__}: {exc}); check the NVIDIA driver (nvidia-smi)"
    if driver == 0:
        return "no NVIDIA driver found (nvidia-smi should list the GPU); CuPy needs one to use a GPU"
    if driver // 1000 < built // 1000:
        return (
            f"the NVIDIA driver supports CUDA {_version(driver)} but this CuPy build needs CUDA "
            f"{_version(built)}; upgrade the driver, or install the CuPy build for CUDA "
            f"{driver // 1000}: pip install 'fastnet[cuda{driver // 1000}]'"
        )
    try:
        if not cupy.cuda.is_available():
            return (
                "CuPy is installed but sees no CUDA device (check nvidia-smi and "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!s})"
            )
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CUDA is not usable ({type(exc).__name__}: {exc}); check the NVIDIA driver"
    try:
        cupy.cuda.nvrtc.getVersion()  # CuPy compiles every kernel at run time with NVRTC
    except Exception as exc:
        return (
            f"CuPy cannot load NVRTC, the CUDA runtime compiler ({type(exc).__name__}: {exc}); "
            "install it with the CUDA toolkit or pip (e.g. pip install 'cupy-cuda13x[ctk]')"
        )
    return None


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


class CupyBackend(CupyConvOps, NumpyBackend):
    name = "cupy"
    is_gpu = True
    default_dtype: Any = numpy.float32

    def __init__(self) -> None:
        import cupy

        self.xp = cupy
        self.fused = _flag("FASTNET_CUPY_FUSED", True)  # False: the inherited (book's) algorithm
        self.use_graphs = _flag("FASTNET_CUPY_GRAPHS", True)
        self.strict = _flag("FASTNET_CUPY_STRICT", False)  # raise instead of falling back
        self._engine: Any = None
        self._updates: Any = None

    # ------------------------------------------------------------ arrays
    def owns(self, x: object) -> bool:
        return isinstance(x, self.xp.ndarray)

    def address(self, a: Any) -> int:
        return int(a.data.ptr)

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

    def check_targets(self, t: Any, n_classes: int, name: str = "t") -> None:
        """Per-call checks stop at shapes and dtypes on the GPU.

        Reading label values back would synchronise the device on every step,
        the cost the fused step exists to avoid. The trainer checks its data
        once (``check_targets_once``); direct calls must pass labels in
        0..n_classes-1.
        """

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def step_function(self, x: Any) -> Any:
        return (x > 0).astype(self.xp.int64)

    def rng(self, seed: int | None = None) -> Any:
        return self.xp.random.default_rng(seed)

    # ----------------------------------------------------- fused whole net
    @property
    def engine(self) -> Any:
        """The fused-kernel engine (built on first use: it imports the kernel code)."""
        if self._engine is None:
            from .device import CupyDevice
            from .engine import FusedEngine

            self._engine = FusedEngine(CupyDevice(), use_graphs=self.use_graphs, strict=self.strict)
        return self._engine

    def mlp_predict(self, spec: MLPSpec, x: Any) -> Any:
        out = self.engine.predict(spec, x) if self.fused else None
        return out if out is not None else super().mlp_predict(spec, x)

    def mlp_loss(self, spec: MLPSpec, x: Any, t: Any) -> Any:
        out = self.engine.loss(spec, x, t) if self.fused else None
        return out if out is not None else super().mlp_loss(spec, x, t)

    def mlp_gradient(self, spec: MLPSpec, x: Any, t: Any) -> tuple[dict[str, Any], Any]:
        out = self.engine.gradient(spec, x, t) if self.fused else None
        return out if out is not None else super().mlp_gradient(spec, x, t)

    def mlp_numerical_gradient(self, spec: MLPSpec, x: Any, t: Any, h: float = 1e-4) -> dict[str, Any]:
        out = self.engine.numerical_gradient(spec, x, t, h) if self.fused else None
        return out if out is not None else super().mlp_numerical_gradient(spec, x, t, h)

    def mlp_train_step(self, spec: MLPSpec, x: Any, t: Any, optimizer: Any) -> Any:
        out = self.engine.train_step(spec, x, t, optimizer) if self.fused else None
        return out if out is not None else super().mlp_train_step(spec, x, t, optimizer)

    def mlp_train_batches(
        self, spec: MLPSpec, x: Any, t: Any, batches: Iterable[Any], optimizer: Any
    ) -> Any:
        """Losses as one 1-D device array on the fused path, else a list of 0-d arrays."""
        if getattr(batches, "ndim", None) != 2:
            batches = list(batches)  # may be a generator; the fallback needs it again
        out = self.engine.train_batches(spec, x, t, batches, optimizer) if self.fused else None
        return out if out is not None else super().mlp_train_batches(spec, x, t, batches, optimizer)

    # ------------------------------------------- one launch per update
    @property
    def updates(self) -> Any:
        if self._updates is None:
            from .updates import RuleKernels

            self._updates = RuleKernels(self.engine.device)
        return self._updates

    def apply_rule(self, optimizer: Any, kernel: str | None, p: Any, g: Any,
                   state: list[Any], scalars: tuple[float, ...]) -> None:
        """A built-in rule (`kernel` names it) in one launch; anything else runs its own ``rule``,
        as do arrays that share memory (g is p: the rule's statements see each other's writes)."""
        if (kernel is None or not self.fused or not self.updates.fits(p, g, state)
                or overlapping((p, g, *state), self.address)):
            return super().apply_rule(optimizer, kernel, p, g, state, scalars)
        self.updates.apply(kernel, p, g, state, scalars)


Backend = CupyBackend
