// Batch normalisation kernels (src/ops/norm.rs; launchers in src/ops/norm/cuda.rs) for NCHW
// tensors with per-channel statistics over N·H·W.
//
// Layout: x, y, dy, dx are N×C planes of HW elements; channel c's m = N·HW elements are element
// k = n·HW + j at (n·C + c)·HW + j. Per-channel vectors (mean, 1/std, γ, β, running statistics)
// have C entries; γ and β may be null (affine = false: 1 and 0).
//
// Statistics are deterministic and accurate on a large offset: two passes (Σx, then Σ(x − μ)²),
// each accumulated in double by every thread, reduced in the block, and written as one partial
// per (channel, split) block; the partials are stored as float pairs (hi, lo = rest), ~48 bits,
// and added in a fixed order by the next kernel. No atomics anywhere.
//
// Launch shapes:
// - *_partial kernels: grid (splits, min(C, 65535)), 256-thread blocks (a power of two: the
//   block reduction is a shared-memory tree); block (s, c) walks channel c's elements
//   k = s·256 + t, stepping by splits·256.
// - batch_norm_stats_f32, batch_norm_bwd_coef_f32: one thread per channel (Launch::elems(C)).
// - batch_norm_fwd_f32, batch_norm_bwd_dx_f32: grid-stride over all elements with a few
//   elements per thread (a capped grid), tracking the channel without a division per element.
#include "common.cuh"

// A double in two floats: hi = the nearest float, lo = what is left.
static __device__ __forceinline__ void bn_store_pair(float* at, double v) {
  float hi = (float)v;
  at[0] = hi;
  at[1] = (float)(v - (double)hi);
}

static __device__ __forceinline__ double bn_load_pair(const float* at) {
  return (double)at[0] + (double)at[1];
}

// Σ of v over the block (blockDim.x a power of two), returned to every thread. `scratch` holds
// blockDim.x doubles of shared memory.
static __device__ double bn_block_sum(double v, double* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half >>= 1) {
    if ((int)threadIdx.x < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
    __syncthreads();
  }
  double total = scratch[0];
  __syncthreads();  // scratch may be reused right after
  return total;
}

// Walks channel c's elements k = start, start + step, ... < m, keeping k = n·HW + j without a
// division per step; at() is the element's index in the NCHW tensor.
struct BnWalk {
  long long k, m, stepk, chw, base;
  int n, j, hw, sn, sj;
  __device__ BnWalk(long long start, long long step, long long m_, int c, int channels, int hw_) {
    k = start;
    m = m_;
    hw = hw_;
    chw = (long long)channels * hw_;
    base = (long long)c * hw_;
    n = (int)(start / hw_);
    j = (int)(start % hw_);
    sn = (int)(step / hw_);
    sj = (int)(step % hw_);
    stepk = step;
  }
  __device__ bool more() const { return k < m; }
  __device__ long long at() const { return (long long)n * chw + base + j; }
  __device__ void next() {
    k += stepk;
    n += sn;
    j += sj;
    if (j >= hw) {
      j -= hw;
      n += 1;
    }
  }
};

// Walks every element i = start, start + step, ... < total of an NCHW tensor, keeping its channel
// c = (i / HW) mod C without a division per step.
struct BnFlat {
  long long i, total, step;
  int j, c, hw, channels, sj, sc;
  __device__ BnFlat(long long start, long long step_, long long total_, int channels_, int hw_) {
    i = start;
    step = step_;
    total = total_;
    hw = hw_;
    channels = channels_;
    j = (int)(start % hw_);
    c = (int)((start / hw_) % channels_);
    sj = (int)(step_ % hw_);
    sc = (int)((step_ / hw_) % channels_);
  }
  __device__ bool more() const { return i < total; }
  __device__ void next() {
    i += step;
    j += sj;
    c += sc;
    if (j >= hw) {
      j -= hw;
      c += 1;
    }
    if (c >= channels) c -= channels;
  }
};

// The mean of channel c from its `splits` pass-one partials.
static __device__ double bn_mean(const float* psum, int c, int splits, long long m) {
  double s = 0.0;
  for (int i = 0; i < splits; ++i) s += bn_load_pair(psum + 2 * ((long long)c * splits + i));
  return s / (double)m;
}

// Pass one (psum_in null): partial[c, s] = Σ x over block (s, c)'s share of channel c.
// Pass two (psum_in = pass one's partials): partial[c, s] = Σ (x − μ_c)².
extern "C" __global__ void batch_norm_partial_f32(const float* x, const float* psum_in, float* partial, int channels, int hw, int m, int splits) {
  __shared__ double scratch[256];
  long long step = (long long)splits * blockDim.x;
  for (int c = blockIdx.y; c < channels; c += gridDim.y) {
    double mu = psum_in ? bn_mean(psum_in, c, splits, m) : 0.0;
    double acc = 0.0;
    for (BnWalk w((long long)blockIdx.x * blockDim.x + threadIdx.x, step, m, c, channels, hw); w.more(); w.next()) {
      double v = (double)x[w.at()];
      acc += psum_in ? (v - mu) * (v - mu) : v;
    }
    acc = bn_block_sum(acc, scratch);
    if (threadIdx.x == 0) bn_store_pair(partial + 2 * ((long long)c * splits + blockIdx.x), acc);
  }
}

// Per channel: the statistics the forward and backward use (mean, 1/√(var + eps)) and, in
// training, the running statistics moved towards the batch's (PyTorch: unbiased variance),
// written to new buffers. In training the batch's from the partials of both passes; in
// evaluation (psum null) the running ones.
extern "C" __global__ void batch_norm_stats_f32(const float* psum, const float* psq, int splits, int m, float momentum, float eps, const float* rm, const float* rv, float* mean, float* invstd, float* rm_new, float* rv_new, int channels) {
  GRID_STRIDE(c, channels) {
    if (psum) {
      double mu = bn_mean(psum, (int)c, splits, m);
      double ss = 0.0;
      for (int i = 0; i < splits; ++i) ss += bn_load_pair(psq + 2 * (c * splits + i));
      double var = ss / (double)m;
      double mom = (double)momentum;
      mean[c] = (float)mu;
      invstd[c] = (float)(1.0 / sqrt(var + (double)eps));
      rm_new[c] = (float)((1.0 - mom) * (double)rm[c] + mom * mu);
      rv_new[c] = (float)((1.0 - mom) * (double)rv[c] + mom * var * ((double)m / (double)(m - 1)));
    } else {
      mean[c] = rm[c];
      invstd[c] = (float)(1.0 / sqrt((double)rv[c] + (double)eps));
    }
  }
}

// y = (x − μ_c)·γ_c/σ_c + β_c.
extern "C" __global__ void batch_norm_fwd_f32(const float* x, const float* mean, const float* invstd, const float* gamma, const float* beta, float* y, int channels, int hw, int total) {
  for (BnFlat f((long long)blockIdx.x * blockDim.x + threadIdx.x, (long long)blockDim.x * gridDim.x, total, channels, hw); f.more(); f.next()) {
    int c = f.c;
    float a = (gamma ? gamma[c] : 1.0f) * invstd[c];
    y[f.i] = (x[f.i] - mean[c]) * a + (beta ? beta[c] : 0.0f);
  }
}

// partial[c, s] = (Σ dy, Σ dy·(x − μ_c)) over block (s, c)'s share of channel c, as two pairs.
extern "C" __global__ void batch_norm_bwd_partial_f32(const float* dy, const float* x, const float* mean, float* partial, int channels, int hw, int m, int splits) {
  __shared__ double scratch[256];
  long long step = (long long)splits * blockDim.x;
  for (int c = blockIdx.y; c < channels; c += gridDim.y) {
    double mu = (double)mean[c];
    double s = 0.0, sx = 0.0;
    for (BnWalk w((long long)blockIdx.x * blockDim.x + threadIdx.x, step, m, c, channels, hw); w.more(); w.next()) {
      long long i = w.at();
      double d = (double)dy[i];
      s += d;
      sx += d * ((double)x[i] - mu);
    }
    s = bn_block_sum(s, scratch);
    sx = bn_block_sum(sx, scratch);
    if (threadIdx.x == 0) {
      float* p = partial + 4 * ((long long)c * splits + blockIdx.x);
      bn_store_pair(p, s);
      bn_store_pair(p + 2, sx);
    }
  }
}

// Per channel from the backward partials: dβ = Σ dy, dγ = Σ dy·x̂, and the coefficients of dx:
// coef[3c..3c+3) = (γ/σ, mean(dy), mean(dy·x̂)), the last two 0 in evaluation (training = 0),
// where the statistics are constants.
extern "C" __global__ void batch_norm_bwd_coef_f32(const float* partial, int splits, int m, int training, const float* invstd, const float* gamma, float* dgamma, float* dbeta, float* coef, int channels) {
  GRID_STRIDE(c, channels) {
    double s = 0.0, sxm = 0.0;
    for (int i = 0; i < splits; ++i) {
      const float* p = partial + 4 * (c * splits + i);
      s += bn_load_pair(p);
      sxm += bn_load_pair(p + 2);
    }
    double sx = sxm * (double)invstd[c];
    dbeta[c] = (float)s;
    dgamma[c] = (float)sx;
    coef[3 * c] = (gamma ? gamma[c] : 1.0f) * invstd[c];
    coef[3 * c + 1] = training ? (float)s / (float)m : 0.0f;
    coef[3 * c + 2] = training ? (float)sx / (float)m : 0.0f;
  }
}

// dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂)) in training, γ/σ · dy in evaluation.
extern "C" __global__ void batch_norm_bwd_dx_f32(const float* dy, const float* x, const float* mean, const float* invstd, const float* coef, int training, float* dx, int channels, int hw, int total) {
  for (BnFlat f((long long)blockIdx.x * blockDim.x + threadIdx.x, (long long)blockDim.x * gridDim.x, total, channels, hw); f.more(); f.next()) {
    int c = f.c;
    float d = dy[f.i];
    if (training) d = d - coef[3 * c + 1] - (x[f.i] - mean[c]) * invstd[c] * coef[3 * c + 2];
    dx[f.i] = coef[3 * c] * d;
  }
}
