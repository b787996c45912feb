//! Progress bars on a terminal (indicatif), nothing otherwise.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar shared with library operations.
pub struct Bar {
    /// The bar (hidden when progress is not shown).
    pub bar: ProgressBar,
    /// Files seen (backup).
    files: AtomicU64,
    /// When the message last changed, in ms since `started`.
    message_ms: AtomicU64,
    started: std::time::Instant,
}

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
        Self { bar: pb, files: AtomicU64::new(0), message_ms: AtomicU64::new(0), started: std::time::Instant::now() }
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
        self.bar.finish_and_clear();
    }
}

impl strongroom_core::backup::Progress for Bar {
    fn file(&self, path: &Path, _size: u64) {
        let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if self.bar.is_hidden() {
            return;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.message_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= MESSAGE_EVERY_MS
            && self.message_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.bar.set_message(format!("{n} files, {}", path.display()));
        }
    }
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
}

impl strongroom_core::restore::Progress for Bar {
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
}

impl strongroom_core::check::Progress for Bar {
    fn packs_total(&self, n: u64) {
        self.bar.set_length(n);
    }
    fn pack_done(&self) {
        self.bar.inc(1);
    }
}

impl strongroom_core::prune::Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        let template = if name == "repack" {
            "prune {msg:8} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
        } else {
            "prune {msg:8} {bar:30} {pos}/{len} ETA {eta}"
        };
        self.bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        self.bar.set_message(name.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.reset_eta();
    }
    fn step(&self, n: u64) {
        self.bar.inc(n);
    }
}
