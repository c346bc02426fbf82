//! A free list of f32 buffers, keyed by length, that tensor storage returns to when dropped.
//!
//! A search step allocates and frees thousands of feature maps of a few dozen distinct sizes.
//! Straight from the allocator, each large one arrived as fresh pages: page faults and the
//! kernel zeroing them cost ~11% of a step, and `vec![0.0; n]` zeroed them once more (~7%).
//! Recycled buffers are already mapped, and [`take`] skips the zeroing for kernels that write
//! every element. Contents of a recycled buffer are stale values, never uninitialised memory.
//!
//! Small buffers go straight to the allocator (cheap there), and the pool holds at most
//! [`MAX_POOLED`] elements, freeing anything beyond, so it never keeps more than a bounded
//! amount of memory that the program no longer uses.
//!
//! [`live_bytes`] and [`peak_bytes`] count the host tensor storage alive now and at most since
//! [`reset_peak`]: the memory check (`memory.rs`) measures its probe steps with them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers shorter than this are not pooled.
const MIN_POOLED: usize = 1 << 12;
/// At most this many f32 held in the pool (1 GiB).
const MAX_POOLED: usize = 1 << 28;

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    held: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<T>(f: impl FnOnce(&mut Pool) -> T) -> T {
    // A panic while the lock is held cannot leave the free lists inconsistent.
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(|| Pool {
        free: HashMap::new(),
        held: 0,
    }))
}

fn recycled(len: usize) -> Option<Vec<f32>> {
    if len < MIN_POOLED {
        return None;
    }
    with_pool(|p| {
        let v = p.free.get_mut(&len)?.pop()?;
        p.held -= len;
        Some(v)
    })
}

/// A buffer of `len` elements whose values are unspecified (stale, or zero): for outputs that
/// the caller overwrites entirely.
pub fn take(len: usize) -> Vec<f32> {
    recycled(len).unwrap_or_else(|| vec![0.0; len])
}

/// A buffer of `len` zeros.
pub fn take_zeroed(len: usize) -> Vec<f32> {
    match recycled(len) {
        Some(mut v) => {
            v.fill(0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// A buffer of `len` copies of `value`.
pub fn take_full(len: usize, value: f32) -> Vec<f32> {
    let mut v = take(len);
    v.fill(value);
    v
}

/// Hands a buffer back for reuse (or frees it when small or the pool is full).
pub fn give(v: Vec<f32>) {
    let len = v.len();
    if len < MIN_POOLED {
        return;
    }
    with_pool(|p| {
        if p.held + len <= MAX_POOLED {
            p.held += len;
            p.free.entry(len).or_default().push(v);
        }
    });
}

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn count_new(len: usize) {
    let bytes = 4 * len;
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// Bytes of host tensor storage alive now, in this process (all threads).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes of host tensor storage alive at once since the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak measurement from what is alive now.
pub fn reset_peak() {
    PEAK.store(live_bytes(), Ordering::Relaxed);
}

/// Host storage of a tensor: a buffer that goes back to the pool when dropped.
#[derive(Debug)]
pub struct Buffer(Vec<f32>);

impl Buffer {
    pub fn new(v: Vec<f32>) -> Buffer {
        count_new(v.len());
        Buffer(v)
    }
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Buffer {
        let mut v = take(self.0.len());
        v.copy_from_slice(&self.0);
        Buffer::new(v)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        LIVE.fetch_sub(4 * self.0.len(), Ordering::Relaxed);
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_by_length_and_zeroes_on_request() {
        let n = MIN_POOLED + 17;
        give(vec![3.0; n]);
        let v = take_zeroed(n);
        assert_eq!(v.len(), n);
        assert!(v.iter().all(|&x| x == 0.0));
        assert_eq!(take_full(n + 1, 2.0), vec![2.0; n + 1]);
        assert_eq!(take(5).len(), 5);
    }

    #[test]
    fn counts_live_and_peak_tensor_bytes() {
        // Other tests allocate concurrently: only this test's own buffers are certain.
        let n = 1 << 20;
        let a = Buffer::new(vec![0.0; n]);
        let b = a.clone();
        assert!(live_bytes() >= 8 * n && peak_bytes() >= 8 * n);
        drop((a, b));
    }
}
