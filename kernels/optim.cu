// Fused optimiser updates (src/optim.rs), in place, one thread per weight, Launch::elems(n).
// The update rules are PyTorch's (torch.optim.SGD with dampening 0, torch.optim.Adam with L2
// weight decay added to the gradient); the CPU loops in optim.rs are their twins.
#include "common.cuh"

// d = g + wd·p; buf = d on the first step (fresh), else μ·buf + d; p -= lr·(Nesterov ? d + μ·buf : buf).
// With μ = 0 the buffer is not touched (it may be a dummy pointer).
extern "C" __global__ void sgd_step_f32(float* p, const float* g, float* buf, float lr, float mu, float wd,
                                        int nesterov, int fresh, int n) {
  GRID_STRIDE(i, n) {
    float d = g[i] + wd * p[i];
    if (mu == 0.0f) {
      p[i] -= lr * d;
      continue;
    }
    float b = fresh ? d : mu * buf[i] + d;
    buf[i] = b;
    p[i] -= lr * (nesterov ? d + mu * b : b);
  }
}

// g += wd·p; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; p -= step_size · m / (√v / bc2_sqrt + eps),
// with step_size = lr / (1 - β1ᵗ) and bc2_sqrt = √(1 - β2ᵗ) computed on the host in double.
extern "C" __global__ void adam_step_f32(float* p, const float* g, float* m, float* v, float step_size,
                                         float bc2_sqrt, float b1, float b2, float eps, float wd, int n) {
  GRID_STRIDE(i, n) {
    float gi = g[i] + wd * p[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}
