// Elementwise kernels (src/ops/elementwise.rs): one thread per element, grid-stride loops,
// launched with Launch::elems(n) (256-thread blocks). Every kernel writes all n outputs.
#include "common.cuh"

extern "C" __global__ void fill_f32(float* y, float value, int n) {
  GRID_STRIDE(i, n) y[i] = value;
}

extern "C" __global__ void copy_f32(const float* x, float* y, int n) {
  GRID_STRIDE(i, n) y[i] = x[i];
}

extern "C" __global__ void add_fwd_f32(const float* a, const float* b, float* y, int n) {
  GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

extern "C" __global__ void sub_fwd_f32(const float* a, const float* b, float* y, int n) {
  GRID_STRIDE(i, n) y[i] = a[i] - b[i];
}

extern "C" __global__ void mul_fwd_f32(const float* a, const float* b, float* y, int n) {
  GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

extern "C" __global__ void scale_fwd_f32(const float* x, float s, float* y, int n) {
  GRID_STRIDE(i, n) y[i] = s * x[i];
}

// y += a·x, in place (gradient accumulation, running statistics).
extern "C" __global__ void axpy_f32(float a, const float* x, float* y, int n) {
  GRID_STRIDE(i, n) y[i] += a * x[i];
}

// max(x, 0). The CPU kernel uses f32::max(x, 0), which returns 0 for NaN; fmaxf does the same.
extern "C" __global__ void relu_fwd_f32(const float* x, float* y, int n) {
  GRID_STRIDE(i, n) y[i] = fmaxf(x[i], 0.0f);
}

// dx = dy where the output was positive.
extern "C" __global__ void relu_bwd_f32(const float* dy, const float* y, float* dx, int n) {
  GRID_STRIDE(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// Dropout and drop-path masks: 1/keep where uniform_at(seed, i / per) < keep, else 0. Dropout
// draws per element (per = 1), drop-path per sample (per = elements of one sample).
extern "C" __global__ void keep_mask_f32(unsigned long long seed, float keep, int per, float* mask, int n) {
  GRID_STRIDE(i, n) {
    mask[i] = uniform_at(seed, (unsigned long long)(i / per)) < keep ? 1.0f / keep : 0.0f;
  }
}
