//! Progress bars on a terminal (indicatif), nothing otherwise.

use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-counting progress bar shared with library operations.
pub struct Bar(pub ProgressBar);

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
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        Arc::new(Self(pb))
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl crate::backup::Progress for Bar {
    fn file(&self, path: &Path, _size: u64) {
        self.0.set_message(path.display().to_string());
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
