// Reductions to a scalar (src/ops/reduce.rs), in two deterministic passes without atomics:
// sum_partial_f32 with up to REDUCE_BLOCKS blocks of 256 threads writes one partial sum per
// block, then sum_final_f32 with one block of 256 adds the partials and scales.
#include "common.cuh"

// partial[b] = Σ over block b's grid-stride share of x (of x² when `square`).
extern "C" __global__ void sum_partial_f32(const float* x, int square, float* partial, int n) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  GRID_STRIDE(i, n) acc += square ? x[i] * x[i] : x[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// out[0] = scale · Σ partial[0..m).
extern "C" __global__ void sum_final_f32(const float* partial, int m, float scale, float* out) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (int i = threadIdx.x; i < m; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) out[0] = scale * acc;
}

// out[i] = s · g[0]: the backward of a sum or mean, reading the upstream scalar on the device.
extern "C" __global__ void broadcast_f32(const float* g, float s, float* out, int n) {
  GRID_STRIDE(i, n) out[i] = s * g[0];
}
