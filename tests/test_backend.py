"""Backend selection: names, errors, scoping across threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastnet
from fastnet.backend import registry


def test_default_is_numpy_and_has_xp():
    bk = fastnet.get_backend()
    assert bk.name in ("numpy", "numba", "cupy")
    with fastnet.use_backend("numpy") as bk:
        assert bk.name == "numpy" and bk.xp is np


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="'numpy', 'numba', 'cupy', 'auto'"):
        fastnet.set_backend("tensorflow")
    with pytest.raises(ValueError, match="unknown backend"):
        with fastnet.use_backend("gpu"):
            pass


def test_available_backends_reports_reasons():
    status = fastnet.available_backends()
    assert set(status) == {"numpy", "numba", "cupy"}
    assert status["numpy"].available
    for s in status.values():
        assert s.available or s.reason  # unavailable ones always say why


def test_unavailable_backend_fails_at_selection(monkeypatch):
    monkeypatch.setitem(registry._MODULES, "cupy", "fastnet.tests_missing_module")
    registry._instances.pop("cupy", None)
    with pytest.raises(fastnet.BackendUnavailableError, match="cupy"):
        fastnet.set_backend("cupy")
    assert fastnet.available_backends()["cupy"].available is False


def test_cupy_missing_names_the_extra():
    status = fastnet.available_backends()["cupy"]
    if status.available:
        pytest.skip("CuPy works here")
    with pytest.raises(fastnet.BackendUnavailableError) as info:
        fastnet.set_backend("cupy")
    assert "cuda" in str(info.value).lower()


def test_auto_picks_a_working_backend():
    name = registry.resolve("auto")
    assert fastnet.available_backends()[name].available
    if not fastnet.available_backends()["cupy"].available:
        assert name == "numba"


def test_set_backend_is_process_wide_and_use_backend_scoped():
    before = fastnet.get_backend()
    try:
        fastnet.set_backend("numba")
        assert fastnet.get_backend().name == "numba"
        with fastnet.use_backend("numpy"):
            assert fastnet.get_backend().name == "numpy"
            seen = []
            t = threading.Thread(target=lambda: seen.append(fastnet.get_backend().name))
            t.start()
            t.join()
            assert seen == ["numba"]  # a new thread sees the default, not our override
        assert fastnet.get_backend().name == "numba"
    finally:
        fastnet.set_backend(before)


def test_use_backend_restores_after_exception():
    before = fastnet.get_backend().name
    with pytest.raises(RuntimeError):
        with fastnet.use_backend("numba"):
            raise RuntimeError("boom")
    assert fastnet.get_backend().name == before


def test_threads_do_not_leak_overrides():
    barrier = threading.Barrier(8)
    errors: list[str] = []

    def work(name: str) -> None:
        with fastnet.use_backend(name):
            for _ in range(200):
                barrier.wait() if _ == 0 else None
                if fastnet.get_backend().name != name:
                    errors.append(name)

    threads = [threading.Thread(target=work, args=(n,)) for n in ["numpy", "numba"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_asyncio_tasks_do_not_leak_overrides():
    async def task(name: str) -> list[str]:
        seen = []
        with fastnet.use_backend(name):
            for _ in range(20):
                await asyncio.sleep(0)
                seen.append(fastnet.get_backend().name)
        return seen

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(task(n) for n in ["numpy", "numba"] * 3))

    for name, seen in zip(["numpy", "numba"] * 3, asyncio.run(main())):
        assert set(seen) == {name}


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full)


def test_env_var_sets_default_at_import():
    out = _run("import fastnet; print(fastnet.get_backend().name)", FASTNET_BACKEND="numba")
    assert out.stdout.strip() == "numba", out.stderr
    # A bad value does not break the import; the first use says what is wrong.
    bad = _run("import fastnet; fastnet.get_backend()", FASTNET_BACKEND="nope")
    assert bad.returncode != 0 and "FASTNET_BACKEND: 'nope'" in bad.stderr
    fixed = _run("import fastnet; fastnet.set_backend('numpy'); print(fastnet.get_backend().name)",
                 FASTNET_BACKEND="nope")
    assert fixed.stdout.strip() == "numpy", fixed.stderr


class _FakeCupyArray:
    """Looks like a CuPy array to the type checks, without needing CuPy."""


_FakeCupyArray.__module__ = "cupy._core.core"


def test_gpu_array_on_cpu_backend_is_refused_with_fix(cpu_backend):
    with pytest.raises(fastnet.BackendMismatchError, match="to_numpy"):
        fastnet.sigmoid(_FakeCupyArray())
    net = fastnet.TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(fastnet.BackendMismatchError, match="x is a CuPy"):
        net.predict(_FakeCupyArray())


def test_to_numpy():
    x = np.arange(3.0)
    assert fastnet.to_numpy(x) is x
    assert fastnet.to_numpy([1, 2]).tolist() == [1, 2]
