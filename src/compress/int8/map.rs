//! [`QTensor`], the uint8 feature map every int8 kernel reads and writes: channels last, so that
//! a pixel's channels are one contiguous run (the reduction of a 1×1 conv, the lanes of a
//! depthwise conv or a pool), and [`OutQ`], where a kernel's result goes.

use std::cell::RefCell;

use crate::error::{Error, Result};

thread_local! {
    /// Buffers of this thread's freed maps, for the next maps it makes.
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// The most freed buffers a thread keeps (a cell holds few maps at once; 6 was as fast as 16 on
/// fm8 at half the resident memory).
const KEEP: usize = 6;

/// `len` bytes for a kernel that writes every one of them: the smallest of this thread's freed
/// buffers that holds them (its old bytes are overwritten before anything reads them), else a
/// new one. Saves the allocation and the zeroing of each step's output.
pub fn buffer(len: usize) -> Vec<u8> {
    let reused = FREE.with_borrow_mut(|free| {
        let fit = (0..free.len())
            .filter(|&i| free[i].capacity() >= len)
            .min_by_key(|&i| free[i].capacity())?;
        Some(free.swap_remove(fit))
    });
    let mut v = reused.unwrap_or_default();
    if v.len() > len {
        v.truncate(len);
    } else {
        v.resize(len, 0);
    }
    v
}

/// Hands a map's buffer back for [`buffer`].
pub fn recycle(v: Vec<u8>) {
    FREE.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(v);
        } else if let Some(small) = free.iter_mut().min_by_key(|b| b.capacity()) {
            if small.capacity() < v.capacity() {
                *small = v;
            }
        }
    });
}

/// A uint8 map `[N, H, W, C]` (`data[((n·H + y)·W + x)·C + c]`) with `real = scale·(q − zp)`.
#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    pub data: Vec<u8>,
    pub shape: [usize; 4],
    pub scale: f32,
    pub zp: u8,
}

impl QTensor {
    /// The map from NCHW bytes `[n, c, h, w]`.
    pub fn from_nchw(data: &[u8], [n, c, h, w]: [usize; 4], scale: f32, zp: u8) -> QTensor {
        let mut out = vec![0u8; data.len()];
        for (s, plane) in data.chunks_exact(c * h * w).enumerate() {
            for (ch, src) in plane.chunks_exact(h * w).enumerate() {
                for (p, &v) in src.iter().enumerate() {
                    out[(s * h * w + p) * c + ch] = v;
                }
            }
        }
        QTensor {
            data: out,
            shape: [n, h, w, c],
            scale,
            zp,
        }
    }

    /// The bytes in NCHW order `[n, c, h, w]`.
    pub fn to_nchw(&self) -> Vec<u8> {
        let [n, h, w, c] = self.shape;
        let mut out = vec![0u8; self.data.len()];
        for (p, px) in self.data.chunks_exact(c).enumerate() {
            let (s, yx) = (p / (h * w), p % (h * w));
            for (ch, &v) in px.iter().enumerate() {
                out[(s * c + ch) * h * w + yx] = v;
            }
        }
        debug_assert_eq!(out.len(), n * c * h * w);
        out
    }

    /// A map of `shape` filled with the zero point (real 0).
    pub fn zeros(shape: [usize; 4], scale: f32, zp: u8) -> QTensor {
        QTensor {
            data: vec![zp; shape.iter().product()],
            shape,
            scale,
            zp,
        }
    }

    pub fn channels(&self) -> usize {
        self.shape[3]
    }

    /// `Err` unless `self` and `other` have the same shape.
    pub fn same_shape(&self, other: &QTensor, op: &'static str) -> Result<()> {
        if self.shape == other.shape {
            return Ok(());
        }
        Err(Error::shape(
            op,
            "shapes differ",
            &[&self.shape, &other.shape],
        ))
    }
}

/// Where a layer's output goes: its scale and zero point, and whether a ReLU is fused.
#[derive(Clone, Copy, Debug)]
pub struct OutQ {
    pub scale: f32,
    pub zp: u8,
    pub relu: bool,
}

impl OutQ {
    /// The smallest byte allowed: the zero point (real 0) after a ReLU, else 0.
    pub fn lo(&self) -> i32 {
        if self.relu {
            self.zp as i32
        } else {
            0
        }
    }
}
