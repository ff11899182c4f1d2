//! The one error type of the cloud layer.
//!
//! Callers mostly need to answer two questions about a failure: *what* failed (the
//! variant names the step and carries the queue, bucket, key or instance involved) and
//! *may I retry it* ([`CloudError::is_retryable`]). The app tier uses the second answer to
//! choose between leaving a message for redelivery and giving up on it.

use std::path::PathBuf;

/// Result alias used across the cloud layer.
pub type Result<T, E = CloudError> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a queue, a bucket or a fleet.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// A queue name that neither backend accepts (SQS: 1–80 of `[A-Za-z0-9_-]`, `.fifo` suffix).
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueueName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A bucket name that S3 would reject (3–63 of `[a-z0-9.-]`, starting and ending alphanumeric).
    #[error("invalid bucket name {name:?}: {reason}")]
    InvalidBucketName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An object key with `..`, an empty segment, a control character or too many bytes.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A message body larger than the queue accepts.
    #[error("message of {size_bytes} bytes exceeds the {limit_bytes}-byte limit of queue {queue}")]
    MessageTooLarge {
        /// The queue the message was meant for.
        queue: String,
        /// Size of the body.
        size_bytes: usize,
        /// The queue's limit.
        limit_bytes: usize,
    },
    /// A receive asked for a batch size or wait the service does not support.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The queue does not exist (create it with `provision`).
    #[error("queue {queue} does not exist")]
    QueueNotFound {
        /// The missing queue.
        queue: String,
    },
    /// The bucket does not exist (create it with `provision`).
    #[error("bucket {bucket} does not exist")]
    BucketNotFound {
        /// The missing bucket.
        bucket: String,
    },
    /// `get` of a key that is not in the bucket.
    #[error("object {key} not found in bucket {bucket}")]
    ObjectNotFound {
        /// The bucket searched.
        bucket: String,
        /// The missing key.
        key: String,
    },
    /// A receipt handle that is unknown, stale (the message was received again) or already used.
    #[error("receipt handle is not valid for queue {queue} (stale, already deleted or foreign)")]
    InvalidReceipt {
        /// The queue the receipt was used on.
        queue: String,
    },
    /// The local state directory cannot be created or written.
    #[error("state directory {path} is not usable: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error behind it.
        source: std::io::Error,
    },
    /// The local queue database is corrupt or not a database at all.
    #[error("queue database {path} is corrupt or unreadable: {message}")]
    CorruptDatabase {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        message: String,
    },
    /// The local queue database is busy or failed in a way that may pass.
    #[error("queue database error on {queue}: {message}")]
    Database {
        /// The queue (or `*` for schema work).
        queue: String,
        /// What SQLite said.
        message: String,
        /// Whether the same call may succeed later (lock contention, busy).
        retryable: bool,
    },
    /// Local file I/O on a bucket or fleet record failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`write object`, `read fleet record`, …).
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The I/O error behind it.
        source: std::io::Error,
    },
    /// Launching, listing or terminating instances failed.
    #[error("fleet {action} failed: {message}")]
    Fleet {
        /// `launch`, `list` or `terminate`.
        action: &'static str,
        /// The cause.
        message: String,
        /// Whether the same call may succeed later.
        retryable: bool,
    },
    /// EC2 would not start an instance for want of room: the account's quota, or capacity
    /// in every placement (instance type × subnet) tried.
    #[error("no {shortage} to launch: {message}")]
    NoCapacity {
        /// Quota or capacity.
        shortage: crate::fleet::Shortage,
        /// EC2's code and message, and what was tried.
        message: String,
    },
    /// The backend was configured wrongly (missing region, bad endpoint, missing AMI).
    #[error("configuration: {0}")]
    Config(String),
    /// An AWS API call failed.
    #[error("{service} {operation} failed: {message}")]
    Aws {
        /// `sqs`, `s3` or `ec2`.
        service: &'static str,
        /// The API operation, e.g. `ReceiveMessage`.
        operation: &'static str,
        /// The error code and message from the service, or the transport error.
        message: String,
        /// Whether the same call may succeed later (throttling, timeouts, 5xx).
        retryable: bool,
    },
}

impl CloudError {
    /// Whether the same call may succeed if tried again later.
    ///
    /// Throttling, timeouts, transport failures, 5xx answers and database lock contention are
    /// retryable; bad names, missing resources and invalid receipts are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            CloudError::Database { retryable, .. }
            | CloudError::Fleet { retryable, .. }
            | CloudError::Aws { retryable, .. } => *retryable,
            // Instances end and capacity frees up: worth trying again, later.
            CloudError::NoCapacity { .. } => true,
            CloudError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }
}
