//! Every CUDA kernel against its CPU twin: forward values and gradients on fresh random inputs,
//! odd shapes included. Runs on the real GPU when a CUDA driver and device are present, and
//! otherwise under the CPU emulator (kernels compiled by g++, `DARTS_CUDA_EMULATOR`), so CI
//! without a GPU still executes every kernel and launcher. `DARTS_PARITY_BACKEND=driver` makes a
//! missing GPU a failure instead (the GPU machine's script sets it).

mod common;
mod conv;
mod elementwise;
mod end_to_end;
mod loss;
mod matmul;
mod movement;
mod norm;
mod nvrtc;
mod optim;
mod pool;
