//! Progress bars on a terminal (indicatif), nothing otherwise.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar shared with library operations: the bar, files seen,
/// and when (ms since `started`) the message last changed.
pub struct Bar(pub ProgressBar, AtomicU64, AtomicU64, std::time::Instant);

/// Shortest time between two updates of the bar's message: a backup of
/// many small files would otherwise format a path per file.
const MESSAGE_EVERY_MS: u64 = 100;

impl Bar {
    /// A bar when `show`, else a hidden one.
    pub fn bytes(show: bool, total: Option<u64>, verb: &str) -> Arc<Self> {
        let pb = if !show {
            ProgressBar::hidden()
        } else if let Some(t) = total {
            let pb = ProgressBar::new(t);
            pb.set_style(
                ProgressStyle::with_template(&format!(
                    "{verb} {{bar:30}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} ETA {{eta}} {{msg}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb
        } else {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template(&format!("{{spinner}} {verb} {{bytes}} {{bytes_per_sec}} {{wide_msg}}"))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb
        };
        if show {
            pb.enable_steady_tick(std::time::Duration::from_millis(200));
        }
        Arc::new(Self::new(pb))
    }

    fn new(pb: ProgressBar) -> Self {
        Self(pb, AtomicU64::new(0), AtomicU64::new(0), std::time::Instant::now())
    }

    /// A bar for work in phases (prune): each phase has its own total.
    pub fn phases(show: bool, verb: &str) -> Arc<Self> {
        let pb = if show { ProgressBar::new(0) } else { ProgressBar::hidden() };
        pb.set_style(
            ProgressStyle::with_template(&format!("{verb} {{msg:8}} {{bar:30}} {{pos}}/{{len}} ETA {{eta}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        if show {
            pb.enable_steady_tick(std::time::Duration::from_millis(200));
        }
        Arc::new(Self::new(pb))
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl crate::backup::Progress for Bar {
    fn file(&self, path: &Path, _size: u64) {
        let n = self.1.fetch_add(1, Ordering::Relaxed) + 1;
        if self.0.is_hidden() {
            return;
        }
        let now = self.3.elapsed().as_millis() as u64;
        let last = self.2.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= MESSAGE_EVERY_MS
            && self.2.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.0.set_message(format!("{n} files, {}", path.display()));
        }
    }
    fn bytes(&self, n: u64) {
        self.0.inc(n);
    }
}

impl crate::restore::Progress for Bar {
    fn bytes(&self, n: u64) {
        self.0.inc(n);
    }
}

impl crate::check::Progress for Bar {
    fn packs_total(&self, n: u64) {
        self.0.set_length(n);
    }
    fn pack_done(&self) {
        self.0.inc(1);
    }
}

impl crate::prune::Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        let template = if name == "repack" {
            "prune {msg:8} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
        } else {
            "prune {msg:8} {bar:30} {pos}/{len} ETA {eta}"
        };
        self.0.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        self.0.set_message(name.to_string());
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.reset_eta();
    }
    fn step(&self, n: u64) {
        self.0.inc(n);
    }
}
