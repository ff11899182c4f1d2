//! The batch calls' bookkeeping: each entry's index is its SQS entry `Id`, results go
//! back into input order by that id, and a send is cut into calls of at most ten entries
//! and 256 KiB of bodies. Its own module because send and delete share this bookkeeping,
//! and its pure parts are tested without any SQS endpoint.

use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchRequestEntry};

use super::{SERVICE, SqsQueue};
use crate::aws::{Failure, ceil_secs, malformed};
use crate::error::Result;
use crate::queue::{BatchEntryError, EntryResult, MAX_MESSAGE_BYTES, OutgoingMessage};

/// Most bytes of message bodies one `SendMessageBatch` may carry (SQS counts the whole
/// request payload against the per-message limit).
const MAX_BATCH_PAYLOAD_BYTES: usize = MAX_MESSAGE_BYTES;

impl SqsQueue {
    /// One `SendMessageBatch` of `(index, message)`; results land in `out[index]`.
    pub(super) async fn send_chunk(
        &self,
        chunk: Vec<(usize, OutgoingMessage)>,
        out: &mut [Option<EntryResult<String>>],
    ) -> Result<()> {
        let entries = chunk
            .iter()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .delay_seconds(ceil_secs(m.delay))
                    .build()
                    .map_err(|e| malformed(SERVICE, "SendMessageBatch", &e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.error("SendMessageBatch", Failure::of(&e)))?;
        for ok in output.successful() {
            if let Some(slot) = slot_for(out, ok.id()) {
                *slot = Some(Ok(ok.message_id().to_owned()));
            }
        }
        for failed in output.failed() {
            if let Some(slot) = slot_for(out, failed.id()) {
                *slot = Some(Err(entry_error(failed)));
            }
        }
        Ok(())
    }
}

/// The result slot for a batch entry id (the index we gave it).
pub(super) fn slot_for<'a, T>(out: &'a mut [Option<T>], id: &str) -> Option<&'a mut Option<T>> {
    id.parse::<usize>().ok().and_then(|i| out.get_mut(i))
}

pub(super) fn entry_error(failed: &BatchResultErrorEntry) -> BatchEntryError {
    BatchEntryError {
        code: failed.code().to_owned(),
        message: failed.message().unwrap_or_default().to_owned(),
        sender_fault: failed.sender_fault(),
    }
}

pub(super) fn missing_entry_error() -> BatchEntryError {
    BatchEntryError {
        code: "MissingResult".into(),
        message: "SQS reported neither success nor failure for this entry".into(),
        sender_fault: false,
    }
}

/// Groups indexed messages into `SendMessageBatch` calls: at most ten entries and at most
/// [`MAX_BATCH_PAYLOAD_BYTES`] of bodies each, order kept.
pub(super) fn payload_chunks(
    messages: Vec<(usize, OutgoingMessage)>,
) -> Vec<Vec<(usize, OutgoingMessage)>> {
    let mut chunks: Vec<Vec<(usize, OutgoingMessage)>> = Vec::new();
    let mut bytes = 0;
    for (i, m) in messages {
        let len = m.body.len();
        let fits = chunks.last().is_some_and(|c| {
            c.len() < crate::queue::MAX_BATCH_ENTRIES && bytes + len <= MAX_BATCH_PAYLOAD_BYTES
        });
        if !fits {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push((i, m));
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_payloads_are_split_by_count_and_bytes() {
        let m = |len: usize| OutgoingMessage::new("x".repeat(len));
        // Ten small messages: one call.
        let small: Vec<_> = (0..10).map(|i| (i, m(10))).collect();
        assert_eq!(payload_chunks(small).len(), 1);
        // Ten messages of 100 KiB: two per call, order kept.
        let big: Vec<_> = (0..10).map(|i| (i, m(100 * 1024))).collect();
        let chunks = payload_chunks(big);
        assert_eq!(chunks.len(), 5);
        let order: Vec<usize> = chunks.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(|(_, m)| m.body.len()).sum();
            assert!(bytes <= MAX_BATCH_PAYLOAD_BYTES);
        }
        // One message at the limit fits alone.
        assert_eq!(payload_chunks(vec![(0, m(MAX_MESSAGE_BYTES))]).len(), 1);
        assert!(payload_chunks(Vec::new()).is_empty());
    }

    #[test]
    fn batch_slots_follow_entry_ids() {
        let mut out: Vec<Option<u8>> = vec![None; 3];
        *slot_for(&mut out, "2").unwrap() = Some(7);
        assert!(slot_for(&mut out, "3").is_none());
        assert!(slot_for(&mut out, "x").is_none());
        assert_eq!(out, vec![None, None, Some(7)]);
    }
}
