//! Ops that move data without arithmetic on it: channel concatenation and spatial shift; and
//! DARTS's weighted sum of candidate outputs. GPU kernels: kernels/movement.cu.

use rayon::prelude::*;

use super::{operand_list, operands, Operands};
use crate::device::cuda::{self, kernels, Arg, GpuBuf, Kernel, Launch};
use crate::device::pool;
use crate::error::{Error, Result};
use crate::tape;
use crate::tensor::Tensor;

/// Concatenates tensors along dimension 1 (channels for NCHW); all other dimensions must agree.
pub fn concat(xs: &[&Tensor]) -> Result<Tensor> {
    let _prof = super::prof::span("concat", false);
    let Some(first) = xs.first() else {
        return Err(Error::InvalidArgument(
            "concat: needs at least one tensor".into(),
        ));
    };
    let shapes: Vec<&[usize]> = xs.iter().map(|t| t.shape()).collect();
    let fits =
        |s: &[usize]| s.len() >= 2 && s[0] == first.shape()[0] && s[2..] == first.shape()[2..];
    if !shapes.iter().all(|s| fits(s)) {
        return Err(Error::shape(
            "concat",
            "all dimensions but 1 must agree",
            &shapes,
        ));
    }
    let n = first.shape()[0];
    let inner: usize = first.shape()[2..].iter().product();
    // Elements each input contributes to one sample.
    let parts: Vec<usize> = xs.iter().map(|t| t.shape()[1] * inner).collect();
    let per: usize = parts.iter().sum();
    let data = match operand_list("concat", xs)? {
        Operands::Cpu(data) => data,
        Operands::Cuda(bufs) => return concat_gpu(xs, &bufs, n, &parts),
    };
    let mut out = pool::take(n * per);
    out.par_chunks_mut(per.max(1))
        .enumerate()
        .for_each(|(i, o)| {
            let mut off = 0;
            for (t, &p) in data.iter().zip(&parts) {
                o[off..off + p].copy_from_slice(&t[i * p..(i + 1) * p]);
                off += p;
            }
        });
    let mut shape = first.shape().to_vec();
    shape[1] = xs.iter().map(|t| t.shape()[1]).sum();
    let in_shapes: Vec<Vec<usize>> = shapes.iter().map(|s| s.to_vec()).collect();
    Ok(tape::record(
        "concat",
        Tensor::from_parts(out, &shape),
        xs,
        move |g, needs| {
            let [gd] = operands("concat", [g])?.cpu("concat")?;
            let mut off = 0;
            let mut grads = Vec::with_capacity(parts.len());
            for ((&p, s), &need) in parts.iter().zip(&in_shapes).zip(needs) {
                grads.push(need.then(|| {
                    let mut d = pool::take(n * p);
                    d.par_chunks_mut(p.max(1))
                        .zip(gd.par_chunks(per.max(1)))
                        .for_each(|(d, gs)| d.copy_from_slice(&gs[off..off + p]));
                    Tensor::from_parts(d, s)
                }));
                off += p;
            }
            Ok(grads)
        },
    ))
}

fn shift_kernel(x: &Tensor, xd: &[f32], dy: isize, dx: isize) -> Tensor {
    let [_, _, h, w] = *x.shape() else {
        unreachable!("checked by shift")
    };
    let mut out = pool::take_zeroed(x.numel());
    let rows = |o: usize| {
        (0..h)
            .filter(move |&i| (i as isize + dy) >= 0 && ((i as isize + dy) as usize) < h)
            .map(move |i| (o, i))
    };
    let cols: Vec<(usize, usize)> = (0..w)
        .filter(|&j| (j as isize + dx) >= 0 && ((j as isize + dx) as usize) < w)
        .map(|j| (j, (j as isize + dx) as usize))
        .collect();
    let plane = (h * w).max(1);
    out.par_chunks_mut(plane)
        .zip(xd.par_chunks(plane))
        .for_each(|(o, src)| {
            if let (Some(&(j0, s0)), Some(&(j1, _))) = (cols.first(), cols.last()) {
                for (_, i) in rows(0) {
                    let si = (i as isize + dy) as usize;
                    let len = j1 - j0 + 1;
                    o[i * w + j0..i * w + j0 + len]
                        .copy_from_slice(&src[si * w + s0..si * w + s0 + len]);
                }
            }
        });
    Tensor::from_parts(out, x.shape())
}

/// `out[n,c,i,j] = x[n,c,i+dy,j+dx]`, zero where that falls outside the map. With `(1, 1)` and a
/// stride-2 1×1 conv this is the second path of DARTS's FactorizedReduce (`x[:, :, 1:, 1:]`),
/// kept at full size so odd maps still line up with the first path.
pub fn shift(x: &Tensor, dy: isize, dx: isize) -> Result<Tensor> {
    let _prof = super::prof::span("shift", false);
    x.dims4("shift")?;
    let out = shift_on(x, dy, dx)?;
    Ok(tape::record("shift", out, &[x], move |g, _| {
        Ok(vec![Some(shift_on(g, -dy, -dx)?)])
    }))
}

/// `Σ w[i]·t` over `(i, t)` in `terms`, where `i` indexes the flattened weight tensor `w`:
/// DARTS's MixedOp, whose weights are one row of a softmax over the architecture parameters.
/// Gradients flow to every term and to `w` (`∂/∂w[i] = ⟨g, t⟩`).
pub fn weighted_sum(terms: &[(usize, &Tensor)], w: &Tensor) -> Result<Tensor> {
    let _prof = super::prof::span("weighted_sum", false);
    let Some((_, first)) = terms.first() else {
        return Err(Error::InvalidArgument(
            "weighted_sum: needs at least one term".into(),
        ));
    };
    for (i, t) in terms {
        if t.shape() != first.shape() {
            return Err(Error::shape(
                "weighted_sum",
                "terms must have the same shape",
                &[first.shape(), t.shape()],
            ));
        }
        if *i >= w.numel() {
            return Err(Error::shape(
                "weighted_sum",
                format!("weight index {i} out of range"),
                &[w.shape()],
            ));
        }
    }
    let mut inputs: Vec<&Tensor> = vec![w];
    inputs.extend(terms.iter().map(|(_, t)| *t));
    let wd = match operand_list("weighted_sum", &inputs)? {
        Operands::Cpu(data) => data[0],
        Operands::Cuda(bufs) => return weighted_sum_gpu(terms, w, &bufs, &inputs),
    };
    let coef: Vec<f32> = terms.iter().map(|(i, _)| wd[*i]).collect();
    let ts: Vec<Tensor> = terms.iter().map(|(_, t)| t.detach()).collect();
    let mut out = pool::take(first.numel());
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
        let (base, len) = (c * CHUNK, o.len());
        let data: Vec<&[f32]> = ts.iter().map(|t| &t.data()[base..base + len]).collect();
        // The first term is written, not added to zeros: one pass less, the same sums.
        o.iter_mut()
            .zip(data[0])
            .for_each(|(o, v)| *o = coef[0] * v);
        for (t, &a) in data.iter().zip(&coef).skip(1) {
            o.iter_mut().zip(*t).for_each(|(o, v)| *o += a * v);
        }
    });
    let idx: Vec<usize> = terms.iter().map(|(i, _)| *i).collect();
    let w_shape = w.shape().to_vec();
    Ok(tape::record(
        "weighted_sum",
        Tensor::from_parts(out, first.shape()),
        &inputs,
        move |g, needs| {
            let [gd] = operands("weighted_sum", [g])?.cpu("weighted_sum")?;
            let (dts, dots) = weighted_sum_backward(gd, &ts, &coef, needs);
            let mut grads = Vec::with_capacity(needs.len());
            grads.push(needs[0].then(|| {
                let mut dw = vec![0.0; w_shape.iter().product()];
                for (&i, dot) in idx.iter().zip(dots) {
                    dw[i] += dot as f32;
                }
                Tensor::from_parts(dw, &w_shape)
            }));
            grads.extend(
                dts.into_iter()
                    .map(|d| d.map(|d| Tensor::from_parts(d, g.shape()))),
            );
            Ok(grads)
        },
    ))
}

/// Elements per task of [`weighted_sum`]; fixed, so the dot products group their partial sums
/// the same way whatever the thread count.
const CHUNK: usize = 1 << 14;

/// The backward of [`weighted_sum`] in one pass over `g`: for each term `k`, `a_k·g` where
/// `needs[1 + k]`, and `⟨g, t_k⟩` (in f64) where `needs[0]` (else the dots are zero).
fn weighted_sum_backward(
    g: &[f32],
    ts: &[Tensor],
    coef: &[f32],
    needs: &[bool],
) -> (Vec<Option<Vec<f32>>>, Vec<f64>) {
    let want_dots = needs[0];
    let mut dts: Vec<Option<Vec<f32>>> = needs[1..]
        .iter()
        .map(|&n| n.then(|| pool::take(g.len())))
        .collect();
    // Each task gets its chunk of every wanted term gradient.
    let chunks = g.len().div_ceil(CHUNK);
    let mut tasks: Vec<Vec<Option<&mut [f32]>>> = (0..chunks).map(|_| Vec::new()).collect();
    for d in dts.iter_mut() {
        match d {
            Some(d) => {
                for (task, c) in tasks.iter_mut().zip(d.chunks_mut(CHUNK)) {
                    task.push(Some(c));
                }
            }
            None => tasks.iter_mut().for_each(|t| t.push(None)),
        }
    }
    let partials: Vec<Vec<f64>> = tasks
        .into_par_iter()
        .enumerate()
        .map(|(c, mut outs)| {
            let gc = &g[c * CHUNK..g.len().min((c + 1) * CHUNK)];
            let mut dots = vec![0.0f64; ts.len()];
            for (k, (t, o)) in ts.iter().zip(outs.iter_mut()).enumerate() {
                if let Some(o) = o.as_deref_mut() {
                    o.iter_mut().zip(gc).for_each(|(o, &v)| *o = coef[k] * v);
                }
                if want_dots {
                    dots[k] = dot_f64(gc, &t.data()[c * CHUNK..][..gc.len()]);
                }
            }
            dots
        })
        .collect();
    let dots = (0..ts.len())
        .map(|k| partials.iter().map(|p| p[k]).sum())
        .collect();
    (dts, dots)
}

/// `Σ a[i]·b[i]` with f32 products summed in f64, in eight interleaved partial sums (so the adds
/// pipeline instead of waiting on each other), in a fixed order.
fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| f64::from(x * y))
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += f64::from(x[l] * y[l]);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Copies between `[n, part]` and the column block `off..off + part` of `[n, per]`: into the
/// block for `concat_fwd_f32`, out of it for `concat_bwd_f32`.
fn concat_copy(
    kernel: Kernel,
    src: &GpuBuf,
    dst: &GpuBuf,
    n: usize,
    part: usize,
    per: usize,
    off: usize,
) -> Result<()> {
    if n * part == 0 {
        return Ok(());
    }
    let args = [
        src.arg(),
        dst.arg(),
        Arg::int("n", n)?,
        Arg::int("part", part)?,
        Arg::int("per", per)?,
        Arg::int("off", off)?,
    ];
    cuda::gpu()?.launch(kernel, Launch::elems(n * part), &args)
}

/// [`concat`] of CUDA tensors `xs` with buffers `bufs` (shapes checked; `parts[i]` elements of
/// input `i` per sample).
fn concat_gpu(xs: &[&Tensor], bufs: &[&GpuBuf], n: usize, parts: &[usize]) -> Result<Tensor> {
    let per: usize = parts.iter().sum();
    let out = cuda::gpu()?.alloc(n * per)?;
    let mut off = 0;
    for (b, &p) in bufs.iter().zip(parts) {
        concat_copy(kernels::CONCAT_FWD, b, &out, n, p, per, off)?;
        off += p;
    }
    let mut shape = xs[0].shape().to_vec();
    shape[1] = xs.iter().map(|t| t.shape()[1]).sum();
    let in_shapes: Vec<Vec<usize>> = xs.iter().map(|t| t.shape().to_vec()).collect();
    let parts = parts.to_vec();
    Ok(tape::record(
        "concat",
        Tensor::from_gpu(out, &shape),
        xs,
        move |g, needs| {
            let [gb] = operands("concat", [g])?.cuda("concat")?;
            let mut off = 0;
            let mut grads = Vec::with_capacity(parts.len());
            for ((&p, s), &need) in parts.iter().zip(&in_shapes).zip(needs) {
                grads.push(if need {
                    let d = cuda::gpu()?.alloc(n * p)?;
                    concat_copy(kernels::CONCAT_BWD, gb, &d, n, p, per, off)?;
                    Some(Tensor::from_gpu(d, s))
                } else {
                    None
                });
                off += p;
            }
            Ok(grads)
        },
    ))
}

/// [`shift_kernel`] on either device (`x` is NCHW, checked).
fn shift_on(x: &Tensor, dy: isize, dx: isize) -> Result<Tensor> {
    let b = match operands("shift", [x])? {
        Operands::Cpu([xd]) => return Ok(shift_kernel(x, xd, dy, dx)),
        Operands::Cuda([b]) => b,
    };
    let [n, c, h, w] = *x.shape() else {
        unreachable!("checked by shift")
    };
    let gpu = cuda::gpu()?;
    let out = gpu.alloc(b.len())?;
    if !out.is_empty() {
        // Shifts past the edge only zero-fill, so clamping keeps them in i32 unchanged.
        let (dy, dx) = (
            dy.clamp(-(h as isize), h as isize),
            dx.clamp(-(w as isize), w as isize),
        );
        let args = [
            b.arg(),
            out.arg(),
            Arg::int("planes", n * c)?,
            Arg::int("h", h)?,
            Arg::int("w", w)?,
            Arg::int("dy", dy)?,
            Arg::int("dx", dx)?,
        ];
        gpu.launch(kernels::SHIFT_FWD, Launch::elems(b.len()), &args)?;
    }
    Ok(Tensor::from_gpu(out, x.shape()))
}

/// Terms per launch of the weighted-sum kernels (`MOVE_TERMS` in movement.cu).
const MOVE_TERMS: usize = 8;

/// First-pass blocks of the weighted-sum backward's dot products (as in reduce.rs).
const DOT_BLOCKS: usize = 1024;

/// The `MOVE_TERMS` pointer arguments for up to that many buffers (null for the rest).
fn ptr_slots(ptrs: impl IntoIterator<Item = u64>) -> impl Iterator<Item = Arg> {
    ptrs.into_iter()
        .chain(std::iter::repeat(0))
        .take(MOVE_TERMS)
        .map(Arg::Ptr)
}

/// The `MOVE_TERMS` weight-index arguments (0 for unused slots).
fn index_slots(idx: &[usize]) -> Result<Vec<Arg>> {
    idx.iter()
        .copied()
        .chain(std::iter::repeat(0))
        .take(MOVE_TERMS)
        .map(|i| Arg::int("weight index", i))
        .collect()
}

/// [`weighted_sum`] of CUDA tensors (checked): `MOVE_TERMS` terms per launch, the weights
/// read on the device. `inputs` is `w` then the terms, `bufs` their buffers.
fn weighted_sum_gpu(
    terms: &[(usize, &Tensor)],
    w: &Tensor,
    bufs: &[&GpuBuf],
    inputs: &[&Tensor],
) -> Result<Tensor> {
    let gpu = cuda::gpu()?;
    let shape = terms[0].1.shape().to_vec();
    let n: usize = shape.iter().product();
    let wb = bufs[0];
    let out = gpu.alloc(n)?;
    let idx: Vec<usize> = terms.iter().map(|(i, _)| *i).collect();
    for (c, group) in bufs[1..].chunks(MOVE_TERMS).enumerate() {
        if n == 0 {
            break;
        }
        let mut args = vec![wb.arg(), Arg::int("terms", group.len())?, Arg::flag(c > 0)];
        args.extend(ptr_slots(group.iter().map(|b| b.ptr())));
        args.extend(index_slots(&idx[c * MOVE_TERMS..][..group.len()])?);
        args.extend([out.arg(), Arg::int("n", n)?]);
        gpu.launch(kernels::WEIGHTED_SUM_FWD, Launch::elems(n), &args)?;
    }
    let ts: Vec<Tensor> = terms.iter().map(|(_, t)| t.detach()).collect();
    let wd = w.detach();
    Ok(tape::record(
        "weighted_sum",
        Tensor::from_gpu(out, &shape),
        inputs,
        move |g, needs| weighted_sum_gpu_backward(g, &wd, &ts, &idx, needs),
    ))
}

/// The backward of [`weighted_sum_gpu`]: per group of `MOVE_TERMS` terms one pass over `g`
/// (`dx_t = w[i_t]·g`, per-block partial dots), then one block adding the partial dots into
/// `dw[i_t]` in term order.
fn weighted_sum_gpu_backward(
    g: &Tensor,
    w: &Tensor,
    ts: &[Tensor],
    idx: &[usize],
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let gpu = cuda::gpu()?;
    let n = g.numel();
    let mut inputs = vec![g, w];
    inputs.extend(ts.iter());
    let bufs = operand_list("weighted_sum", &inputs)?.cuda("weighted_sum")?;
    let (gb, wb) = (bufs[0], bufs[1]);
    let dts = needs[1..]
        .iter()
        .map(|&need| need.then(|| gpu.alloc(n)).transpose())
        .collect::<Result<Vec<Option<GpuBuf>>>>()?;
    let want_dots = needs[0];
    let dw = want_dots.then(|| gpu.zeros(w.numel())).transpose()?;
    let blocks = n.div_ceil(cuda::BLOCK as usize).clamp(1, DOT_BLOCKS);
    let partial = want_dots
        .then(|| gpu.alloc(MOVE_TERMS * blocks))
        .transpose()?;
    for c in (0..ts.len()).step_by(MOVE_TERMS) {
        let group = c..ts.len().min(c + MOVE_TERMS);
        if n == 0 || !(want_dots || dts[group.clone()].iter().any(Option::is_some)) {
            continue;
        }
        let xs = bufs[2 + group.start..2 + group.end].iter().map(|b| b.ptr());
        let ds = dts[group.clone()]
            .iter()
            .map(|d| d.as_ref().map_or(0, GpuBuf::ptr));
        let len = Arg::int("terms", group.len())?;
        let mut args = vec![gb.arg(), wb.arg(), len, Arg::flag(want_dots)];
        args.extend(ptr_slots(xs));
        args.extend(ptr_slots(ds));
        args.extend(index_slots(&idx[group.clone()])?);
        args.extend([
            Arg::Ptr(partial.as_ref().map_or(0, GpuBuf::ptr)),
            Arg::int("n", n)?,
        ]);
        gpu.launch(kernels::WEIGHTED_SUM_BWD, Launch::rows(blocks), &args)?;
        if let (Some(partial), Some(dw)) = (&partial, &dw) {
            let mut args = vec![partial.arg(), Arg::int("blocks", blocks)?, len];
            args.extend(index_slots(&idx[group.clone()])?);
            args.push(dw.arg());
            gpu.launch(kernels::WEIGHTED_SUM_DW, Launch::rows(1), &args)?;
        }
    }
    let mut grads = vec![dw.map(|d| Tensor::from_gpu(d, w.shape()))];
    grads.extend(
        dts.into_iter()
            .map(|d| d.map(|d| Tensor::from_gpu(d, g.shape()))),
    );
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_moves_and_zero_fills() {
        let x = Tensor::from_vec((1..=6).map(|v| v as f32).collect(), &[1, 1, 2, 3]).unwrap();
        assert_eq!(
            shift(&x, 1, 1).unwrap().to_vec(),
            vec![5., 6., 0., 0., 0., 0.]
        );
        assert_eq!(
            shift(&x, 0, -1).unwrap().to_vec(),
            vec![0., 1., 2., 0., 4., 5.]
        );
    }

    #[test]
    fn concat_interleaves_per_sample() {
        let a = Tensor::from_vec(vec![1., 2.], &[2, 1]).unwrap();
        let b = Tensor::from_vec(vec![3., 4., 5., 6.], &[2, 2]).unwrap();
        assert_eq!(
            concat(&[&a, &b]).unwrap().to_vec(),
            vec![1., 3., 4., 2., 5., 6.]
        );
        assert!(concat(&[&a, &Tensor::zeros(&[3, 1])]).is_err());
    }

    #[test]
    fn weighted_sum_uses_flat_indices() {
        let w = Tensor::from_vec(vec![0.5, 2.0, 3.0], &[3]).unwrap();
        let t = Tensor::ones(&[2]);
        let y = weighted_sum(&[(0, &t), (2, &t)], &w).unwrap();
        assert_eq!(y.to_vec(), vec![3.5, 3.5]);
        assert!(weighted_sum(&[(3, &t)], &w).is_err());
    }
}
