"""Fixtures of the CuPy backend tests: the CPU emulator, engines and backends on it."""

from __future__ import annotations

import pytest

import cuda_emulator as emulator
from cupy_helpers import EmulatedCupyBackend
from fastnet.backend import registry
from fastnet.backend.cupy.engine import FusedEngine


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing a test selects here leaks into the process-wide registry."""
    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.setattr(registry, "_default", registry._default)


@pytest.fixture(scope="session")
def emu(tmp_path_factory: pytest.TempPathFactory) -> emulator.EmuDevice:
    return emulator.EmuDevice(str(tmp_path_factory.mktemp("emu")))


@pytest.fixture(params=["rows", "tiled"])
def engine(request: pytest.FixtureRequest, emu: emulator.EmuDevice) -> FusedEngine:
    """Both fused layouts: the two-kernel step (small nets) and the tiled kernels."""
    # strict: a failure raises instead of falling back
    eng = FusedEngine(emu, strict=True, rows_max_traffic=2.0**26 if request.param == "rows" else 0.0)
    eng.mode = request.param
    return eng


@pytest.fixture
def emu_backend(emu: emulator.EmuDevice) -> EmulatedCupyBackend:
    return EmulatedCupyBackend(emu)

