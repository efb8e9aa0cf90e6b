"""Shared fixtures: every backend-aware test runs once per backend.

Backends that cannot run here (no CuPy, no GPU) are skipped with the reason
``available_backends()`` gives, so CI without a GPU stays green and says why.
"""

from __future__ import annotations

import os

import pytest

import fastnet

ALL_BACKENDS = ("numpy", "numba", "cupy")
CPU_BACKENDS = ("numpy", "numba")


def _skip_unless_available(name: str) -> None:
    status = fastnet.available_backends()[name]
    if not status.available:
        pytest.skip(f"backend {name!r} unavailable: {status.reason}")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep the parsed-MNIST cache (and anything else under XDG_CACHE_HOME) out of $HOME."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest):
    """Each test body runs inside ``use_backend(name)``; yields the backend object."""
    _skip_unless_available(request.param)
    with fastnet.use_backend(request.param) as bk:
        yield bk


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request: pytest.FixtureRequest):
    _skip_unless_available(request.param)
    with fastnet.use_backend(request.param) as bk:
        yield bk


@pytest.fixture
def mnist_dir() -> str:
    """The real MNIST directory from FASTNET_DATA, or skip."""
    path = os.environ.get("FASTNET_DATA")
    names = ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")
    if not path or not all(os.path.exists(os.path.join(path, n)) for n in names):
        pytest.skip("real MNIST not found: set FASTNET_DATA to a folder with the IDX .gz files")
    return path


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """No MNIST anywhere, no network and no scheduler: `auto` falls back to spiral, nothing slow starts."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FASTNET_DATA", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTNET_OFFLINE", "1")
    monkeypatch.delenv("FASTNET_BACKEND", raising=False)
    monkeypatch.delenv("FASTNET_SCHEDULER", raising=False)
