//! How a [`QProgram`](super::quantize::QProgram)'s steps are executed, derived from them when
//! the program is built (so the serialised steps keep their meaning): which steps are skipped
//! because their readers do their work on the fly, which slot each read really takes, and
//! when each held slot can be freed.

use super::quantize::QStep;
use crate::infer::Slot;

pub(super) struct Plan {
    /// Per step: skipped, because its readers do its work themselves.
    pub skip: Vec<bool>,
    /// Per slot: the slot held in its place, and whether readers rectify it as they read
    /// (a ReLU read only by depthwise convs, which rectify while they pad their input).
    pub read: Vec<(Slot, bool)>,
    /// Per held slot: the last step that reads it.
    pub last_use: Vec<usize>,
}

impl Plan {
    pub fn new(steps: &[QStep], slots: usize) -> Plan {
        let mut readers = vec![Vec::new(); slots];
        for (i, step) in steps.iter().enumerate() {
            for s in step.slots().0 {
                readers[s].push(i);
            }
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
        let mut last_use = vec![0; slots];
        for (i, step) in steps.iter().enumerate().filter(|(i, _)| !skip[*i]) {
            for s in step.slots().0 {
                last_use[read[s].0] = i;
            }
        }
        Plan {
            skip,
            read,
            last_use,
        }
    }
}
