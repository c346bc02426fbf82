//! Matrix products: `matmul` and the fully connected `linear` layer, on the strided sgemm (CPU)
//! or cuBLAS (GPU, with the bias from kernels/matmul.cu).

use super::{operands, Operands};
use crate::device::cpu::{sgemm_par, Mat};
use crate::device::cuda::{self, kernels, Arg, Gemm, GpuBuf, Launch};
use crate::error::{Error, Result};
use crate::tape;
use crate::tensor::Tensor;

fn dims2(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    match t.shape() {
        [r, c] => Ok((*r, *c)),
        s => Err(Error::shape(op, "expects a 2-D matrix", &[s])),
    }
}

/// Row-major `op(a) · op(b)` [m, n] on the GPU (`ta`/`tb`: the operand is stored transposed, as
/// in [`Gemm::row_major`]), added onto `bias` [n] in every row when given.
fn gpu_product(
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    a: &GpuBuf,
    b: &GpuBuf,
    bias: Option<&GpuBuf>,
) -> Result<Tensor> {
    let gpu = cuda::gpu()?;
    let out = match bias {
        Some(bias) => {
            let out = gpu.alloc(m * n)?;
            let args = [bias.arg(), out.arg(), Arg::int("m", m)?, Arg::int("n", n)?];
            gpu.launch(kernels::LINEAR_BIAS_FWD, Launch::elems(m * n), &args)?;
            out
        }
        // cuBLAS leaves C alone when k = 0 (and beta = 0 ignores what C holds).
        None if k == 0 => gpu.zeros(m * n)?,
        None => gpu.alloc(m * n)?,
    };
    if m * n * k > 0 {
        let beta = if bias.is_some() { 1.0 } else { 0.0 };
        gpu.gemm(&Gemm::row_major(ta, tb, m, n, k, a, b, &out, beta))?;
    }
    Ok(Tensor::from_gpu(out, &[m, n]))
}

/// `db[j] = Σ_r g[r, j]` for `g` [rows, cols] on the GPU.
fn gpu_column_sums(g: &GpuBuf, rows: usize, cols: usize) -> Result<Tensor> {
    let gpu = cuda::gpu()?;
    let db = gpu.alloc(cols)?;
    let args = [
        g.arg(),
        db.arg(),
        Arg::int("rows", rows)?,
        Arg::int("cols", cols)?,
    ];
    gpu.launch(kernels::LINEAR_BIAS_BWD, Launch::elems(cols), &args)?;
    Ok(Tensor::from_gpu(db, &[cols]))
}

/// `a[m,k] · b[k,n]`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("matmul", false);
    let (m, k) = dims2("matmul", a)?;
    let (k2, n) = dims2("matmul", b)?;
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            "inner dimensions differ",
            &[a.shape(), b.shape()],
        ));
    }
    let out = match operands("matmul", [a, b])? {
        Operands::Cuda([ab, bb]) => gpu_product((false, false), (m, n, k), ab, bb, None)?,
        Operands::Cpu([ad, bd]) => {
            let mut out = vec![0.0; m * n];
            sgemm_par(m, k, n, 1.0, Mat::rm(ad, k), Mat::rm(bd, n), 0.0, &mut out);
            Tensor::from_parts(out, &[m, n])
        }
    };
    let (sa, sb) = (a.detach(), b.detach());
    Ok(tape::record("matmul", out, &[a, b], move |g, needs| {
        let (gd, ad, bd) = match operands("matmul", [g, &sa, &sb])? {
            Operands::Cuda([g, a, b]) => {
                // da = g · bᵀ, db = aᵀ · g.
                let da = needs[0]
                    .then(|| gpu_product((false, true), (m, k, n), g, b, None))
                    .transpose()?;
                let db = needs[1]
                    .then(|| gpu_product((true, false), (k, n, m), a, g, None))
                    .transpose()?;
                return Ok(vec![da, db]);
            }
            Operands::Cpu([g, a, b]) => (g, a, b),
        };
        let da = needs[0].then(|| {
            let mut da = vec![0.0; m * k];
            sgemm_par(m, n, k, 1.0, Mat::rm(gd, n), Mat::tr(bd, n), 0.0, &mut da);
            Tensor::from_parts(da, &[m, k])
        });
        let db = needs[1].then(|| {
            let mut db = vec![0.0; k * n];
            sgemm_par(k, m, n, 1.0, Mat::tr(ad, k), Mat::rm(gd, n), 0.0, &mut db);
            Tensor::from_parts(db, &[k, n])
        });
        Ok(vec![da, db])
    }))
}

/// `x[n,in] · w[out,in]ᵀ + b[out]`: PyTorch's `nn.Linear` layout.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let _prof = super::prof::span("linear", false);
    let (n, fin) = dims2("linear", x)?;
    let (fout, fin2) = dims2("linear", w)?;
    if fin != fin2 {
        return Err(Error::shape(
            "linear",
            "input features differ from the weight's",
            &[x.shape(), w.shape()],
        ));
    }
    if let Some(b) = b {
        if b.shape() != [fout] {
            return Err(Error::shape(
                "linear",
                "bias must have one value per output",
                &[w.shape(), b.shape()],
            ));
        }
    }
    // Without a bias, x stands in for it so that one dispatch checks every operand's device.
    let out = match operands("linear", [x, w, b.unwrap_or(x)])? {
        Operands::Cuda([xb, wb, bb]) => {
            gpu_product((false, true), (n, fout, fin), xb, wb, b.map(|_| bb))?
        }
        Operands::Cpu([xd, wd, bd]) => {
            let mut out = vec![0.0; n * fout];
            if b.is_some() {
                for row in out.chunks_mut(fout) {
                    row.copy_from_slice(bd);
                }
            }
            let beta = if b.is_some() { 1.0 } else { 0.0 };
            let (xm, wm) = (Mat::rm(xd, fin), Mat::tr(wd, fin));
            sgemm_par(n, fin, fout, 1.0, xm, wm, beta, &mut out);
            Tensor::from_parts(out, &[n, fout])
        }
    };
    let (sx, sw) = (x.detach(), w.detach());
    let backward = move |g: &Tensor, needs: &[bool]| {
        let wants_bias = needs.get(2).copied().unwrap_or(false);
        let [gd, xd, wd] = match operands("linear", [g, &sx, &sw])? {
            Operands::Cuda([g, x, w]) => {
                // dx = g · w, dw = gᵀ · x, db = column sums of g.
                let dx = needs[0]
                    .then(|| gpu_product((false, false), (n, fin, fout), g, w, None))
                    .transpose()?;
                let dw = needs[1]
                    .then(|| gpu_product((true, false), (fout, fin, n), g, x, None))
                    .transpose()?;
                let db = wants_bias
                    .then(|| gpu_column_sums(g, n, fout))
                    .transpose()?;
                return Ok(vec![dx, dw, db]);
            }
            Operands::Cpu(d) => d,
        };
        let dx = needs[0].then(|| {
            let mut dx = vec![0.0; n * fin];
            sgemm_par(
                n,
                fout,
                fin,
                1.0,
                Mat::rm(gd, fout),
                Mat::rm(wd, fin),
                0.0,
                &mut dx,
            );
            Tensor::from_parts(dx, &[n, fin])
        });
        let dw = needs[1].then(|| {
            let mut dw = vec![0.0; fout * fin];
            sgemm_par(
                fout,
                n,
                fin,
                1.0,
                Mat::tr(gd, fout),
                Mat::rm(xd, fin),
                0.0,
                &mut dw,
            );
            Tensor::from_parts(dw, &[fout, fin])
        });
        let db = wants_bias.then(|| {
            let mut db = vec![0.0; fout];
            for row in gd.chunks(fout) {
                db.iter_mut().zip(row).for_each(|(d, v)| *d += v);
            }
            Tensor::from_parts(db, &[fout])
        });
        Ok(vec![dx, dw, db])
    };
    Ok(match b {
        Some(b) => tape::record("linear", out, &[x, w, b], backward),
        None => tape::record("linear", out, &[x, w], move |g, needs| {
            let mut v = backward(g, needs)?;
            v.truncate(2);
            Ok(v)
        }),
    })
}
