// Convolution and max pooling on the GPU (cupy/conv.py): the data movement of
// the book's im2col algorithm, with the matrix products left to cuBLAS.
//
// Each kernel computes one output element per thread (grid-stride loops) and
// adds in the order the book's code does, so every value equals the reference
// path's bit for bit: col2im sums a pixel's patches in (y, x) filter order
// starting from zero, as its `img[...] += col[...]` loop does. Shapes are
// arguments, not template constants: one module serves every layer.
// Images are (N, C, H, W); col rows are (n, i, j), columns (c, y, x).
#include "common.cuh"

#define GRID_STRIDE(e, total) \
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < (total); \
       e += (long long)gridDim.x * blockDim.x)

// col[(n, i, j), (c, y, x)] = x[n, c, i*S + y - P, j*S + x - P], zero in the padding.
template <typename T>
__global__ void im2col(const T* __restrict__ img, T* __restrict__ col, long long N, int C, int H, int W, int FH,
                       int FW, int S, int P, int OH, int OW) {
  const int K = C * FH * FW;
  GRID_STRIDE(e, N * OH * OW * K) {
    const long long row = e / K;
    const int k = (int)(e % K);
    const int x = k % FW, y = k / FW % FH, c = k / (FW * FH);
    const int j = (int)(row % OW), i = (int)(row / OW % OH);
    const long long n = row / ((long long)OW * OH);
    const int hy = i * S + y - P, hx = j * S + x - P;
    col[e] = (hy >= 0 && hy < H && hx >= 0 && hx < W) ? img[((n * C + c) * H + hy) * W + hx] : (T)0;
  }
}

// Every window (output position i, j) whose (y, x) entry is pixel (h, w), in ascending (y, x):
// add(i, j, y, x) for each, in the order the book's col2im adds them.
template <class Add>
static __device__ __forceinline__ void windows_at(int h, int w, int FH, int FW, int S, int P, int OH, int OW,
                                                  Add add) {
  for (int y = 0; y < FH; ++y) {
    const int dy = h + P - y;
    if (dy < 0 || dy % S != 0 || dy / S >= OH) continue;
    for (int x = 0; x < FW; ++x) {
      const int dx = w + P - x;
      if (dx < 0 || dx % S != 0 || dx / S >= OW) continue;
      add(dy / S, dx / S, y, x);
    }
  }
}

// img[n, c, h, w] = the sum of every col entry im2col would have read it into.
template <typename T>
__global__ void col2im(const T* __restrict__ col, T* __restrict__ img, long long N, int C, int H, int W, int FH,
                       int FW, int S, int P, int OH, int OW) {
  const int K = C * FH * FW;
  GRID_STRIDE(e, N * C * H * W) {
    const int w = (int)(e % W), h = (int)(e / W % H), c = (int)(e / ((long long)W * H) % C);
    const long long n = e / ((long long)W * H * C);
    T v = (T)0;
    windows_at(h, w, FH, FW, S, P, OH, OW, [&](int i, int j, int y, int x) {
      v += col[((n * OH + i) * OW + j) * K + (c * FH + y) * FW + x];
    });
    img[e] = v;
  }
}

// out[n, c, i, j] = the window's max (padding counts as 0); arg[(n, i, j, c)] = where
// in the window (y*PW + x) it first occurs, a NaN counting as the max (NumPy's argmax).
template <typename T>
__global__ void pool_forward(const T* __restrict__ img, T* __restrict__ out, long long* __restrict__ arg,
                             long long N, int C, int H, int W, int PH, int PW, int S, int P, int OH, int OW) {
  GRID_STRIDE(e, N * C * OH * OW) {
    const int j = (int)(e % OW), i = (int)(e / OW % OH), c = (int)(e / ((long long)OW * OH) % C);
    const long long n = e / ((long long)OW * OH * C);
    T best = (T)0;
    int at = 0;
    for (int y = 0; y < PH; ++y) {
      for (int x = 0; x < PW; ++x) {
        const int hy = i * S + y - P, hx = j * S + x - P;
        const T v = (hy >= 0 && hy < H && hx >= 0 && hx < W) ? img[((n * C + c) * H + hy) * W + hx] : (T)0;
        const int k = y * PW + x;
        if (k == 0 || v > best || (v != v && best == best)) {
          best = v;
          at = k;
        }
      }
    }
    out[e] = best;
    arg[((n * OH + i) * OW + j) * C + c] = at;
  }
}

// dx[n, c, h, w] = the sum, over the windows holding (h, w), of dout where the max was there.
template <typename T>
__global__ void pool_backward(const T* __restrict__ dout, const long long* __restrict__ arg, T* __restrict__ img,
                              long long N, int C, int H, int W, int PH, int PW, int S, int P, int OH, int OW) {
  GRID_STRIDE(e, N * C * H * W) {
    const int w = (int)(e % W), h = (int)(e / W % H), c = (int)(e / ((long long)W * H) % C);
    const long long n = e / ((long long)W * H * C);
    T v = (T)0;
    windows_at(h, w, PH, PW, S, P, OH, OW, [&](int i, int j, int y, int x) {
      if (arg[((n * OH + i) * OW + j) * C + c] == y * PW + x) v += dout[((n * C + c) * OH + i) * OW + j];
    });
    img[e] = v;
  }
}

// out[n, f, p] = rows[n*HW + p, f] + b[f] (a convolution's product, stored NCHW); RELU:
// out = 0 where that is <= 0, and mask records where (the book's Relu mask).
template <typename T, bool RELU>
__global__ void bias_nchw(const T* __restrict__ rows, const T* __restrict__ b, T* __restrict__ out,
                          bool* __restrict__ mask, long long N, int F, int HW) {
  GRID_STRIDE(e, N * F * HW) {
    const int p = (int)(e % HW), f = (int)(e / HW % F);
    const long long n = e / ((long long)HW * F);
    const T v = rows[(n * HW + p) * F + f] + b[f];
    if (RELU) {
      mask[e] = v <= (T)0;
      out[e] = v <= (T)0 ? (T)0 : v;
    } else {
      out[e] = v;
    }
  }
}

// rows[n*HW + p, f] = dout[n, f, p] (0 where MASK and mask[n, f, p]): the layout the
// products of the backward pass read.
template <typename T, bool MASK>
__global__ void nchw_rows(const T* __restrict__ dout, const bool* __restrict__ mask, T* __restrict__ rows,
                          long long N, int F, int HW) {
  GRID_STRIDE(e, N * F * HW) {
    const int f = (int)(e % F);
    const long long np = e / F;
    const long long src = (np / HW * F + f) * HW + np % HW;
    rows[e] = MASK && mask[src] ? (T)0 : dout[src];
  }
}

// a *= mask (the book's Dropout: x * mask, and dout * mask on the way back).
template <typename T>
__global__ void apply_mask(T* a, const bool* __restrict__ mask, long long n) {
  GRID_STRIDE(e, n) { a[e] = a[e] * (T)mask[e]; }
}
