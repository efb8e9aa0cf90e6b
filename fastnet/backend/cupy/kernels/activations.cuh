// The built-in activations of fastnet.activations (RELU, SIGMOID, TANH), by
// their kernel names. f(a) is the forward; b(d, h) the backward from the
// output h, the only thing the kernels keep of a layer.
#pragma once
#include "common.cuh"

template <typename T>
struct Relu {
  static __device__ __forceinline__ T f(T a) { return a <= (T)0 ? (T)0 : a; }
  // h <= 0 exactly where a <= 0 (h is a itself where a > 0): the book's mask
  static __device__ __forceinline__ T b(T d, T h) { return h <= (T)0 ? (T)0 : d; }
};

template <typename T>
struct Sigmoid {
  static __device__ __forceinline__ T f(T a) { return (T)1 / ((T)1 + r_exp(-a)); }
  // the book's dout * (1 - out) * out
  static __device__ __forceinline__ T b(T d, T h) { return d * ((T)1 - h) * h; }
};

template <typename T>
struct Tanh {
  static __device__ __forceinline__ T f(T a) { return r_tanh(a); }
  static __device__ __forceinline__ T b(T d, T h) { return d * ((T)1 - h * h); }
};
