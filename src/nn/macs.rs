//! Multiply-add counting for model summaries: layers report their MACs while a count is open.

use std::cell::{Cell, RefCell};

use crate::tensor::Tensor;

thread_local! {
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
    /// Per layer, while [`macs_by_layer`] runs: (address of its weight, its multiply-adds).
    static LAYERS: RefCell<Option<Vec<(usize, u64)>>> = const { RefCell::new(None) };
}

/// Adds `n` multiply-adds to the open count, if any.
pub(crate) fn add(n: u64) {
    COUNT.with(|c| {
        if let Some(v) = c.get() {
            c.set(Some(v + n));
        }
    });
}

/// Adds the multiply-adds `n` of the layer whose weight is `weight`.
pub(crate) fn add_layer(weight: &Tensor, n: u64) {
    add(n);
    LAYERS.with(|l| {
        if let Some(v) = l.borrow_mut().as_mut() {
            v.push((weight as *const Tensor as usize, n));
        }
    });
}

/// Runs `f` and returns the multiply-adds of each convolution and linear layer it ran (on this
/// thread), keyed by the address of the layer's weight tensor (valid while the network is not
/// moved), with `f`'s result: what a pruning plan needs to price each channel exactly.
pub fn macs_by_layer<T>(f: impl FnOnce() -> T) -> (Vec<(usize, u64)>, T) {
    let outer = LAYERS.with(|l| l.replace(Some(Vec::new())));
    let out = f();
    let layers = LAYERS.with(|l| l.replace(outer)).unwrap_or_default();
    (layers, out)
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
