//! How the f32 inference path runs a [`Program`]: the program's steps, rewritten for one input
//! size with whole passes removed, over one arena per image. The program itself is untouched
//! (int8 calibration and the quantiser read it step by step).
//!
//! - A ReLU whose every reader is a conv is read through by those convs (`relu_in`) instead of
//!   computed as a map of its own.
//! - A node's sum is added in the epilogue of the conv that computes its last term, which then
//!   writes the sum directly.
//! - A concat's parts are written by their producers straight into their channel slice of it
//!   (one image's slice of channels is contiguous in NCHW), so the concat copies nothing.
//! - Slots get offsets in one arena by liveness, so a live image's maps stay in cache, and the
//!   arena is kept per thread from one call to the next.
//!
//! Each image runs on one core through the kernels of [`super::kernels`]; a batch spreads its
//! images over the thread pool.

use std::cell::RefCell;

use rayon::prelude::*;

use super::kernels::{self, ConvGeom, Epilogue, PoolGeom};
use super::{Program, Slot, Step};
use crate::error::{Error, Result};

/// One step of a plan; every op writes its own `dst`, never one of its sources.
enum Op {
    /// `dst = max(conv(relu?(src)) + Σ add, 0 if relu_out)`.
    Conv {
        g: ConvGeom,
        w: Vec<f32>,
        b: Vec<f32>,
        src: Slot,
        relu_in: bool,
        add: Vec<Slot>,
        relu_out: bool,
        dst: Slot,
    },
    Relu {
        src: Slot,
        dst: Slot,
    },
    Pool {
        g: PoolGeom,
        src: Slot,
        dst: Slot,
        max: bool,
    },
    Affine {
        src: Slot,
        dst: Slot,
        scale: Vec<f32>,
        shift: Vec<f32>,
        relu: bool,
    },
    Shift {
        src: Slot,
        dst: Slot,
    },
    Sum {
        srcs: Vec<Slot>,
        dst: Slot,
    },
    /// Copies of the parts `(slot, element offset)` not written into `dst` by their producers.
    Concat {
        parts: Vec<(Slot, usize)>,
        dst: Slot,
    },
    Zeros {
        dst: Slot,
    },
    Head {
        src: Slot,
        dst: Slot,
        w: Vec<f32>,
        b: Option<Vec<f32>>,
    },
}

impl Op {
    fn dst(&self) -> Slot {
        match self {
            Op::Conv { dst, .. }
            | Op::Relu { dst, .. }
            | Op::Pool { dst, .. }
            | Op::Affine { dst, .. }
            | Op::Shift { dst, .. }
            | Op::Sum { dst, .. }
            | Op::Concat { dst, .. }
            | Op::Zeros { dst }
            | Op::Head { dst, .. } => *dst,
        }
    }

    fn srcs(&self) -> Vec<Slot> {
        match self {
            Op::Conv { src, add, .. } => std::iter::once(*src).chain(add.iter().copied()).collect(),
            Op::Relu { src, .. }
            | Op::Pool { src, .. }
            | Op::Affine { src, .. }
            | Op::Shift { src, .. }
            | Op::Head { src, .. } => vec![*src],
            Op::Sum { srcs, .. } => srcs.clone(),
            Op::Concat { parts, .. } => parts.iter().map(|p| p.0).collect(),
            Op::Zeros { .. } => vec![],
        }
    }
}

/// A program planned for images of one shape `[C, H, W]`.
pub(super) struct Plan {
    pub input: [usize; 3],
    ops: Vec<Op>,
    /// Per slot: its `[C, H, W]` and its offset in the arena.
    shapes: Vec<[usize; 3]>,
    at: Vec<usize>,
    arena: usize,
    scratch: usize,
    output: Slot,
}

fn bad(msg: String) -> Error {
    Error::InvalidArgument(format!("inference: {msg}"))
}

/// `(len + 2p − d(k−1) − 1)/s + 1`, or an error when the window does not fit.
fn out_len(len: usize, k: usize, s: usize, p: usize, d: usize) -> Result<usize> {
    (len + 2 * p)
        .checked_sub(d * (k - 1) + 1)
        .map(|r| r / s + 1)
        .ok_or_else(|| bad(format!("a window of {k} does not fit a map of {len}")))
}

fn numel(s: [usize; 3]) -> usize {
    s[0] * s[1] * s[2]
}

/// One op per step, with the shape of every slot it writes.
fn lift(prog: &Program, input: [usize; 3]) -> Result<(Vec<Op>, Vec<[usize; 3]>)> {
    let mut shapes = vec![[0; 3]; prog.slots];
    shapes[0] = input;
    let mut ops = Vec::with_capacity(prog.steps.len());
    for step in &prog.steps {
        let of = |s: Slot| shapes[s];
        let (op, shape) = match step {
            Step::Conv {
                src,
                dst,
                w,
                b,
                cfg,
                relu,
            } => {
                let [c, h, wd] = of(*src);
                let &[cout, cig, kh, kw] = w.shape() else {
                    return Err(bad(format!("conv weight of shape {:?}", w.shape())));
                };
                if cig * cfg.groups != c || cout % cfg.groups != 0 {
                    return Err(bad(format!("a conv of {cig}×{} inputs on {c}", cfg.groups)));
                }
                let (s, p, d) = (cfg.stride, cfg.padding, cfg.dilation);
                let (oh, ow) = (out_len(h, kh, s, p, d)?, out_len(wd, kw, s, p, d)?);
                let g = ConvGeom::new((c, h, wd), (cout, kh, kw), (oh, ow), s, p, d, cfg.groups);
                let op = Op::Conv {
                    g,
                    w: w.try_to_vec()?,
                    b: b.try_to_vec()?,
                    src: *src,
                    relu_in: false,
                    add: vec![],
                    relu_out: *relu,
                    dst: *dst,
                };
                (op, [cout, oh, ow])
            }
            Step::Relu { src, dst } => (
                Op::Relu {
                    src: *src,
                    dst: *dst,
                },
                of(*src),
            ),
            &Step::Pool {
                src,
                dst,
                max,
                kernel,
                stride,
                padding,
            } => {
                let [c, h, w] = of(src);
                let g = PoolGeom {
                    h,
                    w,
                    oh: out_len(h, kernel, stride, padding, 1)?,
                    ow: out_len(w, kernel, stride, padding, 1)?,
                    k: kernel,
                    stride,
                    pad: padding,
                };
                (Op::Pool { g, src, dst, max }, [c, g.oh, g.ow])
            }
            Step::Affine {
                src,
                dst,
                scale,
                shift,
                relu,
            } => {
                let op = Op::Affine {
                    src: *src,
                    dst: *dst,
                    scale: scale.clone(),
                    shift: shift.clone(),
                    relu: *relu,
                };
                (op, of(*src))
            }
            Step::Shift { src, dst } => (
                Op::Shift {
                    src: *src,
                    dst: *dst,
                },
                of(*src),
            ),
            Step::Sum { srcs, dst } => {
                if srcs.iter().any(|&s| of(s) != of(srcs[0])) {
                    return Err(bad("a sum of maps of different shapes".into()));
                }
                let op = Op::Sum {
                    srcs: srcs.clone(),
                    dst: *dst,
                };
                (op, of(srcs[0]))
            }
            Step::Concat { srcs, dst } => {
                let [_, h, w] = of(srcs[0]);
                if srcs.iter().any(|&s| of(s)[1..] != [h, w]) {
                    return Err(bad("a concat of maps of different sizes".into()));
                }
                let mut parts = Vec::with_capacity(srcs.len());
                let mut c = 0;
                for &s in srcs {
                    parts.push((s, c * h * w));
                    c += of(s)[0];
                }
                (Op::Concat { parts, dst: *dst }, [c, h, w])
            }
            Step::Zeros { like, stride, dst } => {
                let [c, h, w] = of(*like);
                (
                    Op::Zeros { dst: *dst },
                    [c, h.div_ceil(*stride), w.div_ceil(*stride)],
                )
            }
            Step::Head { src, dst, w, b } => {
                let &[classes, c] = w.shape() else {
                    return Err(bad(format!("classifier of shape {:?}", w.shape())));
                };
                if of(*src)[0] != c {
                    return Err(bad(format!("a classifier of {c} inputs on {:?}", of(*src))));
                }
                let op = Op::Head {
                    src: *src,
                    dst: *dst,
                    w: w.try_to_vec()?,
                    b: b.as_ref().map(|t| t.try_to_vec()).transpose()?,
                };
                (op, [classes, 1, 1])
            }
        };
        shapes[op.dst()] = shape;
        ops.push(op);
    }
    Ok((ops, shapes))
}

/// Per slot, the ops that read it (once per read).
fn readers(ops: &[Option<Op>], slots: usize) -> Vec<Vec<usize>> {
    let mut r = vec![vec![]; slots];
    for (i, op) in ops.iter().enumerate() {
        for s in op.iter().flat_map(Op::srcs) {
            r[s].push(i);
        }
    }
    r
}

/// Drops every ReLU whose readers are all convs: they read its source through `relu_in`.
fn drop_relus(ops: &mut [Option<Op>], slots: usize, output: Slot) {
    let readers = readers(ops, slots);
    for i in 0..ops.len() {
        let Some(Op::Relu { src, dst }) = ops[i] else {
            continue;
        };
        let by_conv = |&j: &usize| {
            matches!(&ops[j], Some(Op::Conv { src: s, add, relu_in: false, .. })
                if *s == dst && !add.contains(&dst))
        };
        if dst == output || !readers[dst].iter().all(by_conv) {
            continue;
        }
        for &j in &readers[dst] {
            if let Some(Op::Conv {
                src: s, relu_in, ..
            }) = &mut ops[j]
            {
                (*s, *relu_in) = (src, true);
            }
        }
        ops[i] = None;
    }
}

/// The most maps a conv's epilogue adds (a node of up to this many terms and the conv's own).
const MAX_ADDS: usize = 3;

/// Moves each sum into the epilogue of the conv that computes its last term, when that conv's
/// output is read by the sum alone.
fn fuse_sums(ops: &mut [Option<Op>], slots: usize, output: Slot) {
    let readers = readers(ops, slots);
    let mut def = vec![None; slots];
    for (i, op) in ops.iter().enumerate() {
        if let Some(op) = op {
            def[op.dst()] = Some(i);
        }
    }
    for i in 0..ops.len() {
        let Some(Op::Sum { srcs, dst }) = &ops[i] else {
            continue;
        };
        let (srcs, dst) = (srcs.clone(), *dst);
        let Some(&last) = srcs.iter().max_by_key(|&&s| def[s]) else {
            continue;
        };
        let Some(j) = def[last] else { continue };
        let fusable =
            matches!(&ops[j], Some(Op::Conv { relu_out: false, add, .. }) if add.is_empty());
        if last == output || srcs.len() > MAX_ADDS + 1 || readers[last].len() != 1 || !fusable {
            continue;
        }
        if let Some(Op::Conv { add, dst: d, .. }) = &mut ops[j] {
            let at = srcs.iter().position(|&s| s == last).unwrap_or(0);
            *add = srcs
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != at)
                .map(|(_, &s)| s)
                .collect();
            *d = dst;
        }
        def[dst] = Some(j);
        ops[i] = None;
    }
}

/// Per slot, the concat it is written into and its offset there: every part that is written by
/// an op of its own (not the input), read once by that concat, not a concat itself and not
/// already placed in another one.
fn place_concat_parts(ops: &mut [Option<Op>], slots: usize) -> Vec<Option<(Slot, usize)>> {
    let mut placed = vec![None; slots];
    let is_concat: Vec<bool> = (0..slots)
        .map(|s| {
            ops.iter()
                .any(|op| matches!(op, Some(Op::Concat { dst, .. }) if *dst == s))
        })
        .collect();
    for op in ops.iter_mut() {
        let Some(Op::Concat { parts, dst }) = op else {
            continue;
        };
        let all: Vec<Slot> = parts.iter().map(|p| p.0).collect();
        parts.retain(|&(s, off)| {
            let free = s != 0
                && !is_concat[s]
                && placed[s].is_none()
                && all.iter().filter(|&&x| x == s).count() == 1;
            if free {
                placed[s] = Some((*dst, off));
            }
            !free
        });
        if parts.is_empty() {
            *op = None;
        }
    }
    placed
}

/// Arena offsets of every slot: each root buffer (a slot not placed in a concat) is live from
/// the first op that writes into it to the last that reads from it, and takes the lowest
/// offset free over that span. Returns the offsets and the arena's length.
fn layout(
    ops: &[Op],
    shapes: &[[usize; 3]],
    placed: &[Option<(Slot, usize)>],
    output: Slot,
) -> (Vec<usize>, usize) {
    let slots = shapes.len();
    let root = |s: Slot| placed[s].map_or(s, |p| p.0);
    let (mut start, mut end) = (vec![usize::MAX; slots], vec![0; slots]);
    start[0] = 0;
    for (i, op) in ops.iter().enumerate() {
        let r = root(op.dst());
        start[r] = start[r].min(i + 1);
        for s in op.srcs() {
            end[root(s)] = end[root(s)].max(i + 1);
        }
    }
    end[root(output)] = usize::MAX;
    let mut roots: Vec<Slot> = (0..slots).filter(|&s| start[s] != usize::MAX).collect();
    roots.sort_by_key(|&s| start[s]);
    let mut base = vec![0; slots];
    let mut live: Vec<(usize, usize, usize)> = vec![];
    let mut arena = 0;
    for r in roots {
        let len = numel(shapes[r]);
        live.retain(|&(_, _, e)| e >= start[r]);
        live.sort_unstable();
        let mut off = 0;
        for &(o, l, _) in &live {
            if o >= off + len {
                break;
            }
            off = off.max(o + l);
        }
        live.push((off, len, end[r]));
        base[r] = off;
        arena = arena.max(off + len);
    }
    let at = (0..slots)
        .map(|s| placed[s].map_or(base[s], |(r, o)| base[r] + o))
        .collect();
    (at, arena)
}

thread_local! {
    /// Each thread's arena and scratch, kept from one image to the next.
    static MEMORY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Plan {
    pub(super) fn new(prog: &Program, input: [usize; 3]) -> Result<Plan> {
        let (lifted, shapes) = lift(prog, input)?;
        let mut ops: Vec<Option<Op>> = lifted.into_iter().map(Some).collect();
        drop_relus(&mut ops, prog.slots, prog.output);
        fuse_sums(&mut ops, prog.slots, prog.output);
        let placed = place_concat_parts(&mut ops, prog.slots);
        let ops: Vec<Op> = ops.into_iter().flatten().collect();
        let (at, arena) = layout(&ops, &shapes, &placed, prog.output);
        let scratch = ops
            .iter()
            .map(|op| match op {
                Op::Conv { g, .. } => g.scratch(),
                Op::Pool { g, .. } => g.scratch(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        Ok(Plan {
            input,
            ops,
            shapes,
            at,
            arena,
            scratch,
            output: prog.output,
        })
    }

    pub(super) fn classes(&self) -> usize {
        numel(self.shapes[self.output])
    }

    /// The logits of a batch of images `[N, C, H, W]` (`data`), into `out` `[N, classes]`.
    pub(super) fn forward(&self, data: &[f32], out: &mut [f32]) {
        let (per, classes) = (numel(self.input), self.classes());
        if out.len() == classes {
            return self.run_here(data, out);
        }
        out.par_chunks_mut(classes)
            .zip(data.par_chunks(per))
            .for_each(|(o, x)| self.run_here(x, o));
    }

    /// One image on this thread, in this thread's memory.
    fn run_here(&self, image: &[f32], logits: &mut [f32]) {
        MEMORY.with_borrow_mut(|m| {
            let need = self.arena + self.scratch;
            if m.len() < need {
                m.resize(need, 0.0);
            }
            self.run(image, &mut m[..need], logits);
        })
    }

    fn run(&self, image: &[f32], memory: &mut [f32], logits: &mut [f32]) {
        let (arena, scratch) = memory.split_at_mut(self.arena);
        let base = arena.as_mut_ptr();
        // SAFETY: `layout` gives every slot `numel(shape)` elements inside the arena, and slots
        // live at the same time never overlap (two parts of one concat are disjoint channel
        // ranges of it); an op's `dst` is never one of its sources, so the one slice written
        // is disjoint from every slice read while it is held.
        let get = |s: Slot| unsafe {
            std::slice::from_raw_parts(base.add(self.at[s]), numel(self.shapes[s]))
        };
        let put = |s: Slot| unsafe {
            std::slice::from_raw_parts_mut(base.add(self.at[s]), numel(self.shapes[s]))
        };
        put(0).copy_from_slice(image);
        for op in &self.ops {
            match op {
                Op::Conv {
                    g,
                    w,
                    b,
                    src,
                    relu_in,
                    add,
                    relu_out,
                    dst,
                } => {
                    let mut maps: [&[f32]; MAX_ADDS] = [&[]; MAX_ADDS];
                    for (m, &s) in maps.iter_mut().zip(add) {
                        *m = get(s);
                    }
                    let epi = Epilogue {
                        add: &maps[..add.len()],
                        lo: kernels::relu_floor(*relu_out),
                    };
                    kernels::conv(g, w, b, get(*src), *relu_in, put(*dst), epi, scratch);
                }
                Op::Relu { src, dst } => {
                    for (y, &x) in put(*dst).iter_mut().zip(get(*src)) {
                        *y = x.max(0.0);
                    }
                }
                Op::Pool { g, src, dst, max } => {
                    kernels::pool(g, get(*src), *max, put(*dst), scratch);
                }
                Op::Affine {
                    src,
                    dst,
                    scale,
                    shift,
                    relu,
                } => {
                    let [c, h, w] = self.shapes[*src];
                    let lo = kernels::relu_floor(*relu);
                    let planes = put(*dst)
                        .chunks_exact_mut(h * w)
                        .zip(get(*src).chunks(h * w));
                    for (k, (y, x)) in planes.enumerate().take(c) {
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = (x * scale[k] + shift[k]).max(lo);
                        }
                    }
                }
                Op::Shift { src, dst } => {
                    let [_, h, w] = self.shapes[*src];
                    kernels::shift(get(*src), (h, w), put(*dst));
                }
                Op::Sum { srcs, dst } => {
                    let y = put(*dst);
                    y.copy_from_slice(get(srcs[0]));
                    for &s in &srcs[1..] {
                        y.iter_mut().zip(get(s)).for_each(|(y, &x)| *y += x);
                    }
                }
                Op::Concat { parts, dst } => {
                    let y = put(*dst);
                    for &(s, off) in parts {
                        let x = get(s);
                        y[off..][..x.len()].copy_from_slice(x);
                    }
                }
                Op::Zeros { dst } => put(*dst).fill(0.0),
                Op::Head { src, dst, w, b } => {
                    let [_, h, wd] = self.shapes[*src];
                    kernels::head(get(*src), h * wd, w, b.as_deref(), put(*dst));
                }
            }
        }
        logits.copy_from_slice(get(self.output));
    }
}
