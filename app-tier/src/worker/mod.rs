//! The queue worker (`app-tier serve`): long-poll the request queue, classify, store, answer,
//! and only then delete.
//!
//! Each worker loop owns one ONNX session (sessions cannot be shared: `run` takes `&mut`)
//! and runs inference on the blocking pool. The loop is a small pipeline so the session
//! never waits on I/O: a receiver task long-polls for the next batch while the current image
//! is classified, and storing and answering (steps 4–6) run in the background while the
//! next image is classified. Per message, in this order:
//!
//! 1. decode the request (a body that is not a request cannot be answered — there is no
//!    reply-to — so it is left alone and ends in the dead-letter queue after
//!    `max_receive_count` receives, where an operator can look at it);
//! 2. fetch the image (inline base64, or the claim-check object in the input bucket);
//! 3. classify; 4. write the image to the input bucket and `(stem, label)` to the output
//!    bucket (keys from the request, so a redelivered request overwrites the same objects);
//! 5. write the whole response to the output bucket under `results/<id>.json` (also for
//!    error answers), send it to the request's reply-to queue (a web tier's own queue, gone
//!    once that tier stopped: then the result by id is the answer); 6. delete the request
//!    (batched).
//!
//! Input that can never be classified (bad base64, an undecodable or oversized image, a
//! missing claim-check object) gets an *error response* and is deleted: a poison message
//! costs one receive, not a hot loop. Anything that may pass (a bucket or queue call
//! failing, an inference runtime error) leaves the message undeleted; it comes back after
//! its visibility timeout, and after `max_receive_count` receives it is dead-lettered.
//! While a batch is being worked on, a heartbeat extends the visibility of the messages
//! still in hand, so a slow batch is not redelivered to another worker meanwhile.
//!
//! **Bounded recovery.** The visibility timeout is short (10 s by default) and the
//! heartbeat renews it every third of that, so a worker that is SIGKILLed or loses its
//! instance hands its messages back within seconds, not a minute. And no message is held
//! for ever: an inference that runs past `max_processing` is given up on (the request gets
//! an `internal` error answer and is deleted; the loop, whose session is stuck in the
//! runtime, stops, and so does the process, for its supervisor to restart), and the
//! heartbeat stops renewing any message held longer than that, so even a worker stuck
//! elsewhere cannot keep one hidden past the cap.
//!
//! Shutdown (SIGTERM) stops receiving at once; a loop finishes the messages in hand (at
//! most one batch beyond the image being classified), deletes what it answered, and ends.
//!
//! This module holds the settings, the state the loops share and [`serve`]; the rest is
//! split along its seams: `pipeline` (a loop's receive/classify/finish pipeline and its
//! shutdown), `process` (decoding, fetching and classifying one request), `answer`
//! (storing, answering and deleting), `attempt` (what a failure that may pass costs) and
//! `heartbeat` (visibility renewal and the processing cap).

mod answer;
mod attempt;
mod heartbeat;
mod pipeline;
mod process;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use iras_classifier::Classifier;
use iras_cloud::{Bucket, Cloud, Queue, ReceiveOptions};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use heartbeat::heartbeat_period;
use pipeline::worker_loop;

/// What a worker needs to know.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queue the requests arrive on.
    pub request_queue: String,
    /// Bucket every image is written to.
    pub input_bucket: String,
    /// Bucket every `(stem, label)` result is written to.
    pub output_bucket: String,
    /// Names this worker in responses and logs (the instance name when the fleet started it).
    pub worker_id: String,
    /// The fleet instance this process is (EC2 instance id, local fleet id), told ready
    /// once every loop is serving; `None` when it runs outside a fleet.
    pub instance_id: Option<String>,
    /// Messages per receive, 1..=10.
    pub batch_size: usize,
    /// How long received messages stay hidden; must cover a whole batch (the heartbeat
    /// extends it while work goes on).
    pub visibility_timeout: Duration,
    /// Long-poll wait per receive (at most 20 s).
    pub wait: Duration,
    /// Longest a message may be worked on (classified, stored, answered) before it is given
    /// up on.
    pub max_processing: Duration,
    /// Input limits, checked from the header before a decode takes memory.
    pub limits: iras_classifier::Limits,
    /// Every decode of this process takes its estimated memory out of this budget first.
    pub decode_budget: iras_classifier::DecodeBudget,
}

/// Shared by the worker loops of one process.
struct Shared {
    config: WorkerConfig,
    cloud: Cloud,
    requests: Arc<dyn Queue>,
    input: Arc<dyn Bucket>,
    output: Arc<dyn Bucket>,
    /// Reply queues resolved so far, by name or URL.
    replies: Mutex<HashMap<String, Arc<dyn Queue>>>,
    /// Receives the request queue allows before it dead-letters a message (its redrive
    /// policy's `maxReceiveCount`, read from the queue at start): a failure that may pass
    /// is left for redelivery until this receive, which answers with an error instead, so
    /// the client hears of it. `u32::MAX` for a queue without a dead-letter queue.
    max_receives: u32,
}

/// Runs one worker loop per classifier until `shutdown` resolves, then lets each loop finish
/// its batch. Fails fast if the queues or buckets do not exist.
pub async fn serve(
    config: WorkerConfig,
    cloud: Cloud,
    classifiers: Vec<Classifier>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    ReceiveOptions {
        max_messages: config.batch_size,
        wait: config.wait,
        visibility_timeout: Some(config.visibility_timeout),
    }
    .validate()
    .context("invalid worker settings")?;
    let requests = cloud
        .queue(&config.request_queue)
        .await
        .context("request queue")?;
    let max_receives = requests
        .max_receive_count()
        .await
        .context("request queue's redrive policy")?
        .unwrap_or_else(|| {
            tracing::warn!(queue = %config.request_queue,
                "the request queue has no dead-letter queue: a failing request is retried for ever");
            u32::MAX
        });
    let shared = Arc::new(Shared {
        requests,
        max_receives,
        input: cloud
            .bucket(&config.input_bucket)
            .await
            .context("input bucket")?,
        output: cloud
            .bucket(&config.output_bucket)
            .await
            .context("output bucket")?,
        replies: Mutex::new(HashMap::new()),
        config,
        cloud,
    });
    // Cancelled when shutdown begins; each loop checks it between batches.
    let stop = CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    for (n, classifier) in classifiers.into_iter().enumerate() {
        loops.spawn(worker_loop(n, shared.clone(), classifier, stop.clone()));
    }
    shared
        .cloud
        .mark_ready(shared.config.instance_id.as_deref())
        .await
        .context("cannot tell the fleet this instance is ready")?;
    tracing::info!(worker = %shared.config.worker_id, loops = loops.len(), "serving");
    // A loop ends on its own only when its classifier was lost (inference panicked).
    let early = tokio::select! {
        () = shutdown => {
            tracing::info!("shutdown requested: finishing the batches in hand");
            None
        }
        Some(joined) = loops.join_next() => Some(joined),
    };
    stop.cancel();
    while let Some(joined) = loops.join_next().await {
        reraise(joined);
    }
    if let Some(joined) = early {
        reraise(joined);
        anyhow::bail!("a worker loop lost its classifier; stopped the others");
    }
    tracing::info!("all worker loops stopped");
    Ok(())
}

/// Re-raises a worker loop's panic so it is not lost.
fn reraise(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
