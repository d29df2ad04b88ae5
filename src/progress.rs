//! Progress bars for blob transfers, drawn only when stderr is a terminal: one bar per
//! transfer, and a total when several run at once (prefetch).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use wasm_oci_fetcher::{Blob, Progress, Transfer};

/// Bars on stderr.
pub(crate) struct Bars {
    multi: MultiProgress,
    total: Option<ProgressBar>,
}

impl Bars {
    /// Bars when stderr is a terminal; `None` keeps piped output clean. `with_total` adds a
    /// bar summing every transfer.
    pub(crate) fn on_terminal(with_total: bool) -> Option<Arc<Self>> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(Narrower(console::Term::buffered_stderr())),
            20,
        ));
        clear_on_interrupt(&multi);
        let total = with_total.then(|| {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(style(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            ));
            bar.set_message("total");
            bar
        });
        Some(Arc::new(Self { multi, total }))
    }

    /// Takes every bar off the screen, before a summary line is printed.
    pub(crate) fn clear(&self) {
        if let Some(total) = &self.total {
            total.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// Standard error, two columns narrower than it is: indicatif pads a bar to the terminal's
/// width, and the `^C` a terminal echoes after a full line wraps to a line of its own, below
/// the bars, where clearing them on Ctrl-C would start from the wrong line.
#[derive(Debug)]
struct Narrower(console::Term);

impl TermLike for Narrower {
    fn width(&self) -> u16 {
        TermLike::width(&self.0).saturating_sub(2).max(1)
    }
    fn height(&self) -> u16 {
        TermLike::height(&self.0)
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        TermLike::move_cursor_up(&self.0, n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        TermLike::move_cursor_down(&self.0, n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        TermLike::move_cursor_right(&self.0, n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        TermLike::move_cursor_left(&self.0, n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        TermLike::write_line(&self.0, s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        TermLike::write_str(&self.0, s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        TermLike::clear_line(&self.0)
    }
    fn flush(&self) -> std::io::Result<()> {
        TermLike::flush(&self.0)
    }
}

/// Every set of bars drawn, for Ctrl-C to clear.
static DRAWN: Mutex<Vec<MultiProgress>> = Mutex::new(Vec::new());

/// Set once SIGINT belongs to someone else (a server that drains its requests on it).
static SIGINT_TAKEN: AtomicBool = AtomicBool::new(false);

/// From now on SIGINT is the caller's to handle: bars no longer end the process on it.
pub(crate) fn sigint_taken() {
    SIGINT_TAKEN.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C take `multi`'s bars (and every other drawn) off the screen before the process
/// ends with 130, as a shell reports a SIGINT; without bars drawn, SIGINT is left as it is.
fn clear_on_interrupt(multi: &MultiProgress) {
    DRAWN.lock().expect("bars lock").push(multi.clone());
    static WATCH: Once = Once::new();
    WATCH.call_once(|| {
        // The handler is registered here, before any bar is drawn: a Ctrl-C that comes at
        // once must not find the default action still in place.
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let interrupt = runtime.block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        });
        let Ok(mut interrupt) = interrupt else {
            return;
        };
        let watch = move || {
            runtime.block_on(async {
                while interrupt.recv().await.is_some() {
                    if SIGINT_TAKEN.load(Ordering::SeqCst) {
                        continue;
                    }
                    let drawn = DRAWN.lock().expect("bars lock");
                    let Some((last, others)) = drawn.split_last() else {
                        std::process::exit(130);
                    };
                    for bars in others {
                        let _ = bars.clear();
                        bars.set_draw_target(ProgressDrawTarget::hidden());
                    }
                    // suspend clears the bars and runs the exit with their lock held, so a
                    // transfer's thread cannot draw its bar again in between.
                    last.suspend(|| std::process::exit(130));
                }
            });
        };
        let _ = std::thread::Builder::new()
            .name("sigint".into())
            .spawn(watch);
    });
}

/// Wasm above this many bytes is large: off a terminal, its compile is announced on a line.
pub(crate) const LARGE_MODULE: u64 = 4 << 20;

/// Runs `compile`; when stderr is a terminal and it takes more than a moment (a large
/// module compiling), a spinner says so meanwhile, and is gone when it returns. Off a
/// terminal, where no spinner draws, one line says so before a module larger than
/// [`LARGE_MODULE`] compiles: `compiling REF (18.2 MiB)...`. `large` gives that size, or
/// `None` for code that is already compiled (or a small module), of which nothing is said.
pub(crate) fn while_compiling<T>(
    what: &str,
    large: impl FnOnce() -> Option<u64>,
    compile: impl FnOnce() -> T,
) -> T {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    use std::time::Duration;
    if !std::io::stderr().is_terminal() {
        if let Some(size) = large().filter(|&size| size > LARGE_MODULE) {
            eprintln!(
                "compiling {} ({})...",
                wasm_oci_artifact::text::printable(what),
                crate::units::human_size(size)
            );
        }
        return compile();
    }
    let (done, finished) = channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            // Cached code loads in milliseconds: no spinner flickers for it.
            if finished.recv_timeout(Duration::from_millis(300)) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            let spinner = ProgressBar::new_spinner().with_message(format!(
                "compiling {} (once: the code is kept in the cache)",
                wasm_oci_artifact::text::printable(what)
            ));
            spinner.enable_steady_tick(Duration::from_millis(100));
            let _ = finished.recv();
            spinner.finish_and_clear();
        });
        let out = compile();
        drop(done);
        out
    })
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
}

/// What a bar is called: the reference's last part and which blob it moves, so that the
/// config's bar and the layer's are told apart (`hello:v1 config`, `hello:v1 wasm`).
fn label(reference: &str, blob: Blob) -> String {
    let short = reference.rsplit('/').next().unwrap_or(reference);
    let what = match blob {
        Blob::Config => "config",
        Blob::Layer => "wasm",
    };
    format!("{short} {what}")
}

impl Progress for Bars {
    fn transfer(
        &self,
        reference: &str,
        blob: Blob,
        _digest: &str,
        total: Option<u64>,
    ) -> Box<dyn Transfer> {
        let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
        bar.set_style(style(
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ));
        bar.set_message(label(reference, blob));
        if let (Some(t), Some(n)) = (&self.total, total) {
            t.inc_length(n);
        }
        Box::new(Bar {
            bar,
            total: self.total.clone(),
        })
    }
}

struct Bar {
    bar: ProgressBar,
    total: Option<ProgressBar>,
}

impl Transfer for Bar {
    fn set_position(&self, bytes: u64) {
        let before = self.bar.position();
        self.bar.set_position(bytes);
        if let Some(t) = &self.total {
            t.set_position((t.position() + bytes).saturating_sub(before));
        }
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if let Some(t) = &self.total {
            t.inc(bytes);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_and_the_layer_have_bars_of_their_own_names() {
        let reference = "localhost:5000/apps/hello:v1";
        assert_eq!(label(reference, Blob::Config), "hello:v1 config");
        assert_eq!(label(reference, Blob::Layer), "hello:v1 wasm");
    }
}
