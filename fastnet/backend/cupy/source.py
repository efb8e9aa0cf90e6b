"""CUDA C source text for the fused kernels, generated per shape and dtype.

Everything here is plain string building: no CuPy import, so the same text can
be compiled by NVRTC (through CuPy), by nvcc (to check it), or by the CPU
emulator in ``emulator.py``. Sizes are baked in as constants so the compiler
can unroll the small loops; values that may change between steps (learning
rate, Adam's step count) are read from device memory, never baked in.

Conventions every kernel follows (the emulator relies on them too):
* every kernel is ``extern "C" __global__ void name(...)`` on one line
  (``__launch_bounds__(n)`` may stand before the name);
* scalar arguments are ``int``, ``long long`` or ``double`` only;
* no warp shuffles or atomics: block reductions go through shared memory and
  ``__syncthreads()``, and no thread returns before a ``__syncthreads()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import cuda
from .launch import EW_THREADS, TILE

LOSS_THREADS = 256  # the loss kernel is one block of this many threads
UPDATE_THREADS = 256
UPDATE_CHUNK = 4096  # elements per block in the multi-tensor optimizer update
CE_DELTA = 1e-7  # the book's log(y + 1e-7)

# Slots of the int64 "clock" array each plan keeps on the device.
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


def prelude(real: str, activation: str | None = None, rule: str | None = None) -> str:
    """The typedefs and kernel files a module shares: math, the activation, the update rule."""
    files = ["common.cuh"]
    lines = []
    if activation is not None:
        files.append("activations.cuh")
        lines += activation_functions(activation)
    if rule is not None:
        files.append("optimizers.cuh")
        lines.append(f"typedef {cuda.RULES[rule]}<real> Rule;")
    return f"typedef {real} real;\n#define R(x) ((real)(x))\n" + cuda.source(*files) + "".join(l + "\n" for l in lines)


def activation_functions(activation: str, real: str = "real", prefix: str = "act") -> list[str]:
    """``{prefix}_f(a)`` and ``{prefix}_b(dout, out)`` of a built-in activation (activations.cuh)."""
    struct = f"{cuda.ACTIVATIONS[activation]}<{real}>"
    return [
        f"static __device__ __forceinline__ {real} {prefix}_f({real} a) {{ return {struct}::f(a); }}",
        f"static __device__ __forceinline__ {real} {prefix}_b({real} d, {real} h) {{ return {struct}::b(d, h); }}",
    ]


# --------------------------------------------------------------------- matmul
@dataclass(frozen=True)
class Gemm:
    """C[M, N] = A @ B with a fused epilogue, tiled in shared memory.

    A(m, k) is ``A[m*lda + k]``, or ``A[k*lda + m]`` when ``a_trans``;
    B(k, n) is ``B[k*ldb + n]``, or ``B[n*ldb + k]`` when ``b_trans``.
    ``ones_row`` makes row M-1 of A all ones (so that row of C is a column
    sum: the bias gradient comes out of the weight-gradient kernel).
    ``split`` > 1 splits K over blockIdx.z into a workspace that a second
    kernel (``name + "_reduce"``) sums in a fixed order before the epilogue.

    Epilogues: "fwd_act" out = act(v + aux[n]); "fwd" out = v + aux[n];
    "bwd_data" out = act_b(v, aux[m, n]); "bwd_w" rows < M-1: out = v +
    lam * aux[m, n] (the weight-decay term), row M-1: out2[n] = v.
    """

    name: str
    M: int
    N: int
    K: int
    lda: int
    ldb: int
    a_trans: bool
    b_trans: bool
    ones_row: bool
    epilogue: str
    split: int = 1

    @property
    def k_slice(self) -> int:
        """K range of one split, a whole number of tiles."""
        per = -(-self.K // self.split)
        return -(-per // TILE) * TILE

    def grid(self) -> tuple[int, int, int]:
        return (-(-self.N // TILE), -(-self.M // TILE), self.split)

    def reduce_grid(self) -> tuple[int, int, int]:
        return (-(-(self.M * self.N) // EW_THREADS), 1, 1)


GEMM_ARGS = "(const real* __restrict__ A, const real* __restrict__ B, const real* aux, real* out, real* out2, real* ws, double lam)"
REDUCE_ARGS = "(const real* __restrict__ ws, const real* aux, real* out, real* out2, double lam)"


def _epilogue(g: Gemm) -> str:
    N = g.N
    if g.epilogue == "fwd_act":
        return f"out[(long long)m * {N} + n] = act_f(v + aux[n]);"
    if g.epilogue == "fwd":
        return f"out[(long long)m * {N} + n] = v + aux[n];"
    if g.epilogue == "bwd_data":
        return f"out[(long long)m * {N} + n] = act_b(v, aux[(long long)m * {N} + n]);"
    if g.epilogue == "bwd_w":
        return (
            f"if (m < {g.M - 1}) {{ long long e = (long long)m * {N} + n;"
            f" out[e] = lam != 0.0 ? v + R(lam) * aux[e] : v; }} else {{ out2[n] = v; }}"
        )
    raise ValueError(f"unknown epilogue {g.epilogue!r}")


def gemm_source(g: Gemm) -> str:
    """The tiled matmul kernel (and its split-K reduction) for one Gemm."""
    M, N = g.M, g.N
    a_rows = M - 1 if g.ones_row else M  # rows of A that live in memory
    if g.a_trans:  # A(m, k) = A[k*lda + m]: consecutive threads read consecutive m
        a_load = (
            f"{{ int m = row0 + tx, k = k0 + ty; real v = R(0);"
            f" if (k < kend) {{ if (m < {a_rows}) v = A[(long long)k * {g.lda} + m];"
            + (f" else if (m == {a_rows}) v = R(1);" if g.ones_row else "")
            + " } As[ty][tx] = v; }"
        )
    else:
        a_load = (
            f"{{ int m = row0 + ty, k = k0 + tx;"
            f" As[tx][ty] = (m < {a_rows} && k < kend) ? A[(long long)m * {g.lda} + k] : R(0); }}"
        )
    if g.b_trans:  # B(k, n) = B[n*ldb + k]
        b_load = (
            f"{{ int k = k0 + tx, n = col0 + ty;"
            f" Bs[tx][ty] = (k < kend && n < {N}) ? B[(long long)n * {g.ldb} + k] : R(0); }}"
        )
    else:
        b_load = (
            f"{{ int k = k0 + ty, n = col0 + tx;"
            f" Bs[ty][tx] = (k < kend && n < {N}) ? B[(long long)k * {g.ldb} + n] : R(0); }}"
        )
    if g.split > 1:
        store = f"ws[((long long)blockIdx.z * {M} + m) * {N} + n] = acc;"
    else:
        store = "real v = acc; " + _epilogue(g)
    text = f"""
extern "C" __global__ void {g.name}{GEMM_ARGS} {{
  __shared__ real As[{TILE}][{TILE + 1}];  // As[k][m]
  __shared__ real Bs[{TILE}][{TILE + 1}];  // Bs[k][n]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row0 = blockIdx.y * {TILE}, col0 = blockIdx.x * {TILE};
  const int kbeg = blockIdx.z * {g.k_slice};
  const int kend = imin({g.K}, kbeg + {g.k_slice});
  real acc = R(0);
  for (int k0 = kbeg; k0 < kend; k0 += {TILE}) {{
    {a_load}
    {b_load}
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < {TILE}; ++kk) acc += As[kk][ty] * Bs[kk][tx];
    __syncthreads();
  }}
  const int m = row0 + ty, n = col0 + tx;
  if (m < {M} && n < {N}) {{ {store} }}
}}
"""
    if g.split > 1:
        text += f"""
extern "C" __global__ void {g.name}_reduce{REDUCE_ARGS} {{
  const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (e < {M * N}LL) {{
    real v = ws[e];
    for (int z = 1; z < {g.split}; ++z) v += ws[(long long)z * {M * N} + e];  // fixed order
    const int m = (int)(e / {N}), n = (int)(e % {N});
    {_epilogue(g)}
  }}
}}
"""
    return text


# ------------------------------------------------------------------- loss
LOSS_ARGS = (
    "(const real* __restrict__ S, const long long* __restrict__ lab, const real* __restrict__ T,"
    " real* __restrict__ dY, const unsigned long long* __restrict__ wptrs,"
    " const unsigned long long* ringptr, long long* clock, double lam)"
)


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


def loss_source(
    name: str, rows: int, classes: int, onehot: bool, weight_sizes: tuple[int, ...], decay: bool
) -> str:
    """Softmax + cross-entropy + its backward, and the loss, in one block.

    Writes dY = (softmax(S) - T) / rows, and the scalar loss (the book's
    ``-sum(log(y[t] + 1e-7)) / rows`` plus ``0.5 * lam * sum(W**2)``) into
    the next slot of the loss ring; bumps the clock (ring slot, Adam's step,
    mini-batch index). One block keeps the loss sum in a fixed order.
    """
    C = classes
    label, target = label_code(C, onehot, "(long long)m", "m")
    decay_code = ""
    if decay:
        parts = []
        for i, size in enumerate(weight_sizes):
            parts.append(
                f"  {{ const real* w = (const real*)wptrs[{i}];"
                f" for (long long j = tid; j < {size}LL; j += {LOSS_THREADS}) {{"
                f" double v = (double)w[j]; sq += v * v; }} }}"
            )
        decay_code = "\n".join(parts) + "\n" + block_sum("sq", LOSS_THREADS)
    return f"""
extern "C" __global__ void {name}{LOSS_ARGS} {{
  __shared__ double red[{LOSS_THREADS}];
  const int tid = threadIdx.x;
  double part = 0.0, sq = 0.0;
  for (int m = tid; m < {rows}; m += {LOSS_THREADS}) {{
    const real* s = S + (long long)m * {C};
    real* d = dY + (long long)m * {C};
    real mx = s[0];
    for (int c = 1; c < {C}; ++c) mx = s[c] > mx ? s[c] : mx;
    real sum = R(0);
    for (int c = 0; c < {C}; ++c) {{ real e = r_exp(s[c] - mx); d[c] = e; sum += e; }}
    {label}
    part += (double)r_log(d[label] / sum + R({c_literal(CE_DELTA, "double")}));
    for (int c = 0; c < {C}; ++c) {{ real y = d[c] / sum; d[c] = (y - {target}) / R({rows}); }}
  }}
{block_sum("part", LOSS_THREADS)}
{decay_code}
  if (tid == 0) {{
    real loss = (real)(-part / {rows}.0);
    if (lam != 0.0) loss = loss + (real)(0.5 * lam * sq);
    real* ring = (real*)ringptr[0];
    const long long pos = clock[{CLOCK_RING}];
    ring[pos] = loss;
    clock[{CLOCK_RING}] = pos + 1;
    clock[{CLOCK_STEP}] += 1;
    clock[{CLOCK_BATCH}] += 1;
  }}
}}
"""



# ------------------------------------------------------------- optimizer
UPDATE_ARGS = (
    "(const unsigned long long* __restrict__ P, const unsigned long long* __restrict__ G,"
    " const unsigned long long* __restrict__ S1, const unsigned long long* __restrict__ S2,"
    " const long long* __restrict__ sizes, const int* __restrict__ ctensor,"
    " const long long* __restrict__ cstart, const double* __restrict__ hyper,"
    " const long long* __restrict__ clock)"
)
# The module's Rule (optimizers.cuh) built from this step's row of the scalars table.
HYPER_ROW = (
    f"const double* h = hyper + {SCALARS} * ((clock[{CLOCK_STEP}] - 1) % clock[{CLOCK_ROWS}]);"
    " const Rule rule(h[0], h[1], h[2], h[3]);"
)


def update_body() -> tuple[str, str]:
    """(setup, body) of one element's update in kernels that compute the gradient
    themselves: the gradient is the local ``gv``; ``ti`` (tensor) and ``i``
    (element) index the P/S1/S2 pointer tables."""
    return HYPER_ROW, "rule.step((real*)P[ti], gv, (real*)S1[ti], (real*)S2[ti], i);"


def update_source(name: str) -> str:
    """One launch updating every parameter with the module's ``Rule``; a chunk
    table maps blocks to tensors.

    The rule's scalars (``step_scalars()``) come from device memory, a table
    with a row per step: a captured graph sees a changed learning rate, and
    an epoch graph a different Adam rate at every step.
    """
    return f"""
extern "C" __global__ void {name}{UPDATE_ARGS} {{
  const int ti = ctensor[blockIdx.x];
  const long long start = cstart[blockIdx.x];
  const long long end = lmin(start + {UPDATE_CHUNK}LL, sizes[ti]);
  real* __restrict__ p = (real*)P[ti];
  const real* __restrict__ g = (const real*)G[ti];
  real* s1 = (real*)S1[ti];
  real* s2 = (real*)S2[ti];
  {HYPER_ROW}
  for (long long i = start + threadIdx.x; i < end; i += blockDim.x) rule.step(p, g[i], s1, s2, i);
}}
"""


# ---------------------------------------------------------------- gather
GATHER_ARGS = (
    "(const real* __restrict__ X, const long long* __restrict__ L, const real* __restrict__ T,"
    " const long long* __restrict__ idx, const long long* __restrict__ clock,"
    " real* __restrict__ xb, long long* __restrict__ lb, real* __restrict__ tb, long long nrows)"
)


def gather_source(name: str, rows: int, features: int, classes: int, onehot: bool) -> str:
    """Copy mini-batch ``clock[BATCH]`` of an epoch's index table to static buffers."""
    tcols = classes if onehot else 1
    if onehot:
        t_copy = f"tb[e] = T[i * {classes} + c];"
    else:
        t_copy = "lb[r] = L[i];"
    return f"""
extern "C" __global__ void {name}{GATHER_ARGS} {{
  long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long step = clock[{CLOCK_BATCH}];
  if (e < {rows * features}LL) {{
    const int r = (int)(e / {features}), c = (int)(e % {features});
    long long i = idx[step * {rows} + r];
    if (i < 0) i += nrows;
    xb[e] = X[i * {features} + c];
  }} else {{
    e -= {rows * features}LL;
    if (e < {rows * tcols}LL) {{
      const int r = (int)(e / {tcols}), c = (int)(e % {tcols});
      long long i = idx[step * {rows} + r];
      if (i < 0) i += nrows;
      (void)c;
      {t_copy}
    }}
  }}
}}
"""


def gather_elements(rows: int, features: int, classes: int, onehot: bool) -> int:
    return rows * features + rows * (classes if onehot else 1)


# ----------------------------------------- epilogues around cuBLAS matmuls
def bias_act_source(name: str, rows: int, cols: int, activation: bool) -> str:
    """a = act(a + b) in place, after a cuBLAS ``x @ W``."""
    body = "act_f(v)" if activation else "v"
    return f"""
extern "C" __global__ void {name}(real* a, const real* __restrict__ b) {{
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < {rows * cols}LL;
       e += (long long)gridDim.x * blockDim.x) {{
    real v = a[e] + b[e % {cols}];
    a[e] = {body};
  }}
}}
"""


def act_back_source(name: str, size: int) -> str:
    """d = act_b(d, h) in place, after a cuBLAS ``dout @ W.T``."""
    return f"""
extern "C" __global__ void {name}(real* d, const real* __restrict__ h) {{
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < {size}LL;
       e += (long long)gridDim.x * blockDim.x) d[e] = act_b(d[e], h[e]);
}}
"""


def colsum_decay_source(name: str, rows: int, cols: int, fan_in: int) -> str:
    """db = column sums of dout; gW += lam * W (after a cuBLAS ``x.T @ dout``)."""
    return f"""
extern "C" __global__ void {name}(const real* __restrict__ D, real* gb, real* gW,
                                  const real* __restrict__ W, double lam) {{
  const long long start = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long n = start; n < {cols}; n += stride) {{
    real v = R(0);
    for (int m = 0; m < {rows}; ++m) v += D[(long long)m * {cols} + n];
    gb[n] = v;
  }}
  if (lam != 0.0)
    for (long long e = start; e < {fan_in * cols}LL; e += stride) gW[e] = gW[e] + R(lam) * W[e];
}}
"""
