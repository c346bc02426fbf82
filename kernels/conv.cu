// 2-D convolution kernels (src/ops/conv/cuda.rs), NCHW, zero padding, stride s, dilation d.
//
// Dense and grouped convs run as GEMMs (cuBLAS) on a column matrix with every sample side by
// side, P = OH·OW, NP = N·P, K = Cin·kh·kw (group g owns rows g·K/groups.. of it):
//   col [K, NP]      col[(c·kh + ky)·kw + kx][b·P + oy·OW + ox] = x[b, c, oy·s + ky·d − p, ...]
//   forward          yt [Cout, NP] = W_g · col_g per group, then y = NCHW(yt) + bias
//   backward         dyt = CNHW(dy); dW_g = dyt_g · col_gᵀ; dcol_g = W_gᵀ · dyt_g; dx = col2im(dcol)
// col2im gathers: each input cell sums the column entries that read it (no atomics).
//
// Depthwise convs (one input channel per group, Cout = m·Cin, output channel o reads input
// channel o/m) run directly: forward one thread per output, dx one thread per input cell
// (gather), dW as per-block partial sums over N·P for each (tap, channel, split) and a second
// pass adding the splits in order, so every result is the same from run to run.
//
// Launch shapes: the one-thread-per-element kernels use Launch::elems (256-thread blocks,
// grid-stride loops); dwconv_dw_partial_bwd_f32 uses a grid (kh·kw, Cout, splits) of 256.
#include "common.cuh"

// col[r][j] for r = (c·kh + ky)·kw + kx < Cin·kh·kw, j = b·P + oy·OW + ox < N·P.
extern "C" __global__ void conv_im2col_f32(const float* x, float* col, int n, int cin, int h, int w, int kh, int kw, int oh, int ow, int s, int p, int d) {
  long long P = (long long)oh * ow, np = n * P;
  GRID_STRIDE(i, (long long)cin * kh * kw * np) {
    long long r = i / np, j = i - r * np;
    int kx = (int)(r % kw), ky = (int)(r / kw % kh), c = (int)(r / ((long long)kw * kh));
    int b = (int)(j / P), q = (int)(j - b * P), oy = q / ow, ox = q - oy * ow;
    int iy = oy * s + ky * d - p, ix = ox * s + kx * d - p;
    bool in = iy >= 0 && iy < h && ix >= 0 && ix < w;
    col[i] = in ? x[(((long long)b * cin + c) * h + iy) * w + ix] : 0.0f;
  }
}

// dx[b, c, iy, ix] = Σ over the taps (ky, kx) and outputs (oy, ox) that read (iy, ix) of
// dcol[(c·kh + ky)·kw + kx][b·P + oy·OW + ox]. Writes every element of dx.
extern "C" __global__ void conv_col2im_bwd_f32(const float* dcol, float* dx, int n, int cin, int h, int w, int kh, int kw, int oh, int ow, int s, int p, int d) {
  long long P = (long long)oh * ow, np = n * P;
  GRID_STRIDE(i, (long long)n * cin * h * w) {
    int ix = (int)(i % w), iy = (int)(i / w % h);
    long long bc = i / ((long long)h * w);
    int c = (int)(bc % cin), b = (int)(bc / cin);
    const float* base = dcol + (long long)c * kh * kw * np + b * P;
    float acc = 0.0f;
    for (int ky = 0; ky < kh; ++ky) {
      int ty = iy + p - ky * d;
      if (ty < 0) break;  // ty falls as ky grows
      if (ty % s != 0 || ty / s >= oh) continue;
      int oy = ty / s;
      for (int kx = 0; kx < kw; ++kx) {
        int tx = ix + p - kx * d;
        if (tx < 0) break;
        if (tx % s != 0 || tx / s >= ow) continue;
        acc += base[(long long)(ky * kw + kx) * np + oy * ow + tx / s];
      }
    }
    dx[i] = acc;
  }
}

// y[b, o, q] = yt[o][b·P + q] (+ bias[o] when has_bias): the GEMM's [C, N·P] result to NCHW.
extern "C" __global__ void conv_nchw_fwd_f32(const float* yt, const float* bias, int has_bias, float* y, int n, int c, int P) {
  GRID_STRIDE(i, (long long)n * c * P) {
    long long bo = i / P;
    int q = (int)(i - bo * P), o = (int)(bo % c), b = (int)(bo / c);
    float v = yt[((long long)o * n + b) * P + q];
    y[i] = has_bias ? v + bias[o] : v;
  }
}

// yt[o][b·P + q] = y[b, o, q]: NCHW to the [C, N·P] layout of the GEMMs (dy, and x of a 1×1 conv).
extern "C" __global__ void conv_cnhw_bwd_f32(const float* y, float* yt, int n, int c, int P) {
  GRID_STRIDE(i, (long long)n * c * P) {
    long long ob = i / P;
    int q = (int)(i - ob * P), b = (int)(ob % n), o = (int)(ob / n);
    yt[i] = y[((long long)b * c + o) * P + q];
  }
}

// db[o] = Σ_{b,q} dy[b, o, q]: one block per output channel (Launch::rows(Cout)).
extern "C" __global__ void conv_bias_bwd_f32(const float* dy, float* db, int n, int c, int P) {
  __shared__ float scratch[32];
  int o = blockIdx.x;
  float acc = 0.0f;
  for (int b = 0; b < n; ++b) {
    const float* plane = dy + ((long long)b * c + o) * P;
    for (int q = threadIdx.x; q < P; q += blockDim.x) acc += plane[q];
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) db[o] = acc;
}

// Depthwise forward: y[b, o, oy, ox] = bias[o] + Σ_{ky,kx} w[o, ky, kx] · x[b, o/m, iy, ix].
extern "C" __global__ void dwconv_fwd_f32(const float* x, const float* wt, const float* bias, int has_bias, float* y, int n, int cin, int h, int w, int m, int kh, int kw, int oh, int ow, int s, int p, int d) {
  int cout = cin * m;
  GRID_STRIDE(i, (long long)n * cout * oh * ow) {
    int ox = (int)(i % ow), oy = (int)(i / ow % oh);
    long long bo = i / ((long long)oh * ow);
    int o = (int)(bo % cout), b = (int)(bo / cout);
    const float* plane = x + ((long long)b * cin + o / m) * h * w;
    const float* wo = wt + (long long)o * kh * kw;
    float acc = has_bias ? bias[o] : 0.0f;
    for (int ky = 0; ky < kh; ++ky) {
      int iy = oy * s + ky * d - p;
      if (iy < 0 || iy >= h) continue;
      for (int kx = 0; kx < kw; ++kx) {
        int ix = ox * s + kx * d - p;
        if (ix >= 0 && ix < w) acc += wo[ky * kw + kx] * plane[iy * w + ix];
      }
    }
    y[i] = acc;
  }
}

// Depthwise input gradient: dx[b, c, iy, ix] = Σ over the m output channels of c, the taps and
// the outputs (oy, ox) that read (iy, ix), of w[o, ky, kx] · dy[b, o, oy, ox].
extern "C" __global__ void dwconv_dx_bwd_f32(const float* dy, const float* wt, float* dx, int n, int cin, int h, int w, int m, int kh, int kw, int oh, int ow, int s, int p, int d) {
  int cout = cin * m;
  GRID_STRIDE(i, (long long)n * cin * h * w) {
    int ix = (int)(i % w), iy = (int)(i / w % h);
    long long bc = i / ((long long)h * w);
    int c = (int)(bc % cin), b = (int)(bc / cin);
    float acc = 0.0f;
    for (int j = 0; j < m; ++j) {
      int o = c * m + j;
      const float* plane = dy + ((long long)b * cout + o) * oh * ow;
      const float* wo = wt + (long long)o * kh * kw;
      for (int ky = 0; ky < kh; ++ky) {
        int ty = iy + p - ky * d;
        if (ty < 0) break;
        if (ty % s != 0 || ty / s >= oh) continue;
        int oy = ty / s;
        for (int kx = 0; kx < kw; ++kx) {
          int tx = ix + p - kx * d;
          if (tx < 0) break;
          if (tx % s != 0 || tx / s >= ow) continue;
          acc += wo[ky * kw + kx] * plane[oy * ow + tx / s];
        }
      }
    }
    dx[i] = acc;
  }
}

// Depthwise weight gradient, first pass. Block (t, o, z) sums dy[b, o, oy, ox] · x[b, o/m, iy, ix]
// for tap t = ky·kw + kx over the flat range [z·chunk, (z+1)·chunk) of (b, oy, ox) and writes
// partial[(o·kh·kw + t)·splits + z]. With one split that is dw itself.
extern "C" __global__ void dwconv_dw_partial_bwd_f32(const float* x, const float* dy, float* partial, int n, int cin, int h, int w, int m, int kh, int kw, int oh, int ow, int s, int p, int d, int chunk) {
  __shared__ float scratch[32];
  int t = blockIdx.x, o = blockIdx.y, z = blockIdx.z, splits = gridDim.z;
  int ky = t / kw, kx = t - ky * kw, cout = cin * m, P = oh * ow;
  long long np = (long long)n * P, lo = (long long)z * chunk;
  long long hi = lo + chunk < np ? lo + chunk : np;
  float acc = 0.0f;
  for (long long e = lo + threadIdx.x; e < hi; e += blockDim.x) {
    int b = (int)(e / P), q = (int)(e - (long long)b * P), oy = q / ow, ox = q - oy * ow;
    int iy = oy * s + ky * d - p, ix = ox * s + kx * d - p;
    if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
      acc += dy[((long long)b * cout + o) * P + q] * x[(((long long)b * cin + o / m) * h + iy) * w + ix];
    }
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[((long long)o * kh * kw + t) * splits + z] = acc;
}

// Depthwise weight gradient, second pass: dw[i] = Σ_z partial[i·splits + z], in order.
extern "C" __global__ void dwconv_dw_final_bwd_f32(const float* partial, int splits, float* dw, int len) {
  GRID_STRIDE(i, len) {
    float acc = 0.0f;
    for (int z = 0; z < splits; ++z) acc += partial[i * splits + z];
    dw[i] = acc;
  }
}
