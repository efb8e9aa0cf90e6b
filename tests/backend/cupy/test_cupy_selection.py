"""Selecting the CuPy backend: the reasons it gives when it cannot run (a fake ``cupy`` module)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

import fastnet
from fastnet.backend import registry


def fake_cupy(driver: int = 13000, runtime: int = 13000, devices: int = 1, nvrtc: bool = True) -> types.ModuleType:
    """A stand-in ``cupy`` with just what ``unavailable_reason`` asks."""
    cupy = types.ModuleType("cupy")
    rt = types.SimpleNamespace(
        driverGetVersion=lambda: driver,
        runtimeGetVersion=lambda: runtime,
        getDeviceCount=lambda: devices,
    )

    def nvrtc_version() -> tuple[int, int]:
        if not nvrtc:
            raise OSError("libnvrtc.so.13: cannot open shared object file")
        return (13, 0)

    cupy.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        runtime=rt, is_available=lambda: devices > 0, nvrtc=types.SimpleNamespace(getVersion=nvrtc_version)
    )
    cupy.ndarray = type("ndarray", (), {})  # type: ignore[attr-defined]
    return cupy


def _reason(monkeypatch: pytest.MonkeyPatch, module: Any) -> str:
    monkeypatch.setitem(sys.modules, "cupy", module)
    return fastnet.available_backends()["cupy"].reason


def test_no_cupy_names_both_extras(monkeypatch, isolated_registry):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    status = fastnet.available_backends()["cupy"]
    assert not status.available
    assert "fastnet[cuda12]" in status.reason and "fastnet[cuda13]" in status.reason
    with pytest.raises(fastnet.BackendUnavailableError, match=r"cuda12.*cuda13"):
        fastnet.set_backend("cupy")


def test_no_driver(monkeypatch, isolated_registry):
    reason = _reason(monkeypatch, fake_cupy(driver=0))
    assert "no NVIDIA driver" in reason
    with pytest.raises(fastnet.BackendUnavailableError, match="no NVIDIA driver"):
        fastnet.set_backend("cupy")


def test_driver_too_old_for_the_cupy_build(monkeypatch, isolated_registry):
    reason = _reason(monkeypatch, fake_cupy(driver=12040, runtime=13000))
    assert "driver supports CUDA 12.4" in reason and "needs CUDA 13.0" in reason
    assert "fastnet[cuda12]" in reason  # the build that this driver can run


def test_newer_minor_runtime_is_accepted(monkeypatch, isolated_registry):
    # CUDA's minor-version compatibility: a 13.2 build runs on a 13.0 driver
    assert _reason(monkeypatch, fake_cupy(driver=13000, runtime=13020)) == ""


def test_cupy_without_a_device(monkeypatch, isolated_registry):
    reason = _reason(monkeypatch, fake_cupy(devices=0))
    assert "sees no CUDA device" in reason and "CUDA_VISIBLE_DEVICES" in reason
    with pytest.raises(fastnet.BackendUnavailableError, match="no CUDA device"):
        fastnet.set_backend("cupy")


def test_nvrtc_missing(monkeypatch, isolated_registry):
    reason = _reason(monkeypatch, fake_cupy(nvrtc=False))
    assert "NVRTC" in reason and "libnvrtc" in reason


def test_working_fake_is_available_and_auto_prefers_it(monkeypatch, isolated_registry):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    assert fastnet.available_backends()["cupy"].available
    assert registry.resolve("auto") == "cupy"


def test_broken_import_is_reported(monkeypatch, isolated_registry):
    class Broken(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("CUDA_ERROR_NO_DEVICE in cupy.cuda")

    reason = _reason(monkeypatch, Broken("cupy"))
    assert "CUDA is not usable" in reason and "CUDA_ERROR_NO_DEVICE" in reason

