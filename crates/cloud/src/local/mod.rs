//! The embedded local backend: a real, durable stand-in for SQS, S3 and EC2 on one machine.
//!
//! Everything lives under one state directory, shared by every process of a local stack:
//!
//! ```text
//! <state>/queues.db           SQLite (WAL): every queue, its messages, receipts, counts
//! <state>/doorbells/<queue>/  one datagram socket per waiting long-poll receive
//! <state>/buckets/<bucket>/   one file per object, keys as relative paths
//! <state>/tmp/                objects being written (renamed into place when complete)
//! <state>/fleet/<stack>/      one record per app-tier process, its ready flag and log
//! ```
//!
//! Why SQLite: it gives transactions that are safe across processes (the web tier, the
//! listener and each app tier are separate processes), survives crashes, and needs no
//! server. What SQLite lacks is a way to wake a waiting reader, so long polls wait on a
//! *doorbell*: each waiting receive binds a Unix datagram socket in the queue's doorbell
//! directory, and every send rings all of them after it commits. A receive therefore
//! returns within a millisecond or so of a send in another process, without polling the
//! database in a loop. A slow fallback poll covers what no send announces: visibility
//! timeouts and delays running out.

mod bucket;
mod doorbell;
mod fleet;
mod queue;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use bucket::LocalBucket;
pub use fleet::{LocalFleet, LocalFleetView};
pub use queue::LocalQueue;

use crate::error::{CloudError, Result};
use crate::spec::{FleetSpec, StackSpec};

/// The local backend rooted at one state directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalCloud {
    root: Arc<PathBuf>,
    db: queue::Database,
}

impl LocalCloud {
    /// Opens (creating if needed) the state directory and its queue database.
    pub async fn open(state_dir: &Path) -> Result<Self> {
        let root = state_dir.to_path_buf();
        for sub in ["", "buckets", "tmp", "doorbells", "fleet"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| CloudError::StateDir {
                path: dir.clone(),
                source,
            })?;
        }
        // Writable? Creating the database would tell us too, but with a less clear error.
        // A name of its own (several handles may open one directory at once, in one
        // process too), removed when dropped.
        tempfile::Builder::new()
            .prefix(".probe-")
            .tempfile_in(root.join("tmp"))
            .map_err(|source| CloudError::StateDir {
                path: root.clone(),
                source,
            })?;
        let db = queue::Database::open(root.join("queues.db")).await?;
        Ok(Self {
            root: Arc::new(root),
            db,
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the stack's queues (with dead-letter queues) and buckets if missing.
    pub async fn provision(&self, stack: &StackSpec) -> Result<()> {
        for queue in [&stack.request_queue, &stack.response_queue] {
            let dlq = StackSpec::dead_letter_queue(queue);
            self.db
                .create_queue(&dlq, stack.visibility_timeout, None)
                .await?;
            self.db
                .create_queue(
                    queue,
                    stack.visibility_timeout,
                    Some((stack.max_receive_count, dlq)),
                )
                .await?;
        }
        for bucket in [&stack.input_bucket, &stack.output_bucket] {
            bucket::create(&self.root, bucket)?;
        }
        Ok(())
    }

    /// The queue with this name.
    pub async fn queue(&self, name: &str) -> Result<LocalQueue> {
        LocalQueue::open(self.db.clone(), &self.root, name).await
    }

    /// Creates queue `name` like `template` (see [`crate::Cloud::create_queue_like`]).
    pub async fn create_queue_like(&self, template: &str, name: &str) -> Result<LocalQueue> {
        self.db.create_queue_like(template, name).await?;
        self.queue(name).await
    }

    /// Deletes queue `name` and its messages; waiting receives on it end with
    /// [`crate::CloudError::QueueNotFound`] at once.
    pub async fn delete_queue(&self, name: &str) -> Result<()> {
        if self.db.delete_queue(name).await? {
            let bells = doorbell::directory(&self.root, name);
            doorbell::ring(&bells);
            // Best effort: a waiter still bound removes its own socket when it gives up.
            let _ = std::fs::remove_dir(&bells);
        }
        Ok(())
    }

    /// The bucket with this name.
    pub async fn bucket(&self, name: &str) -> Result<LocalBucket> {
        LocalBucket::open(&self.root, name)
    }

    /// The fleet of app-tier processes for `spec.stack`.
    pub fn fleet(&self, spec: FleetSpec) -> Result<LocalFleet> {
        LocalFleet::open(&self.root, spec)
    }

    /// A read-only view of the fleet of `stack` (see [`crate::Cloud::fleet_view`]).
    pub fn fleet_view(&self, stack: &str, name_prefix: &str) -> Result<LocalFleetView> {
        LocalFleetView::open(&self.root, stack, name_prefix)
    }
}
