//! The reply path's loop: receive results from a reply queue, hand each to a
//! [`ResultSink`], delete the ones the sink took (delivered to a waiter, or recorded because
//! nobody waits any more), and leave the rest to come back after the visibility timeout.
//!
//! Two binaries run it: the web tier embeds it with its waiter map as the sink (the
//! default), and the standalone `listener` runs it with a sink that posts each result to
//! the web tier's loopback endpoint, as the seed's split deployment did. It is a crate of
//! its own so that neither binary depends on the other.
//!
//! The decision a reader may question: a response is deleted only *after* the sink took it,
//! so a web tier that is down or restarting loses nothing; the price is that a response can
//! arrive twice, which the sink treats as harmless (the second copy is just recorded).
//! Unreadable responses are never deleted here: they go to the reply queue's dead-letter
//! queue after its receive limit, where someone can look at them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use iras_cloud::{Queue, ReceiptHandle, ReceiveOptions};
use iras_protocol::ResponseMessage;
pub use iras_protocol::internal::Delivery;
use iras_service::Backoff;

mod sink;

pub use sink::{DeliveryError, ResultSink};

/// Longest pause between failed receives.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    receive: ReceiveOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(MAX_BACKOFF);
    tracing::info!("listener polling");
    loop {
        let received = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = queue.receive(receive) => r,
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
    receive: ReceiveOptions,
) -> iras_cloud::Result<BatchReport> {
    let messages = queue.receive(receive).await?;
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
