//! Matrix products: `matmul` and the fully connected `linear` layer, on the strided sgemm.

use crate::device::cpu::{sgemm_par, Mat};
use crate::error::{Error, Result};
use crate::tape;
use crate::tensor::Tensor;

fn dims2(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    match t.shape() {
        [r, c] => Ok((*r, *c)),
        s => Err(Error::shape(op, "expects a 2-D matrix", &[s])),
    }
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
    let mut out = vec![0.0; m * n];
    sgemm_par(
        m,
        k,
        n,
        1.0,
        Mat::rm(a.data(), k),
        Mat::rm(b.data(), n),
        0.0,
        &mut out,
    );
    let (sa, sb) = (a.detach(), b.detach());
    Ok(tape::record(
        "matmul",
        Tensor::from_parts(out, &[m, n]),
        &[a, b],
        move |g, needs| {
            let da = needs[0].then(|| {
                let mut da = vec![0.0; m * k];
                sgemm_par(
                    m,
                    n,
                    k,
                    1.0,
                    Mat::rm(g.data(), n),
                    Mat::tr(sb.data(), n),
                    0.0,
                    &mut da,
                );
                Tensor::from_parts(da, &[m, k])
            });
            let db = needs[1].then(|| {
                let mut db = vec![0.0; k * n];
                sgemm_par(
                    k,
                    m,
                    n,
                    1.0,
                    Mat::tr(sa.data(), k),
                    Mat::rm(g.data(), n),
                    0.0,
                    &mut db,
                );
                Tensor::from_parts(db, &[k, n])
            });
            Ok(vec![da, db])
        },
    ))
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
    let mut out = vec![0.0; n * fout];
    if let Some(b) = b {
        for row in out.chunks_mut(fout) {
            row.copy_from_slice(b.data());
        }
    }
    let beta = if b.is_some() { 1.0 } else { 0.0 };
    sgemm_par(
        n,
        fin,
        fout,
        1.0,
        Mat::rm(x.data(), fin),
        Mat::tr(w.data(), fin),
        beta,
        &mut out,
    );
    let (sx, sw) = (x.detach(), w.detach());
    let out = Tensor::from_parts(out, &[n, fout]);
    let backward = move |g: &Tensor, needs: &[bool]| {
        let dx = needs[0].then(|| {
            let mut dx = vec![0.0; n * fin];
            sgemm_par(
                n,
                fout,
                fin,
                1.0,
                Mat::rm(g.data(), fout),
                Mat::rm(sw.data(), fin),
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
                Mat::tr(g.data(), fout),
                Mat::rm(sx.data(), fin),
                0.0,
                &mut dw,
            );
            Tensor::from_parts(dw, &[fout, fin])
        });
        let db = needs.get(2).copied().unwrap_or(false).then(|| {
            let mut db = vec![0.0; fout];
            for row in g.data().chunks(fout) {
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
