"""Shared helpers of the CuPy backend tests: data, comparisons, the emulated backend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import cuda_emulator as emulator
from fastnet.backend import cupy as cupy_backend
from fastnet.backend.cupy.engine import FusedEngine
from fastnet.backend.numpy_backend import NumpyBackend

needs_cxx = pytest.mark.skipif(emulator.compiler() is None, reason="no C++ compiler (g++) for the CUDA emulator")

REF = NumpyBackend()


def plan_kinds(engine: FusedEngine) -> set[str]:
    return {type(p).__name__ for p in engine.plans.values()}


def make_params(sizes: tuple[int, ...], dtype: Any = np.float64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
        params[f"W{i}"] = (0.3 * rng.standard_normal((a, b))).astype(dtype)
        params[f"b{i}"] = (0.1 * rng.standard_normal(b)).astype(dtype)
    return params


def make_batch(rows: int, sizes: tuple[int, ...], onehot: bool, dtype: Any = np.float64, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.random((rows, sizes[0])).astype(dtype)
    x[:, ::3] = 0  # zero inputs, like MNIST's background pixels
    labels = rng.integers(0, sizes[-1], rows)
    return x, (np.eye(sizes[-1], dtype=dtype)[labels] if onehot else labels)


def worst(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in b)


class EmulatedCupyBackend(cupy_backend.CupyBackend):
    """CupyBackend's own methods over NumPy arrays and the emulated kernels."""

    name = "cupy-emulated"

    def __init__(self, device: emulator.EmuDevice) -> None:  # no CuPy import
        self.xp = np
        self.fused, self.use_graphs, self.strict = True, False, True
        self._engine = FusedEngine(device, strict=True)
        self._updates = None

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def address(self, a: Any) -> int:
        return int(a.ctypes.data)

    def synchronize(self) -> None:
        pass


