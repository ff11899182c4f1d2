//! The load engine: schedules uploads, bounds how many are in flight, retries what is
//! safe to retry, and records every request's outcome.
//!
//! Two shapes of load ([`Load`]):
//! - **Closed** ([`Load::Count`]): N requests, sent as fast as `concurrency` permits allow
//!   (the course's generator, with `concurrency` ≥ N, sends them all at once).
//! - **Open** ([`Load::Rate`]): request *i* is due at `i / rate` seconds, whatever the
//!   server does. Its latency is measured from when it was *due*, not from when a
//!   concurrency permit let it go, so a server that falls behind shows up in the latency
//!   instead of silently slowing the arrivals ("coordinated omission").
//!
//! Retries (off by default) only repeat requests the server surely did not take on: a
//! connection that could not be made, a 503 or a 429 (the web tier queues nothing before
//! it answers 503). A timeout or a 504 is never retried: the image may already be
//! queued, and a retry would classify it twice.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Expected, Image, Summary, WorkloadError};

/// The multipart field the web tier (and the course's generator) use for the image.
pub const FILE_FIELD: &str = "myfile";
/// Default number of requests in flight at once: the course's generator sent its 100
/// images at once.
pub const DEFAULT_CONCURRENCY: usize = 100;
/// The longest pause between retries, whatever `Retry-After` asks for.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);
/// At most this many bytes of an error answer are kept as its detail.
const MAX_DETAIL_BYTES: usize = 200;

/// How much load to offer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Closed loop: this many requests, each sent as soon as a concurrency permit is free.
    Count(u64),
    /// Open loop: `per_sec` requests per second, evenly spaced, for `duration`.
    Rate {
        /// Arrival rate, requests per second.
        per_sec: f64,
        /// How long requests keep arriving.
        duration: Duration,
    },
}

impl Load {
    /// How many requests the load consists of.
    pub fn planned(&self) -> u64 {
        match *self {
            Load::Count(n) => n,
            // Saturating float-to-int cast; validated finite and positive in `Config::new`.
            Load::Rate { per_sec, duration } => (per_sec * duration.as_secs_f64()).round() as u64,
        }
    }

    /// When request `seq` is due, counted from the start of the run (open loop only).
    fn due(&self, seq: u64) -> Option<Duration> {
        match *self {
            Load::Count(_) => None,
            Load::Rate { per_sec, .. } => Some(Duration::from_secs_f64(seq as f64 / per_sec)),
        }
    }
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to `POST` the images (the web tier's `/`).
    pub url: reqwest::Url,
    /// How much load to offer.
    pub load: Load,
    /// At most this many requests in flight at once.
    pub concurrency: NonZeroUsize,
    /// Limit on each attempt, from connecting to the last byte of the answer (a retry
    /// gets a fresh one); `None` waits as long as the server takes.
    pub timeout: Option<Duration>,
    /// How many times a retryable failure is retried (see the module docs).
    pub retries: u32,
    /// Expected labels, to score answers.
    pub expected: Option<Expected>,
}

impl Config {
    /// A configuration with the defaults: concurrency 100, no timeout, no retries, no
    /// expected labels. Rejects an unparsable or non-HTTP URL, an empty load and a rate
    /// that is not a positive finite number.
    pub fn new(url: &str, load: Load) -> Result<Self, WorkloadError> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| WorkloadError::Config(format!("URL `{url}`: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WorkloadError::Config(format!(
                "URL `{url}`: only http and https are supported"
            )));
        }
        if let Load::Rate { per_sec, duration } = load {
            if !(per_sec.is_finite() && per_sec > 0.0) {
                return Err(WorkloadError::Config(format!(
                    "rate {per_sec}: must be a positive number of requests per second"
                )));
            }
            if duration.is_zero() {
                return Err(WorkloadError::Config(
                    "duration must not be zero".to_owned(),
                ));
            }
        }
        if load.planned() == 0 {
            return Err(WorkloadError::Config(
                "the load has no requests (count 0, or rate × duration rounds to 0)".to_owned(),
            ));
        }
        Ok(Self {
            url,
            load,
            concurrency: NonZeroUsize::new(DEFAULT_CONCURRENCY).unwrap_or(NonZeroUsize::MIN),
            timeout: None,
            retries: 0,
            expected: None,
        })
    }
}

/// What went wrong with one request, by class: the summary counts failures by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureClass {
    /// The server answered with this non-2xx status.
    Status(u16),
    /// No complete answer within the per-request timeout.
    Timeout,
    /// The connection could not be made (refused, unreachable, DNS).
    Connect,
    /// The connection failed while sending or receiving (reset, closed early).
    Transport,
    /// The answer's body could not be read.
    Body,
    /// A 2xx answer with an empty body: no label.
    EmptyAnswer,
    /// The run was interrupted (Ctrl-C) while the request was in flight.
    Cancelled,
    /// `--async`: the web tier refused the image in the batch, or the app tier could not
    /// classify it (the detail has the error code).
    Rejected,
}

impl FailureClass {
    /// Whether the server surely did not take the request on, so repeating it is safe.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureClass::Connect | FailureClass::Status(429 | 503)
        )
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureClass::Status(code) => write!(f, "HTTP {code}"),
            FailureClass::Timeout => f.write_str("timeout"),
            FailureClass::Connect => f.write_str("connect error"),
            FailureClass::Transport => f.write_str("transport error"),
            FailureClass::Body => f.write_str("body error"),
            FailureClass::EmptyAnswer => f.write_str("empty answer"),
            FailureClass::Cancelled => f.write_str("cancelled"),
            FailureClass::Rejected => f.write_str("rejected"),
        }
    }
}

impl Serialize for FailureClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A failed request: its class and a one-line detail (the server's reason, the
/// transport error chain, the request id of a 504).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestFailure {
    /// The class, as counted in the summary.
    pub kind: FailureClass,
    /// One line of detail.
    pub detail: String,
}

/// One request's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its position in the run, from 0.
    pub seq: u64,
    /// The image's file name.
    pub name: String,
    /// When it was issued (open loop: when it was due), from the start of the run.
    pub issued: Duration,
    /// From `issued` to the final answer or failure, retries included.
    pub latency: Duration,
    /// How many attempts were made (1 without retries).
    pub attempts: u32,
    /// The label, or why there is none.
    pub outcome: Result<String, RequestFailure>,
}

impl Record {
    /// When the request completed, from the start of the run.
    pub fn completed(&self) -> Duration {
        self.issued + self.latency
    }
}

/// Told about every request as it completes (progress bars, per-image output). Called
/// from the request's task, so it must be quick and must not block.
pub trait Observer: Send + Sync {
    /// A request completed, answered or failed.
    fn completed(&self, record: &Record);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn completed(&self, _: &Record) {}
}

/// Runs the workload to completion and summarises it: the simple entry point for tests
/// and other commands (no observer, no interruption).
pub async fn drive(config: &Config, images: &[Image]) -> Result<Summary, WorkloadError> {
    drive_with(
        config,
        images.to_vec().into(),
        Arc::new(Quiet),
        std::future::pending(),
    )
    .await
}

/// Runs the workload, telling `observer` about each completed request, until every
/// request has completed or `shutdown` resolves. On shutdown nothing more is sent and
/// requests in flight are abandoned and recorded as [`FailureClass::Cancelled`]; requests
/// never sent are the difference between `planned` and `sent` in the summary.
///
/// Images are used in order and cycled when the load has more requests than images.
pub async fn drive_with(
    config: &Config,
    images: Arc<[Image]>,
    observer: Arc<dyn Observer>,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, WorkloadError> {
    if images.is_empty() {
        return Err(WorkloadError::Config("no images to send".to_owned()));
    }
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(config.concurrency.get());
    if let Some(timeout) = config.timeout {
        builder = builder.timeout(timeout);
    }
    let client = builder.build().map_err(WorkloadError::Client)?;
    let planned = config.load.planned();
    let len = images.len() as u64;

    // Backpressure: a request task holds a permit until it completes.
    let permits = Arc::new(Semaphore::new(config.concurrency.get()));
    // Abandons requests in flight on shutdown; they record themselves as cancelled.
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut records = Vec::with_capacity(usize::try_from(planned).unwrap_or(0).min(1 << 20));
    let start = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopped = false;

    for seq in 0..planned {
        let due = config.load.due(seq).map(|d| start + d);
        let ready = async {
            if let Some(due) = due {
                tokio::time::sleep_until(due).await;
            }
            Arc::clone(&permits).acquire_owned().await
        };
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => {
                stopped = true;
                break;
            }
            permit = ready => permit.expect("the semaphore is never closed"),
        };
        let issued = due.unwrap_or_else(Instant::now);
        // `seq % len` < `len` = `images.len()`, so the index fits a usize.
        let index = (seq % len) as usize;
        let request = Request {
            client: client.clone(),
            url: config.url.clone(),
            images: Arc::clone(&images),
            index,
            retries: config.retries,
            cancel: cancel.clone(),
        };
        let observer = Arc::clone(&observer);
        tasks.spawn(async move {
            let (attempts, outcome) = request.send().await;
            let record = Record {
                seq,
                name: request.images[index].name.clone(),
                issued: issued.saturating_duration_since(start),
                latency: issued.elapsed(),
                attempts,
                outcome,
            };
            observer.completed(&record);
            drop(permit);
            record
        });
        while let Some(done) = tasks.try_join_next() {
            records.push(unwind(done));
        }
    }
    if stopped {
        cancel.cancel();
    }
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(done) => records.push(unwind(done)),
                None => break,
            },
            () = &mut shutdown, if !stopped => {
                stopped = true;
                cancel.cancel();
            }
        }
    }
    let elapsed = start.elapsed();
    records.sort_by_key(|r| r.seq);
    Ok(Summary::new(
        config.url.as_str(),
        planned,
        records,
        elapsed,
        config.expected.as_ref(),
    ))
}

/// Re-raises a request task's panic here rather than losing it. Tasks are never aborted
/// (cancellation goes through the token), so a join error is always a panic.
fn unwind(done: Result<Record, tokio::task::JoinError>) -> Record {
    match done {
        Ok(record) => record,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// Everything one request task needs.
struct Request {
    client: reqwest::Client,
    url: reqwest::Url,
    images: Arc<[Image]>,
    index: usize,
    retries: u32,
    /// Cancelled on shutdown: the attempt or the pause between attempts is abandoned.
    cancel: CancellationToken,
}

impl Request {
    /// Sends with retries; returns the number of attempts and the final outcome.
    async fn send(&self) -> (u32, Result<String, RequestFailure>) {
        let mut backoff = iras_service::Backoff::new(MAX_RETRY_PAUSE);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let attempt = tokio::select! {
                attempt = self.attempt() => attempt,
                () = self.cancel.cancelled() => return (attempts, Err(cancelled())),
            };
            let (failure, retry_after) = match attempt {
                Ok(label) => return (attempts, Ok(label)),
                Err(failed) => failed,
            };
            if attempts > self.retries || !failure.kind.is_retryable() {
                return (attempts, Err(failure));
            }
            let pause = retry_after
                .unwrap_or_else(|| backoff.next_pause())
                .min(MAX_RETRY_PAUSE);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.cancel.cancelled() => return (attempts, Err(cancelled())),
            }
        }
    }

    /// One `POST`: the label, or the failure and the server's `Retry-After`, if any.
    async fn attempt(&self) -> Result<String, (RequestFailure, Option<Duration>)> {
        let image = &self.images[self.index];
        let form = Form::new().part(
            FILE_FIELD,
            Part::bytes(image.bytes.clone()).file_name(image.name.clone()),
        );
        let response = self
            .client
            .post(self.url.clone())
            .multipart(form)
            .send()
            .await
            .map_err(|e| (transport_failure(&e), None))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let request_id = header("x-request-id");
        let body = response.text().await;
        if status.is_success() {
            let body = body.map_err(|e| (transport_failure(&e), None))?;
            let label = body.trim();
            if label.is_empty() {
                return Err((
                    RequestFailure {
                        kind: FailureClass::EmptyAnswer,
                        detail: format!("HTTP {} with an empty body", status.as_u16()),
                    },
                    None,
                ));
            }
            return Ok(label.to_owned());
        }
        // An error answer whose body cannot be read is still that status.
        let mut detail = body
            .ok()
            .and_then(|b| {
                b.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(truncate)
            })
            .unwrap_or_default();
        if let Some(id) = request_id {
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str("request id ");
            detail.push_str(&id);
        }
        Err((
            RequestFailure {
                kind: FailureClass::Status(status.as_u16()),
                detail,
            },
            retry_after,
        ))
    }
}

fn cancelled() -> RequestFailure {
    RequestFailure {
        kind: FailureClass::Cancelled,
        detail: "interrupted while in flight".to_owned(),
    }
}

/// Classifies a reqwest error and keeps its whole cause chain as the detail.
fn transport_failure(err: &reqwest::Error) -> RequestFailure {
    let kind = if err.is_timeout() {
        FailureClass::Timeout
    } else if err.is_connect() {
        FailureClass::Connect
    } else if err.is_body() || err.is_decode() {
        FailureClass::Body
    } else {
        FailureClass::Transport
    };
    // reqwest's own message ("error sending request for url (…)") says nothing the
    // record does not; the causes say what happened.
    let mut source = std::error::Error::source(err);
    let mut detail = match source {
        Some(cause) => {
            source = cause.source();
            cause.to_string()
        }
        None => err.to_string(),
    };
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest sometimes repeat the inner message in the outer one.
        if !detail.contains(&cause_text) {
            detail.push_str(": ");
            detail.push_str(&cause_text);
        }
        source = cause.source();
    }
    RequestFailure {
        kind,
        detail: truncate(&detail),
    }
}

/// At most [`MAX_DETAIL_BYTES`] bytes, cut at a character boundary.
pub(crate) fn truncate(text: &str) -> String {
    if text.len() <= MAX_DETAIL_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_DETAIL_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_requests_and_due_times() {
        assert_eq!(Load::Count(7).planned(), 7);
        let load = Load::Rate {
            per_sec: 2.5,
            duration: Duration::from_secs(4),
        };
        assert_eq!(load.planned(), 10);
        assert_eq!(load.due(0), Some(Duration::ZERO));
        assert_eq!(load.due(5), Some(Duration::from_secs(2)));
        assert_eq!(Load::Count(3).due(1), None);
    }

    #[test]
    fn config_rejects_bad_values() {
        assert!(Config::new("http://127.0.0.1:8000/", Load::Count(1)).is_ok());
        assert!(Config::new("not a url", Load::Count(1)).is_err());
        assert!(Config::new("ftp://host/", Load::Count(1)).is_err());
        assert!(Config::new("http://h/", Load::Count(0)).is_err());
        let rate = |per_sec, secs| Load::Rate {
            per_sec,
            duration: Duration::from_secs(secs),
        };
        assert!(Config::new("http://h/", rate(0.0, 5)).is_err());
        assert!(Config::new("http://h/", rate(f64::NAN, 5)).is_err());
        assert!(Config::new("http://h/", rate(10.0, 0)).is_err());
        assert!(Config::new("http://h/", rate(0.01, 1)).is_err());
    }

    #[test]
    fn only_requests_the_server_did_not_take_are_retried() {
        assert!(FailureClass::Connect.is_retryable());
        assert!(FailureClass::Status(503).is_retryable());
        assert!(FailureClass::Status(429).is_retryable());
        assert!(!FailureClass::Status(504).is_retryable());
        assert!(!FailureClass::Status(500).is_retryable());
        assert!(!FailureClass::Timeout.is_retryable());
        assert!(!FailureClass::Transport.is_retryable());
    }

    #[test]
    fn truncates_at_a_char_boundary() {
        let long = "é".repeat(150);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_DETAIL_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }
}
