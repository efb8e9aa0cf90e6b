"""The CUDA sources compile with nvcc and with NVRTC, where those compilers are present."""

from __future__ import annotations

import pytest

import cuda_checks as checks


def test_sources_compile_with_nvcc():
    """Every kernel kind, epilogue, dtype, activation and optimizer, under -Werror."""
    if checks.nvcc() is None:
        pytest.skip("nvcc not found: cannot compile the generated CUDA here")
    for label, text in checks.variants():
        try:
            checks.compile_nvcc(text)
        except RuntimeError as exc:
            pytest.fail(f"{label}: {exc}")


def test_sources_compile_with_nvrtc():
    """NVRTC is what CuPy compiles with at run time; it needs no GPU, only the library."""
    try:
        import cupy  # noqa: F401
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:
        pytest.skip(f"CuPy with NVRTC not importable here ({type(exc).__name__}: {exc})")
    for label, text in checks.variants():
        try:
            checks.compile_nvrtc(text)
        except Exception as exc:
            pytest.fail(f"{label}: {exc}")



def test_clock_slots_agree_with_the_header():
    """The clock slots Python indexes are the ones common.cuh names."""
    import re

    from fastnet.backend.cupy import cuda, source

    text = cuda.source("common.cuh")
    for name in ("CLOCK_RING", "CLOCK_STEP", "CLOCK_BATCH", "CLOCK_ROWS"):
        m = re.search(rf"\b{name} = (\d+)", text)
        assert m is not None and int(m.group(1)) == getattr(source, name), name


def test_kernel_files_ship_as_package_data():
    """pyproject's package data covers every kernel file the library loads."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from fastnet.backend.cupy import cuda

    root = Path(__file__).resolve().parents[3]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["fastnet.backend.cupy"]
    for path in cuda.KERNEL_DIR.iterdir():
        assert any(path.match(p.split("/")[-1]) for p in patterns), path.name
