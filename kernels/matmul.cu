// The bias of the fully connected layer (src/ops/matmul.rs); the products themselves are cuBLAS
// GEMMs. y is row-major [rows, cols] with one bias value per column.
// Launch shapes: Launch::elems(rows·cols) for the forward, Launch::elems(cols) for the backward.
#include "common.cuh"

// y[r, j] = b[j]: the bias, preloaded for a GEMM that accumulates onto it (beta = 1).
extern "C" __global__ void linear_bias_fwd_f32(const float* b, float* y, int rows, int cols) {
  GRID_STRIDE(i, (long long)rows * cols) y[i] = b[i % cols];
}

// db[j] = Σ_r dy[r, j]: one thread per column, rows added in order (neighbouring threads read
// neighbouring columns, so every row is read coalesced).
extern "C" __global__ void linear_bias_bwd_f32(const float* dy, float* db, int rows, int cols) {
  GRID_STRIDE(j, cols) {
    float acc = 0.0f;
    for (int r = 0; r < rows; ++r) acc += dy[(long long)r * cols + j];
    db[j] = acc;
  }
}
