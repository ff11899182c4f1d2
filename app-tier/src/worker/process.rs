//! One request up to its answer: decode the message, fetch the image (inline or
//! claim-check), probe it against the limits and the decode budget, and classify it
//! within the processing cap. Its own module because this is where the session is used
//! and where each kind of failure is told apart (answer now, retry, or give up).

use std::time::Instant;

use iras_classifier::Classifier;
use iras_cloud::{CloudError, ReceivedMessage};
use iras_protocol::{ErrorKind, ImagePayload, Outcome, Prediction, RequestMessage, Timings};

use super::answer::respond;
use super::attempt::Attempt;
use super::{Shared, elapsed_ms, now_ms};

/// What is left to do for a message after classification.
pub(super) enum Step {
    /// Nothing: answered (`true`, may be deleted) or left for redelivery (`false`).
    Finished(bool),
    /// Store and answer (see [`finish`](super::answer::finish)).
    Finish(Box<Work>),
}

/// A classified request waiting to be stored and answered.
pub(super) struct Work {
    pub(super) request: RequestMessage,
    pub(super) bytes: Vec<u8>,
    pub(super) outcome: Outcome,
    pub(super) timings: Timings,
    /// The receive this is, for what a failure to store or answer costs.
    pub(super) attempt: Attempt,
}

/// Decodes, fetches and classifies one message. Returns the classifier (unless inference
/// panicked) and what is left to do.
pub(super) async fn classify_message(
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
