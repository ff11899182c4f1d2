//! The queue interface: what the tiers need from SQS, and nothing more.
//!
//! Delivery is at-least-once. A received message stays invisible for its visibility
//! timeout and comes back unless it is deleted with its receipt handle; every receive
//! increments its receive count, and a queue with a dead-letter queue moves a message there
//! once the count passes the limit. Batch calls report per-entry results, because a batch
//! can partly fail without the call failing.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{CloudError, Result};

/// Most messages one receive may return, and most entries one batch call may carry (SQS's limit).
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Longest long-poll wait one receive may ask for (SQS's limit).
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Longest visibility timeout (SQS's limit: 12 hours).
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Largest message body either backend accepts (SQS's classic 256 KiB limit).
pub const MAX_MESSAGE_BYTES: usize = 262_144;
/// Longest delivery delay (SQS's limit: 15 minutes).
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// An opaque token that identifies one *receive* of a message; needed to delete it or to
/// change its visibility. A later receive of the same message gets a new handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReceiptHandle(pub String);

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The body (UTF-8 text; JSON in this project).
    pub body: String,
    /// Delay before the message becomes visible (0 = now, at most [`MAX_DELAY`]).
    pub delay: Duration,
}

impl OutgoingMessage {
    /// A message visible at once.
    pub fn new(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// Checks the body size and delay against SQS's limits (enforced on both backends),
    /// before anything is sent to `queue`.
    pub fn validate(&self, queue: &str) -> Result<()> {
        if self.body.is_empty() {
            return Err(CloudError::InvalidArgument(format!(
                "message for queue {queue} is empty (SQS needs at least one character)"
            )));
        }
        // Bodies are mostly base64 and JSON: check plain ASCII bytes first, and walk the
        // characters only when something else is there.
        let plain_ascii = self
            .body
            .bytes()
            .all(|b| (0x20..0x80).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'));
        if !plain_ascii && let Some(c) = self.body.chars().find(|&c| !is_sqs_char(c)) {
            return Err(CloudError::InvalidArgument(format!(
                "message for queue {queue} contains U+{:04X}, which SQS does not accept",
                u32::from(c)
            )));
        }
        if self.body.len() > MAX_MESSAGE_BYTES {
            return Err(CloudError::MessageTooLarge {
                queue: queue.to_owned(),
                size_bytes: self.body.len(),
                limit_bytes: MAX_MESSAGE_BYTES,
            });
        }
        if self.delay > MAX_DELAY {
            return Err(CloudError::InvalidArgument(format!(
                "delay must be at most 15 minutes, got {:?}",
                self.delay
            )));
        }
        Ok(())
    }
}

/// The characters SQS allows in a message body: `#x9 | #xA | #xD | #x20–#xD7FF |
/// #xE000–#xFFFD | #x10000–#x10FFFF` (Rust `char`s are never surrogates).
fn is_sqs_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The id the queue gave the message when it was sent (stable across receives).
    pub message_id: String,
    /// The body as sent.
    pub body: String,
    /// The handle for this receive.
    pub receipt: ReceiptHandle,
    /// How many times the message has been received, this time included (starts at 1).
    pub receive_count: u32,
    /// When the message was first sent, in milliseconds since the Unix epoch
    /// (`SentTimestamp`); a dead-lettered message keeps the time it was sent to its
    /// source queue. 0 if the service did not say.
    pub sent_at_ms: u64,
}

/// How to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Most messages to return, 1..=[`MAX_BATCH_ENTRIES`].
    pub max_messages: usize,
    /// How long to wait for a first message when none is visible (long poll), at most
    /// [`MAX_WAIT`]. Zero returns at once.
    pub wait: Duration,
    /// How long the returned messages stay invisible to other consumers. `None` uses the
    /// queue's default. Must cover the time to process the *whole* batch.
    pub visibility_timeout: Option<Duration>,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self {
            max_messages: MAX_BATCH_ENTRIES,
            wait: MAX_WAIT,
            visibility_timeout: None,
        }
    }
}

impl ReceiveOptions {
    /// Checks the limits shared by both backends.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_BATCH_ENTRIES).contains(&self.max_messages) {
            return Err(CloudError::InvalidArgument(format!(
                "max_messages must be 1..={MAX_BATCH_ENTRIES}, got {}",
                self.max_messages
            )));
        }
        if self.wait > MAX_WAIT {
            return Err(CloudError::InvalidArgument(format!(
                "long-poll wait must be at most {} s, got {:?}",
                MAX_WAIT.as_secs(),
                self.wait
            )));
        }
        if let Some(v) = self.visibility_timeout {
            validate_visibility(v)?;
        }
        Ok(())
    }
}

/// Checks a visibility timeout against [`MAX_VISIBILITY_TIMEOUT`].
pub fn validate_visibility(timeout: Duration) -> Result<()> {
    if timeout > MAX_VISIBILITY_TIMEOUT {
        return Err(CloudError::InvalidArgument(format!(
            "visibility timeout must be at most 12 h, got {timeout:?}"
        )));
    }
    Ok(())
}

/// How many messages a queue holds, by state. The scaler's input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// Ready to be received (`ApproximateNumberOfMessages`).
    pub visible: u64,
    /// Received and not yet deleted or expired (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: u64,
    /// Sent with a delay that has not passed (`ApproximateNumberOfMessagesDelayed`).
    pub delayed: u64,
}

impl QueueDepth {
    /// visible + in flight + delayed: the seed's "queue size".
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// The result of one entry of a batch call.
pub type EntryResult<T> = std::result::Result<T, BatchEntryError>;

/// Why one entry of a batch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BatchEntryError {
    /// A short machine-readable code (`ReceiptHandleIsInvalid`, `MessageTooLong`, …).
    pub code: String,
    /// What the service said.
    pub message: String,
    /// Whether the entry failed through the caller's fault (bad receipt, too large) rather
    /// than the service's (may be retried).
    pub sender_fault: bool,
}

/// One queue. Cheap to share as `Arc<dyn Queue>`.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// The queue's name (the last segment of its URL on SQS).
    fn name(&self) -> &str;

    /// Sends one message; returns its message id.
    async fn send(&self, message: OutgoingMessage) -> Result<String>;

    /// Sends up to [`MAX_BATCH_ENTRIES`] messages in one call; one result per entry, in order.
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<EntryResult<String>>>;

    /// Receives up to `options.max_messages` messages, long-polling up to `options.wait` for
    /// the first one. Returns an empty vector when the wait ends with nothing visible.
    async fn receive(&self, options: ReceiveOptions) -> Result<Vec<ReceivedMessage>>;

    /// Deletes a received message. A receipt from an earlier receive of a message that was
    /// received again since is refused ([`CloudError::InvalidReceipt`]) locally and may be
    /// refused by SQS; deleting twice with the same receipt may succeed on SQS. Callers
    /// must rely on neither: at-least-once delivery makes a duplicate harmless anyway.
    async fn delete(&self, receipt: &ReceiptHandle) -> Result<()>;

    /// Deletes up to [`MAX_BATCH_ENTRIES`] messages; one result per entry, in order.
    async fn delete_batch(&self, receipts: Vec<ReceiptHandle>) -> Result<Vec<EntryResult<()>>>;

    /// Sets how long a received message stays invisible, counted from now (a heartbeat for
    /// long work; zero makes it visible at once).
    async fn change_visibility(&self, receipt: &ReceiptHandle, timeout: Duration) -> Result<()>;

    /// The number of messages by state.
    async fn depth(&self) -> Result<QueueDepth>;

    /// How many receives the queue allows a message before it moves it to its dead-letter
    /// queue (its redrive policy's `maxReceiveCount`); `None` without one.
    async fn max_receive_count(&self) -> Result<Option<u32>>;
}

/// Checks a batch's size before it is sent.
pub fn validate_batch_len(len: usize) -> Result<()> {
    if !(1..=MAX_BATCH_ENTRIES).contains(&len) {
        return Err(CloudError::InvalidArgument(format!(
            "a batch must have 1..={MAX_BATCH_ENTRIES} entries, got {len}"
        )));
    }
    Ok(())
}

/// Splits items into chunks a batch call accepts (at most [`MAX_BATCH_ENTRIES`] each),
/// keeping their order.
pub fn batches<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(items.len().div_ceil(MAX_BATCH_ENTRIES));
    let mut iter = items.into_iter().peekable();
    while iter.peek().is_some() {
        out.push(iter.by_ref().take(MAX_BATCH_ENTRIES).collect());
    }
    out
}

/// The queue name in an SQS URL: its last path segment.
pub fn name_from_url(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let path = rest.split_once('/')?.1;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
}

/// The name of a queue given by name or by SQS URL.
pub fn queue_name(name_or_url: &str) -> &str {
    name_from_url(name_or_url).unwrap_or(name_or_url)
}

/// Checks a queue name against SQS's rules (which the local backend enforces too, so a
/// stack that works locally also works on AWS).
pub fn validate_queue_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(CloudError::InvalidQueueName {
            name: name.to_owned(),
            reason,
        })
    };
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if base.is_empty() || name.len() > 80 {
        return invalid("must be 1 to 80 characters");
    }
    if !base
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return invalid("only ASCII letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_sqs_rules() {
        assert!(validate_queue_name("iras-requests").is_ok());
        assert!(validate_queue_name("a_b-1.fifo").is_ok());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("has space").is_err());
        assert!(validate_queue_name("../etc").is_err());
        assert!(validate_queue_name(&"x".repeat(81)).is_err());
    }

    #[test]
    fn message_bodies_follow_sqs_rules() {
        let ok = |body: &str| OutgoingMessage::new(body).validate("q").is_ok();
        assert!(ok("{\"json\": \"é✓\t\n\"}"));
        assert!(ok("\u{10FFFF}"));
        assert!(!ok(""));
        assert!(!ok("nul\0byte"));
        assert!(!ok("bell\u{7}"));
        assert!(!ok("\u{FFFE}"));
    }

    #[test]
    fn receive_options_are_checked() {
        let ok = ReceiveOptions::default();
        assert!(ok.validate().is_ok());
        assert!(
            ReceiveOptions {
                max_messages: 0,
                ..ok
            }
            .validate()
            .is_err()
        );
        assert!(
            ReceiveOptions {
                max_messages: 11,
                ..ok
            }
            .validate()
            .is_err()
        );
        assert!(
            ReceiveOptions {
                wait: Duration::from_secs(21),
                ..ok
            }
            .validate()
            .is_err()
        );
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The delete/send chunker: every chunk is within the batch limit, none is empty,
        /// and concatenating them gives back the input in order.
        #[test]
        fn batches_never_exceed_the_limit_nor_reorder(items in proptest::collection::vec(any::<u32>(), 0..200)) {
            let chunks = batches(items.clone());
            prop_assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= MAX_BATCH_ENTRIES));
            prop_assert_eq!(chunks.concat(), items);
        }
    }
}
