"""Fixtures for the benchmark suites and the facts recorded with every run.

Each backend case runs inside ``fastnet.use_backend(name)``; a backend that
cannot run here (no CuPy, no GPU) is skipped with the reason fastnet gives.
``--benchmark-disable`` runs every case once as a correctness check (that is
what a plain ``pytest`` does in CI); without it the cases are timed.
"""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any, Iterator

import pytest

import fastnet
from fastnet.datasets import mnist_available

from .workloads import QUICK, SUBSET

ALL_BACKENDS = ("numpy", "numba", "cupy")


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The backend object, active for the whole case."""
    status = fastnet.available_backends()[request.param]
    if not status.available:
        pytest.skip(f"backend {request.param!r} unavailable: {status.reason}")
    with fastnet.use_backend(request.param) as bk:
        yield bk


def cpu_model() -> str:
    """The CPU's model name as lscpu (or /proc/cpuinfo) gives it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("fastnet", "numpy", "numba", "cupy", "torch", "jax"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    out.setdefault("fastnet", fastnet.__version__)
    return out


def _blas() -> list[str]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    import numpy  # noqa: F401  (load NumPy's BLAS before asking)

    return [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
        f"{i.get('num_threads')} threads)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    status = fastnet.available_backends()
    machine_info["fastnet"] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
        "blas": _blas(),
        "backends": {k: (v.reason or "available") for k, v in status.items()},
        "mnist": mnist_available(),
        "quick": QUICK,
        "book_loop_subset": SUBSET,
    }


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Run the peers last: PyTorch's and JAX's thread pools stay busy after they
    are loaded and would slow every fastnet case timed after them."""
    peers = [item for item in items if item.path.name == "bench_peers.py"]
    if peers:
        others = [item for item in items if item.path.name != "bench_peers.py"]
        items[:] = others + peers
