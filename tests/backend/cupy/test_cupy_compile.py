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

