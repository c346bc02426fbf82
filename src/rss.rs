//! Resident memory of this process (Linux; elsewhere the readings are 0 and the resets do
//! nothing): its peak, a reset of that peak, and the freed heap handed back to the system
//! first, so that a peak measured from the reset counts what a piece of work really touches
//! rather than pages an earlier one freed and left resident.

/// A `VmHWM:` or `VmRSS:` line of `/proc/self/status`, in MB.
fn status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Peak resident memory of this process since its start or the last [`reset_peak`], in MB.
pub fn peak_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Resident memory now, in MB.
pub fn current_mb() -> f64 {
    status_mb("VmRSS:")
}

/// Hands the heap's free pages back to the system (glibc), then restarts the peak from the
/// resident size now.
pub fn reset_peak() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim takes no pointers and only releases free memory.
        unsafe {
            malloc_trim(0);
        }
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
