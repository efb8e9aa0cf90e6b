"""Which backend does the work: a process-wide default plus a scoped override.

``set_backend`` changes the default every thread sees; ``use_backend`` overrides
it for the current thread or asyncio task only (a ``ContextVar``), so two
threads can train on two backends at once without seeing each other's choice.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import threading
from typing import Iterator, NamedTuple

from ..errors import BackendUnavailableError
from .numpy_backend import NumpyBackend

__all__ = [
    "BACKEND_NAMES",
    "BackendStatus",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "resolve",
    "instance",
    "lookup",
]

# name -> module holding `Backend` (the class) and `unavailable_reason()`.
_MODULES = {
    "numpy": "fastnet.backend.numpy_backend",
    "numba": "fastnet.backend.numba",
    "cupy": "fastnet.backend.cupy",
}
BACKEND_NAMES: tuple[str, ...] = (*_MODULES, "auto")
_AUTO_ORDER = ("cupy", "numba", "numpy")

_lock = threading.Lock()
_instances: dict[str, NumpyBackend] = {}
_default: NumpyBackend | None = None
_override: contextvars.ContextVar[NumpyBackend | None] = contextvars.ContextVar(
    "fastnet_backend", default=None
)


class BackendStatus(NamedTuple):
    """Whether a backend can run here and, if not, why and how to fix it."""

    name: str
    available: bool
    reason: str  # empty when available


def _check_name(name: object, what: str = "name") -> str:
    if isinstance(name, NumpyBackend):
        return name.name
    if not isinstance(name, str) or name.lower() not in BACKEND_NAMES:
        valid = ", ".join(repr(n) for n in BACKEND_NAMES)
        raise ValueError(f"unknown backend {what} {name!r}; expected one of {valid}")
    return name.lower()


def _status(name: str) -> BackendStatus:
    try:
        module = importlib.import_module(_MODULES[name])
        reason = module.unavailable_reason()
    except ImportError as exc:  # a backend module whose own imports fail
        reason = f"importing {name} failed: {exc}"
    return BackendStatus(name, reason is None, reason or "")


def available_backends() -> dict[str, BackendStatus]:
    """Every backend fastnet knows, with whether it works here and why not."""
    return {name: _status(name) for name in _MODULES}


def resolve(name: str) -> str:
    """Turn "auto" into the fastest backend that works here; check other names."""
    name = _check_name(name)
    if name != "auto":
        return name
    for candidate in _AUTO_ORDER:
        if _status(candidate).available:
            return candidate
    return "numpy"


def instance(name: str | NumpyBackend) -> NumpyBackend:
    """The backend object for a name (created once per process), or `name` itself if it is one."""
    if isinstance(name, NumpyBackend):
        return name
    name = resolve(name)
    with _lock:
        backend = _instances.get(name)
        if backend is None:
            status = _status(name)
            if not status.available:
                raise BackendUnavailableError(
                    f"backend {name!r} is not available: {status.reason}"
                )
            module = importlib.import_module(_MODULES[name])
            backend = _instances[name] = module.Backend()
    return backend


def set_backend(name: str | NumpyBackend) -> NumpyBackend:
    """Make `name` the process-wide default backend and return it.

    Raises ``ValueError`` for an unknown name and ``BackendUnavailableError``
    (with the reason and the fix) when the backend cannot run here.
    """
    global _default
    backend = instance(name)
    _default = backend
    return backend


def get_backend() -> NumpyBackend:
    """The backend in effect here: the scoped override, else the default."""
    backend = _override.get()
    if backend is not None:
        return backend
    if _default is None:
        init_from_env()
    assert _default is not None
    return _default


@contextlib.contextmanager
def use_backend(name: str | NumpyBackend) -> Iterator[NumpyBackend]:
    """Use `name` inside the ``with`` block, in this thread or task only."""
    token = _override.set(instance(name))
    try:
        yield _override.get()  # type: ignore[misc]
    finally:
        _override.reset(token)


def lookup(backend: str | NumpyBackend | None) -> NumpyBackend:
    """The backend a net, layer or optimizer binds to: the active one for None."""
    return get_backend() if backend is None else instance(backend)


def init_from_env() -> None:
    value = os.environ.get("FASTNET_BACKEND", "").strip() or "numpy"
    try:
        name = _check_name(value, "in FASTNET_BACKEND:")
        set_backend(name)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"FASTNET_BACKEND={value}: {exc}") from None
