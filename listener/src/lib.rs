//! The iras response listener: long-polls the response queue and hands each result to the
//! web tier that waits for it.
//!
//! - [`run`] is the loop: receive up to 10 responses, hand each to a [`ResultSink`], delete
//!   the ones the sink took (delivered to a waiter, or recorded because nobody waits any
//!   more), leave the rest to come back after the visibility timeout.
//! - The web tier embeds the loop with its waiter map as the sink (the default). The
//!   `listener` binary runs it standalone, as the seed's split deployment did, with an
//!   [`HttpSink`] posting to the web tier's loopback-only endpoint with a shared [`Token`].
//!
//! The decision a reader may question: a response is deleted only *after* the sink took it,
//! so a web tier that is down or restarting loses nothing; the price is that a response can
//! arrive twice, which the sink treats as harmless (the second copy is just recorded).
//! Unreadable responses are never deleted here: they go to the response queue's
//! dead-letter queue after its receive limit, where someone can look at them.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use iras_cloud::{Queue, ReceiptHandle, ReceiveOptions};
use iras_protocol::ResponseMessage;
use iras_service::Backoff;

pub mod sink;
pub mod token;

pub use sink::{
    DELIVERY_PATH, Delivery, DeliveryError, DeliveryReply, HttpSink, REPLY_QUEUE_PATH,
    ReplyQueueAnswer, ReplyQueueReply, ResultSink,
};
pub use token::Token;

/// Longest pause between failed receives.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the listener polls; shared by the embedded and standalone modes.
#[derive(Debug, Clone, Args)]
pub struct ListenerOptions {
    /// Responses taken per receive (1–10).
    #[arg(long = "listener-batch-size", env = "IRAS_LISTENER_BATCH_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(1..=10))]
    pub batch_size: u8,
    /// Long-poll wait per receive, in seconds (SQS's maximum is 20).
    #[arg(long = "listener-wait-secs", env = "IRAS_LISTENER_WAIT_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait_secs: u64,
    /// How long a received response stays hidden, in seconds: if it could not be handed
    /// over (web tier down), it comes back after this long.
    #[arg(long = "listener-visibility-timeout-secs", env = "IRAS_LISTENER_VISIBILITY_TIMEOUT_SECS",
          default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=43_200))]
    pub visibility_timeout_secs: u64,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            batch_size: 10,
            wait_secs: 20,
            visibility_timeout_secs: 30,
        }
    }
}

impl ListenerOptions {
    fn receive_options(&self) -> ReceiveOptions {
        ReceiveOptions {
            max_messages: usize::from(self.batch_size),
            wait: Duration::from_secs(self.wait_secs),
            visibility_timeout: Some(Duration::from_secs(self.visibility_timeout_secs)),
        }
    }
}

/// Counts of what one [`run_once`] did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Handed to a waiting request.
    pub delivered: usize,
    /// Recorded with nobody waiting.
    pub recorded: usize,
    /// Left on the queue: unreadable, or the sink failed.
    pub left: usize,
}

/// Receives responses and hands them to `sink` until `shutdown` resolves. On shutdown a
/// waiting receive is abandoned (on SQS, anything it was about to return comes back after
/// the visibility timeout), but a batch already received is handed over and deleted first.
/// Receive errors are retried with capped backoff; only a missing queue ends the loop with
/// an error, because no retry can fix it.
pub async fn run(
    queue: Arc<dyn Queue>,
    sink: Arc<dyn ResultSink>,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(MAX_BACKOFF);
    tracing::info!("listener polling");
    loop {
        let received = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = queue.receive(options.receive_options()) => r,
        };
        match received {
            Ok(messages) => {
                backoff.reset();
                hand_over(queue.as_ref(), sink.as_ref(), messages).await;
            }
            Err(e @ iras_cloud::CloudError::QueueNotFound { .. }) => return Err(e.into()),
            Err(e) => {
                let pause = backoff.next_pause();
                tracing::warn!(error = %e, retry_in = ?pause, "receiving responses failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    tracing::info!("listener stopped");
    Ok(())
}

/// One receive, hand-over and delete.
pub async fn run_once(
    queue: &dyn Queue,
    sink: &dyn ResultSink,
    options: &ListenerOptions,
) -> iras_cloud::Result<BatchReport> {
    let messages = queue.receive(options.receive_options()).await?;
    Ok(hand_over(queue, sink, messages).await)
}

/// Hands each received response to `sink` and deletes the ones it took.
async fn hand_over(
    queue: &dyn Queue,
    sink: &dyn ResultSink,
    messages: Vec<iras_cloud::ReceivedMessage>,
) -> BatchReport {
    let mut report = BatchReport::default();
    let mut done: Vec<ReceiptHandle> = Vec::with_capacity(messages.len());
    for message in messages {
        let response = match ResponseMessage::decode(&message.body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(message_id = %message.message_id, receives = message.receive_count,
                    error = %e, "unreadable response left for the dead-letter queue");
                report.left += 1;
                continue;
            }
        };
        match sink.deliver(&response).await {
            Ok(Delivery::Delivered) => {
                tracing::debug!(request_id = %response.id, "result delivered");
                report.delivered += 1;
                done.push(message.receipt);
            }
            Ok(Delivery::Recorded) => {
                tracing::info!(request_id = %response.id, file_name = %response.file_name,
                    "result recorded: nobody waits for it (timed out, duplicate or unknown)");
                report.recorded += 1;
                done.push(message.receipt);
            }
            Err(e) => {
                tracing::warn!(request_id = %response.id, error = %e,
                    "result not handed over; left for redelivery");
                report.left += 1;
            }
        }
    }
    for chunk in iras_cloud::queue::batches(done) {
        match queue.delete_batch(chunk).await {
            Ok(results) => {
                for r in results {
                    if let Err(e) = r {
                        // Harmless: the response comes back and is recorded as a duplicate.
                        tracing::warn!(error = ?e, "deleting a handled response failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "deleting handled responses failed"),
        }
    }
    report
}

/// Command line of the standalone `listener` binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "listener",
    version = iras_cloud::version_with_backends!(),
    about = "iras listener: delivers results from the response queue to the web tier"
)]
pub struct ListenerArgs {
    /// Backend and state directory.
    #[command(flatten)]
    pub cloud: iras_cloud::CloudArgs,
    /// Queue and bucket names (for provisioning; the queue polled is the one the web tier
    /// names, its own reply queue or the response queue).
    #[command(flatten)]
    pub stack: iras_cloud::StackArgs,
    /// Queue and polling.
    #[command(flatten)]
    pub options: ListenerOptions,
    /// The web tier's internal endpoint (its `--internal-listen` address), loopback only.
    #[arg(
        long,
        env = "IRAS_LISTENER_DELIVER_TO",
        default_value = "http://127.0.0.1:8001"
    )]
    pub deliver_to: String,
    /// Shared secret the web tier expects (at least 32 bytes; give it through the
    /// environment, not the command line, so it stays out of `ps`).
    #[arg(long, env = "IRAS_LISTENER_TOKEN", hide_env_values = true)]
    pub token: Token,
    /// Loops polling side by side (more only helps with very high result rates).
    #[arg(long, env = "IRAS_LISTENER_LOOPS", default_value_t = NonZeroUsize::MIN)]
    pub loops: NonZeroUsize,
}

/// How often the standalone listener says it still waits for the web tier to answer.
const WAITING_NOTE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Asks the web tier which queue to poll until it says (it makes its reply queue at start,
/// so there is nothing to poll before it answers). Fails at once when the web tier refuses
/// the token, instead of dead-lettering every result later: the two units must be given
/// the same `IRAS_LISTENER_TOKEN`.
async fn ask_reply_queue(sink: &HttpSink) -> anyhow::Result<String> {
    let mut backoff = iras_service::Backoff::new(std::time::Duration::from_secs(5));
    let mut next_note = tokio::time::Instant::now() + WAITING_NOTE_EVERY;
    loop {
        match sink.ask_reply_queue().await {
            ReplyQueueAnswer::Named(queue) => {
                tracing::info!(url = sink.url(), %queue, "the web tier takes this listener's token");
                return Ok(queue);
            }
            ReplyQueueAnswer::Refused => anyhow::bail!(
                "the web tier at {} refuses this listener's token: give the web tier \
                 (--listener-token) and the listener (--token) the same \
                 IRAS_LISTENER_TOKEN, e.g. one line in /etc/iras/iras.env read by both units",
                sink.url()
            ),
            ReplyQueueAnswer::Unknown => {
                if tokio::time::Instant::now() >= next_note {
                    tracing::warn!(
                        url = sink.url(),
                        "the web tier does not answer yet: still asking"
                    );
                    next_note += WAITING_NOTE_EVERY;
                }
                tokio::time::sleep(backoff.next_pause()).await;
            }
        }
    }
}

/// Runs the standalone listener until `shutdown` resolves: asks the web tier for its reply
/// queue, polls it, and when the queue goes away (the web tier restarted and made a new
/// one) asks again.
pub async fn run_standalone(
    args: ListenerArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let http = HttpSink::new(&args.deliver_to, args.token.clone())?;
    let cloud = iras_cloud::Cloud::connect(&args.cloud).await?;
    args.stack.ensure(&cloud).await?;
    let sink: Arc<dyn ResultSink> = Arc::new(http.clone());
    tokio::pin!(shutdown);
    // Between rounds that found the queue gone: the web tier may still name it for a
    // moment while it restarts.
    let mut again = Backoff::new(std::time::Duration::from_secs(5));
    loop {
        let name = tokio::select! {
            () = &mut shutdown => return Ok(()),
            asked = ask_reply_queue(&http) => asked?,
        };
        let polled = match cloud.queue(&name).await {
            Ok(queue) => {
                again.reset();
                poll(&args, queue, sink.clone(), &mut shutdown).await
            }
            Err(iras_cloud::CloudError::QueueNotFound { .. }) => Polled::QueueGone,
            Err(e) => return Err(e.into()),
        };
        match polled {
            Polled::Stopped => return Ok(()),
            Polled::Failed(e) => return Err(e),
            Polled::QueueGone => {
                let pause = again.next_pause();
                tracing::info!(queue = %name, retry_in = ?pause,
                    "the reply queue is gone: asking the web tier again");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// How a round of polling one queue ended.
enum Polled {
    Stopped,
    QueueGone,
    Failed(anyhow::Error),
}

/// Runs `--loops` polling loops on `queue` until shutdown, or until one ends on its own.
async fn poll(
    args: &ListenerArgs,
    queue: Arc<dyn Queue>,
    sink: Arc<dyn ResultSink>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Polled {
    let stop = tokio_util::sync::CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..args.loops.get() {
        loops.spawn(run(
            queue.clone(),
            sink.clone(),
            args.options.clone(),
            stop.clone().cancelled_owned(),
        ));
    }
    let first = tokio::select! {
        () = shutdown.as_mut() => None,
        Some(first) = loops.join_next() => Some(first),
    };
    stop.cancel();
    let rest: anyhow::Result<()> = loops.join_all().await.into_iter().collect();
    let first = match first {
        None => return rest.map_or_else(Polled::Failed, |()| Polled::Stopped),
        Some(Ok(result)) => result,
        Some(Err(joined)) => Err(joined.into()),
    };
    // A loop ending on its own means an error no retry fixes; a missing queue is the one
    // a new question to the web tier does fix.
    match first.and(rest) {
        Ok(()) => Polled::Stopped,
        Err(e)
            if matches!(
                e.downcast_ref::<iras_cloud::CloudError>(),
                Some(iras_cloud::CloudError::QueueNotFound { .. })
            ) =>
        {
            Polled::QueueGone
        }
        Err(e) => Polled::Failed(e),
    }
}
