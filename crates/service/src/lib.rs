//! What every iras binary shares, so they start, log, retry and stop alike.
//!
//! - [`main`]: a binary's whole `main`. Every binary's library exposes the same pair, a
//!   clap command line and `async fn run(cli, shutdown)`, and its `main.rs` is one call of
//!   this, which
//!   - logs to stderr, filtered by `RUST_LOG`, as text or (with `IRAS_LOG_FORMAT=json`) one
//!     JSON object per line for log shippers;
//!   - runs `run` on a multi-threaded runtime with Ctrl-C or SIGTERM (what systemd, the
//!     local fleet and `scripts/run-local` send) as its shutdown; library entry points take
//!     the shutdown future as a parameter, so tests can stop them at will;
//!   - maps the result to the exit code, printing an error once.
//! - [`Backoff`]: capped exponential backoff for loops that must keep going when a queue
//!   is briefly unreachable.
//! - Memory given back: large buffers are mapped on their own, not kept in glibc's arenas
//!   (see `return_large_buffers`).
//!
//! The decision a reader may question: a crate this small. Every binary needs exactly
//! the same signal handling, log set-up and exit path; one copy keeps them identical.

use std::future::Future;
use std::pin::Pin;
use std::process::{ExitCode, Termination};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use iras_protocol::env::IRAS_LOG_FORMAT;

/// The future a binary's `run` stops on: Ctrl-C or SIGTERM under [`main`].
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Allocations from this size up are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Pins glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`]. The tiers hold image bodies and
/// decode images on short-lived blocking threads, in buffers of several megabytes; by default
/// glibc raises its threshold each time such a buffer is freed, so the next ones are carved
/// from per-thread arenas, which keep the memory after the burst. Measured here
/// (`scripts/run-local --app-tiers 2`, 400 requests of 0.3–8 MP photos, 100 in flight): the
/// web tier peaked at 759 MB and kept 731 MB, each app tier peaked near 510 MB and kept
/// 376–467 MB; with the threshold pinned, 258 MB and 40 MB, and 285–339 MB and 161–182 MB
/// (mimalloc instead kept 579 MB in the web tier). It applies to every `malloc` of the
/// process, ONNX Runtime's included.
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` sets one parameter of glibc's allocator from two integers; it is
    // called first thing in `main`, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

/// Runs a binary: parses its command line `C` (flags and `IRAS_*` variables; `--help` and
/// bad flags exit as clap decides), logs at `default_filter` unless `RUST_LOG` says
/// otherwise, runs `run` on a multi-threaded tokio runtime with Ctrl-C or SIGTERM as its
/// shutdown, and returns its exit code: what `run` returned, or 2 after printing the error.
pub fn main<C, T, Fut>(default_filter: &str, run: impl FnOnce(C, Shutdown) -> Fut) -> ExitCode
where
    C: clap::Parser,
    T: Termination,
    Fut: Future<Output = anyhow::Result<T>>,
{
    return_large_buffers();
    let cli = C::parse();
    init_tracing(default_filter);
    let program = C::command().get_name().to_owned();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli, Box::pin(shutdown_signal()))))
        .map(Termination::report);
    exit_code(&program, result)
}

/// Sets up logging to stderr. `default_filter` applies when `RUST_LOG` is unset (for
/// example `"info"`).
fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` so a test harness that set a subscriber first is not a panic.
    let _ = if json_logs() {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

/// Maps a binary's result to its exit code, printing the whole error chain once: as a log
/// event when the logs are JSON (so a log shipper sees it), else as one plain line.
fn exit_code(program: &str, result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            if json_logs() {
                tracing::error!(program, "{err:#}");
            } else {
                #[allow(clippy::print_stderr)] // the one place errors reach the user
                {
                    eprintln!("{program}: error: {err:#}");
                }
            }
            ExitCode::from(2)
        }
    }
}

/// Whether `IRAS_LOG_FORMAT` asks for JSON logs.
fn json_logs() -> bool {
    std::env::var(IRAS_LOG_FORMAT).is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}

/// Capped exponential backoff: 100 ms, 200 ms, … up to `max`, back to the start on
/// [`Backoff::reset`].
///
/// The delays come from backon's [`ExponentialBuilder`] (factor 2, no jitter, no limit
/// on the number of pauses); this type keeps the two calls the loops make. backon
/// multiplies in `f32` seconds, so a doubled pause may differ from the exact double by
/// a few nanoseconds; the first pause and the cap are exact.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    pauses: ExponentialBackoff,
    max: Duration,
}

/// First pause of a [`Backoff`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

impl Backoff {
    /// A backoff that never pauses longer than `max`.
    pub fn new(max: Duration) -> Self {
        Self::between(INITIAL_BACKOFF, max)
    }

    /// A backoff that starts at `initial` and never pauses longer than `max` (for slow
    /// things, such as waiting out a cloud quota).
    pub fn between(initial: Duration, max: Duration) -> Self {
        // backon does not cap the first pause, so a cap below it is applied here.
        let builder = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(initial.min(max))
            .with_max_delay(max)
            .without_max_times();
        Self {
            builder,
            pauses: builder.build(),
            max,
        }
    }

    /// The pause to take now; doubles the next one.
    pub fn next_pause(&mut self) -> Duration {
        // Without a limit on the number of pauses the iterator never ends; the cap is
        // the only sensible answer if it ever did.
        self.pauses.next().unwrap_or(self.max)
    }

    /// Called after a success: the next failure pauses briefly again.
    pub fn reset(&mut self) {
        self.pauses = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let pauses: Vec<_> = (0..5).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_pause(), INITIAL_BACKOFF);
    }

    #[test]
    fn a_long_outage_stays_at_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let pauses: Vec<_> = (0..10_000).map(|_| b.next_pause()).collect();
        let first: Vec<_> = pauses[..7].iter().map(Duration::as_millis).collect();
        assert_eq!(first, [100, 200, 400, 800, 1600, 3200, 5000]);
        assert!(pauses[6..].iter().all(|&p| p == Duration::from_secs(5)));
    }

    #[test]
    fn a_backoff_may_start_slow() {
        let mut b = Backoff::between(Duration::from_secs(30), Duration::from_secs(100));
        let pauses: Vec<_> = (0..4).map(|_| b.next_pause().as_secs()).collect();
        assert_eq!(pauses, [30, 60, 100, 100]);
        b.reset();
        assert_eq!(b.next_pause(), Duration::from_secs(30));
    }

    #[test]
    fn a_cap_below_the_first_pause_wins() {
        let mut b = Backoff::new(Duration::from_millis(10));
        assert_eq!(b.next_pause(), Duration::from_millis(10));
    }
}
