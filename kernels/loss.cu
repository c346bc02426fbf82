// Softmax, log-softmax and cross-entropy (src/ops/loss.rs), row-wise over the last dimension of
// a row-major [rows, k] array.
//
// Layout and launch: one warp per row, LOSS_ROWS_PER_BLOCK = 8 warps per 256-thread block, rows
// visited grid-stride by warps (grid = min(ceil(rows / 8), cap)); lanes stride over the row, so
// reads are coalesced for every k. Rows are short here (k = classes, 10..1000), so a warp per row
// keeps every lane busy where a block per row would idle most of its threads. Row maxima and
// sums are warp butterfly reductions (every lane ends with the result; deterministic).
// Numerically stable: max subtracted before exp, as on the CPU.
//
// cross_entropy_fwd_f32 also writes one partial loss per block (a deterministic block sum of its
// rows' -log p[label]), which sum_final_f32 (reduce.cu) adds up and scales by 1/rows; its
// backward is elementwise (Launch::elems). Labels are int32 bits in a device buffer.
#include "common.cuh"

#define LOSS_ROWS_PER_BLOCK 8

static __device__ __forceinline__ float loss_warp_max(float v) {
  for (int d = 16; d > 0; d >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, d));
  return v;
}

static __device__ __forceinline__ float loss_warp_sum(float v) {
  for (int d = 16; d > 0; d >>= 1) v += __shfl_xor_sync(0xffffffffu, v, d);
  return v;
}

// log Σ exp(x) of one row, on every lane of the warp.
static __device__ __forceinline__ float loss_row_lse(const float* x, int k, int lane) {
  float m = __uint_as_float(0xff800000u);  // -inf
  for (int j = lane; j < k; j += 32) m = fmaxf(m, x[j]);
  m = loss_warp_max(m);
  float s = 0.0f;
  for (int j = lane; j < k; j += 32) s += expf(x[j] - m);
  return m + logf(loss_warp_sum(s));
}

// Warps of the grid visit rows r = global warp index, striding by the warps in the grid. The
// loop bound is the same for the 32 lanes of a warp, so shuffles inside are warp-uniform.
#define LOSS_WARP_ROWS(r, rows)                                                   \
  for (int r = blockIdx.x * LOSS_ROWS_PER_BLOCK + threadIdx.x / 32; r < (rows); \
       r += gridDim.x * LOSS_ROWS_PER_BLOCK)

// y = softmax(x) (`take_log` = 0) or log_softmax(x) (`take_log` = 1), per row.
extern "C" __global__ void softmax_fwd_f32(const float* x, float* y, int rows, int k, int take_log) {
  int lane = threadIdx.x % 32;
  LOSS_WARP_ROWS(r, rows) {
    const float* xr = x + (long long)r * k;
    float* yr = y + (long long)r * k;
    float lse = loss_row_lse(xr, k, lane);
    for (int j = lane; j < k; j += 32) {
      float v = xr[j] - lse;
      yr[j] = take_log ? v : expf(v);
    }
  }
}

// Softmax backward: dx = y ⊙ (g − Σ g·y), y the softmax output.
extern "C" __global__ void softmax_bwd_f32(const float* g, const float* y, float* dx, int rows, int k) {
  int lane = threadIdx.x % 32;
  LOSS_WARP_ROWS(r, rows) {
    long long o = (long long)r * k;
    float dot = 0.0f;
    for (int j = lane; j < k; j += 32) dot += g[o + j] * y[o + j];
    dot = loss_warp_sum(dot);
    for (int j = lane; j < k; j += 32) dx[o + j] = y[o + j] * (g[o + j] - dot);
  }
}

// Log-softmax backward: dx = g − exp(y) · Σ g, y the log-softmax output.
extern "C" __global__ void log_softmax_bwd_f32(const float* g, const float* y, float* dx, int rows, int k) {
  int lane = threadIdx.x % 32;
  LOSS_WARP_ROWS(r, rows) {
    long long o = (long long)r * k;
    float total = 0.0f;
    for (int j = lane; j < k; j += 32) total += g[o + j];
    total = loss_warp_sum(total);
    for (int j = lane; j < k; j += 32) dx[o + j] = g[o + j] - expf(y[o + j]) * total;
  }
}

// logp = log_softmax(logits) per row (kept for the backward); partial[b] = Σ over block b's
// rows of −logp[r, labels[r]]. All threads reach the block sum (no early exit).
extern "C" __global__ void cross_entropy_fwd_f32(const float* logits, const int* labels, float* logp, float* partial, int rows, int k) {
  __shared__ float scratch[32];
  int lane = threadIdx.x % 32;
  float loss = 0.0f;
  LOSS_WARP_ROWS(r, rows) {
    const float* xr = logits + (long long)r * k;
    float* lr = logp + (long long)r * k;
    float lse = loss_row_lse(xr, k, lane);
    for (int j = lane; j < k; j += 32) lr[j] = xr[j] - lse;
    if (lane == 0) loss -= xr[labels[r]] - lse;
  }
  loss = block_sum(loss, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = loss;
}

// dlogits = (exp(logp) − onehot(labels)) · g[0] · inv_rows, elementwise over rows·k.
extern "C" __global__ void cross_entropy_bwd_f32(const float* logp, const int* labels, const float* g, float inv_rows, float* dx, int rows, int k) {
  float s = g[0] * inv_rows;
  long long n = (long long)rows * k;
  GRID_STRIDE(i, n) {
    int r = (int)(i / k), j = (int)(i % k);
    dx[i] = expf(logp[i]) * s - (j == labels[r] ? s : 0.0f);
  }
}
