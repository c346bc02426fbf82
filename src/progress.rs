//! Progress bars on stderr (hidden when stderr is not a terminal, so logs and CI stay clean).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over the steps of an epoch that also shows images per second.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    images_per_step: usize,
}

impl Progress {
    pub fn new(prefix: impl Into<String>, steps: usize, images_per_step: usize) -> Self {
        let bar = ProgressBar::new(steps as u64);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(prefix.into());
        Progress { bar, start: Instant::now(), images_per_step }
    }

    /// Moves to step `pos` with a status message.
    pub fn set(&mut self, pos: usize, msg: &str) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = (pos * self.images_per_step) as f64 / secs;
        self.bar.set_position(pos as u64);
        self.bar.set_message(format!("{msg} {rate:.0} img/s"));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
