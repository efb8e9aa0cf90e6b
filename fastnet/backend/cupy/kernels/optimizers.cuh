// The built-in optimizer rules of fastnet.optimizers, one element at a time,
// in the order of operations of each class's `rule`. The constructor takes
// the optimizer's step_scalars() as doubles (unused ones are 0). Every
// coefficient NumPy computes as a Python float is computed in double here
// and rounded to T once, as NumPy rounds a Python scalar.
//
// step(p, g, s1, s2, i) updates p[i] and the state s1[i], s2[i] (the
// optimizer's state_names, in order) from the gradient g of element i.
#pragma once
#include "common.cuh"

template <typename T>
struct Sgd {  // p -= lr * g
  T lr;
  __device__ Sgd(double lr_, double, double, double) : lr((T)lr_) {}
  __device__ void step(T* p, T g, T*, T*, long long i) const { p[i] -= lr * g; }
};

template <typename T>
struct Momentum {  // v *= momentum; v -= lr * g; p += v
  T lr, mom;
  __device__ Momentum(double lr_, double mom_, double, double) : lr((T)lr_), mom((T)mom_) {}
  __device__ void step(T* p, T g, T* v, T*, long long i) const {
    T nv = v[i] * mom - lr * g;
    v[i] = nv;
    p[i] += nv;
  }
};

template <typename T>
struct Nesterov {  // p += m*m*v; p -= (1+m)*lr*g; v *= m; v -= lr*g
  T lr, mom, mom2, ahead;
  __device__ Nesterov(double lr_, double mom_, double, double)
      : lr((T)lr_), mom((T)mom_), mom2((T)(mom_ * mom_)), ahead((T)((1.0 + mom_) * lr_)) {}
  __device__ void step(T* p, T g, T* v, T*, long long i) const {
    T q = p[i] + mom2 * v[i];
    p[i] = q - ahead * g;
    T nv = v[i] * mom;
    v[i] = nv - lr * g;
  }
};

template <typename T>
struct AdaGrad {  // h += g*g; p -= lr * g / (sqrt(h) + 1e-7)
  T lr;
  __device__ AdaGrad(double lr_, double, double, double) : lr((T)lr_) {}
  __device__ void step(T* p, T g, T* h, T*, long long i) const {
    T nh = h[i] + g * g;
    h[i] = nh;
    p[i] -= lr * g / (r_sqrt(nh) + (T)1e-7);
  }
};

template <typename T>
struct RMSprop {  // h *= decay; h += (1 - decay) * g * g; p -= lr * g / (sqrt(h) + 1e-7)
  T lr, decay, rest;
  __device__ RMSprop(double lr_, double decay_, double, double)
      : lr((T)lr_), decay((T)decay_), rest((T)(1.0 - decay_)) {}
  __device__ void step(T* p, T g, T* h, T*, long long i) const {
    T nh = h[i] * decay;
    nh = nh + rest * g * g;
    h[i] = nh;
    p[i] -= lr * g / (r_sqrt(nh) + (T)1e-7);
  }
};

template <typename T>
struct Adam {  // the book's Adam; lr_t carries the bias correction
  T lr_t, rest1, rest2;
  __device__ Adam(double lr_t_, double beta1, double beta2, double)
      : lr_t((T)lr_t_), rest1((T)(1.0 - beta1)), rest2((T)(1.0 - beta2)) {}
  __device__ void step(T* p, T g, T* m, T* v, long long i) const {
    T nm = m[i];
    nm = nm + rest1 * (g - nm);
    m[i] = nm;
    T nv = v[i];
    nv = nv + rest2 * (g * g - nv);
    v[i] = nv;
    p[i] -= lr_t * nm / (r_sqrt(nv) + (T)1e-7);
  }
};

template <typename T>
struct AdamW {  // p *= 1 - lr * weight_decay, then the book's Adam
  Adam<T> adam;
  T keep;
  __device__ AdamW(double lr_t_, double beta1, double beta2, double keep_)
      : adam(lr_t_, beta1, beta2, 0.0), keep((T)keep_) {}
  __device__ void step(T* p, T g, T* m, T* v, long long i) const {
    p[i] = p[i] * keep;
    adam.step(p, g, m, v, i);
  }
};

// A rule with this step's row of the scalars table (one row of 4 per step; the
// clock counts the steps since the table was loaded).
template <typename T, template <typename> class Rule>
static __device__ __forceinline__ Rule<T> step_rule(const double* hyper, const long long* clock) {
  const double* h = hyper + 4 * ((clock[CLOCK_STEP] - 1) % clock[CLOCK_ROWS]);
  return Rule<T>(h[0], h[1], h[2], h[3]);
}
