// The tiled layout's kernels (plan_tiled.py): matmuls with fused epilogues,
// the loss, the multi-tensor update, the epoch's gather, and the elementwise
// epilogues around cuBLAS. Sizes are template arguments, so loops over them
// unroll; Python picks each instantiation and its launch shape.
//
// Every sum runs in a fixed order (tree sums in shared memory, split-K
// partials added by a second kernel), so a result repeats bit for bit.
#include "activations.cuh"
#include "optimizers.cuh"

enum Epilogue { FWD_ACT = 0, FWD = 1, BWD_DATA = 2, BWD_W = 3, STORE = 4 };

// What a product's value v at (m, n) becomes:
// FWD_ACT out = act(v + aux[n]); FWD out = v + aux[n]; BWD_DATA out = act_b(v, aux[m, n]);
// BWD_W rows < M-1: out = v + lam * aux[m, n] (weight decay), row M-1: out2[n] = v (the bias);
// STORE out = v.
template <typename T, class Act, int EPI, int M, int N>
static __device__ __forceinline__ void epilogue(T v, int m, int n, const T* aux, T* out, T* out2, double lam) {
  if (EPI == FWD_ACT) {
    out[(long long)m * N + n] = Act::f(v + aux[n]);
  } else if (EPI == FWD) {
    out[(long long)m * N + n] = v + aux[n];
  } else if (EPI == BWD_DATA) {
    out[(long long)m * N + n] = Act::b(v, aux[(long long)m * N + n]);
  } else if (EPI == STORE) {
    out[(long long)m * N + n] = v;
  } else if (m < M - 1) {
    long long e = (long long)m * N + n;
    out[e] = lam != 0.0 ? v + (T)lam * aux[e] : v;
  } else {
    out2[n] = v;
  }
}

// C[M, N] = A @ B in TILE x TILE tiles, one output a thread, then the epilogue.
// A(m, k) is A[m*LDA + k], or A[k*LDA + m] when A_TRANS; B(k, n) is B[k*LDB + n], or
// B[n*LDB + k] when B_TRANS. ONES_ROW makes row M-1 of A all ones (so that row of C is
// a column sum: the bias gradient). SPLIT > 1 splits K over blockIdx.z into ws, which
// gemm_reduce sums in a fixed order before the epilogue.
template <typename T, class Act, int M, int N, int K, int LDA, int LDB, bool A_TRANS, bool B_TRANS,
          bool ONES_ROW, int EPI, int SPLIT, int TILE>
__global__ void gemm(const T* __restrict__ A, const T* __restrict__ B, const T* aux, T* out, T* out2, T* ws,
                     double lam) {
  const int A_ROWS = ONES_ROW ? M - 1 : M;  // rows of A that live in memory
  const int PER = (K + SPLIT - 1) / SPLIT;
  const int K_SLICE = (PER + TILE - 1) / TILE * TILE;  // a whole number of tiles
  __shared__ T As[TILE][TILE + 1];  // As[k][m]
  __shared__ T Bs[TILE][TILE + 1];  // Bs[k][n]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row0 = blockIdx.y * TILE, col0 = blockIdx.x * TILE;
  const int kbeg = blockIdx.z * K_SLICE;
  const int kend = imin(K, kbeg + K_SLICE);
  T acc = (T)0;
  for (int k0 = kbeg; k0 < kend; k0 += TILE) {
    if (A_TRANS) {  // consecutive threads read consecutive m
      int m = row0 + tx, k = k0 + ty;
      T v = (T)0;
      if (k < kend) {
        if (m < A_ROWS) v = A[(long long)k * LDA + m];
        else if (ONES_ROW && m == A_ROWS) v = (T)1;
      }
      As[ty][tx] = v;
    } else {
      int m = row0 + ty, k = k0 + tx;
      As[tx][ty] = (m < A_ROWS && k < kend) ? A[(long long)m * LDA + k] : (T)0;
    }
    if (B_TRANS) {
      int k = k0 + tx, n = col0 + ty;
      Bs[tx][ty] = (k < kend && n < N) ? B[(long long)n * LDB + k] : (T)0;
    } else {
      int k = k0 + ty, n = col0 + tx;
      Bs[ty][tx] = (k < kend && n < N) ? B[(long long)k * LDB + n] : (T)0;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < TILE; ++kk) acc += As[kk][ty] * Bs[kk][tx];
    __syncthreads();
  }
  const int m = row0 + ty, n = col0 + tx;
  if (m < M && n < N) {
    if (SPLIT > 1) ws[((long long)blockIdx.z * M + m) * N + n] = acc;
    else epilogue<T, Act, EPI, M, N>(acc, m, n, aux, out, out2, lam);
  }
}

template <typename T, class Act, int M, int N, int EPI, int SPLIT>
__global__ void gemm_reduce(const T* __restrict__ ws, const T* aux, T* out, T* out2, double lam) {
  const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (e < (long long)M * N) {
    T v = ws[e];
    for (int z = 1; z < SPLIT; ++z) v += ws[(long long)z * M * N + e];  // fixed order
    const int m = (int)(e / N), n = (int)(e % N);
    epilogue<T, Act, EPI, M, N>(v, m, n, aux, out, out2, lam);
  }
}

// Softmax + cross-entropy + its backward in one block: dY = (softmax(S) - T) / ROWS, and
// the book's loss -sum(log(y[t] + 1e-7)) / ROWS (+ 0.5 * lam * sum(W**2), WSIZES the
// weights' sizes) into the next slot of the loss ring. One-hot rows take their first
// largest entry as the label; class indices wrap like CuPy's indexing.
template <typename T, int ROWS, int C, bool ONEHOT, bool DECAY, int THREADS, long long... WSIZES>
__global__ void loss(const T* __restrict__ S, const long long* __restrict__ lab, const T* __restrict__ Tm,
                     T* __restrict__ dY, const unsigned long long* __restrict__ wptrs,
                     const unsigned long long* ringptr, long long* clock, double lam) {
  __shared__ double red[THREADS];
  const int tid = threadIdx.x;
  double part = 0.0, sq = 0.0;
  for (int m = tid; m < ROWS; m += THREADS) {
    const T* s = S + (long long)m * C;
    T* d = dY + (long long)m * C;
    T mx = s[0];
    for (int c = 1; c < C; ++c) mx = s[c] > mx ? s[c] : mx;
    T sum = (T)0;
    for (int c = 0; c < C; ++c) { T e = r_exp(s[c] - mx); d[c] = e; sum += e; }
    const T* t = Tm + (long long)m * C;
    int label = 0;
    if (ONEHOT) {
      T best = t[0];
      for (int c = 1; c < C; ++c) if (t[c] > best) { best = t[c]; label = c; }
    } else {
      label = (int)(lab[m] % C);
      if (label < 0) label += C;
    }
    part += (double)r_log(d[label] / sum + (T)(1e-07));
    for (int c = 0; c < C; ++c) {
      T y = d[c] / sum;
      d[c] = (y - (ONEHOT ? t[c] : (c == label ? (T)1 : (T)0))) / (T)(ROWS);
    }
  }
  part = block_sum<THREADS>(part, red, tid);
  if (DECAY) {
    const long long sizes[] = {WSIZES...};
    for (int i = 0; i < (int)sizeof...(WSIZES); ++i) {
      const T* w = (const T*)wptrs[i];
      for (long long j = tid; j < sizes[i]; j += THREADS) { double v = (double)w[j]; sq += v * v; }
    }
    sq = block_sum<THREADS>(sq, red, tid);
  }
  if (tid == 0) {
    T value = (T)(-part / (double)ROWS);
    if (lam != 0.0) value = value + (T)(0.5 * lam * sq);
    T* ring = (T*)ringptr[0];
    const long long pos = clock[CLOCK_RING];
    ring[pos] = value;
    clock[CLOCK_RING] = pos + 1;
    clock[CLOCK_STEP] += 1;
    clock[CLOCK_BATCH] += 1;
  }
}

// Every parameter's update in one launch: block b updates CHUNK elements of tensor
// ctensor[b] from cstart[b], with this step's row of the scalars table.
template <typename T, template <typename> class Rule, int CHUNK>
__global__ void update(const unsigned long long* __restrict__ P, const unsigned long long* __restrict__ G,
                       const unsigned long long* __restrict__ S1, const unsigned long long* __restrict__ S2,
                       const long long* __restrict__ sizes, const int* __restrict__ ctensor,
                       const long long* __restrict__ cstart, const double* __restrict__ hyper,
                       const long long* __restrict__ clock) {
  const int ti = ctensor[blockIdx.x];
  const long long start = cstart[blockIdx.x];
  const long long end = lmin(start + CHUNK, sizes[ti]);
  T* __restrict__ p = (T*)P[ti];
  const T* __restrict__ g = (const T*)G[ti];
  T* s1 = (T*)S1[ti];
  T* s2 = (T*)S2[ti];
  const Rule<T> rule = step_rule<T, Rule>(hyper, clock);
  for (long long i = start + threadIdx.x; i < end; i += blockDim.x) rule.step(p, g[i], s1, s2, i);
}

// Copy mini-batch clock[CLOCK_BATCH] of an epoch's index table into the static
// batch buffers (negative indices count from the end, as NumPy's do).
template <typename T, int ROWS, int F, int CLASSES, bool ONEHOT>
__global__ void gather(const T* __restrict__ X, const long long* __restrict__ L, const T* __restrict__ Tm,
                       const long long* __restrict__ idx, const long long* __restrict__ clock, T* __restrict__ xb,
                       long long* __restrict__ lb, T* __restrict__ tb, long long nrows) {
  const int TCOLS = ONEHOT ? CLASSES : 1;
  long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long step = clock[CLOCK_BATCH];
  if (e < (long long)ROWS * F) {
    const int r = (int)(e / F), c = (int)(e % F);
    long long i = idx[step * ROWS + r];
    if (i < 0) i += nrows;
    xb[e] = X[i * F + c];
  } else {
    e -= (long long)ROWS * F;
    if (e < (long long)ROWS * TCOLS) {
      const int r = (int)(e / TCOLS), c = (int)(e % TCOLS);
      long long i = idx[step * ROWS + r];
      if (i < 0) i += nrows;
      if (ONEHOT) tb[e] = Tm[i * CLASSES + c];
      else lb[r] = L[i];
    }
  }
}

// a = act(a + b) in place (ACT false: a + b), after a cuBLAS x @ W.
template <typename T, class Act, bool ACT, int ROWS, int COLS>
__global__ void bias_act(T* a, const T* __restrict__ b) {
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < (long long)ROWS * COLS;
       e += (long long)gridDim.x * blockDim.x) {
    T v = a[e] + b[e % COLS];
    a[e] = ACT ? Act::f(v) : v;
  }
}

// d = act_b(d, h) in place, after a cuBLAS dout @ W.T.
template <typename T, class Act, long long SIZE>
__global__ void act_back(T* d, const T* __restrict__ h) {
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < SIZE; e += (long long)gridDim.x * blockDim.x)
    d[e] = Act::b(d[e], h[e]);
}

// db = column sums of dout; gW += lam * W (after a cuBLAS x.T @ dout).
template <typename T, int ROWS, int COLS, int FAN_IN>
__global__ void colsum_decay(const T* __restrict__ D, T* gb, T* gW, const T* __restrict__ W, double lam) {
  const long long start = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long n = start; n < COLS; n += stride) {
    T v = (T)0;
    for (int m = 0; m < ROWS; ++m) v += D[(long long)m * COLS + n];
    gb[n] = v;
  }
  if (lam != 0.0)
    for (long long e = start; e < (long long)FAN_IN * COLS; e += stride) gW[e] = gW[e] + (T)lam * W[e];
}
