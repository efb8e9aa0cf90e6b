// The two-kernel step for small nets (plan_rows.py).
//
// At batch 100 a 784-50-10 step is a few MFLOP: launches, not arithmetic, set
// its time. Forward, softmax/cross-entropy and the backward pass of the *data*
// are independent per sample, so rows_a gives each block R rows and runs all
// of that in shared memory. Only the weight gradients sum over rows: rows_b
// gives each parameter RS threads, sums its gradient over the batch and
// applies the optimizer update in place; its last block sums the loss. Every
// sum runs in a fixed order, so results repeat exactly.
//
// The layer sizes are a type, Sizes<n0, n1, ..., nL>; the per-layer work is
// unrolled by template recursion, so every size and offset is a constant.
#include "activations.cuh"
#include "optimizers.cuh"

enum Stage { PREDICT = 0, LOSS = 1, GRAD = 2, TRAIN = 3 };

template <int... N>
struct Sizes {
  static constexpr int depth = (int)sizeof...(N) - 1;
  __host__ __device__ static constexpr int at(int i) {
    const int n[] = {N...};
    return n[i];
  }
  // n[from] + ... + n[to - 1]
  __host__ __device__ static constexpr int sum(int from, int to) {
    int s = 0;
    for (int i = from; i < to; ++i) s += at(i);
    return s;
  }
  __host__ __device__ static constexpr int widest() {  // largest of n1..nL
    int m = 1;
    for (int i = 1; i <= depth; ++i) m = at(i) > m ? at(i) : m;
    return m;
  }
  // K-splits of layer i's forward product, so about `threads` threads work (launch.py's RowsShape)
  __host__ __device__ static constexpr int splits(int i, int threads) {
    const int a = threads / at(i + 1), b = at(i) / 8;
    return (a < b ? a : b) > 1 ? (a < b ? a : b) : 1;
  }
  __host__ __device__ static constexpr int part_size(int rows, int threads) {
    int m = 1;
    for (int i = 0; i < depth; ++i) m = splits(i, threads) * rows * at(i + 1) > m ? splits(i, threads) * rows * at(i + 1) : m;
    return m;
  }
  // first element of layer i's weights (then its bias) in the order rows_b numbers parameters
  __host__ __device__ static constexpr long long param_start(int i) {
    long long s = 0;
    for (int l = 0; l < i; ++l) s += (long long)at(l) * at(l + 1) + at(l + 1);
    return s;
  }
};

// What rows_a's layers read and write. Buffers: act (shared) holds each layer's
// output for the block's rows, layer i's at R * (n1 + ... + n(i-1)); H (global)
// the hidden outputs of the whole batch, D its deltas (launch.py's h/d offsets).
template <typename T>
struct RowsA {
  const unsigned long long* wptrs;
  const unsigned long long* bptrs;
  const T* xs;
  T* act;
  T* part;
  T* dA;
  T* dB;
  T* H;
  T* D;
  T* S;
  int tid, r0, nr;
};

// Layer I's forward for the block's rows: K split SP ways over the threads,
// partial sums meet in shared memory in order, then bias (+ activation).
template <typename T, class Act, class Net, int I, int B, int R, int TH, int STAGE, bool MORE = (I < Net::depth)>
struct RowsForward {
  static __device__ __forceinline__ void run(const RowsA<T>& a) {
    constexpr int L = Net::depth, K = Net::at(I), N = Net::at(I + 1);
    constexpr int SP = Net::splits(I, TH), KS = (K + SP - 1) / SP;
    constexpr bool LAST = I == L - 1;
    const T* in = I == 0 ? a.xs : a.act + R * Net::sum(1, I);
    T* out = a.act + R * Net::sum(1, I + 1);
    const T* __restrict__ W = (const T*)a.wptrs[I];
    const T* __restrict__ b = (const T*)a.bptrs[I];
    for (int jj = a.tid; jj < N * SP; jj += TH) {
      const int j = jj % N, s = jj / N;
      const int kb = s * KS, ke = imin(K, kb + KS);
      T acc[R];
      for (int r = 0; r < R; ++r) acc[r] = (T)0;
#pragma unroll 16
      for (int k = kb; k < ke; ++k) {
        const T w = W[(long long)k * N + j];
        for (int r = 0; r < R; ++r) acc[r] += in[r * K + k] * w;  // rows past nr: unused
      }
      for (int r = 0; r < R; ++r) a.part[(s * R + r) * N + j] = acc[r];
    }
    __syncthreads();
    for (int e = a.tid; e < R * N; e += TH) {
      const int r = e / N, j = e % N;
      if (r < a.nr) {
        T v = a.part[r * N + j];
        for (int s = 1; s < SP; ++s) v += a.part[(s * R + r) * N + j];
        v = LAST ? v + b[j] : Act::f(v + b[j]);
        out[r * N + j] = v;
        if (!LAST) a.H[(long long)B * Net::sum(1, I + 1) + (long long)(a.r0 + r) * N + j] = v;
        else if (STAGE == PREDICT) a.S[(long long)(a.r0 + r) * N + j] = v;
      }
    }
    __syncthreads();
    RowsForward<T, Act, Net, I + 1, B, R, TH, STAGE>::run(a);
  }
};

template <typename T, class Act, class Net, int I, int B, int R, int TH, int STAGE>
struct RowsForward<T, Act, Net, I, B, R, TH, STAGE, false> {
  static __device__ __forceinline__ void run(const RowsA<T>&) {}
};

// Back through layer I (I >= 1): the delta of layer I-1's output. Deltas
// ping-pong between dA (the softmax's) and dB.
template <typename T, class Act, class Net, int I, int B, int R, int TH>
struct RowsBackward {
  static __device__ __forceinline__ void run(const RowsA<T>& a) {
    constexpr int L = Net::depth, K = Net::at(I), N = Net::at(I + 1);
    const T* cur = (L - 1 - I) % 2 == 0 ? a.dA : a.dB;
    T* nxt = (L - 1 - I) % 2 == 0 ? a.dB : a.dA;
    const T* __restrict__ W = (const T*)a.wptrs[I];
    for (int e = a.tid; e < R * K; e += TH) {
      const int r = e / K, k = e % K;
      if (r < a.nr) {
        T v = (T)0;
#pragma unroll 8
        for (int j = 0; j < N; ++j) v += cur[r * N + j] * W[(long long)k * N + j];
        v = Act::b(v, a.act[R * Net::sum(1, I) + r * K + k]);
        if (I > 1) nxt[r * K + k] = v;
        a.D[(long long)B * Net::sum(1, I) + (long long)(a.r0 + r) * K + k] = v;
      }
    }
    __syncthreads();
    RowsBackward<T, Act, Net, I - 1, B, R, TH>::run(a);
  }
};

template <typename T, class Act, class Net, int B, int R, int TH>
struct RowsBackward<T, Act, Net, 0, B, R, TH> {
  static __device__ __forceinline__ void run(const RowsA<T>&) {}
};

// Kernel A: forward (+ loss and backward of the data) for R rows per block.
// GATHER reads the rows of an epoch's data set named by this step's index row.
template <typename T, class Act, class Net, int B, int R, int TH, int STAGE, bool ONEHOT, bool GATHER, bool DECAY>
__global__ void __launch_bounds__(TH) rows_a(const T* __restrict__ X, const long long* __restrict__ lab, const T* __restrict__ Tm, const long long* __restrict__ idx, long long* clock, const unsigned long long* __restrict__ wptrs, const unsigned long long* __restrict__ bptrs, T* __restrict__ H, T* __restrict__ D, T* __restrict__ S, double* __restrict__ rowloss, long long* __restrict__ rowix, double* __restrict__ sq, long long nrows, double lam) {
  constexpr int L = Net::depth, N0 = Net::at(0), C = Net::at(L);
  constexpr int DMAX = R * Net::widest();
  __shared__ T part[Net::part_size(R, TH)];
  __shared__ T act[R * Net::sum(1, L + 1)];
  __shared__ T dA[STAGE != PREDICT ? DMAX : 1];
  __shared__ T dB[STAGE >= GRAD && L >= 3 ? DMAX : 1];
  __shared__ double red[DECAY && STAGE != PREDICT ? TH : 1];
  __shared__ long long rix[R];
  __shared__ T xs[R * N0];  // the block's input rows (zeros past the batch)
  const int tid = threadIdx.x;
  const int r0 = blockIdx.x * R;
  const int nr = imin(R, B - r0);
  if (tid < R) {
    long long i = r0 + tid;
    if (GATHER && tid < nr) {
      i = idx[clock[CLOCK_BATCH] * B + r0 + tid];
      if (i < 0) i += nrows;
    }
    rix[tid] = i;
    if (tid < nr) rowix[r0 + tid] = i;
  }
  __syncthreads();
  for (int e = tid; e < R * N0; e += TH) {
    const int r = e / N0, k = e % N0;
    const T v = r < nr ? X[rix[r] * N0 + k] : (T)0;
    xs[e] = v;
  }
  __syncthreads();
  const RowsA<T> a = {wptrs, bptrs, xs, act, part, dA, dB, H, D, S, tid, r0, nr};
  RowsForward<T, Act, Net, 0, B, R, TH, STAGE>::run(a);
  if (STAGE == PREDICT) return;  // the whole grid returns together
  if (tid < nr) {  // softmax + cross-entropy of one row per thread
    const int r = tid;
    const T* s = act + R * Net::sum(1, L) + r * C;
    T* d = dA + r * C;
    T mx = s[0];
    for (int c = 1; c < C; ++c) mx = s[c] > mx ? s[c] : mx;
    T sum = (T)0;
    for (int c = 0; c < C; ++c) { T e = r_exp(s[c] - mx); d[c] = e; sum += e; }
    // one-hot rows: the first largest entry; class indices wrap like CuPy's indexing
    const T* t = ONEHOT ? Tm + rix[r] * C : Tm;
    int label = 0;
    if (ONEHOT) {
      T best = t[0];
      for (int c = 1; c < C; ++c) if (t[c] > best) { best = t[c]; label = c; }
    } else {
      label = (int)(lab[rix[r]] % C);
      if (label < 0) label += C;
    }
    rowloss[r0 + r] = (double)r_log(d[label] / sum + (T)(1e-07));  // the book's log(y + 1e-7)
    for (int c = 0; c < C; ++c) {
      T y = d[c] / sum;
      T g = (y - (ONEHOT ? t[c] : (c == label ? (T)1 : (T)0))) / (T)(B);
      d[c] = g;
      D[(long long)B * Net::sum(1, L) + (long long)(r0 + r) * C + c] = g;
    }
  }
  __syncthreads();
  if (STAGE >= GRAD) RowsBackward<T, Act, Net, L - 1, B, R, TH>::run(a);
  if (DECAY && blockIdx.x == 0) {  // 0.5 * lam * sum(W**2) needs the weights before rows_b updates them
    double sqs = 0.0;
    for (int i = 0; i < L; ++i) {
      const T* w = (const T*)wptrs[i];
      for (long long j = tid; j < (long long)Net::at(i) * Net::at(i + 1); j += TH) {
        double v = (double)w[j];
        sqs += v * v;
      }
    }
    sqs = block_sum<TH>(sqs, red, tid);
    if (tid == 0) sq[0] = sqs;
  }
  if (blockIdx.x == 0 && tid == 0) clock[CLOCK_STEP] += 1;  // rows_b reads its scalars row by it
}

// What rows_b's parameter sums read: layer li's input rows (X by row number for
// the first layer, H for the others) and its deltas D.
template <typename T, bool GATHER>
struct RowsB {
  const T* X;
  const long long* row;  // the batch's row numbers (a gathered batch)
  const T* H;
  const T* D;
  long long e;
  int rb, re;
};

// Parameter e's gradient summed over rows [rb, re): layer LI's weights, then
// its bias, then the next layer's.
template <typename T, class Net, int B, bool GATHER, int LI, bool MORE = (LI < Net::depth)>
struct RowsParam {
  static __device__ __forceinline__ void sum(const RowsB<T, GATHER>& a, T& gv, int& ti, long long& i) {
    constexpr int K = Net::at(LI), N = Net::at(LI + 1);
    constexpr long long start = Net::param_start(LI), bias = start + (long long)K * N;
    const T* __restrict__ d = a.D + (long long)B * Net::sum(1, LI + 1);
    if (a.e >= start && a.e < bias) {
      i = a.e - start;
      ti = 2 * LI;
      const int k = (int)(i / N), j = (int)(i % N);
      if (LI == 0) {
#pragma unroll 8
        for (int r = a.rb; r < a.re; ++r) gv += a.X[(GATHER ? a.row[r] : (long long)r) * K + k] * d[(long long)r * N + j];
      } else {
        const T* __restrict__ h = a.H + (long long)B * Net::sum(1, LI);
#pragma unroll 8
        for (int r = a.rb; r < a.re; ++r) gv += h[(long long)r * K + k] * d[(long long)r * N + j];
      }
    } else if (a.e >= bias && a.e < bias + N) {
      i = a.e - bias;
      ti = 2 * LI + 1;
      const int j = (int)i;
#pragma unroll 8
      for (int r = a.rb; r < a.re; ++r) gv += d[(long long)r * N + j];
    } else {
      RowsParam<T, Net, B, GATHER, LI + 1>::sum(a, gv, ti, i);
    }
  }
};

template <typename T, class Net, int B, bool GATHER, int LI>
struct RowsParam<T, Net, B, GATHER, LI, false> {
  static __device__ __forceinline__ void sum(const RowsB<T, GATHER>&, T&, int&, long long&) {}
};

// Kernel B: each parameter's gradient summed over the batch by RS threads (+ its
// update); the last block sums the loss into the ring.
template <typename T, template <typename> class Rule, class Net, int B, int RS, int TH, int STAGE, bool DECAY, bool GATHER>
__global__ void rows_b(const T* __restrict__ X, const long long* __restrict__ rowix, const T* __restrict__ H, const T* __restrict__ D, const double* __restrict__ rowloss, const double* __restrict__ sq, const unsigned long long* __restrict__ P, const unsigned long long* __restrict__ G, const unsigned long long* __restrict__ S1, const unsigned long long* __restrict__ S2, const double* __restrict__ hyper, long long* clock, const unsigned long long* __restrict__ ringptr, double lam) {
  constexpr int PB = TH / RS, RB = (B + RS - 1) / RS;
  __shared__ double red[TH];
  __shared__ T part[RS > 1 ? TH : 1];
  const int tid = threadIdx.x;
  if (blockIdx.x == gridDim.x - 1) {  // the loss: fixed-order sum over rows
    double sum = 0.0;
    for (int m = tid; m < B; m += TH) sum += rowloss[m];
    sum = block_sum<TH>(sum, red, tid);
    if (tid == 0) {
      T loss = (T)(-sum / (double)B);
      if (DECAY && lam != 0.0) loss = loss + (T)(0.5 * lam * sq[0]);
      T* ring = (T*)ringptr[0];
      const long long pos = clock[CLOCK_RING];
      ring[pos] = loss;
      clock[CLOCK_RING] = pos + 1;
      clock[CLOCK_BATCH] += 1;
    }
    return;  // a whole block returns: no barrier below waits for it
  }
  if (STAGE < GRAD) return;  // (only the loss block is launched then)
  const int pl = tid % PB, rs = tid / PB;
  const int rb = rs * RB;
  const RowsB<T, GATHER> a = {X, rowix, H, D, (long long)blockIdx.x * PB + pl, rb, imin(B, rb + RB)};
  T gv = (T)0;
  int ti = -1;
  long long i = 0;
  RowsParam<T, Net, B, GATHER, 0>::sum(a, gv, ti, i);
  if (RS > 1) {
    part[rs * PB + pl] = gv;
    __syncthreads();
    if (rs == 0) for (int s = 1; s < RS; ++s) gv += part[s * PB + pl];
  }
  if (rs == 0 && ti >= 0) {
    if (DECAY && ti % 2 == 0) gv = gv + (T)lam * ((const T*)P[ti])[i];  // weights only
    if (STAGE == GRAD) {
      ((T*)G[ti])[i] = gv;
    } else {
      const Rule<T> rule = step_rule<T, Rule>(hyper, clock);
      rule.step((T*)P[ti], gv, (T*)S1[ti], (T*)S2[ti], i);
    }
  }
}
