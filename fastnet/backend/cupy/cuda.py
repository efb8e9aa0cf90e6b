"""The CUDA files under ``kernels/`` and the names the library instantiates from them.

``source(*names)`` is the text of those files with their ``#include "..."``
of sibling files inlined, each file once. NVRTC, nvcc and the CPU emulator
all compile that one self-contained text, and CuPy's on-disk kernel cache,
which is keyed on the text, sees a change to any header.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy

KERNEL_DIR = Path(__file__).with_name("kernels")

# fastnet.activations kernel name -> struct in activations.cuh
ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
# fastnet.optimizers kernel name -> struct in optimizers.cuh
RULES = {
    "sgd": "Sgd",
    "momentum": "Momentum",
    "nesterov": "Nesterov",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
}
SCALARS = 4  # step_scalars() values a rule reads (unused ones are 0)

_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.M)


@functools.lru_cache(maxsize=None)
def _file(name: str) -> str:
    return (KERNEL_DIR / name).read_text()


def source(*names: str) -> str:
    """The named kernel files, includes inlined once each, ``#pragma once`` dropped."""
    seen: set[str] = set()
    out: list[str] = []

    def add(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        text = _file(name).replace("#pragma once\n", "")
        pos = 0
        for m in _INCLUDE.finditer(text):
            out.append(text[pos : m.start()])
            add(m.group(1))
            pos = m.end()
        out.append(text[pos:])

    for name in names:
        add(name)
    return "".join(out)


def real_type(dtype: object) -> str:
    """The C type of a NumPy float dtype the kernels are built for."""
    d = numpy.dtype(dtype)  # type: ignore[call-overload]
    if d == numpy.float32:
        return "float"
    if d == numpy.float64:
        return "double"
    raise TypeError(f"fused kernels support float32 and float64, not {d}")


def rule_kernel(real: str, rule: str) -> str:
    """The name expression of updates.cu's kernel for one rule and type."""
    return f"apply_rule<{real}, {RULES[rule]}>"
