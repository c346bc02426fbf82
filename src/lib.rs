//! # darts
//!
//! Differentiable architecture search (Liu, Simonyan, Yang, ICLR 2019) in Rust: tensors, a
//! hand-written reverse-mode autodiff, fast CPU kernels, and the DARTS search on top.
//!
//! ```
//! use darts::{ops, Tensor};
//! // d/dx sum(relu(x) * x) = 2x where x > 0, else 0
//! let x = Tensor::from_vec(vec![-1.0, 2.0, 3.0], &[3]).unwrap().requires_grad();
//! let y = ops::sum(&ops::mul(&ops::relu(&x).unwrap(), &x).unwrap()).unwrap();
//! let grads = y.backward().unwrap();
//! assert_eq!(grads.get(&x).unwrap().to_vec(), vec![0.0, 4.0, 6.0]);
//! ```

pub mod bench201;
pub mod checkpoint;
pub mod cli;
pub mod compress;
pub mod data;
pub mod device;
pub mod distill;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod infer;
pub mod memory;
pub mod memory_bench;
pub mod nas;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod predict;
pub mod progress;
pub mod report;
pub mod rss;
pub mod tape;
pub mod tensor;
pub mod train;
pub mod train_file;
pub mod validate;

pub use device::Device;
pub use error::{Error, Result};
pub use tape::{no_grad, Grads};
pub use tensor::Tensor;

/// The seeded generator used everywhere (weights, alphas, dropout): same seed, same run.
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::seed_from_u64(seed)
}
