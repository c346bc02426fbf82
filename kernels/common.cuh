// Shared helpers for every kernel family: grid-stride loops, warp and block reductions, the
// counter-based random numbers behind dropout and drop-path.
//
// Compiled by NVRTC (prepended to each family's source, no system headers: NVRTC 13 ships none)
// and, unchanged, by g++ for the CPU emulator (kernels/emulator.h), which defines
// DARTS_EMULATOR and the CUDA built-ins.
#pragma once

#ifndef DARTS_EMULATOR
#define DARTS_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

// Every thread of the grid visits i = its global index, then strides by the grid size.
#define GRID_STRIDE(i, n)                                                        \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)blockDim.x * gridDim.x)

static __device__ __forceinline__ float warp_sum(float v) {
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
  return v;
}

// Sum over the block, valid in thread 0. blockDim.x must be a multiple of 32 (all launchers use
// 256); every thread of the block must call it. `scratch` holds 32 floats of shared memory.
static __device__ __forceinline__ float block_sum(float v, float* scratch) {
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  int warps = blockDim.x / 32;
  v = (threadIdx.x < warps) ? scratch[threadIdx.x] : 0.0f;
  if (warp == 0) v = warp_sum(v);
  __syncthreads();  // scratch may be reused by the caller right after
  return v;
}

// SplitMix64 finaliser: a counter-based generator, so a mask element depends only on
// (seed, index) and the CPU computes the same mask (src/ops/elementwise.rs: `uniform_at`).
static __device__ __forceinline__ float uniform_at(unsigned long long seed, unsigned long long i) {
  unsigned long long z = seed + (i + 1ull) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z = z ^ (z >> 31);
  return (float)(z >> 40) * (1.0f / 16777216.0f);  // 24 random bits -> [0, 1)
}
