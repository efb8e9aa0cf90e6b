"""A plan module's prelude, and what the generated two-kernel step (``source_rows``) uses.

The kernel files under ``kernels/`` are templates; the two-kernel step
unrolls its work per layer, which a template cannot express for any depth,
so its text is generated in Python. Everything here is
plain string building (no CuPy import): NVRTC, nvcc and the CPU emulator
compile the same text.

Conventions every generated kernel follows (the emulator relies on them too):
* every kernel is ``extern "C" __global__ void name(...)`` on one line
  (``__launch_bounds__(n)`` may stand before the name);
* scalar arguments are ``int``, ``long long`` or ``double`` only;
* no warp shuffles or atomics: block reductions go through shared memory and
  ``__syncthreads()``, and no thread returns before a ``__syncthreads()``.
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


def c_literal(value: float, real: str) -> str:
    """A C literal of type `real` (repr keeps every digit of a Python float)."""
    return f"{value!r}f" if real == "float" else repr(float(value))


def prelude(real: str, activation: str | None = None, rule: str | None = None, files: tuple[str, ...] = ()) -> str:
    """The typedefs and kernel files a module shares: math, the activation, the update rule,
    and the kernel files `files`."""
    files = ("common.cuh", *files)
    lines = []
    if activation is not None:
        files += ("activations.cuh",)
        lines += activation_functions(activation)
    if rule is not None:
        files += ("optimizers.cuh",)
    return f"typedef {real} real;\n#define R(x) ((real)(x))\n" + cuda.source(*files) + "".join(l + "\n" for l in lines)


def activation_functions(activation: str, real: str = "real", prefix: str = "act") -> list[str]:
    """``{prefix}_f(a)`` and ``{prefix}_b(dout, out)`` of a built-in activation (activations.cuh)."""
    struct = f"{cuda.ACTIVATIONS[activation]}<{real}>"
    return [
        f"static __device__ __forceinline__ {real} {prefix}_f({real} a) {{ return {struct}::f(a); }}",
        f"static __device__ __forceinline__ {real} {prefix}_b({real} d, {real} h) {{ return {struct}::b(d, h); }}",
    ]


def block_sum(var: str, threads: int) -> str:
    """Fixed-order tree sum of `var` over the block into red[0] (deterministic)."""
    return f"""  red[tid] = {var};
  __syncthreads();
  for (int s = {threads // 2}; s > 0; s >>= 1) {{
    if (tid < s) red[tid] += red[tid + s];
    __syncthreads();
  }}
  {var} = red[0];
  __syncthreads();"""


def label_code(classes: int, onehot: bool, row: str, lab_row: str | None = None) -> tuple[str, str]:
    """C code setting ``label`` for data row `row` (`lab_row` when indexing labels), and the
    expression of target ``c``.

    One-hot rows: the label is the first largest entry (``t`` points at the
    row); class indices wrap like CuPy's indexing instead of reading out of
    bounds.
    """
    C = classes
    if onehot:
        code = (
            f"const real* t = T + {row} * {C}; int label = 0; real best = t[0];"
            f" for (int c = 1; c < {C}; ++c) if (t[c] > best) {{ best = t[c]; label = c; }}"
        )
        return code, "t[c]"
    index = row if lab_row is None else lab_row
    return f"int label = (int)(lab[{index}] % {C}); if (label < 0) label += {C};", "(c == label ? R(1) : R(0))"


def update_body(rule: str) -> tuple[str, str]:
    """(setup, body) of one element's update in kernels that compute the gradient
    themselves: the gradient is the local ``gv``; ``ti`` (tensor) and ``i``
    (element) index the P/S1/S2 pointer tables."""
    setup = f"const auto rule = step_rule<real, {cuda.RULES[rule]}>(hyper, clock);"
    return setup, "rule.step((real*)P[ti], gv, (real*)S1[ti], (real*)S2[ti], i);"


def gather_elements(rows: int, features: int, classes: int, onehot: bool) -> int:
    return rows * features + rows * (classes if onehot else 1)
