//! Operator tools for a dead-letter queue, built only on the [`Queue`] trait so both
//! backends share them: look at what is there ([`scan`]), put messages back on their source
//! queue ([`redrive`]) and delete them for good ([`purge`]).
//!
//! The decision a reader may question: redrive is receive, send to the source queue, then
//! delete from the dead-letter queue, on SQS too, rather than SQS's
//! `StartMessageMoveTask`. The local backend needs this form anyway, moto (the AWS
//! stand-in the tests run against) does not implement the move task, and one code path
//! keeps the two backends alike. It is at-least-once like everything else: a message is
//! deleted from the dead-letter queue only after the send succeeded, so a failure between
//! the two leaves a duplicate on the source queue (harmless: the app tier is idempotent),
//! never a loss. A redriven message is a new message: new id, receive count 0, sent now.
//!
//! Looking at a queue means receiving: [`scan`] holds what it returns invisible for a
//! while and [`release`] makes it visible again at once. Each look adds one to the
//! messages' receive counts; a dead-letter queue has no redrive policy of its own, so that
//! only changes the figure shown. Every loop here is bounded: by a message limit, by a
//! deadline, and by two empty receives in a row (SQS may answer one receive empty while
//! messages remain).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::queue::{MAX_BATCH_ENTRIES, OutgoingMessage, Queue, ReceiveOptions, ReceivedMessage};

/// Long-poll wait of each receive while scanning.
const SCAN_WAIT: Duration = Duration::from_secs(1);
/// Empty receives in a row after which a queue counts as drained.
const EMPTY_RECEIVES_TO_STOP: u32 = 2;

/// How long scanned messages stay hidden before they are visible again on their own (if
/// the tool dies before it releases them).
pub const DEFAULT_HOLD: Duration = Duration::from_secs(60);
/// Longest one scan, redrive or purge runs.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Distinct messages, in the order received, held invisible until released.
    pub messages: Vec<ReceivedMessage>,
    /// Whether the queue ran dry (two empty receives) before the limit or the deadline.
    pub complete: bool,
}

/// Receives up to `limit` distinct messages, holding them invisible for `hold`. Call
/// [`release`] with the ones not acted upon.
pub async fn scan(
    queue: &dyn Queue,
    limit: usize,
    hold: Duration,
    deadline: Duration,
) -> Result<Scan> {
    let until = Instant::now() + deadline;
    let mut seen = HashSet::new();
    let mut out = Scan::default();
    let mut empty = 0;
    while out.messages.len() < limit && Instant::now() < until {
        let batch = queue
            .receive(ReceiveOptions {
                max_messages: (limit - out.messages.len()).min(MAX_BATCH_ENTRIES),
                wait: SCAN_WAIT,
                visibility_timeout: Some(hold),
            })
            .await?;
        if batch.is_empty() {
            empty += 1;
            if empty >= EMPTY_RECEIVES_TO_STOP {
                out.complete = true;
                break;
            }
            continue;
        }
        empty = 0;
        for m in batch {
            // A message whose hold ran out mid-scan comes back: keep its newest receipt.
            if seen.insert(m.message_id.clone()) {
                out.messages.push(m);
            } else if let Some(old) = out
                .messages
                .iter_mut()
                .find(|o| o.message_id == m.message_id)
            {
                *old = m;
            }
        }
    }
    Ok(out)
}

/// Makes held messages visible again at once. Best effort: a receipt that no longer works
/// (the hold ran out) means the message is visible already.
pub async fn release(queue: &dyn Queue, messages: &[ReceivedMessage]) {
    for m in messages {
        if let Err(e) = queue.change_visibility(&m.receipt, Duration::ZERO).await {
            tracing::debug!(message_id = %m.message_id, error = %e, "release failed (visible after its hold)");
        }
    }
}

/// Which dead-lettered messages to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every message (at most as many as the queue held when the run began, so messages
    /// that fail again and come back during the run are not cycled).
    All,
    /// These message ids.
    Ids(Vec<String>),
}

/// What a redrive or purge did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Message ids acted upon (redriven or deleted).
    pub done: Vec<String>,
    /// Requested ids not found in the queue.
    pub missing: Vec<String>,
    /// Message ids whose send or delete failed, with the reason (left in the dead-letter
    /// queue, or for a failed delete after a send: on both queues).
    pub failed: Vec<(String, String)>,
}

/// Moves the selected messages from `dead_letter` back to `source` (see the module docs).
pub async fn redrive(
    dead_letter: &dyn Queue,
    source: &dyn Queue,
    selection: &Selection,
    deadline: Duration,
) -> Result<Moved> {
    act(dead_letter, Some(source), selection, deadline).await
}

/// Deletes the selected messages from `dead_letter` for good.
pub async fn purge(
    dead_letter: &dyn Queue,
    selection: &Selection,
    deadline: Duration,
) -> Result<Moved> {
    act(dead_letter, None, selection, deadline).await
}

async fn act(
    dead_letter: &dyn Queue,
    source: Option<&dyn Queue>,
    selection: &Selection,
    deadline: Duration,
) -> Result<Moved> {
    let started = Instant::now();
    let mut moved = Moved::default();
    let mut wanted: HashSet<&str> = match selection {
        Selection::All => HashSet::new(),
        Selection::Ids(ids) => ids.iter().map(String::as_str).collect(),
    };
    // Bound "all" by what is there now; bound ids by finding them all.
    let mut budget = match selection {
        Selection::All => usize::try_from(dead_letter.depth().await?.total()).unwrap_or(usize::MAX),
        Selection::Ids(_) => usize::MAX,
    };
    let mut held_back = Vec::new();
    while budget > 0 && (matches!(selection, Selection::All) || !wanted.is_empty()) {
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        // Held for the rest of the run, so a message passed over is not met again.
        let hold = (left + SCAN_WAIT).min(crate::queue::MAX_VISIBILITY_TIMEOUT);
        let scan = scan(dead_letter, budget.min(MAX_BATCH_ENTRIES), hold, left).await?;
        let drained = scan.complete && scan.messages.is_empty();
        for m in scan.messages {
            let chosen = match selection {
                Selection::All => true,
                Selection::Ids(_) => wanted.remove(m.message_id.as_str()),
            };
            if !chosen {
                // Not asked for: hidden until the end so the next scans move on past it.
                held_back.push(m);
                continue;
            }
            budget = budget.saturating_sub(1);
            match move_one(&m, source, dead_letter).await {
                Ok(()) => moved.done.push(m.message_id),
                Err(reason) => moved.failed.push((m.message_id.clone(), reason)),
            }
        }
        if drained {
            break;
        }
    }
    release(dead_letter, &held_back).await;
    if let Selection::Ids(ids) = selection {
        moved.missing = ids
            .iter()
            .filter(|id| wanted.contains(id.as_str()))
            .cloned()
            .collect();
    }
    Ok(moved)
}

/// Sends `m` to `source` (unless purging), then deletes it from the dead-letter queue.
async fn move_one(
    m: &ReceivedMessage,
    source: Option<&dyn Queue>,
    dead_letter: &dyn Queue,
) -> std::result::Result<(), String> {
    if let Some(source) = source {
        source
            .send(OutgoingMessage::new(m.body.clone()))
            .await
            .map_err(|e| format!("send to {}: {e}", source.name()))?;
    }
    dead_letter
        .delete(&m.receipt)
        .await
        .map_err(|e| format!("delete from {}: {e}", dead_letter.name()))
}
