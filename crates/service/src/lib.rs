//! What every iras binary shares, so the tiers start, log, retry and stop alike.
//!
//! - [`init_tracing`]: logs to stderr, filtered by `RUST_LOG`, as text or (with
//!   `IRAS_LOG_FORMAT=json`) one JSON object per line for log shippers.
//! - [`shutdown_signal`]: resolves on Ctrl-C or SIGTERM (what systemd, the local fleet and
//!   `scripts/run-local` send). Library entry points take a shutdown future instead of
//!   calling this, so tests can stop them at will.
//! - [`Backoff`]: capped exponential backoff for loops that must keep going when a queue
//!   is briefly unreachable.
//! - [`exit_code`]: the one place a binary's error reaches the user.
//!
//! The decision a reader may question: a crate this small. Three binaries need exactly
//! the same signal handling and log set-up; one copy keeps their behaviour identical.

use std::process::ExitCode;
use std::time::Duration;

/// Environment variable choosing the log format: `text` (default) or `json`.
pub const ENV_LOG_FORMAT: &str = "IRAS_LOG_FORMAT";

/// Sets up logging to stderr. `default_filter` applies when `RUST_LOG` is unset (for
/// example `"info"`).
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var(ENV_LOG_FORMAT).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // `try_init` so a test harness that set a subscriber first is not a panic.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
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

/// Maps a binary's result to its exit code, printing the whole error chain once.
pub fn exit_code(program: &str, result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            #[allow(clippy::print_stderr)] // the one place errors reach the user
            {
                eprintln!("{program}: error: {err:#}");
            }
            ExitCode::from(2)
        }
    }
}

/// Capped exponential backoff: 100 ms, 200 ms, … up to `max`, back to the start on
/// [`Backoff::reset`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    initial: Duration,
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
        let initial = initial.min(max);
        Self {
            next: initial,
            initial,
            max,
        }
    }

    /// The pause to take now; doubles the next one.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// Called after a success: the next failure pauses briefly again.
    pub fn reset(&mut self) {
        self.next = self.initial;
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
