"""The text a plan compiles: a type prelude and kernel files (no CuPy import).

NVRTC, nvcc and the CPU emulator compile the same text. Conventions every
kernel follows (the emulator relies on them too): scalar arguments are
``int``, ``long long`` or ``double`` only; no warp shuffles or atomics:
block reductions go through shared memory and ``__syncthreads()``, and no
thread returns before a ``__syncthreads()`` its block still has to pass.
"""

from __future__ import annotations

from . import cuda

LOSS_THREADS = 256  # the loss kernel is one block of this many threads
UPDATE_THREADS = 256
UPDATE_CHUNK = 4096  # elements per block in the multi-tensor optimizer update
CE_DELTA = 1e-7  # the book's log(y + 1e-7)

# Slots of the int64 "clock" array each plan keeps on the device (as in common.cuh).
CLOCK_RING = 0  # next free slot of the loss ring
CLOCK_STEP = 1  # steps since the scalars table was loaded; bumped before the update reads it
CLOCK_BATCH = 2  # which mini-batch of an epoch the gather kernel reads
CLOCK_ROWS = 3  # rows of the scalars table: step k (from 1) reads row (k - 1) % rows
CLOCK_SIZE = 4

SCALARS = cuda.SCALARS
real_type = cuda.real_type


def prelude(real: str, files: tuple[str, ...] = ()) -> str:
    """The `real` typedef and the kernel files `files` (common.cuh first)."""
    return f"typedef {real} real;\n" + cuda.source("common.cuh", *files)


def gather_elements(rows: int, features: int, classes: int, onehot: bool) -> int:
    return rows * features + rows * (classes if onehot else 1)
