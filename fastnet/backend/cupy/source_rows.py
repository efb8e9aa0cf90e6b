"""The two-kernel step for small nets: one kernel per group of rows, one per parameter.

At batch 100 a 784-50-10 step is a few MFLOP: launches, not arithmetic, set
its time. Forward, softmax/cross-entropy and the backward pass of the *data*
are independent per sample, so kernel A gives each block a few rows and runs
all of that in shared memory. Only the weight gradients sum over rows;
kernel B gives each parameter a few threads, sums its gradient over the batch
and applies the optimizer update in place, and its last block sums the loss.
Every sum runs in a fixed order, so results repeat exactly.

The plan picks this layout when every block can afford to read all weights
(small nets); big layers go to the tiled kernels or cuBLAS instead.
"""

from __future__ import annotations

from .source import (
    CE_DELTA,
    CLOCK_STEP,
    CLOCK_BATCH,
    CLOCK_RING,
    block_sum,
    c_literal,
    label_code,
    update_body,
)
from .launch import B_THREADS, RowsShape

ROWS_A_ARGS = (
    "(const real* __restrict__ X, const long long* __restrict__ lab, const real* __restrict__ T,"
    " const long long* __restrict__ idx, long long* clock, const unsigned long long* __restrict__ wptrs,"
    " const unsigned long long* __restrict__ bptrs, real* __restrict__ H, real* __restrict__ D,"
    " real* __restrict__ S, double* __restrict__ rowloss, long long* __restrict__ rowix,"
    " double* __restrict__ sq, long long nrows, double lam)"
)


def rows_a_source(name: str, shape: RowsShape, stage: str, onehot: bool, gather: bool, decay: bool) -> str:
    """Kernel A: forward (+ loss and backward of the data) for `per_block` rows per block."""
    n, L, R, B, TH = shape.sizes, shape.depth, shape.per_block, shape.rows, shape.threads
    acts = [R * sum(n[1:i]) for i in range(L + 1)]  # shared offset of layer i's output (i >= 1)
    part_size = max(shape.splits(i) * R * n[i + 1] for i in range(L))
    dmax = R * max(n[1:])

    lines = [
        f'extern "C" __global__ void __launch_bounds__({TH}) {name}{ROWS_A_ARGS} {{',
        f"  __shared__ real part[{part_size}];",
        f"  __shared__ real act[{max(R * sum(n[1:]), 1)}];",
        f"  __shared__ long long rix[{R}];",
        f"  __shared__ real xs[{R * n[0]}];  // the block's input rows (zeros past the batch)",
        "  const int tid = threadIdx.x;",
        f"  const int r0 = blockIdx.x * {R};",
        f"  const int nr = imin({R}, {B} - r0);",
    ]
    if stage != "predict":
        lines.insert(3, f"  __shared__ real dA[{dmax}];")
    if stage in ("grad", "train") and L >= 3:
        lines.insert(3, f"  __shared__ real dB[{dmax}];")  # deltas ping-pong between dA and dB
    if decay and stage != "predict":
        lines.insert(3, f"  __shared__ double red[{TH}];")
    lines += [
        f"  if (tid < {R}) {{",
        "    long long i = r0 + tid;",
    ]
    if gather:
        lines.append(
            f"    if (tid < nr) {{ i = idx[clock[{CLOCK_BATCH}] * {B} + r0 + tid]; if (i < 0) i += nrows; }}"
        )
    lines += [
        "    rix[tid] = i;",
        "    if (tid < nr) rowix[r0 + tid] = i;",
        "  }",
        "  __syncthreads();",
        f"  for (int e = tid; e < {R * n[0]}; e += {TH}) {{",
        f"    const int r = e / {n[0]}, k = e % {n[0]};",
        f"    const real v = r < nr ? X[rix[r] * {n[0]} + k] : R(0);",
        "    xs[e] = v;",
        "  }",
        "  __syncthreads();",
    ]
    for i in range(L):
        K, N, Sp = n[i], n[i + 1], shape.splits(i)
        KS = -(-K // Sp)
        last = i == L - 1
        if i == 0:
            inp = f"xs[r * {K} + k]"
        else:
            inp = f"act[{acts[i]} + r * {K} + k]"
        store = f"act[{acts[i + 1]} + r * {N} + j] = v;"
        if not last:
            store += f" H[{shape.h_offset(i + 1)} + (long long)(r0 + r) * {N} + j] = v;"
        elif stage == "predict":
            store += f" S[(long long)(r0 + r) * {N} + j] = v;"
        value = "v + b[j]" if last else "act_f(v + b[j])"
        lines.append(f"  {{  // layer {i}: ({K} -> {N}), K split {Sp} ways")
        lines.append(f"    const real* __restrict__ W = (const real*)wptrs[{i}];")
        lines.append(f"    const real* __restrict__ b = (const real*)bptrs[{i}];")
        lines += [
            f"    for (int jj = tid; jj < {N * Sp}; jj += {TH}) {{",
            f"      const int j = jj % {N}, s = jj / {N};",
            f"      const int kb = s * {KS}, ke = imin({K}, kb + {KS});",
            f"      real acc[{R}];",
            f"      for (int r = 0; r < {R}; ++r) acc[r] = R(0);",
            "#pragma unroll 16",
            "      for (int k = kb; k < ke; ++k) {",
            f"        const real w = W[(long long)k * {N} + j];",
            f"        for (int r = 0; r < {R}; ++r) acc[r] += {inp} * w;  // rows past nr: unused",
            "      }",
            f"      for (int r = 0; r < {R}; ++r) part[(s * {R} + r) * {N} + j] = acc[r];",
            "    }",
        ]
        lines += [
            "    __syncthreads();",
            f"    for (int e = tid; e < {R * N}; e += {TH}) {{",
            f"      const int r = e / {N}, j = e % {N};",
            "      if (r < nr) {",
            f"        real v = part[r * {N} + j];",
            f"        for (int s = 1; s < {Sp}; ++s) v += part[(s * {R} + r) * {N} + j];",
            f"        v = {value};",
            f"        {store}",
            "      }",
            "    }",
            "    __syncthreads();",
            "  }",
        ]
    if stage == "predict":
        lines.append("}")
        return "\n".join(lines) + "\n"
    C = n[-1]
    label, target = label_code(C, onehot, "rix[r]")
    lines += [
        "  if (tid < nr) {  // softmax + cross-entropy of one row per thread",
        "    const int r = tid;",
        f"    const real* s = act + {acts[L]} + r * {C};",
        f"    real* d = dA + r * {C};",
        "    real mx = s[0];",
        f"    for (int c = 1; c < {C}; ++c) mx = s[c] > mx ? s[c] : mx;",
        "    real sum = R(0);",
        f"    for (int c = 0; c < {C}; ++c) {{ real e = r_exp(s[c] - mx); d[c] = e; sum += e; }}",
        f"    {label}",
        f"    rowloss[r0 + r] = (double)r_log(d[label] / sum + R({c_literal(CE_DELTA, 'double')}));",
        f"    for (int c = 0; c < {C}; ++c) {{",
        f"      real y = d[c] / sum; real g = (y - {target}) / R({B});",
        f"      d[c] = g; D[{shape.d_offset(L - 1)} + (long long)(r0 + r) * {C} + c] = g;",
        "    }",
        "  }",
        "  __syncthreads();",
    ]
    if stage in ("grad", "train"):
        cur, nxt = "dA", "dB"
        for i in reversed(range(1, L)):
            K, N = n[i], n[i + 1]
            lines += [
                f"  {{  // back through layer {i}: delta of layer {i - 1}'s output",
                f"    const real* __restrict__ W = (const real*)wptrs[{i}];",
                f"    for (int e = tid; e < {R * K}; e += {TH}) {{",
                f"      const int r = e / {K}, k = e % {K};",
                "      if (r < nr) {",
                "        real v = R(0);",
                "#pragma unroll 8",
                f"        for (int j = 0; j < {N}; ++j) v += {cur}[r * {N} + j] * W[(long long)k * {N} + j];",
                f"        v = act_b(v, act[{acts[i]} + r * {K} + k]);",
                (f"        {nxt}[r * {K} + k] = v;" if i > 1 else ""),
                f"        D[{shape.d_offset(i - 1)} + (long long)(r0 + r) * {K} + k] = v;",
                "      }",
                "    }",
                "    __syncthreads();",
                "  }",
            ]
            cur, nxt = nxt, cur
    if decay and stage != "predict":  # 0.5 * lam * sum(W**2) needs the weights before kernel B updates them
        lines += ["  if (blockIdx.x == 0) {", "    double sqs = 0.0;"]
        for i in range(L):
            lines.append(
                f"    {{ const real* w = (const real*)wptrs[{i}];"
                f" for (long long j = tid; j < {n[i] * n[i + 1]}LL; j += {TH}) {{"
                " double v = (double)w[j]; sqs += v * v; } }"
            )
        lines += [block_sum("sqs", TH).replace("\n", "\n  "), "    if (tid == 0) sq[0] = sqs;", "  }"]
    lines += [
        f"  if (blockIdx.x == 0 && tid == 0) clock[{CLOCK_STEP}] += 1;  // kernel B reads its scalars row by it",
        "}",
    ]
    return "\n".join(lines) + "\n"


ROWS_B_ARGS = (
    "(const real* __restrict__ X, const long long* __restrict__ rowix, const real* __restrict__ H,"
    " const real* __restrict__ D, const double* __restrict__ rowloss, const double* __restrict__ sq,"
    " const unsigned long long* __restrict__ P, const unsigned long long* __restrict__ G,"
    " const unsigned long long* __restrict__ S1, const unsigned long long* __restrict__ S2,"
    " const double* __restrict__ hyper, long long* clock, const unsigned long long* __restrict__ ringptr,"
    " double lam)"
)


STAGED_ROWS = 4096  # kernel B keeps a gathered batch's row numbers in shared memory up to this


def rows_b_blocks(shape: RowsShape, stage: str) -> int:
    """Blocks of kernel B: parameters (stages grad/train), plus the loss block."""
    if stage not in ("grad", "train"):
        return 1
    n = shape.sizes
    total = sum(n[i] * n[i + 1] + n[i + 1] for i in range(shape.depth))
    per_block = B_THREADS // shape.b_split
    return -(-total // per_block) + 1


def rows_b_source(
    name: str, shape: RowsShape, stage: str, decay: bool, gather: bool = True, rule: str | None = None
) -> str:
    """Kernel B: each parameter's gradient summed over the batch (+ its update); the loss.

    """
    n, L, B, TH = shape.sizes, shape.depth, shape.rows, B_THREADS
    nb = rows_b_blocks(shape, stage) - 1  # parameter blocks; block nb sums the loss
    RS = shape.b_split
    PB, RB = TH // RS, -(-B // RS)
    lines = [
        f'extern "C" __global__ void {name}{ROWS_B_ARGS} {{',
        f"  __shared__ double red[{TH}];",
        "  const int tid = threadIdx.x;",
        f"  if (blockIdx.x == {nb}) {{  // the loss: fixed-order sum over rows",
        "    double part = 0.0;",
        f"    for (int m = tid; m < {B}; m += {TH}) part += rowloss[m];",
        block_sum("part", TH),
        "    if (tid == 0) {",
        f"      real loss = (real)(-part / {B}.0);",
        ("      if (lam != 0.0) loss = loss + (real)(0.5 * lam * sq[0]);" if decay else ""),
        "      real* ring = (real*)ringptr[0];",
        f"      const long long pos = clock[{CLOCK_RING}];",
        "      ring[pos] = loss;",
        f"      clock[{CLOCK_RING}] = pos + 1;",
        f"      clock[{CLOCK_BATCH}] += 1;",
        "    }",
        "    return;  // a whole block returns: no barrier below waits for it",
        "  }",
    ]
    if stage not in ("grad", "train"):
        lines.append("}")
        return "\n".join(lines) + "\n"
    staged = gather and B <= STAGED_ROWS
    if staged:
        lines += [
            f"  __shared__ long long srow[{B}];",
            f"  for (int r = tid; r < {B}; r += {TH}) srow[r] = rowix[r];",
            "  __syncthreads();",
        ]
    lines += [
        f"  const int pl = tid % {PB}, rs = tid / {PB};",
        f"  const long long e = (long long)blockIdx.x * {PB} + pl;",
        f"  const int rb = rs * {RB}, re = imin({B}, rb + {RB});",
        "  real gv = R(0);",
        "  int ti = -1;",
        "  long long i = 0;",
    ]
    if stage == "train":
        assert rule is not None
        setup, body = update_body(rule)
        lines.append("  " + setup + "  // the rule's scalars: loaded before the sums need them")
    start, branch = 0, "if"
    for li in range(L):
        K, N = n[li], n[li + 1]
        if li == 0:
            row = "srow[r]" if staged else ("rowix[r]" if gather else "(long long)r")
            inp = f"X[{row} * {K} + k]"
        else:
            inp = f"H[{shape.h_offset(li)} + (long long)r * {K} + k]"
        dlt = f"D[{shape.d_offset(li)} + (long long)r * {N} + j]"
        for is_bias, size in ((False, K * N), (True, N)):
            lines.append(f"  {branch} (e >= {start}LL && e < {start + size}LL) {{")
            lines.append(f"    i = e - {start}LL; ti = {2 * li + int(is_bias)};")
            if is_bias:
                lines += ["    const int j = (int)i;", "#pragma unroll 8",
                          f"    for (int r = rb; r < re; ++r) gv += {dlt};"]
            else:
                lines += [f"    const int k = (int)(i / {N}), j = (int)(i % {N});", "#pragma unroll 8",
                          f"    for (int r = rb; r < re; ++r) gv += {inp} * {dlt};"]
            lines.append("  }")
            start, branch = start + size, "else if"
    if RS > 1:
        lines += [
            f"  __shared__ real part[{TH}];",
            f"  part[rs * {PB} + pl] = gv;",
            "  __syncthreads();",
            f"  if (rs == 0) for (int s = 1; s < {RS}; ++s) gv += part[s * {PB} + pl];",
        ]
    finish = []
    if decay:
        finish.append("if (ti % 2 == 0) gv = gv + R(lam) * ((const real*)P[ti])[i];  // weights only")
    if stage == "grad":
        finish.append("((real*)G[ti])[i] = gv;")
    else:
        finish.append(body)
    lines.append("  if (rs == 0 && ti >= 0) {")
    lines += ["    " + f for f in finish]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"
