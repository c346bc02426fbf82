// Data movement (src/ops/movement.rs): channel concatenation, spatial shift with zero fill, and
// DARTS's MixedOp sum Σ w[i]·x_i with its backward.
//
// Layouts are contiguous row-major. concat sees each input as [n, part] and the output as
// [n, per] (part = its channels × H × W, per = the output's); shift works on [planes, h, w].
// These are one thread per output element, grid-stride, Launch::elems (256-thread blocks).
//
// weighted_sum takes up to MOVE_TERMS terms per launch as separate pointer and weight-index
// arguments (unused slots: null pointer, index 0); the launcher chains launches with
// `accumulate` for more terms. The weights stay on the device: each thread reads its few
// w[index] once. The backward is one pass over g (weighted_sum_bwd_f32, up to REDUCE_BLOCKS
// blocks of 256, grid-stride) that writes dx_t = w[i_t]·g for the wanted terms and one partial
// dot ⟨g, x_t⟩ per block and term; weighted_sum_dw_f32 (one block of 256) then adds each term's
// partials in a fixed order into dw[i_t]: deterministic, no atomics.
#include "common.cuh"

#define MOVE_TERMS 8

// y[s, off + j] = x[s, j] for s < n, j < part (y rows have per elements).
extern "C" __global__ void concat_fwd_f32(const float* x, float* y, int n, int part, int per, int off) {
  long long total = (long long)n * part;
  GRID_STRIDE(i, total) {
    long long s = i / part, j = i % part;
    y[s * per + off + j] = x[i];
  }
}

// dx[s, j] = g[s, off + j]: one input's slice of the concatenated gradient.
extern "C" __global__ void concat_bwd_f32(const float* g, float* dx, int n, int part, int per, int off) {
  long long total = (long long)n * part;
  GRID_STRIDE(i, total) {
    long long s = i / part, j = i % part;
    dx[i] = g[s * per + off + j];
  }
}

// y[p, i, j] = x[p, i + dy, j + dx], zero outside the map. The backward is the same kernel with
// (-dy, -dx).
extern "C" __global__ void shift_fwd_f32(const float* x, float* y, int planes, int h, int w, int dy, int dx) {
  long long total = (long long)planes * h * w;
  GRID_STRIDE(i, total) {
    int j = (int)(i % w), r = (int)(i / w % h);
    int si = r + dy, sj = j + dx;
    bool inside = si >= 0 && si < h && sj >= 0 && sj < w;
    y[i] = inside ? x[i + (long long)dy * w + dx] : 0.0f;
  }
}

// y = (accumulate ? y : 0) + Σ_{t < terms} w[i_t]·x_t, terms added in order.
extern "C" __global__ void weighted_sum_fwd_f32(const float* w, int terms, int accumulate, const float* x0, const float* x1, const float* x2, const float* x3, const float* x4, const float* x5, const float* x6, const float* x7, int i0, int i1, int i2, int i3, int i4, int i5, int i6, int i7, float* y, int n) {
  const float* xs[MOVE_TERMS] = {x0, x1, x2, x3, x4, x5, x6, x7};
  const int idx[MOVE_TERMS] = {i0, i1, i2, i3, i4, i5, i6, i7};
  float c[MOVE_TERMS];
#pragma unroll
  for (int t = 0; t < MOVE_TERMS; ++t) c[t] = t < terms ? w[idx[t]] : 0.0f;
  GRID_STRIDE(i, n) {
    float acc = c[0] * xs[0][i];
    if (accumulate) acc = y[i] + acc;
#pragma unroll
    for (int t = 1; t < MOVE_TERMS; ++t)
      if (t < terms) acc += c[t] * xs[t][i];
    y[i] = acc;
  }
}

// For t < terms: dx_t = w[i_t]·g where dx_t is not null, and (when want_dots)
// partial[t · gridDim.x + blockIdx.x] = this block's share of ⟨g, x_t⟩.
extern "C" __global__ void weighted_sum_bwd_f32(const float* g, const float* w, int terms, int want_dots, const float* x0, const float* x1, const float* x2, const float* x3, const float* x4, const float* x5, const float* x6, const float* x7, float* d0, float* d1, float* d2, float* d3, float* d4, float* d5, float* d6, float* d7, int i0, int i1, int i2, int i3, int i4, int i5, int i6, int i7, float* partial, int n) {
  __shared__ float scratch[32];
  const float* xs[MOVE_TERMS] = {x0, x1, x2, x3, x4, x5, x6, x7};
  float* ds[MOVE_TERMS] = {d0, d1, d2, d3, d4, d5, d6, d7};
  const int idx[MOVE_TERMS] = {i0, i1, i2, i3, i4, i5, i6, i7};
  float c[MOVE_TERMS], dot[MOVE_TERMS];
#pragma unroll
  for (int t = 0; t < MOVE_TERMS; ++t) {
    c[t] = t < terms ? w[idx[t]] : 0.0f;
    dot[t] = 0.0f;
  }
  GRID_STRIDE(i, n) {
    float gi = g[i];
#pragma unroll
    for (int t = 0; t < MOVE_TERMS; ++t) {
      if (t >= terms) break;
      if (ds[t]) ds[t][i] = c[t] * gi;
      if (want_dots) dot[t] += gi * xs[t][i];
    }
  }
  if (!want_dots) return;  // uniform over the grid: no thread of a block skips a barrier alone
#pragma unroll
  for (int t = 0; t < MOVE_TERMS; ++t) {
    if (t >= terms) break;  // uniform too
    float s = block_sum(dot[t], scratch);
    if (threadIdx.x == 0) partial[t * gridDim.x + blockIdx.x] = s;
  }
}

// dw[i_t] += Σ_b partial[t · blocks + b] for t < terms, in term order (one block).
extern "C" __global__ void weighted_sum_dw_f32(const float* partial, int blocks, int terms, int i0, int i1, int i2, int i3, int i4, int i5, int i6, int i7, float* dw) {
  __shared__ float scratch[32];
  const int idx[MOVE_TERMS] = {i0, i1, i2, i3, i4, i5, i6, i7};
  for (int t = 0; t < terms; ++t) {
    float acc = 0.0f;
    for (int b = threadIdx.x; b < blocks; b += blockDim.x) acc += partial[t * blocks + b];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) dw[idx[t]] += acc;
  }
}
