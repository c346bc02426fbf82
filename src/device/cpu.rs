//! CPU kernels shared by the op families: a strided sgemm that splits rows across rayon threads.
//!
//! Splitting the output rows (never the reduction dimension) keeps every result bit-identical
//! whatever the thread count, which the determinism guarantees of `darts search` rely on.

use rayon::prelude::*;

/// A row-major matrix operand given by its base slice and strides (transposes are free).
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A contiguous row-major matrix with `cols` columns.
    pub fn rm(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a contiguous row-major matrix with `cols` columns.
    pub fn tr(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }
    fn span(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * self.rs + (cols - 1) * self.cs + 1
        }
    }
}

// BLAS-style signature: the operands and their scalars are the argument list.
#[allow(clippy::too_many_arguments)]
/// `c[m×n] = alpha · a[m×k] · b[k×n] + beta · c`, with `c` contiguous row-major, on this thread.
pub fn sgemm(m: usize, k: usize, n: usize, alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    assert!(a.data.len() >= a.span(m, k), "sgemm: A too short");
    assert!(b.data.len() >= b.span(k, n), "sgemm: B too short");
    assert!(c.len() >= m * n, "sgemm: C too short");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above bound every index matrixmultiply touches.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Rows of output per parallel task: large enough to amortise packing, small enough to balance.
const PAR_ROWS: usize = 64;

#[allow(clippy::too_many_arguments)]
/// Like [`sgemm`], split across rayon threads by blocks of output rows when the product is large.
pub fn sgemm_par(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Mat,
    b: Mat,
    beta: f32,
    c: &mut [f32],
) {
    let flops = 2 * m * k * n;
    if flops < 1 << 21 || m < 2 * PAR_ROWS || rayon::current_num_threads() == 1 {
        return sgemm(m, k, n, alpha, a, b, beta, c);
    }
    let rows = m
        .div_ceil(rayon::current_num_threads() * 2)
        .clamp(PAR_ROWS, m);
    c[..m * n]
        .par_chunks_mut(rows * n)
        .enumerate()
        .for_each(|(i, ci)| {
            let r0 = i * rows;
            let mi = ci.len() / n;
            let ai = Mat {
                data: &a.data[r0 * a.rs..],
                ..a
            };
            sgemm(mi, k, n, alpha, ai, b, beta, ci);
        });
}

/// Sum equally sized partial buffers (one per parallel task) in a fixed order into `out`.
pub fn sum_partials(parts: &[Vec<f32>], out: &mut [f32]) {
    for p in parts {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
}
