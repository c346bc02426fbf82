//! How a [`QProgram`](super::quantize::QProgram)'s steps are executed, derived from them when
//! the program is built (so the serialised steps keep their meaning): which steps are skipped
//! because their readers do their work on the fly, which slot each read really takes, what
//! each step really reads and writes, and when each held slot can be freed.
//!
//! - A ReLU read only by depthwise convs is done by them, while they pad their input.
//! - A sum whose last term is computed by a dense conv, read by that sum alone, is computed in
//!   that conv's epilogue: the conv reads the other terms and writes the sum.

use super::quantize::QStep;
use crate::infer::Slot;

/// The most terms a sum computed in a conv's epilogue may have.
const MAX_TERMS: usize = 4;

pub(super) struct Plan {
    /// Per step: skipped, because its readers do its work themselves.
    pub skip: Vec<bool>,
    /// Per slot: the slot held in its place, and whether readers rectify it as they read
    /// (a ReLU read only by depthwise convs, which rectify while they pad their input).
    pub read: Vec<(Slot, bool)>,
    /// Per step: the slots it reads (a conv: its input first, then the maps its epilogue
    /// adds) and the slot it writes.
    pub io: Vec<(Vec<Slot>, Slot)>,
    /// Per held slot: the last step that reads it.
    pub last_use: Vec<usize>,
}

impl Plan {
    pub fn new(steps: &[QStep], slots: usize) -> Plan {
        let mut readers = vec![Vec::new(); slots];
        let mut def = vec![None; slots];
        for (i, step) in steps.iter().enumerate() {
            let (srcs, dst) = step.slots();
            srcs.into_iter().for_each(|s| readers[s].push(i));
            def[dst] = Some(i);
        }
        let depthwise =
            |i: &usize| matches!(&steps[*i], QStep::Conv { conv, .. } if conv.depthwise());
        let mut skip = vec![false; steps.len()];
        let mut read: Vec<(Slot, bool)> = (0..slots).map(|s| (s, false)).collect();
        for (i, step) in steps.iter().enumerate() {
            if let QStep::Relu { src, dst } = step {
                if !readers[*dst].is_empty() && readers[*dst].iter().all(depthwise) {
                    skip[i] = true;
                    read[*dst] = (read[*src].0, true);
                }
            }
        }
        let mut io: Vec<(Vec<Slot>, Slot)> = steps.iter().map(QStep::slots).collect();
        for (i, step) in steps.iter().enumerate() {
            let QStep::Sum { srcs, dst } = step else {
                continue;
            };
            let Some(&last) = srcs.iter().max_by_key(|&&s| def[s]) else {
                continue;
            };
            let Some(j) = def[last] else { continue };
            let dense = matches!(&steps[j], QStep::Conv { conv, relu: false, .. }
                if !conv.depthwise());
            if !dense || readers[last] != [i] || srcs.len() > MAX_TERMS || io[j].0.len() != 1 {
                continue;
            }
            let at = srcs.iter().position(|&s| s == last).unwrap_or(0);
            let others = srcs.iter().enumerate().filter(|&(k, _)| k != at);
            io[j].0.extend(others.map(|(_, &s)| s));
            io[j].1 = *dst;
            skip[i] = true;
        }
        let mut last_use = vec![0; slots];
        for (i, (srcs, _)) in io.iter().enumerate().filter(|(i, _)| !skip[*i]) {
            for &s in srcs {
                last_use[read[s].0] = i;
            }
        }
        Plan {
            skip,
            read,
            io,
            last_use,
        }
    }
}
