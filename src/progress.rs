//! Progress on stderr, of training steps and of downloads: a bar on a terminal; when stderr is a
//! file or a pipe (logs, CI), a plain line at most every 30 seconds so long runs still show that
//! they are alive.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a non-terminal stderr gets a progress line.
const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// A bar over the steps of an epoch that also shows images per second.
pub struct Progress {
    bar: ProgressBar,
    prefix: String,
    steps: usize,
    start: Instant,
    last_line: Instant,
    images_per_step: usize,
    /// What the rate counts: images by default.
    unit: &'static str,
}

impl Progress {
    pub fn new(prefix: impl Into<String>, steps: usize, images_per_step: usize) -> Self {
        let bar = ProgressBar::new(steps as u64);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        let prefix = prefix.into();
        bar.set_prefix(prefix.clone());
        let now = Instant::now();
        Progress {
            bar,
            prefix,
            steps,
            start: now,
            last_line: now,
            images_per_step,
            unit: "img",
        }
    }

    /// Shows the rate in `unit`s per second (e.g. queries) instead of images.
    pub fn unit(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }

    /// Moves to step `pos` with a status message.
    pub fn set(&mut self, pos: usize, msg: &str) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = (pos * self.images_per_step) as f64 / secs;
        if self.bar.is_hidden() {
            if self.last_line.elapsed() >= PLAIN_EVERY {
                self.last_line = Instant::now();
                let eta = secs / pos.max(1) as f64 * self.steps.saturating_sub(pos) as f64;
                eprintln!(
                    "{} {pos}/{} {msg} {rate:.0} {}/s eta {eta:.0}s",
                    self.prefix, self.steps, self.unit
                );
            }
            return;
        }
        self.bar.set_position(pos as u64);
        self.bar
            .set_message(format!("{msg} {rate:.0} {}/s", self.unit));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A bar over the bytes of one download.
pub struct Transfer {
    bar: ProgressBar,
    name: String,
    total: u64,
    last_line: Instant,
}

impl Transfer {
    pub fn new(name: &str, total: u64) -> Self {
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        if bar.is_hidden() {
            eprintln!("downloading {name} ({total} bytes)");
        }
        Transfer {
            bar,
            name: name.into(),
            total,
            last_line: Instant::now(),
        }
    }

    /// Moves to `bytes` received.
    pub fn set(&mut self, bytes: u64) {
        if self.bar.is_hidden() {
            if self.last_line.elapsed() >= PLAIN_EVERY {
                self.last_line = Instant::now();
                eprintln!("{} {bytes}/{} bytes", self.name, self.total);
            }
            return;
        }
        self.bar.set_position(bytes);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
