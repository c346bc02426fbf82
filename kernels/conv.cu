// 2-D convolution kernels (src/ops/conv/cuda.rs), NCHW, zero padding, stride s, dilation d.
//
// Dense and grouped convs run as GEMMs (cuBLAS) on a column matrix with every sample side by
// side, P = OH·OW, NP = N·P, K = Cin·kh·kw (group g owns rows g·K/groups.. of it):
//   col [K, NP]      col[(c·kh + ky)·kw + kx][b·P + oy·OW + ox] = x[b, c, oy·s + ky·d − p, ...]
//   forward          yt [Cout, NP] = W_g · col_g per group, then y = NCHW(yt) + bias
//   backward         dyt = CNHW(dy); dW_g = dyt_g · col_gᵀ; dcol_g = W_gᵀ · dyt_g; dx = col2im(dcol)
// col2im gathers: each input cell sums the column entries that read it (no atomics). A 1×1
// stride-1 unpadded conv skips all this: its forward and dx are GEMMs batched over the samples
// straight on NCHW (conv_bias_fill_fwd_f32 preloads the bias), only dW uses the [C, N·P] layout.
//
// Depthwise convs (one input channel per group, Cout = m·Cin, output channel o reads input
// channel o/m) run directly: forward one thread per output, dx one thread per input cell
// (gather), dW as per-block partial sums over a split of N·P for each channel (all taps of a
// group of up to DW_TAPS at once, so dy is read once per group) and a second pass adding the
// splits in order, so every result is the same from run to run.
//
// Launch shapes: the one-thread-per-element kernels use Launch::elems (256-thread blocks,
// grid-stride loops); conv_bias_bwd_f32 one block per channel; dwconv_dw_partial_bwd_f32 a grid
// (Cout, splits, tap groups) of 256 threads.
//
// Every tensor has fewer than 2^31 elements (the launchers check), so indices are 32-bit:
// 64-bit divisions cost several times more.
#include "common.cuh"

#define GRID_STRIDE_U32(i, n) \
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (unsigned)(n); i += blockDim.x * gridDim.x)

// Taps of the depthwise weight gradient one block sums at once (5×5 in one go).
#define DW_TAPS 25

// col[r][j] for r = (c·kh + ky)·kw + kx < Cin·kh·kw, j = b·P + oy·OW + ox < N·P.
extern "C" __global__ void conv_im2col_f32(const float* x, float* col, int n, int cin, int h, int w, int kh, int kw, int oh, int ow, int s, int p, int d) {
  unsigned P = oh * ow, np = n * P, taps = kh * kw;
  GRID_STRIDE_U32(i, cin * taps * np) {
    unsigned r = i / np, j = i - r * np, c = r / taps, t = r - c * taps;
    unsigned b = j / P, q = j - b * P;
    int oy = q / ow, ox = q - oy * ow, ky = t / kw, kx = t - ky * kw;
    int iy = oy * s + ky * d - p, ix = ox * s + kx * d - p;
    bool in = iy >= 0 && iy < h && ix >= 0 && ix < w;
    col[i] = in ? x[((b * cin + c) * h + iy) * w + ix] : 0.0f;
  }
}

// dx[b, c, iy, ix] = Σ over the taps (ky, kx) and outputs (oy, ox) that read (iy, ix) of
// dcol[(c·kh + ky)·kw + kx][b·P + oy·OW + ox]. Writes every element of dx.
extern "C" __global__ void conv_col2im_bwd_f32(const float* dcol, float* dx, int n, int cin, int h, int w, int kh, int kw, int oh, int ow, int s, int p, int d) {
  unsigned P = oh * ow, np = n * P, hw = h * w;
  GRID_STRIDE_U32(i, n * cin * hw) {
    unsigned bc = i / hw, yx = i - bc * hw, b = bc / cin, c = bc - b * cin;
    int iy = yx / w, ix = yx - iy * w;
    const float* base = dcol + c * kh * kw * np + b * P;
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
        acc += base[(ky * kw + kx) * np + oy * ow + tx / s];
      }
    }
    dx[i] = acc;
  }
}

// y[b, o, q] = yt[o][b·P + q] (+ bias[o] when has_bias): the GEMM's [C, N·P] result to NCHW.
extern "C" __global__ void conv_nchw_fwd_f32(const float* yt, const float* bias, int has_bias, float* y, int n, int c, int P) {
  GRID_STRIDE_U32(i, n * c * P) {
    unsigned bo = i / P, q = i - bo * P, b = bo / c, o = bo - b * c;
    float v = yt[(o * n + b) * P + q];
    y[i] = has_bias ? v + bias[o] : v;
  }
}

// yt[o][b·P + q] = y[b, o, q]: NCHW to the [C, N·P] layout of the GEMMs (dy, and x of a 1×1 conv).
extern "C" __global__ void conv_cnhw_bwd_f32(const float* y, float* yt, int n, int c, int P) {
  GRID_STRIDE_U32(i, n * c * P) {
    unsigned ob = i / P, q = i - ob * P, o = ob / n, b = ob - o * n;
    yt[i] = y[(b * c + o) * P + q];
  }
}

// y[b, o, q] = bias[o]: preloads the bias for the 1×1 GEMMs, which add onto it.
extern "C" __global__ void conv_bias_fill_fwd_f32(const float* bias, float* y, int n, int c, int P) {
  GRID_STRIDE_U32(i, n * c * P) y[i] = bias[i / P % c];
}

// db[o] = Σ_{b,q} dy[b, o, q]: one block per output channel (Launch::rows(Cout)).
extern "C" __global__ void conv_bias_bwd_f32(const float* dy, float* db, int n, int c, int P) {
  __shared__ float scratch[32];
  unsigned o = blockIdx.x;
  float acc = 0.0f;
  for (unsigned e = threadIdx.x; e < (unsigned)(n * P); e += blockDim.x) {
    unsigned b = e / P;
    acc += dy[(b * c + o) * P + (e - b * P)];
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) db[o] = acc;
}

// Depthwise forward: y[b, o, oy, ox] = bias[o] + Σ_{ky,kx} w[o, ky, kx] · x[b, o/m, iy, ix].
extern "C" __global__ void dwconv_fwd_f32(const float* x, const float* wt, const float* bias, int has_bias, float* y, int n, int cin, int h, int w, int m, int kh, int kw, int oh, int ow, int s, int p, int d) {
  unsigned cout = cin * m, P = oh * ow;
  GRID_STRIDE_U32(i, n * cout * P) {
    unsigned bo = i / P, q = i - bo * P, b = bo / cout, o = bo - b * cout;
    int oy = q / ow, ox = q - oy * ow;
    const float* plane = x + (b * cin + o / m) * h * w;
    const float* wo = wt + o * kh * kw;
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
  unsigned cout = cin * m, hw = h * w;
  GRID_STRIDE_U32(i, n * cin * hw) {
    unsigned bc = i / hw, yx = i - bc * hw, b = bc / cin, c = bc - b * cin;
    int iy = yx / w, ix = yx - iy * w;
    float acc = 0.0f;
    for (int j = 0; j < m; ++j) {
      unsigned o = c * m + j;
      const float* plane = dy + (b * cout + o) * oh * ow;
      const float* wo = wt + o * kh * kw;
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

// Depthwise weight gradient, first pass. Block (o, z, tg) sums dy[b, o, oy, ox] · x[b, o/m, iy, ix]
// over the flat range [z·chunk, (z+1)·chunk) of (b, oy, ox) for each tap t = ky·kw + kx of the
// group tg·DW_TAPS.. (each thread keeps one sum per tap in registers: dy is read once, x from
// cache), and writes partial[(o·kh·kw + t)·splits + z]. With one split that is dw itself.
extern "C" __global__ void dwconv_dw_partial_bwd_f32(const float* x, const float* dy, float* partial, int n, int cin, int h, int w, int m, int kh, int kw, int oh, int ow, int s, int p, int d, int chunk) {
  __shared__ float sums[32 * DW_TAPS];  // [warp][tap]
  unsigned o = blockIdx.x, z = blockIdx.y, splits = gridDim.y, cout = cin * m, P = oh * ow;
  int taps = kh * kw, t0 = blockIdx.z * DW_TAPS;
  int nt = taps - t0 < DW_TAPS ? taps - t0 : DW_TAPS;
  unsigned np = n * P, lo = z * chunk, hi = lo + chunk < np ? lo + chunk : np;
  float acc[DW_TAPS];
#pragma unroll
  for (int t = 0; t < DW_TAPS; ++t) acc[t] = 0.0f;
  for (unsigned e = lo + threadIdx.x; e < hi; e += blockDim.x) {
    unsigned b = e / P, q = e - b * P;
    int oy = q / ow, ox = q - oy * ow;
    float g = dy[(b * cout + o) * P + q];
    const float* plane = x + (b * cin + o / m) * h * w;
    int ky = t0 / kw, kx = t0 - ky * kw;
#pragma unroll
    for (int t = 0; t < DW_TAPS; ++t) {
      if (t < nt) {
        int iy = oy * s + ky * d - p, ix = ox * s + kx * d - p;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) acc[t] += g * plane[iy * w + ix];
        if (++kx == kw) {
          kx = 0;
          ++ky;
        }
      }
    }
  }
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
  for (int t = 0; t < DW_TAPS; ++t) {
    if (t < nt) {
      float v = warp_sum(acc[t]);
      if (lane == 0) sums[warp * DW_TAPS + t] = v;
    }
  }
  __syncthreads();
  if ((int)threadIdx.x < nt) {
    float v = 0.0f;
    for (int k = 0; k < warps; ++k) v += sums[k * DW_TAPS + threadIdx.x];
    partial[(o * taps + t0 + threadIdx.x) * splits + z] = v;
  }
}

// Depthwise weight gradient, second pass: dw[i] = Σ_z partial[i·splits + z], in order.
extern "C" __global__ void dwconv_dw_final_bwd_f32(const float* partial, int splits, float* dw, int len) {
  GRID_STRIDE_U32(i, len) {
    float acc = 0.0f;
    for (int z = 0; z < splits; ++z) acc += partial[i * splits + z];
    dw[i] = acc;
  }
}
