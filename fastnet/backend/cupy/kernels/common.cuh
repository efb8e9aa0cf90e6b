// Math shared by every fastnet kernel, overloaded on float and double: the
// float versions call the f-suffixed functions, so float kernels never widen
// to double (as NumPy's float32 ufuncs do not).
#pragma once

static __device__ __forceinline__ float r_exp(float x) { return expf(x); }
static __device__ __forceinline__ double r_exp(double x) { return exp(x); }
static __device__ __forceinline__ float r_log(float x) { return logf(x); }
static __device__ __forceinline__ double r_log(double x) { return log(x); }
static __device__ __forceinline__ float r_sqrt(float x) { return sqrtf(x); }
static __device__ __forceinline__ double r_sqrt(double x) { return sqrt(x); }
static __device__ __forceinline__ float r_tanh(float x) { return tanhf(x); }
static __device__ __forceinline__ double r_tanh(double x) { return tanh(x); }
static __device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
static __device__ __forceinline__ long long lmin(long long a, long long b) { return a < b ? a : b; }

// Fixed-order tree sum of v over the block (THREADS, a power of two).
template <int THREADS>
static __device__ __forceinline__ double block_sum(double v, double* red, int tid) {
  red[tid] = v;
  __syncthreads();
  for (int s = THREADS / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    __syncthreads();
  }
  v = red[0];
  __syncthreads();
  return v;
}

// Slots of the int64 clock array each plan keeps on the device (source.py's CLOCK_*).
enum ClockSlot {
  CLOCK_RING = 0,   // next free slot of the loss ring
  CLOCK_STEP = 1,   // steps since the scalars table was loaded; bumped before the update reads it
  CLOCK_BATCH = 2,  // which mini-batch of an epoch the gather reads
  CLOCK_ROWS = 3    // rows of the scalars table: step k (from 1) reads row (k - 1) % rows
};
