// optimizer.update on the CuPy backend: one launch per parameter, the rule of
// optimizers.cuh over n contiguous elements. s0..s3 are step_scalars().
#include "optimizers.cuh"

template <typename T, template <typename> class Rule>
__global__ void apply_rule(T* p, const T* g, T* s1, T* s2, double s0, double s1v, double s2v, double s3,
                           long long n) {
  const Rule<T> rule(s0, s1v, s2v, s3);
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) rule.step(p, g[i], s1, s2, i);
}
