// Pooling kernels (src/ops/pool.rs; launchers in src/ops/pool/cuda.rs): max and average pooling
// with square windows over NCHW planes, and the global average.
//
// Layout: x is P = N·C contiguous H×W planes (row-major), y is P planes of OH×OW. Output o of an
// axis covers the input positions [o·s − lo, o·s + hi) clipped to the plane, where lo is the
// padding and hi = kernel − padding (both clamped by the launcher so that they fit in an int
// without changing any window); padded positions are never read (max: −∞, average: excluded,
// PyTorch's count_include_pad = false).
//
// Launch: forward kernels run one thread per output, backward kernels one thread per input
// element, which gathers the outputs whose window covers it (no atomics, a fixed summation
// order: row-major over the outputs, as the CPU adds them); grid-stride loops, 256-thread blocks
// (Launch::elems). global_avg_pool_fwd_f32 runs one warp per plane.
#include "common.cuh"

// The in-bounds input range [*a, *b) of output o along an axis of length len.
static __device__ __forceinline__ void pool_span(int o, int s, int lo, int hi, int len, int* a, int* b) {
  *a = max(o * s - lo, 0);
  *b = min(o * s + hi, len);
}

// The outputs [*a, *b) whose window covers input position i along an axis with `outs` outputs:
// o·s − lo ≤ i < o·s + hi.
static __device__ __forceinline__ void pool_cover(int i, int s, int lo, int hi, int outs, int* a, int* b) {
  *a = i - hi < 0 ? 0 : (i - hi) / s + 1;
  *b = min((i + lo) / s + 1, outs);
}

// y = max over each window; arg = its position within the plane (the first maximum in row-major
// order; a NaN wins and stays, as on the CPU: a later NaN moves the position, a number does not).
extern "C" __global__ void max_pool_fwd_f32(const float* x, float* y, int* arg, int h, int w, int oh, int ow, int s, int lo, int hi, int n) {
  GRID_STRIDE(i, n) {
    int ox = (int)(i % ow), oy = (int)((i / ow) % oh);
    long long plane = i / ((long long)ow * oh);
    const float* xp = x + plane * h * w;
    int y0, y1, x0, x1;
    pool_span(oy, s, lo, hi, h, &y0, &y1);
    pool_span(ox, s, lo, hi, w, &x0, &x1);
    int at = y0 * w + x0;
    float best = xp[at];
    for (int r = y0; r < y1; ++r) {
      for (int c = x0; c < x1; ++c) {
        float v = xp[r * w + c];
        if (v > best || v != v) {
          best = v;
          at = r * w + c;
        }
      }
    }
    y[i] = best;
    arg[i] = at;
  }
}

// dx[i] = Σ dy[o] over the outputs o whose window covers i and whose argmax is i.
extern "C" __global__ void max_pool_bwd_f32(const float* dy, const int* arg, float* dx, int h, int w, int oh, int ow, int s, int lo, int hi, int n) {
  GRID_STRIDE(i, n) {
    int c = (int)(i % w), r = (int)((i / w) % h);
    long long plane = i / ((long long)w * h);
    const float* g = dy + plane * oh * ow;
    const int* a = arg + plane * oh * ow;
    int oy0, oy1, ox0, ox1;
    pool_cover(r, s, lo, hi, oh, &oy0, &oy1);
    pool_cover(c, s, lo, hi, ow, &ox0, &ox1);
    int me = r * w + c;
    float acc = 0.0f;
    for (int oy = oy0; oy < oy1; ++oy) {
      for (int ox = ox0; ox < ox1; ++ox) {
        if (a[oy * ow + ox] == me) acc += g[oy * ow + ox];
      }
    }
    dx[i] = acc;
  }
}

// y = mean of each window's in-bounds elements (summed in row-major order, then divided).
extern "C" __global__ void avg_pool_fwd_f32(const float* x, float* y, int h, int w, int oh, int ow, int s, int lo, int hi, int n) {
  GRID_STRIDE(i, n) {
    int ox = (int)(i % ow), oy = (int)((i / ow) % oh);
    long long plane = i / ((long long)ow * oh);
    const float* xp = x + plane * h * w;
    int y0, y1, x0, x1;
    pool_span(oy, s, lo, hi, h, &y0, &y1);
    pool_span(ox, s, lo, hi, w, &x0, &x1);
    float acc = 0.0f;
    for (int r = y0; r < y1; ++r) {
      for (int c = x0; c < x1; ++c) acc += xp[r * w + c];
    }
    y[i] = acc / ((float)(y1 - y0) * (float)(x1 - x0));
  }
}

// dx[i] = Σ dy[o] / count(o) over the outputs o whose window covers i, count(o) being the number
// of in-bounds elements of o's window.
extern "C" __global__ void avg_pool_bwd_f32(const float* dy, float* dx, int h, int w, int oh, int ow, int s, int lo, int hi, int n) {
  GRID_STRIDE(i, n) {
    int c = (int)(i % w), r = (int)((i / w) % h);
    long long plane = i / ((long long)w * h);
    const float* g = dy + plane * oh * ow;
    int oy0, oy1, ox0, ox1;
    pool_cover(r, s, lo, hi, oh, &oy0, &oy1);
    pool_cover(c, s, lo, hi, ow, &ox0, &ox1);
    float acc = 0.0f;
    for (int oy = oy0; oy < oy1; ++oy) {
      int a, b;
      pool_span(oy, s, lo, hi, h, &a, &b);
      float rows = (float)(b - a);
      for (int ox = ox0; ox < ox1; ++ox) {
        pool_span(ox, s, lo, hi, w, &a, &b);
        acc += g[oy * ow + ox] / (rows * (float)(b - a));
      }
    }
    dx[i] = acc;
  }
}

// y[p] = mean of plane p (hw elements): one warp per plane, lanes read consecutive elements.
// Launch: 256-thread blocks, any number of blocks (warps stride over the planes).
extern "C" __global__ void global_avg_pool_fwd_f32(const float* x, float* y, int hw, int planes) {
  int lane = threadIdx.x % 32;
  int warps = gridDim.x * (blockDim.x / 32);
  for (int p = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; p < planes; p += warps) {
    const float* xp = x + (long long)p * hw;
    float acc = 0.0f;
    for (int j = lane; j < hw; j += 32) acc += xp[j];
    acc = warp_sum(acc);
    if (lane == 0) y[p] = acc / (float)hw;
  }
}

// dx[i] = dy[i / hw] / hw.
extern "C" __global__ void global_avg_pool_bwd_f32(const float* dy, float* dx, int hw, int n) {
  GRID_STRIDE(i, n) dx[i] = dy[i / hw] / (float)hw;
}
