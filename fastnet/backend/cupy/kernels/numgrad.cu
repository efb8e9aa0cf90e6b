// The numerical gradient of the last two layers, every perturbed loss exact, in
// float64 (numgrad.py). Changing one weight of layer i changes one column of that
// layer's pre-activation by (w' - w) * input[:, k], so each sample's loss is
// recomputed from the stored forward pass by redoing only what depends on that
// column: the softmax and log of the scores (last layer), or one activation and then
// the scores row (the layer before). Rows the perturbation cannot reach keep their
// stored loss term, which is the same number recomputed. One block per parameter, its
// threads over the samples, both losses summed in a fixed order.
#include "activations.cuh"

// log(softmax(s')[lab] + 1e-7) for the row s' = s + d * e_j (one score changed)
template <int C>
static __device__ double logp_one(const double* s, int j, double d, int lab) {
  double mx = j == 0 ? s[0] + d : s[0];
  for (int c = 1; c < C; ++c) { double v = c == j ? s[c] + d : s[c]; mx = v > mx ? v : mx; }
  double sum = 0.0, el = 0.0;
  for (int c = 0; c < C; ++c) {
    double v = c == j ? s[c] + d : s[c];
    double e = exp(v - mx); sum += e; if (c == lab) el = e;
  }
  return log(el / sum + 1e-07);
}

// the same for s' = s + dh * w (the row of scores after one hidden unit moved by dh)
template <int C>
static __device__ double logp_row(const double* s, const double* w, double dh, int lab) {
  double mx = s[0] + dh * w[0];
  for (int c = 1; c < C; ++c) { double v = s[c] + dh * w[c]; mx = v > mx ? v : mx; }
  double sum = 0.0, el = 0.0;
  for (int c = 0; c < C; ++c) {
    double e = exp(s[c] + dh * w[c] - mx); sum += e; if (c == lab) el = e;
  }
  return log(el / sum + 1e-07);
}

// Parameter p of a layer with N_WEIGHTS weights, then its biases: w, what the book's
// x[i] = w +- h adds (dp, dm), and the weight-decay term of each loss.
struct Perturbation {
  bool is_w;
  double w, dp, dm, dec_p, dec_m;
  __device__ Perturbation(long long p, long long n_weights, const double* W, const double* b, double h,
                          double sq, double lam) {
    is_w = p < n_weights;
    w = is_w ? W[p] : b[p - n_weights];
    dp = (w + h) - w;
    dm = (w - h) - w;
    dec_p = 0.5 * lam * sq;
    dec_m = dec_p;
    if (is_w && lam != 0.0) {
      dec_p = 0.5 * lam * (sq - w * w + (w + h) * (w + h));
      dec_m = 0.5 * lam * (sq - w * w + (w - h) * (w - h));
    }
  }
};

// (f+ - f-) / 2h from each thread's two partial sums, in a fixed order.
template <int THREADS, int ROWS>
static __device__ void reduce_and_write(double lp, double lm, double* rp, double* rm, int tid,
                                        const Perturbation& q, double* out, long long p, double h) {
  rp[tid] = lp; rm[tid] = lm;
  __syncthreads();
  for (int s = THREADS / 2; s > 0; s >>= 1) {
    if (tid < s) { rp[tid] += rp[tid + s]; rm[tid] += rm[tid + s]; }
    __syncthreads();
  }
  if (tid == 0) {
    const double fp = -rp[0] / (double)ROWS + q.dec_p, fm = -rm[0] / (double)ROWS + q.dec_m;
    out[p] = (fp - fm) / (2.0 * h);
  }
}

// Each sample's unperturbed loss term.
template <int ROWS, int C>
__global__ void ng_base(const double* __restrict__ S, const long long* __restrict__ lab, double* base) {
  const long long m = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (m < ROWS) base[m] = logp_one<C>(S + m * C, 0, 0.0, (int)lab[m]);
}

// W_L[k, j] for p < K*C, then b_L[j]; Hp is the last layer's input.
template <int ROWS, int C, int K, int THREADS>
__global__ void ng_last(const double* __restrict__ Hp, const double* __restrict__ S,
                        const long long* __restrict__ lab, const double* __restrict__ base,
                        const double* __restrict__ W, const double* __restrict__ b, double* out,
                        double h, double sq, double lam) {
  __shared__ double rp[THREADS], rm[THREADS];
  const int tid = threadIdx.x;
  const long long p = blockIdx.x;
  const Perturbation q(p, (long long)K * C, W, b, h, sq, lam);
  const int j = (int)(q.is_w ? p % C : p - (long long)K * C);
  const int k = (int)(q.is_w ? p / C : 0);
  double lp = 0.0, lm = 0.0;
  for (int m = tid; m < ROWS; m += THREADS) {
    const double xk = q.is_w ? Hp[(long long)m * K + k] : 1.0;
    if (xk == 0.0) { lp += base[m]; lm += base[m]; continue; }  // this row's scores do not move
    const double* s = S + (long long)m * C;
    lp += logp_one<C>(s, j, q.dp * xk, (int)lab[m]);
    lm += logp_one<C>(s, j, q.dm * xk, (int)lab[m]);
  }
  reduce_and_write<THREADS, ROWS>(lp, lm, rp, rm, tid, q, out, p, h);
}

// W_(L-1)[k, j] for p < KP*J, then b_(L-1)[j]: A and H are that layer's pre-activation
// and output, Hp its input, Wn the last layer's weights.
template <class Act, int ROWS, int C, int KP, int J, int THREADS>
__global__ void ng_prev(const double* __restrict__ Hp, const double* __restrict__ A, const double* __restrict__ H,
                        const double* __restrict__ S, const long long* __restrict__ lab,
                        const double* __restrict__ base, const double* __restrict__ W,
                        const double* __restrict__ b, const double* __restrict__ Wn, double* out,
                        double h, double sq, double lam) {
  __shared__ double rp[THREADS], rm[THREADS];
  const int tid = threadIdx.x;
  const long long p = blockIdx.x;
  const Perturbation q(p, (long long)KP * J, W, b, h, sq, lam);
  const int j = (int)(q.is_w ? p % J : p - (long long)KP * J);
  const int k = (int)(q.is_w ? p / J : 0);
  const double* wn = Wn + (long long)j * C;  // how hidden unit j feeds the scores
  double lp = 0.0, lm = 0.0;
  for (int m = tid; m < ROWS; m += THREADS) {
    const double xk = q.is_w ? Hp[(long long)m * KP + k] : 1.0;
    const double a = A[(long long)m * J + j], hv = H[(long long)m * J + j];
    const double* s = S + (long long)m * C;
    const int l = (int)lab[m];
    const double dhp = xk == 0.0 ? 0.0 : Act::f(a + q.dp * xk) - hv;
    const double dhm = xk == 0.0 ? 0.0 : Act::f(a + q.dm * xk) - hv;
    lp += dhp == 0.0 ? base[m] : logp_row<C>(s, wn, dhp, l);  // a ReLU that stays off: no change
    lm += dhm == 0.0 ? base[m] : logp_row<C>(s, wn, dhm, l);
  }
  reduce_and_write<THREADS, ROWS>(lp, lm, rp, rm, tid, q, out, p, h);
}
