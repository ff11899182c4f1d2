//! Asynchronous requests: accepted at once with `202`, collected later by id.
//!
//! `POST /jobs` (or `POST /` with `Prefer: respond-async`) queues an upload exactly as
//! `POST /` does, but nobody waits for it: the result comes back on this web tier's reply
//! queue, [`crate::waiters::Waiters::complete`] records it with no waiter, and the app tier
//! has already written it to the output bucket as `results/<id>.json`, which is what makes
//! it durable: any web tier, after a restart too, answers `GET /results/{id}` from there.
//!
//! The decision a reader may question: each accepted request also gets a small record in
//! the output bucket, `results/<id>.job.json` ([`iras_protocol::job_key`]), one more write
//! per image. Without it a web tier that did not queue the request (or this one after a
//! restart) could not tell "accepted, still queued or running" (`202`) from "never seen"
//! (`404`) until the result exists. It is written *after* the request is queued: a failure
//! between the two costs a `503` for a request that still runs (a retry with the same
//! `Idempotency-Key` finds its result), never a record of a request that was not queued.
//!
//! Waiting without polling ([`wait_for`]) is event driven for the results this web tier
//! receives (the waiters' broadcast), with a check of the output bucket every
//! [`BUCKET_CHECK_INTERVAL`] for results delivered to another web tier, or to this one's
//! reply queue of before a restart.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use iras_cloud::{CloudError, OutgoingMessage};
use iras_protocol::{FileName, PlannedRequest, RequestId, ResponseMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::error::AppError;
use crate::waiters::{Lookup, Submitted};

/// How often a long-poll or a batch's event stream looks in the output bucket for results
/// this web tier does not receive itself.
pub const BUCKET_CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// What the output bucket keeps of an accepted asynchronous request
/// (`results/<id>.job.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The request.
    pub id: RequestId,
    /// The uploaded file's name.
    pub filename: FileName,
    /// The key layout its objects are written under.
    pub key_scheme: iras_protocol::KeyScheme,
    /// The batch it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<RequestId>,
    /// When it was accepted (unix ms).
    pub submitted_at_ms: u64,
}

/// Where an asynchronous request stands.
#[derive(Debug, Clone)]
pub enum JobState {
    /// Its result (a label or the app tier's error).
    Finished(Arc<ResponseMessage>),
    /// Accepted, no result yet: queued or being classified (the queue cannot say which).
    Pending,
    /// No web tier accepted it (or its records have expired).
    Unknown,
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Queues one checked image with nobody waiting for it, and records it as accepted.
pub(crate) async fn accept(
    state: &AppState,
    id: RequestId,
    file_name: FileName,
    bytes: Bytes,
    batch: Option<RequestId>,
) -> Result<(), AppError> {
    let key_scheme = state.config.key_scheme;
    state.waiters.accept(
        id,
        Submitted {
            file_name: file_name.clone(),
            key_scheme,
        },
    );
    if let Err(e) = enqueue(state, id, &file_name, &bytes).await {
        state.waiters.forget(id);
        return Err(AppError::Unavailable(e));
    }
    let record = JobRecord {
        id,
        filename: file_name,
        key_scheme,
        batch,
        submitted_at_ms: now_ms(),
    };
    let body = serde_json::to_vec(&record).map_err(|e| AppError::Internal(e.into()))?;
    state
        .output_bucket
        .put(&iras_protocol::job_key(id), body)
        .await
        .map_err(|e| AppError::Unavailable(e.into()))
}

/// Puts the request on the queue (after the image, when it needs a claim check).
pub(crate) async fn enqueue(
    state: &AppState,
    id: RequestId,
    file_name: &FileName,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let planned = iras_protocol::build_request(
        id,
        file_name,
        bytes,
        &state.reply_to,
        now_ms(),
        state.config.top_k,
        state.config.key_scheme,
        iras_protocol::MAX_MESSAGE_BYTES,
    )?;
    if let PlannedRequest::NeedsClaim { key, .. } = &planned {
        state.input_bucket.put(key, bytes.to_vec()).await?;
    }
    state
        .requests
        .send(OutgoingMessage::new(planned.body()))
        .await?;
    Ok(())
}

/// The record of an accepted request, if one was written.
pub async fn record(state: &AppState, id: RequestId) -> anyhow::Result<Option<JobRecord>> {
    let key = iras_protocol::job_key(id);
    match state.output_bucket.get(&key).await {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{key}: {e}"))?,
        )),
        Err(CloudError::ObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The result of `id` if it is known: from memory, else from the output bucket.
pub(crate) async fn finished(
    state: &AppState,
    id: RequestId,
) -> anyhow::Result<Option<Arc<ResponseMessage>>> {
    if let Lookup::Finished(result) = state.waiters.lookup(id) {
        return Ok(Some(result));
    }
    Ok(crate::results::stored(state.output_bucket.as_ref(), id)
        .await?
        .map(Arc::new))
}

/// Where `id` stands now.
pub async fn state_of(state: &AppState, id: RequestId) -> anyhow::Result<JobState> {
    if let Some(result) = finished(state, id).await? {
        return Ok(JobState::Finished(result));
    }
    if matches!(state.waiters.lookup(id), Lookup::Pending(_)) || record(state, id).await?.is_some()
    {
        return Ok(JobState::Pending);
    }
    Ok(JobState::Unknown)
}

/// [`state_of`], waiting up to `wait` (cut to `--result-wait-max-secs`) for a pending
/// request to finish. Returns early, pending, when the server starts to drain.
pub async fn wait_for(state: &AppState, id: RequestId, wait: Duration) -> anyhow::Result<JobState> {
    // Subscribed before the first look, so a result arriving in between is not missed.
    let mut announced = state.waiters.subscribe();
    let now = state_of(state, id).await?;
    let wait = wait.min(state.config.result_wait_max);
    if !matches!(now, JobState::Pending) || wait.is_zero() {
        return Ok(now);
    }
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    let mut check = tokio::time::interval(BUCKET_CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.reset(); // the first look was just taken
    let draining = state.live.draining();
    loop {
        let look = tokio::select! {
            () = draining.cancelled() => return Ok(JobState::Pending),
            () = &mut deadline => return Ok(JobState::Pending),
            announcement = announced.recv() => match announcement {
                Ok(result) if result.id == id => return Ok(JobState::Finished(result)),
                Ok(_) => false,
                // Announcements were missed: the result may be among them.
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return Ok(JobState::Pending),
            },
            _ = check.tick() => true,
        };
        if look && let Some(result) = finished(state, id).await? {
            return Ok(JobState::Finished(result));
        }
    }
}
