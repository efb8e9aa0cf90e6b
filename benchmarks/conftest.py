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
import time
from collections.abc import Iterator
from typing import Any

import pytest

import fastnet
from fastnet.datasets import mnist_available

from .workloads import QUICK, SUBSET

ALL_BACKENDS = ("numpy", "numba", "cupy")
# Environment variables that change timings (threads, allocator, JIT); recorded with each run.
TIMING_ENV = ("MALLOC_", "GLIBC_TUNABLES", "OMP_", "OPENBLAS_", "MKL_", "NUMBA_", "XLA_FLAGS",
              "FASTNET_BACKEND")


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
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
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


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall seconds, CPU seconds busy on the whole machine, CPU seconds of this process)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return time.monotonic(), (sum(fields[:8]) - idle) / ticks, own.user + own.system


_START = _cpu_snapshot()


def other_load() -> dict[str, float] | None:
    """Cores kept busy by other processes since this session began (Linux only).

    Other work on a small machine slows multi-threaded code far more than its
    share of the cores; the report prints this so a reader can judge a run.
    """
    end = _cpu_snapshot()
    if _START is None or end is None or end[0] - _START[0] < 1:
        return None
    seconds = end[0] - _START[0]
    others = max(0.0, (end[1] - _START[1]) - (end[2] - _START[2])) / seconds
    return {"other_cores": round(others, 2), "seconds": round(seconds, 1)}


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
        "other_load": other_load(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(TIMING_ENV)},
    }


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Run the peers last: PyTorch's and JAX's thread pools stay busy after they
    are loaded and would slow every fastnet case timed after them."""
    peers = [item for item in items if item.path.name == "bench_peers.py"]
    if peers:
        others = [item for item in items if item.path.name != "bench_peers.py"]
        items[:] = others + peers
