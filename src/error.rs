//! One error type for the whole crate. Every message names the op or file involved and says what to do.

use std::path::PathBuf;

use crate::memory::human;

/// Everything that can go wrong in darts, as a value: the library never panics on user input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op got tensors whose shapes do not fit together.
    #[error("{op}: {msg} (got shapes {shapes:?})")]
    Shape {
        op: &'static str,
        msg: String,
        shapes: Vec<Vec<usize>>,
    },
    /// A value outside what an op or command accepts (zero sizes, bad probabilities, unknown names).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A data file that is missing, truncated or not in the expected format.
    #[error("{}: {msg}", path.display())]
    Data { path: PathBuf, msg: String },
    /// An I/O failure on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file (named by its path or URL) whose checksum is not the published one.
    #[error("{what}: {algorithm} is {actual}, expected {expected} (a corrupt transfer, or not the official file)")]
    Checksum {
        what: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    /// One download that failed: an HTTP error, a broken connection, a short or overlong body.
    #[error("{url}: {msg}")]
    Download { url: String, msg: String },
    /// No source gave the published file; one entry per source tried, in order.
    #[error(
        "{}: no source gave the published file ({}); nothing was kept; run it again later, or \
         pass --mirror URL (or set DARTS_DATA_MIRROR) to use another source",
        file.display(),
        attempts.join("; ")
    )]
    Fetch {
        file: PathBuf,
        attempts: Vec<String>,
    },
    /// Training produced NaN or infinity.
    #[error("numerical divergence: {0}; lower the learning rate or check the input data")]
    NonFinite(String),
    /// A run that would need more memory than the machine has, found before allocating it.
    #[error(
        "darts {command} needs about {} (weights {}, activations {} for --batch-size \
         {batch_size} at {height}×{width}) but {} {limit_what}; lower {lower} (or set \
         DARTS_SKIP_MEMORY_CHECK=1 to run anyway)",
        human(*need),
        human(*weights),
        human(*activations),
        human(*limit)
    )]
    OutOfMemory {
        command: &'static str,
        need: f64,
        weights: f64,
        activations: f64,
        batch_size: usize,
        height: usize,
        width: usize,
        limit: f64,
        /// "are available" or "are free on the GPU".
        limit_what: &'static str,
        /// The flags that shrink the larger part of the estimate.
        lower: &'static str,
    },
    /// A size or index too large for the CUDA kernels, which count with 32-bit `int`s.
    #[error(
        "CUDA kernel argument {what} = {value} is outside the kernels' 32-bit int range; use a \
         smaller batch or model"
    )]
    KernelArg { what: &'static str, value: String },
    /// An operation needs a device that is not available or not supported for it.
    #[error("{op}: {msg}")]
    Device { op: &'static str, msg: String },
}

/// The crate-wide result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for a shape error.
    pub fn shape(op: &'static str, msg: impl Into<String>, shapes: &[&[usize]]) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
            shapes: shapes.iter().map(|s| s.to_vec()).collect(),
        }
    }

    /// Two operands on different devices.
    pub fn devices(op: &'static str, a: &crate::Tensor, b: &crate::Tensor) -> Self {
        Error::Device {
            op,
            msg: format!(
                "operands on {} and {}; move them to one device with to_device",
                a.device(),
                b.device()
            ),
        }
    }

    /// Shorthand for a data-format error on a file.
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// Shorthand for an I/O error on a file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
