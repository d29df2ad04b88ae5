//! Progress bars for blob transfers, drawn only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};
use wasm_oci_fetcher::Progress;

/// One bar per transfer on stderr.
pub(crate) struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Bars when stderr is a terminal; `None` keeps piped output clean.
    pub(crate) fn on_terminal() -> Option<Arc<Self>> {
        std::io::stderr().is_terminal().then(|| {
            Arc::new(Self {
                bar: Mutex::new(None),
            })
        })
    }
}

impl Progress for Bars {
    fn start(&self, digest: &str, total: Option<u64>) {
        let bar = ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        let short = digest.strip_prefix("sha256:").unwrap_or(digest);
        bar.set_message(short.chars().take(12).collect::<String>());
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &*self.bar.lock().expect("progress lock") {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}
