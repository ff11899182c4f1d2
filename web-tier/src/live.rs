//! The live view: what the whole stack is doing, pushed to the page as server-sent events.
//!
//! `GET /live` streams one JSON snapshot per tick (`--live-interval-secs`): the request queue
//! (visible, in flight, delayed), the queue results come back on, the fleet as the cloud
//! lists it (each app tier or EC2 instance with its state and what it answered lately),
//! throughput and latency over the last five minutes, and the most recent results.
//!
//! Where each part comes from, and why:
//!
//! - **Queues and fleet from the cloud APIs** ([`Queue::depth`], [`FleetView`]), never
//!   from in-process state, so the view is the same on both backends and with the scaler in
//!   another process or on another machine. A look that fails (an IAM policy without
//!   `ec2:DescribeInstances`, an SQS outage) is shown as that part's error; the rest goes on.
//! - **Throughput, latency, workers' activity and recent results from the results this web
//!   tier receives** (recorded by [`crate::AppState::complete`]): latency is the result's
//!   own account, queued plus in the worker. With several web tiers each shows its share.
//! - **One sampler, only while someone watches.** A single task looks at the cloud once a
//!   tick whatever the number of viewers, and not at all when nobody has the page open, so
//!   the page costs no SQS or EC2 calls when unwatched. Every viewer gets the same
//!   serialized snapshot through a `watch` channel; a slow viewer skips snapshots instead of
//!   queueing them.
//! - **Streams end when the server starts to drain**, so an open page never holds up a
//!   shutdown; the browser's `EventSource` reconnects on its own (to another web tier
//!   behind a load balancer, or to this one after a restart).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use iras_cloud::{FleetView, Instance, Queue, QueueDepth};
use iras_protocol::{Outcome, ResponseMessage};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::waiters::Waiters;

/// Path of the event stream.
pub const LIVE_PATH: &str = "/live";
/// The span of the charts.
pub const WINDOW: Duration = Duration::from_secs(300);
/// One point of the charts.
pub const BUCKET: Duration = Duration::from_secs(5);
/// Latencies kept per second for the percentiles; beyond it a second's first ones stand
/// for all of it (counts stay exact).
const SAMPLES_PER_SECOND: usize = 512;
/// Results listed under "recent".
pub const RECENT_RESULTS: usize = 12;
/// The longest one look at a queue or the fleet may take before it counts as failed.
const LOOK_TIMEOUT: Duration = Duration::from_secs(10);

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What one second of results looked like.
#[derive(Debug)]
struct Second {
    /// Unix seconds.
    at: u64,
    labels: u32,
    errors: u32,
    latencies_ms: Vec<u32>,
}

/// One result, as the recent list shows it.
#[derive(Debug, Clone, Serialize)]
struct RecentResult {
    id: String,
    filename: String,
    label: Option<String>,
    score: Option<f32>,
    /// The error kind, for a result that is an error.
    error: Option<String>,
    worker: String,
    latency_ms: u64,
    at_ms: u64,
}

/// What one worker has answered lately.
#[derive(Debug, Default)]
struct WorkerActivity {
    /// When each of its results in the window arrived (unix ms), oldest first.
    answered_ms: VecDeque<u64>,
    /// Its latest result: a label, or the error kind.
    last: String,
    last_file: String,
}

/// What the results this web tier received say, over [`WINDOW`].
#[derive(Debug, Default)]
struct Activity {
    seconds: VecDeque<Second>,
    recent: VecDeque<RecentResult>,
    workers: HashMap<String, WorkerActivity>,
}

impl Activity {
    fn record(&mut self, response: &ResponseMessage, now_ms: u64) {
        let latency_ms = response
            .timings
            .queued_ms
            .saturating_add(response.timings.total_ms);
        let at = now_ms / 1000;
        if self.seconds.back().is_none_or(|s| s.at < at) {
            self.seconds.push_back(Second {
                at,
                labels: 0,
                errors: 0,
                latencies_ms: Vec::new(),
            });
        }
        // The clock may step back: such a result counts in the latest second.
        let second = self.seconds.back_mut().expect("pushed above");
        let (label, score, error) = match &response.outcome {
            Outcome::Label { label, score, .. } => {
                second.labels += 1;
                (Some(label.clone()), Some(*score), None)
            }
            Outcome::Error { kind, .. } => {
                second.errors += 1;
                (None, None, Some(kind.to_string()))
            }
        };
        if second.latencies_ms.len() < SAMPLES_PER_SECOND {
            second
                .latencies_ms
                .push(u32::try_from(latency_ms).unwrap_or(u32::MAX));
        }
        let worker = self.workers.entry(response.worker.clone()).or_default();
        worker.answered_ms.push_back(now_ms);
        worker.last = label.clone().or_else(|| error.clone()).unwrap_or_default();
        worker.last_file = response.file_name.as_str().to_owned();
        self.recent.push_front(RecentResult {
            id: response.id.to_string(),
            filename: response.file_name.as_str().to_owned(),
            label,
            score,
            error,
            worker: response.worker.clone(),
            latency_ms,
            at_ms: now_ms,
        });
        self.recent.truncate(RECENT_RESULTS);
        // Here too, not only when a snapshot is taken: unwatched for hours, the record stays
        // one window long.
        self.prune(now_ms);
    }

    /// Forgets what is older than the window.
    fn prune(&mut self, now_ms: u64) {
        let window_ms = WINDOW.as_millis() as u64;
        let oldest_ms = now_ms.saturating_sub(window_ms);
        while self
            .seconds
            .front()
            .is_some_and(|s| s.at * 1000 < oldest_ms)
        {
            self.seconds.pop_front();
        }
        self.workers.retain(|_, w| {
            while w.answered_ms.front().is_some_and(|&t| t < oldest_ms) {
                w.answered_ms.pop_front();
            }
            !w.answered_ms.is_empty()
        });
    }

    /// The charts: one point per [`BUCKET`] over the window, oldest first, ending with the
    /// bucket that holds `now_ms`.
    fn series(&self, now_ms: u64) -> Series {
        let bucket_s = BUCKET.as_secs();
        let points = (WINDOW.as_secs() / bucket_s) as usize;
        let last_start = (now_ms / 1000) / bucket_s * bucket_s;
        let first_start = last_start.saturating_sub(bucket_s * (points as u64 - 1));
        let mut labels = vec![0u32; points];
        let mut errors = vec![0u32; points];
        let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); points];
        for s in &self.seconds {
            if s.at < first_start {
                continue;
            }
            let i = (((s.at - first_start) / bucket_s) as usize).min(points - 1);
            labels[i] += s.labels;
            errors[i] += s.errors;
            latencies[i].extend_from_slice(&s.latencies_ms);
        }
        let rate = |n: u32| f64::from(n) / bucket_s as f64;
        let mut p50 = Vec::with_capacity(points);
        let mut p95 = Vec::with_capacity(points);
        for l in &mut latencies {
            l.sort_unstable();
            p50.push(percentile(l, 0.50));
            p95.push(percentile(l, 0.95));
        }
        Series {
            start_ms: first_start * 1000,
            bucket_ms: BUCKET.as_millis() as u64,
            labels_per_sec: labels.into_iter().map(rate).collect(),
            errors_per_sec: errors.into_iter().map(rate).collect(),
            p50_ms: p50,
            p95_ms: p95,
        }
    }
}

/// The `q` quantile of sorted `values` (nearest rank), `None` when there are none.
fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Throughput and latency over the window, one point per bucket.
#[derive(Debug, Serialize)]
struct Series {
    start_ms: u64,
    bucket_ms: u64,
    labels_per_sec: Vec<f64>,
    errors_per_sec: Vec<f64>,
    /// `null` where a bucket had no result.
    p50_ms: Vec<Option<u32>>,
    p95_ms: Vec<Option<u32>>,
}

/// A queue's depth, or why it could not be read.
#[derive(Debug, Serialize)]
struct QueueLook {
    name: String,
    #[serde(flatten)]
    depth: Option<QueueDepth>,
    error: Option<String>,
}

/// One row of the fleet table.
#[derive(Debug, Serialize)]
struct Member {
    /// The instance name, or the worker's own name for a worker outside the fleet.
    name: String,
    id: Option<String>,
    /// The fleet's state; `None` for a worker the fleet does not list (an app tier started
    /// by hand, or by `scripts/run-local --app-tiers`).
    state: Option<String>,
    launched_at_ms: Option<u64>,
    /// Results from it in the last minute.
    answered_last_minute: usize,
    /// When its latest result arrived, and what it was.
    last_at_ms: Option<u64>,
    last: Option<String>,
    last_file: Option<String>,
}

/// Everything the page shows, at one moment.
#[derive(Debug, Serialize)]
struct Snapshot {
    at_ms: u64,
    interval_ms: u64,
    backend: String,
    requests: QueueLook,
    responses: QueueLook,
    /// Requests this web tier holds a connection open for.
    waiting: usize,
    fleet: Vec<Member>,
    fleet_error: Option<String>,
    series: Series,
    recent: Vec<RecentResult>,
}

/// The fleet's instances joined with the workers' activity: a worker is an instance when
/// it is named by the instance's name (the local fleet) or id (EC2).
fn members(instances: &[Instance], activity: &Activity, now_ms: u64) -> Vec<Member> {
    let minute_ago = now_ms.saturating_sub(60_000);
    let mut unmatched: HashMap<&str, &WorkerActivity> = activity
        .workers
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let row = |name: String, worker: Option<&WorkerActivity>| Member {
        name,
        id: None,
        state: None,
        launched_at_ms: None,
        answered_last_minute: worker.map_or(0, |w| {
            w.answered_ms.iter().filter(|&&t| t >= minute_ago).count()
        }),
        last_at_ms: worker.and_then(|w| w.answered_ms.back().copied()),
        last: worker.map(|w| w.last.clone()),
        last_file: worker.map(|w| w.last_file.clone()),
    };
    let mut out: Vec<Member> = instances
        .iter()
        .map(|i| {
            let worker = unmatched
                .remove(i.name.as_str())
                .or_else(|| unmatched.remove(i.id.as_str()));
            Member {
                id: Some(i.id.clone()),
                state: Some(i.state.to_string()),
                launched_at_ms: Some(unix_ms(i.launched_at)),
                ..row(i.name.clone(), worker)
            }
        })
        .collect();
    let mut others: Vec<Member> = unmatched
        .into_iter()
        .map(|(name, w)| row(name.to_owned(), Some(w)))
        .collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(others);
    out
}

/// Where the sampler looks.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The backend's name, shown on the page.
    pub backend: String,
    /// The request queue.
    pub requests: Arc<dyn Queue>,
    /// The queue results come back on (this web tier's own, or the shared one).
    pub responses: Arc<dyn Queue>,
    /// The fleet the scaler manages.
    pub fleet: Arc<dyn FleetView>,
    /// The requests waiting here.
    pub waiters: Arc<Waiters>,
}

/// A snapshot as sent: its JSON, and when it was taken.
#[derive(Debug)]
struct Frame {
    taken: Instant,
    json: String,
}

/// The live view's state: the activity recorded from results, and the latest snapshot.
#[derive(Debug)]
pub struct Live {
    activity: Mutex<Activity>,
    frames: watch::Sender<Option<Arc<Frame>>>,
    interval: Duration,
    /// Cancelled when the server starts to drain: every stream ends.
    draining: CancellationToken,
}

impl Live {
    /// A live view that samples every `interval`, its streams ending once `draining` is
    /// cancelled.
    pub fn new(interval: Duration, draining: CancellationToken) -> Self {
        Self {
            activity: Mutex::new(Activity::default()),
            frames: watch::Sender::new(None),
            interval,
            draining,
        }
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        // Plain data, consistent after every statement: a panic elsewhere cannot have left it
        // half-updated.
        self.activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cancelled when the server starts to drain: every stream and long-poll ends then.
    pub fn draining(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Counts a result that reached this web tier.
    pub fn record(&self, response: &ResponseMessage) {
        self.activity().record(response, unix_ms(SystemTime::now()));
    }

    /// Looks at the queues and the fleet once a tick while anyone watches, until `stop`.
    pub async fn sample(self: Arc<Self>, sources: Sources, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.frames.receiver_count() == 0 {
                continue;
            }
            let json = self.snapshot(&sources).await;
            self.frames.send_replace(Some(Arc::new(Frame {
                taken: Instant::now(),
                json,
            })));
        }
    }

    /// One look at everything, as JSON.
    async fn snapshot(&self, sources: &Sources) -> String {
        let (requests, responses, fleet) = tokio::join!(
            look_at_queue(sources.requests.as_ref()),
            look_at_queue(sources.responses.as_ref()),
            bounded(sources.fleet.list()),
        );
        let now_ms = unix_ms(SystemTime::now());
        let (instances, fleet_error) = match fleet {
            Ok(instances) => (instances, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let snapshot = {
            let mut activity = self.activity();
            activity.prune(now_ms);
            Snapshot {
                at_ms: now_ms,
                interval_ms: self.interval.as_millis() as u64,
                backend: sources.backend.clone(),
                requests,
                responses,
                waiting: sources.waiters.waiting(),
                fleet: members(&instances, &activity, now_ms),
                fleet_error,
                series: activity.series(now_ms),
                recent: activity.recent.iter().cloned().collect(),
            }
        };
        serde_json::to_string(&snapshot).unwrap_or_else(|e| {
            serde_json::json!({ "at_ms": now_ms, "error": e.to_string() }).to_string()
        })
    }

    /// A viewer's stream: the latest snapshot at once if it is recent, then each new one,
    /// until the server drains.
    fn stream(&self) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
        let mut frames = self.frames.subscribe();
        // A snapshot older than two ticks was taken when nobody watched: wait for a fresh one.
        let stale_after = self.interval * 2;
        let fresh = frames
            .borrow_and_update()
            .clone()
            .filter(|f| f.taken.elapsed() < stale_after);
        let retry = self.interval.max(Duration::from_secs(1));
        let draining = self.draining.clone();
        futures_util::stream::unfold(
            (frames, fresh, draining),
            move |(mut frames, first, draining)| async move {
                let frame = match first {
                    Some(frame) => frame,
                    None => loop {
                        tokio::select! {
                            () = draining.cancelled() => return None,
                            changed = frames.changed() => changed.ok()?,
                        }
                        if let Some(frame) = frames.borrow_and_update().clone() {
                            break frame;
                        }
                    },
                };
                let event = Event::default()
                    .event("snapshot")
                    .retry(retry)
                    .data(frame.json.as_str());
                Some((Ok(event), (frames, None, draining)))
            },
        )
    }
}

/// A queue's depth, or the error of trying.
async fn look_at_queue(queue: &dyn Queue) -> QueueLook {
    let (depth, error) = match bounded(queue.depth()).await {
        Ok(depth) => (Some(depth), None),
        Err(e) => (None, Some(e)),
    };
    QueueLook {
        name: queue.name().to_owned(),
        depth,
        error,
    }
}

/// `look` within [`LOOK_TIMEOUT`], its error as text.
async fn bounded<T>(
    look: impl std::future::Future<Output = iras_cloud::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(LOOK_TIMEOUT, look).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", LOOK_TIMEOUT.as_secs())),
    }
}

/// `GET /live`: the snapshots as server-sent events (`event: snapshot`, JSON data).
pub(crate) async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(state.live.stream()).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use iras_protocol::{ErrorKind, FileName, RequestId, Timings};

    use super::*;

    fn result(worker: &str, label: Option<&str>, latency_ms: u64) -> ResponseMessage {
        let outcome = match label {
            Some(label) => Outcome::Label {
                label: label.into(),
                score: 0.5,
                top_k: vec![],
            },
            None => Outcome::Error {
                kind: ErrorKind::UndecodableImage,
                message: "bad".into(),
            },
        };
        ResponseMessage::new(
            RequestId::new(),
            FileName::parse("a.png").unwrap(),
            outcome,
            worker,
            Timings {
                queued_ms: latency_ms / 2,
                decode_ms: 0,
                inference_ms: 0,
                total_ms: latency_ms - latency_ms / 2,
            },
        )
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.95), Some(7));
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(95));
    }

    #[test]
    fn results_land_in_their_bucket_and_age_out_of_the_window() {
        let mut a = Activity::default();
        let t0 = 1_000_000_000; // ms, on a bucket boundary
        for i in 0..10 {
            a.record(&result("w1", Some("cat"), 100 + i), t0 + i * 100);
        }
        a.record(&result("w1", None, 40), t0 + 6_000);
        let s = a.series(t0 + 6_000);
        let n = s.labels_per_sec.len();
        assert_eq!(n, (WINDOW.as_secs() / BUCKET.as_secs()) as usize);
        // The last bucket holds the error, the one before it the ten labels.
        assert_eq!(s.labels_per_sec[n - 2], 10.0 / 5.0);
        assert_eq!(s.errors_per_sec[n - 1], 1.0 / 5.0);
        assert_eq!(s.p50_ms[n - 2], Some(104));
        assert_eq!(s.p95_ms[n - 2], Some(109));
        assert_eq!(s.p50_ms[n - 3], None);
        assert_eq!(a.recent.len(), 11);
        assert_eq!(a.recent[0].error.as_deref(), Some("undecodable_image"));

        // Six minutes later everything has aged out.
        let later = t0 + 360_000;
        a.prune(later);
        assert!(a.seconds.is_empty());
        assert!(a.workers.is_empty());
        assert!(a.series(later).labels_per_sec.iter().all(|&r| r == 0.0));
    }

    #[test]
    fn unwatched_for_long_the_record_stays_one_window_long() {
        let mut a = Activity::default();
        let t0 = 1_000_000_000;
        for i in 0..3_600u64 {
            a.record(&result("w", Some("cat"), 10), t0 + i * 1_000);
        }
        assert!(
            a.seconds.len() as u64 <= WINDOW.as_secs() + 1,
            "{}",
            a.seconds.len()
        );
        let kept = a.workers["w"].answered_ms.len() as u64;
        assert!(kept <= WINDOW.as_secs() + 1, "{kept}");
    }

    #[test]
    fn the_recent_list_is_bounded_newest_first() {
        let mut a = Activity::default();
        for i in 0..(RECENT_RESULTS as u64 + 5) {
            a.record(&result("w", Some(&format!("l{i}")), 10), 1_000 + i);
        }
        assert_eq!(a.recent.len(), RECENT_RESULTS);
        assert_eq!(
            a.recent[0].label.as_deref(),
            Some(format!("l{}", RECENT_RESULTS + 4).as_str())
        );
    }

    #[test]
    fn workers_are_matched_to_instances_by_name_or_id_and_the_rest_listed_after() {
        let mut a = Activity::default();
        let now = 10_000_000;
        a.record(&result("app-tier-1", Some("cat"), 10), now - 70_000);
        a.record(&result("app-tier-1", Some("dog"), 10), now - 1_000);
        a.record(&result("i-0abc", Some("espresso"), 10), now - 2_000);
        a.record(&result("laptop-42", Some("tabby"), 10), now - 3_000);
        let instance = |name: &str, id: &str, state| Instance {
            id: id.into(),
            name: name.into(),
            state,
            launched_at: UNIX_EPOCH + Duration::from_secs(5),
        };
        let fleet = [
            instance("app-tier-1", "local-1", iras_cloud::InstanceState::Running),
            instance("app-tier-2", "i-0abc", iras_cloud::InstanceState::Running),
            instance("app-tier-3", "i-0def", iras_cloud::InstanceState::Pending),
        ];
        let rows = members(&fleet, &a, now);
        let names: Vec<&str> = rows.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["app-tier-1", "app-tier-2", "app-tier-3", "laptop-42"]
        );
        assert_eq!(rows[0].answered_last_minute, 1);
        assert_eq!(rows[0].last.as_deref(), Some("dog"));
        assert_eq!(rows[1].last.as_deref(), Some("espresso"));
        assert_eq!(rows[2].last, None);
        assert_eq!(rows[2].state.as_deref(), Some("pending"));
        assert_eq!(rows[3].state, None);
        assert_eq!(rows[0].launched_at_ms, Some(5_000));
    }
}
