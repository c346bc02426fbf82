//! Multiply-add counting for model summaries: layers report their MACs while a count is open.

use std::cell::Cell;

thread_local! {
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Adds `n` multiply-adds to the open count, if any.
pub(crate) fn add(n: u64) {
    COUNT.with(|c| {
        if let Some(v) = c.get() {
            c.set(Some(v + n));
        }
    });
}

/// Runs `f` and returns the multiply-adds of the convolution and linear layers it ran (on this
/// thread), with `f`'s result.
pub fn count_macs<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let outer = COUNT.with(|c| c.replace(Some(0)));
    let out = f();
    let n = COUNT.with(|c| c.replace(outer)).unwrap_or(0);
    if let Some(o) = outer {
        COUNT.with(|c| c.set(Some(o + n)));
    }
    (n, out)
}
