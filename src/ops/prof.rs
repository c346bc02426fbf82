//! An opt-in wall-clock profile of the ops, by op and direction: set `DARTS_OP_TIMES=1` and call
//! [`report`] (`darts bench search` does). Ops are called from one thread and parallelise
//! inside, so the caller's wall time is the op's time; nested spans are not subtracted (no op
//! calls another public op). Disabled, a span costs one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// 0: not yet read from the environment, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Per (op, backward?): total time and call count.
static TABLE: Mutex<Option<HashMap<(&'static str, bool), (Duration, u64)>>> = Mutex::new(None);

fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("DARTS_OP_TIMES").is_some_and(|v| v != "0");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// Times the region until it is dropped, when profiling is on.
pub struct Span {
    key: (&'static str, bool),
    start: Option<Instant>,
}

/// Starts timing `op` (forward, or its backward when `backward`).
pub fn span(op: &'static str, backward: bool) -> Span {
    Span {
        key: (op, backward),
        start: enabled().then(Instant::now),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(t) = self.start {
            let dt = t.elapsed();
            let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
            let e = table
                .get_or_insert_with(HashMap::new)
                .entry(self.key)
                .or_default();
            e.0 += dt;
            e.1 += 1;
        }
    }
}

/// The profile so far as `(op, backward, seconds, calls)`, slowest first, and clears it.
pub fn take() -> Vec<(&'static str, bool, f64, u64)> {
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<_> = table
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|((op, bwd), (d, n))| (op, bwd, d.as_secs_f64(), n))
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    rows
}

/// Prints the profile so far to stderr (per step, over `steps` steps) and clears it; does
/// nothing unless profiling is on.
pub fn report(steps: usize) {
    if !enabled() {
        return;
    }
    let rows = take();
    let total: f64 = rows.iter().map(|r| r.2).sum();
    let steps = steps.max(1) as f64;
    eprintln!("op profile (DARTS_OP_TIMES), ms per step:");
    for (op, bwd, s, n) in rows {
        let dir = if bwd { "bwd" } else { "fwd" };
        eprintln!(
            "  {op:>16} {dir} {:>9.1} ms {:>5.1}% {:>7.0} calls",
            1e3 * s / steps,
            100.0 * s / total.max(1e-12),
            n as f64 / steps
        );
    }
    eprintln!("  {:>20} {:>9.1} ms", "total", 1e3 * total / steps);
}
