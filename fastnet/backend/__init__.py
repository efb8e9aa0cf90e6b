"""Backends: the array module and kernels that layers and nets run on."""

from __future__ import annotations

from .numpy_backend import NumpyBackend
from .registry import (
    BACKEND_NAMES,
    BackendStatus,
    available_backends,
    get_backend,
    init_from_env,
    instance,
    lookup,
    resolve,
    set_backend,
    use_backend,
)
from .spec import MLPSpec

Backend = NumpyBackend  # the interface every backend implements

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendStatus",
    "MLPSpec",
    "NumpyBackend",
    "available_backends",
    "get_backend",
    "init_from_env",
    "instance",
    "lookup",
    "resolve",
    "set_backend",
    "to_numpy",
    "use_backend",
]


def to_numpy(x):  # type: ignore[no-untyped-def]
    """Copy any backend's array (or a scalar) to a NumPy array on the host."""
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        return x.get()
    import numpy

    return numpy.asarray(x)
