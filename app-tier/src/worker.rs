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

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use iras_classifier::Classifier;
use iras_cloud::{
    Bucket, Cloud, CloudError, Queue, ReceiptHandle, ReceiveOptions, ReceivedMessage,
};
use iras_protocol::{
    ErrorKind, ImagePayload, Outcome, Prediction, RequestMessage, ResponseMessage, Timings,
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Longest pause between failed receives (capped exponential backoff).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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

/// Most answered messages one loop stores and answers in the background while it already
/// classifies the next: enough to keep the session busy, few enough to bound memory.
const MAX_FINISHING: usize = 4;

/// One worker loop: a receiver task keeps the next batch ready (received while the current
/// image is classified), this task classifies, and storing and answering run in the
/// background so the session never waits on a bucket or a queue.
async fn worker_loop(
    n: usize,
    shared: Arc<Shared>,
    classifier: Classifier,
    stop: CancellationToken,
) {
    let heartbeat = Heartbeat::start(shared.clone());
    // Capacity = one batch: the receiver asks for the next batch only once the previous
    // one was taken, so a loop holds at most one batch beyond the image it works on.
    let (tx, mut rx) = tokio::sync::mpsc::channel(shared.config.batch_size);
    let receiver = tokio::spawn(receive_loop(
        n,
        shared.clone(),
        heartbeat.clone(),
        tx,
        stop.clone(),
    ));
    let mut classifier = Some(classifier);
    let mut finishing: tokio::task::JoinSet<(ReceiptHandle, bool)> = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(joined) = finishing.join_next(), if !finishing.is_empty() => {
                let mut done = Vec::new();
                collect(joined, &heartbeat, &mut done);
                while let Some(joined) = finishing.try_join_next() {
                    collect(joined, &heartbeat, &mut done);
                }
                delete(&shared, done).await;
            }
            message = rx.recv() => {
                let Some(message) = message else { break };
                let (back, step) = classify_message(&shared, classifier.take(), &message).await;
                classifier = back;
                match step {
                    Step::Finished(handled) => {
                        heartbeat.release(&message.receipt);
                        if handled {
                            delete(&shared, vec![message.receipt]).await;
                        }
                    }
                    Step::Finish(work) => {
                        if finishing.len() >= MAX_FINISHING {
                            let mut done = Vec::new();
                            if let Some(joined) = finishing.join_next().await {
                                collect(joined, &heartbeat, &mut done);
                            }
                            delete(&shared, done).await;
                        }
                        let shared = shared.clone();
                        finishing.spawn(async move {
                            let handled = finish(&shared, work).await;
                            (message.receipt, handled)
                        });
                    }
                }
                if classifier.is_none() {
                    tracing::error!(worker_loop = n, "classifier lost (inference panicked): loop stops");
                    break;
                }
            }
        }
    }
    // Stop receiving (the receiver also stops on shutdown); what it still held comes back
    // after its visibility timeout.
    drop(rx);
    let mut done = Vec::new();
    while let Some(joined) = finishing.join_next().await {
        collect(joined, &heartbeat, &mut done);
    }
    delete(&shared, done).await;
    heartbeat.stop();
    if let Err(e) = receiver.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Long-polls for the next batch whenever the worker has taken the previous one.
async fn receive_loop(
    n: usize,
    shared: Arc<Shared>,
    heartbeat: Heartbeat,
    tx: tokio::sync::mpsc::Sender<ReceivedMessage>,
    stop: CancellationToken,
) {
    let options = ReceiveOptions {
        max_messages: shared.config.batch_size,
        wait: shared.config.wait,
        visibility_timeout: Some(shared.config.visibility_timeout),
    };
    let mut backoff = iras_service::Backoff::new(MAX_BACKOFF);
    loop {
        let permits = tokio::select! {
            () = stop.cancelled() => break,
            permits = tx.reserve_many(options.max_messages) => match permits {
                Ok(permits) => permits,
                Err(_) => break, // the worker stopped
            },
        };
        let received = tokio::select! {
            () = stop.cancelled() => break,
            r = shared.requests.receive(options) => r,
        };
        match received {
            Ok(batch) => {
                backoff.reset();
                heartbeat.hold(&batch);
                for (message, permit) in batch.into_iter().zip(permits) {
                    permit.send(message);
                }
            }
            Err(e) => {
                let pause = backoff.next_pause();
                tracing::warn!(worker_loop = n, error = %e, retry_in = ?pause, "receive failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Takes a finished message out of the heartbeat and queues it for deletion if answered.
fn collect(
    joined: Result<(ReceiptHandle, bool), tokio::task::JoinError>,
    heartbeat: &Heartbeat,
    done: &mut Vec<ReceiptHandle>,
) {
    match joined {
        Ok((receipt, handled)) => {
            heartbeat.release(&receipt);
            if handled {
                done.push(receipt);
            }
        }
        // The message stays in the heartbeat and is answered again after a redelivery.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => tracing::error!(error = %e, "finishing task cancelled"),
    }
}

/// Deletes answered requests in batches; a receipt that fails only means the message comes
/// back and is answered again (idempotently).
async fn delete(shared: &Shared, receipts: Vec<ReceiptHandle>) {
    for chunk in iras_cloud::queue::batches(receipts) {
        match shared.requests.delete_batch(chunk).await {
            Ok(results) => {
                for failed in results.iter().filter_map(|r| r.as_ref().err()) {
                    tracing::warn!(error = %failed, "delete failed: the request will be answered again");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "delete batch failed: the requests will be answered again")
            }
        }
    }
}

/// What is left to do for a message after classification.
enum Step {
    /// Nothing: answered (`true`, may be deleted) or left for redelivery (`false`).
    Finished(bool),
    /// Store and answer (see [`finish`]).
    Finish(Box<Work>),
}

/// A classified request waiting to be stored and answered.
struct Work {
    request: RequestMessage,
    bytes: Vec<u8>,
    outcome: Outcome,
    timings: Timings,
    /// The receive this is, for what a failure to store or answer costs.
    attempt: Attempt,
}

/// One receive of a request, for deciding what a failure that may pass costs: a
/// redelivery, or on the queue's last receive an error answer (never silence until the
/// client's timeout, and a result by id for it to find).
#[derive(Debug, Clone, Copy)]
struct Attempt {
    receive_count: u32,
    queued_ms: u64,
    started: Instant,
}

impl Attempt {
    fn new(message: &ReceivedMessage, queued_ms: u64, started: Instant) -> Self {
        Self {
            receive_count: message.receive_count,
            queued_ms,
            started,
        }
    }

    /// Whether the queue dead-letters the message instead of delivering it again.
    fn is_last(&self, shared: &Shared) -> bool {
        self.receive_count >= shared.max_receives
    }

    /// After a failure that may pass (`doing` failed with `error`): leaves the message
    /// for redelivery (`false`), or on the last receive answers `request` with a `kind`
    /// error saying so (`true` once answered).
    async fn retry_or_give_up(
        &self,
        shared: &Shared,
        request: &RequestMessage,
        kind: ErrorKind,
        doing: &str,
        error: String,
    ) -> bool {
        let id = request.id;
        if !self.is_last(shared) {
            tracing::warn!(%id, receives = self.receive_count, %error,
                "cannot {doing} yet: will be redelivered");
            return false;
        }
        tracing::error!(%id, receives = self.receive_count, %error,
            "cannot {doing} on the last receive: answering with an error");
        let outcome = Outcome::Error {
            kind,
            message: format!(
                "gave up after {} attempts: could not {doing}: {error}",
                self.receive_count
            ),
        };
        let timings = Timings {
            queued_ms: self.queued_ms,
            total_ms: elapsed_ms(self.started),
            ..Timings::default()
        };
        respond(shared, request, outcome, timings).await
    }
}

/// Decodes, fetches and classifies one message. Returns the classifier (unless inference
/// panicked) and what is left to do.
async fn classify_message(
    shared: &Shared,
    classifier: Option<Classifier>,
    message: &ReceivedMessage,
) -> (Option<Classifier>, Step) {
    let request = match RequestMessage::decode(&message.body) {
        Ok(request) => request,
        Err(e) => {
            tracing::error!(message_id = %message.message_id, receives = message.receive_count, error = %e,
                "not a request message: left for the dead-letter queue");
            return (classifier, Step::Finished(false));
        }
    };
    let started = Instant::now();
    let queued_ms = now_ms().saturating_sub(request.submitted_at_ms);
    let attempt = Attempt::new(message, queued_ms, started);
    let bytes = match image_bytes(shared, &request).await {
        Ok(bytes) => bytes,
        Err(Failure::Permanent(kind, msg)) => {
            let timings = Timings {
                queued_ms,
                total_ms: elapsed_ms(started),
                ..Timings::default()
            };
            let answered = respond(
                shared,
                &request,
                Outcome::Error { kind, message: msg },
                timings,
            )
            .await;
            return (classifier, Step::Finished(answered));
        }
        Err(Failure::Transient(e)) => {
            let answered = attempt
                .retry_or_give_up(
                    shared,
                    &request,
                    ErrorKind::Unavailable,
                    "fetch the image",
                    e.to_string(),
                )
                .await;
            return (classifier, Step::Finished(answered));
        }
    };
    let Some(mut c) = classifier else {
        return (None, Step::Finished(false));
    };
    // The header first (on the blocking pool, as every decode step): an image over the
    // limits is answered without taking memory, and the rest wait for room in the budget.
    let limits = shared.config.limits;
    let probed = tokio::task::spawn_blocking(move || {
        let probe = iras_classifier::probe_image(&bytes, &limits);
        (bytes, probe)
    })
    .await;
    let (bytes, probe) = match probed {
        Ok(pair) => pair,
        Err(e) => {
            let answered = attempt
                .retry_or_give_up(
                    shared,
                    &request,
                    ErrorKind::Internal,
                    "check the image header",
                    e.to_string(),
                )
                .await;
            return (Some(c), Step::Finished(answered));
        }
    };
    let permit = match probe {
        Ok(probe) => match shared
            .config
            .decode_budget
            .acquire(probe.memory_bytes)
            .await
        {
            Ok(permit) => Some(permit),
            Err(e) => {
                let answered = attempt
                    .retry_or_give_up(
                        shared,
                        &request,
                        ErrorKind::Unavailable,
                        "find room to decode",
                        e.to_string(),
                    )
                    .await;
                return (Some(c), Step::Finished(answered));
            }
        },
        // `classify` reports the same error below, as for any bad input.
        Err(_) => None,
    };
    let top_k = usize::from(request.top_k.max(1));
    let inference = tokio::task::spawn_blocking(move || {
        let result = c.classify(&bytes, top_k);
        drop(permit);
        (c, bytes, result)
    });
    let cap = shared.config.max_processing;
    let joined = match tokio::time::timeout(cap, inference).await {
        Ok(joined) => joined,
        Err(_) => {
            // The session is stuck in the runtime and cannot be taken back: answer, delete,
            // and give the loop up (the process then ends for its supervisor to restart).
            tracing::error!(id = %request.id, cap_secs = cap.as_secs(),
                "inference ran past the processing cap: answering with an error, stopping this loop");
            let timings = Timings {
                queued_ms,
                total_ms: elapsed_ms(started),
                ..Timings::default()
            };
            let outcome = Outcome::Error {
                kind: ErrorKind::Internal,
                message: format!(
                    "classification did not finish within {} s and was given up",
                    cap.as_secs()
                ),
            };
            let answered = respond(shared, &request, outcome, timings).await;
            return (None, Step::Finished(answered));
        }
    };
    let (c, bytes, result) = match joined {
        Ok(pair) => pair,
        Err(e) => {
            let answered = attempt
                .retry_or_give_up(
                    shared,
                    &request,
                    ErrorKind::Internal,
                    "classify (inference panicked)",
                    e.to_string(),
                )
                .await;
            return (None, Step::Finished(answered));
        }
    };
    let mut timings = Timings {
        queued_ms,
        ..Timings::default()
    };

    let outcome = match result {
        Ok(classification) => {
            let stages = &classification.timings;
            timings.decode_ms = (stages.decode_us + stages.preprocess_us) / 1000;
            timings.inference_ms = stages.inference_us / 1000;
            Outcome::Label {
                label: classification.label.clone(),
                score: classification.score,
                top_k: classification
                    .top_k
                    .iter()
                    .map(|p| Prediction {
                        label: p.label.clone(),
                        index: p.index as u32,
                        score: p.score,
                    })
                    .collect(),
            }
        }
        Err(e) if e.is_bad_input() => Outcome::Error {
            kind: match &e {
                iras_classifier::Error::Image(image) if image.is_too_large() => {
                    ErrorKind::ImageTooLarge
                }
                _ => ErrorKind::UndecodableImage,
            },
            message: e.to_string(),
        },
        Err(e) => {
            let answered = attempt
                .retry_or_give_up(
                    shared,
                    &request,
                    ErrorKind::Internal,
                    "classify",
                    e.to_string(),
                )
                .await;
            return (Some(c), Step::Finished(answered));
        }
    };
    let work = Work {
        request,
        bytes,
        outcome,
        timings,
        attempt,
    };
    (Some(c), Step::Finish(Box::new(work)))
}

/// Stores the image (and the label) and sends the response. `true` when answered.
async fn finish(shared: &Shared, work: Box<Work>) -> bool {
    let Work {
        request,
        bytes,
        outcome,
        mut timings,
        attempt,
    } = *work;
    // Every image is kept, whatever became of it; the result only when there is a label.
    if let Err(e) = store(shared, &request, bytes, &outcome).await {
        let doing = "write to the buckets";
        return attempt
            .retry_or_give_up(
                shared,
                &request,
                ErrorKind::Unavailable,
                doing,
                e.to_string(),
            )
            .await;
    }
    timings.total_ms = elapsed_ms(attempt.started);
    respond(shared, &request, outcome, timings).await
}

enum Failure {
    /// The request can never succeed: answer with this error.
    Permanent(ErrorKind, String),
    /// May pass later: leave the message for redelivery.
    Transient(CloudError),
}

async fn image_bytes(shared: &Shared, request: &RequestMessage) -> Result<Vec<u8>, Failure> {
    match &request.image {
        ImagePayload::Inline { .. } => match request.image.decode_inline() {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(Failure::Permanent(
                ErrorKind::BadPayload,
                "no inline image".into(),
            )),
            Err(e) => Err(Failure::Permanent(e.error_kind(), e.to_string())),
        },
        ImagePayload::Claim { key } => match shared.input.get(key).await {
            Ok(bytes) => Ok(bytes),
            Err(CloudError::ObjectNotFound { .. }) => Err(Failure::Permanent(
                ErrorKind::MissingClaim,
                format!("claim-check object {key} is not in the input bucket"),
            )),
            Err(CloudError::InvalidKey { .. }) => Err(Failure::Permanent(
                ErrorKind::BadPayload,
                format!("claim-check key {key:?} is not a valid key"),
            )),
            Err(e) => Err(Failure::Transient(e)),
        },
    }
}

async fn store(
    shared: &Shared,
    request: &RequestMessage,
    bytes: Vec<u8>,
    outcome: &Outcome,
) -> Result<(), CloudError> {
    let input_key = request.input_key();
    let already_there = matches!(&request.image, ImagePayload::Claim { key } if *key == input_key);
    // The two writes are independent: run them side by side.
    let image = async {
        if already_there {
            Ok(())
        } else {
            shared.input.put(&input_key, bytes).await
        }
    };
    let label = async {
        match outcome {
            Outcome::Label { .. }
                if iras_protocol::is_reserved_output_key(
                    request.key_scheme,
                    &request.file_name,
                ) =>
            {
                tracing::warn!(id = %request.id, file = %request.file_name,
                    "output key `results` is reserved for the id-keyed results: no (stem, label) object");
                Ok(())
            }
            Outcome::Label { label, .. } => {
                let value = request.output_value(label).into_bytes();
                shared.output.put(&request.output_key(), value).await
            }
            Outcome::Error { .. } => Ok(()),
        }
    };
    let (image, label) = tokio::join!(image, label);
    image.and(label)
}

/// Sends the response to the request's reply-to queue. `false` when it could not be sent
/// (the request is then redelivered and answered again).
async fn respond(
    shared: &Shared,
    request: &RequestMessage,
    outcome: Outcome,
    timings: Timings,
) -> bool {
    // An answer that gives up (an outage past the last receive, the processing cap) goes
    // out even when it cannot also be kept by id: the waiting client hears of it either way.
    let giving_up = matches!(
        &outcome,
        Outcome::Error {
            kind: ErrorKind::Unavailable | ErrorKind::Internal,
            ..
        }
    );
    let response = ResponseMessage::new(
        request.id,
        request.file_name.clone(),
        outcome,
        shared.config.worker_id.clone(),
        timings,
    );
    let body = match response.encode() {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(id = %request.id, error = %e, "cannot encode the response");
            return false;
        }
    };
    // The id-keyed result first: once a client has its answer, `GET /results/{id}` finds
    // it too, on any web tier and after a restart. A redelivery overwrites it with an
    // equivalent one.
    if let Err(e) = shared
        .output
        .put(&request.result_key(), body.clone().into_bytes())
        .await
    {
        if !giving_up {
            tracing::warn!(id = %request.id, error = %e, "cannot write the result by id: will be redelivered");
            return false;
        }
        tracing::warn!(id = %request.id, error = %e, "cannot write the error result by id: sending it anyway");
    }
    let sent = match reply_queue(shared, &request.reply_to).await {
        Ok(queue) => queue.send(iras_cloud::OutgoingMessage::new(body)).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(_) => {
            tracing::info!(id = %request.id, file = %request.file_name, "answered");
            true
        }
        // The web tier that asked made that queue for itself and deleted it at its stop:
        // nobody is there to wait. The result is in the output bucket (above), where
        // `GET /results/{id}` finds it, so the request is done.
        Err(CloudError::QueueNotFound { .. }) => {
            shared.replies.lock().await.remove(&request.reply_to);
            tracing::info!(id = %request.id, reply_to = %request.reply_to,
                "the reply queue is gone (its web tier stopped): the result is kept by id only");
            true
        }
        Err(e) => {
            tracing::warn!(id = %request.id, reply_to = %request.reply_to, error = %e,
                "cannot send the response: will be redelivered");
            false
        }
    }
}

async fn reply_queue(shared: &Shared, name: &str) -> Result<Arc<dyn Queue>, CloudError> {
    let mut replies = shared.replies.lock().await;
    if let Some(q) = replies.get(name) {
        return Ok(q.clone());
    }
    let q = shared.cloud.queue(name).await?;
    replies.insert(name.to_owned(), q.clone());
    Ok(q)
}

/// Keeps the messages a loop holds hidden, by extending their visibility timeout every
/// third of the timeout until each is released, or until it has been held for
/// `max_processing`: then it is let go, to come back to the queue. Lives as long as the
/// loop; cheap to clone.
#[derive(Clone)]
struct Heartbeat {
    /// Receipts in hand, with when each was taken; a short critical section, never held
    /// across `.await`.
    in_hand: Arc<std::sync::Mutex<Vec<(ReceiptHandle, Instant)>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

/// How often the heartbeat renews: a third of the visibility timeout, so one slow or lost
/// renewal still leaves a second before the message shows again.
pub fn heartbeat_period(visibility_timeout: Duration) -> Duration {
    (visibility_timeout / 3).max(Duration::from_millis(100))
}

/// The receipts to renew now: those held for less than `cap`.
fn to_renew(
    in_hand: &[(ReceiptHandle, Instant)],
    now: Instant,
    cap: Duration,
) -> Vec<ReceiptHandle> {
    in_hand
        .iter()
        .filter(|(_, since)| now.saturating_duration_since(*since) < cap)
        .map(|(r, _)| r.clone())
        .collect()
}

impl Heartbeat {
    fn start(shared: Arc<Shared>) -> Self {
        let in_hand = Arc::new(std::sync::Mutex::new(Vec::<(ReceiptHandle, Instant)>::new()));
        let held = in_hand.clone();
        let timeout = shared.config.visibility_timeout;
        let cap = shared.config.max_processing;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat_period(timeout));
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                // A poisoned lock only means another task panicked mid-`retain`; the list
                // is still a valid set of receipts.
                let receipts = {
                    let held = held.lock().unwrap_or_else(|p| p.into_inner());
                    let renew = to_renew(&held, Instant::now(), cap);
                    if renew.len() < held.len() {
                        tracing::warn!(
                            overdue = held.len() - renew.len(),
                            cap_secs = cap.as_secs(),
                            "held past the processing cap: no longer renewed, back to the queue"
                        );
                    }
                    renew
                };
                for r in receipts {
                    if let Err(e) = shared.requests.change_visibility(&r, timeout).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
        });
        Self {
            in_hand,
            task: Arc::new(task),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ReceiptHandle, Instant)>> {
        self.in_hand.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, batch: &[ReceivedMessage]) {
        let now = Instant::now();
        self.lock()
            .extend(batch.iter().map(|m| (m.receipt.clone(), now)));
    }

    fn release(&self, receipt: &ReceiptHandle) {
        self.lock().retain(|(r, _)| r != receipt);
    }

    fn stop(&self) {
        self.task.abort();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_renews_a_third_of_the_timeout_and_lets_go_at_the_cap() {
        assert_eq!(heartbeat_period(Duration::from_secs(10)).as_millis(), 3333);
        assert_eq!(
            heartbeat_period(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
        let now = Instant::now();
        let receipt = |s: &str| ReceiptHandle(s.to_owned());
        let held = vec![
            (receipt("young"), now - Duration::from_secs(5)),
            (receipt("old"), now - Duration::from_secs(121)),
        ];
        assert_eq!(
            to_renew(&held, now, Duration::from_secs(120)),
            vec![receipt("young")]
        );
    }
}
