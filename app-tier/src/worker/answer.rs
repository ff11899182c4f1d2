//! The end of a request: store the image and the `(stem, label)` result, write the
//! response by id and send it to the reply-to queue, then delete the request in batches.
//! Its own module because these writes decide when a request counts as answered (and so
//! may be deleted), which is the worker's at-least-once contract.

use std::sync::Arc;

use iras_cloud::{CloudError, Queue, ReceiptHandle};
use iras_protocol::{ErrorKind, ImagePayload, Outcome, RequestMessage, ResponseMessage, Timings};

use super::process::Work;
use super::{Shared, elapsed_ms};

/// Deletes answered requests in batches; a receipt that fails only means the message comes
/// back and is answered again (idempotently).
pub(super) async fn delete(shared: &Shared, receipts: Vec<ReceiptHandle>) {
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

/// Stores the image (and the label) and sends the response. `true` when answered.
pub(super) async fn finish(shared: &Shared, work: Box<Work>) -> bool {
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
pub(super) async fn respond(
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
