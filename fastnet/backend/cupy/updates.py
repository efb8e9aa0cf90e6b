"""``optimizer.update`` on the CuPy backend: one launch per parameter.

The kernel is ``kernels/updates.cu``: the built-in rule's struct from
``optimizers.cuh`` (the same code the fused training step runs) applied to
each element. Unused state pointers are passed as `p` and never read.
"""

from __future__ import annotations

from typing import Any

import numpy

from . import cuda

THREADS = 256


class RuleKernels:
    """One module with every (dtype, rule) instantiation, compiled on first use."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._module: Any = None

    def _kernel(self, real: str, rule: str) -> Any:
        if self._module is None:
            names = [cuda.rule_kernel(r, k) for r in ("float", "double") for k in cuda.RULES]
            self._module = self.device.module(cuda.source("updates.cu"), names)
        return self._module.get_function(cuda.rule_kernel(real, rule))

    @staticmethod
    def fits(p: Any, g: Any, state: list[Any]) -> bool:
        """Whether the kernel applies: contiguous arrays of one float dtype and shape."""
        if p.dtype not in (numpy.float32, numpy.float64) or len(state) > 2:
            return False
        return all(
            a.dtype == p.dtype and a.shape == p.shape and a.flags.c_contiguous for a in (p, g, *state)
        )

    def apply(self, rule: str, p: Any, g: Any, state: list[Any], scalars: tuple[float, ...]) -> None:
        kernel = self._kernel(cuda.real_type(p.dtype), rule)
        slots = list(state) + [p] * (2 - len(state))
        values = [numpy.float64(v) for v in scalars] + [numpy.float64(0.0)] * (cuda.SCALARS - len(scalars))
        n = int(p.size)
        self.device.launch(kernel, (max(1, -(-n // THREADS)), 1, 1), (THREADS, 1, 1),
                           (p, g, *slots, *values, numpy.int64(n)))
