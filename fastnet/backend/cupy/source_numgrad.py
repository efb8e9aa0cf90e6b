"""CUDA C for the numerical gradient: every perturbed loss, exactly, in float64.

For one parameter theta_j the book evaluates the whole net's loss at
theta_j + h and theta_j - h. Changing one weight of layer i changes only one
column of that layer's pre-activation, by (w' - w) * input[:, k], so each
sample's loss can be recomputed from the stored forward pass by redoing only
what depends on that column: the softmax and log of the scores (last layer),
or one activation and then the scores row (the layer before it). Every
exp/log of the perturbed forward pass is evaluated; nothing is linearised.
Rows the perturbation cannot reach (an input pixel of 0, a ReLU that stays
off) keep their stored loss term, which is the same number recomputed.

One block per parameter; its threads take the samples; the two losses are
summed in a fixed order and (f+ - f-) / 2h written out.
"""

from __future__ import annotations

from . import cuda
from .source import CE_DELTA, activation_functions

NG_ARGS_LAST = (
    "(const double* __restrict__ Hp, const double* __restrict__ S,"
    " const long long* __restrict__ lab, const double* __restrict__ base,"
    " const double* __restrict__ W, const double* __restrict__ b, double* out,"
    " double h, double sq, double lam)"
)
NG_ARGS_PREV = (
    "(const double* __restrict__ Hp, const double* __restrict__ A, const double* __restrict__ H,"
    " const double* __restrict__ S, const long long* __restrict__ lab,"
    " const double* __restrict__ base, const double* __restrict__ W,"
    " const double* __restrict__ b, const double* __restrict__ Wn, double* out,"
    " double h, double sq, double lam)"
)
NG_ARGS_BASE = "(const double* __restrict__ S, const long long* __restrict__ lab, double* base)"


def threads_for(rows: int) -> int:
    """A power of two (for the tree sum) covering the batch, 32..256."""
    n = 32
    while n < rows and n < 256:
        n *= 2
    return n


def _helpers(classes: int, activation: str | None) -> str:
    acts = ""
    if activation:
        acts = cuda.source("activations.cuh") + "\n".join(activation_functions(activation, "double", "a64"))
    C = classes
    return f"""
// log(softmax(s')[lab] + 1e-7) for the row s' = s + d * e_j (one score changed)
static __device__ double logp_one(const double* s, int j, double d, int lab) {{
  double mx = j == 0 ? s[0] + d : s[0];
  for (int c = 1; c < {C}; ++c) {{ double v = c == j ? s[c] + d : s[c]; mx = v > mx ? v : mx; }}
  double sum = 0.0, el = 0.0;
  for (int c = 0; c < {C}; ++c) {{
    double v = c == j ? s[c] + d : s[c];
    double e = exp(v - mx); sum += e; if (c == lab) el = e;
  }}
  return log(el / sum + {CE_DELTA!r});
}}
// the same for s' = s + dh * w (the row of scores after one hidden unit moved by dh)
static __device__ double logp_row(const double* s, const double* w, double dh, int lab) {{
  double mx = s[0] + dh * w[0];
  for (int c = 1; c < {C}; ++c) {{ double v = s[c] + dh * w[c]; mx = v > mx ? v : mx; }}
  double sum = 0.0, el = 0.0;
  for (int c = 0; c < {C}; ++c) {{
    double e = exp(s[c] + dh * w[c] - mx); sum += e; if (c == lab) el = e;
  }}
  return log(el / sum + {CE_DELTA!r});
}}
{acts}
"""


def _reduce_and_write(threads: int, rows: int) -> str:
    return f"""  rp[tid] = lp; rm[tid] = lm;
  __syncthreads();
  for (int s = {threads // 2}; s > 0; s >>= 1) {{
    if (tid < s) {{ rp[tid] += rp[tid + s]; rm[tid] += rm[tid + s]; }}
    __syncthreads();
  }}
  if (tid == 0) {{
    const double fp = -rp[0] / {rows}.0 + dec_p, fm = -rm[0] / {rows}.0 + dec_m;
    out[p] = (fp - fm) / (2.0 * h);
  }}"""


def _perturbation(n_weights: int) -> str:
    """w, the perturbed values' offsets dp/dm, and the weight-decay term of each loss."""
    return f"""  const bool is_w = p < {n_weights}LL;
  const double w = is_w ? W[p] : b[p - {n_weights}LL];
  const double dp = (w + h) - w, dm = (w - h) - w;  // what the book's x[i] = w +- h adds
  double dec_p = 0.5 * lam * sq, dec_m = dec_p;
  if (is_w && lam != 0.0) {{
    dec_p = 0.5 * lam * (sq - w * w + (w + h) * (w + h));
    dec_m = 0.5 * lam * (sq - w * w + (w - h) * (w - h));
  }}"""


def numgrad_source(
    prefix: str, rows: int, sizes: tuple[int, ...], activation: str
) -> str:
    """Kernels ``{prefix}_base``, ``{prefix}_last`` and (depth >= 2) ``{prefix}_prev``.

    ``sizes`` are the layer widths n0..nL. ``_last`` covers W_L and b_L;
    ``_prev`` covers W_{L-1} and b_{L-1}. Earlier layers are not done here.
    """
    C = sizes[-1]
    K = sizes[-2]
    T = threads_for(rows)
    text = _helpers(C, activation if len(sizes) > 2 else None)
    text += f"""
extern "C" __global__ void {prefix}_base{NG_ARGS_BASE} {{
  const long long m = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (m < {rows}) base[m] = logp_one(S + m * {C}, 0, 0.0, (int)lab[m]);
}}

extern "C" __global__ void {prefix}_last{NG_ARGS_LAST} {{
  __shared__ double rp[{T}], rm[{T}];
  const int tid = threadIdx.x;
  const long long p = blockIdx.x;  // W_L[k, j] for p < K*C, then b_L[j]
{_perturbation(K * C)}
  const int j = (int)(is_w ? p % {C} : p - {K * C}LL);
  const int k = (int)(is_w ? p / {C} : 0);
  double lp = 0.0, lm = 0.0;
  for (int m = tid; m < {rows}; m += {T}) {{
    const double xk = is_w ? Hp[(long long)m * {K} + k] : 1.0;
    if (xk == 0.0) {{ lp += base[m]; lm += base[m]; continue; }}  // this row's scores do not move
    const double* s = S + (long long)m * {C};
    lp += logp_one(s, j, dp * xk, (int)lab[m]);
    lm += logp_one(s, j, dm * xk, (int)lab[m]);
  }}
{_reduce_and_write(T, rows)}
}}
"""
    if len(sizes) > 2:
        Kp, J = sizes[-3], sizes[-2]
        text += f"""
extern "C" __global__ void {prefix}_prev{NG_ARGS_PREV} {{
  __shared__ double rp[{T}], rm[{T}];
  const int tid = threadIdx.x;
  const long long p = blockIdx.x;  // W_(L-1)[k, j] for p < Kp*J, then b_(L-1)[j]
{_perturbation(Kp * J)}
  const int j = (int)(is_w ? p % {J} : p - {Kp * J}LL);
  const int k = (int)(is_w ? p / {J} : 0);
  const double* wn = Wn + (long long)j * {C};  // how hidden unit j feeds the scores
  double lp = 0.0, lm = 0.0;
  for (int m = tid; m < {rows}; m += {T}) {{
    const double xk = is_w ? Hp[(long long)m * {Kp} + k] : 1.0;
    const double a = A[(long long)m * {J} + j], hv = H[(long long)m * {J} + j];
    const double* s = S + (long long)m * {C};
    const int l = (int)lab[m];
    const double dhp = xk == 0.0 ? 0.0 : a64_f(a + dp * xk) - hv;
    const double dhm = xk == 0.0 ? 0.0 : a64_f(a + dm * xk) - hv;
    lp += dhp == 0.0 ? base[m] : logp_row(s, wn, dhp, l);  // a ReLU that stays off: no change
    lm += dhm == 0.0 ? base[m] : logp_row(s, wn, dhm, l);
  }}
{_reduce_and_write(T, rows)}
}}
"""
    return text
