//! Local queues: SQLite rows with SQS's semantics.
//!
//! A message row carries the time it becomes visible (`visible_at_ms`), how often it was
//! received, and the receipt of its latest receive. Receiving, in one `BEGIN IMMEDIATE`
//! transaction, picks the rows visible now, gives each a fresh receipt and pushes its
//! visibility forward; deleting needs the latest receipt. A row received
//! `max_receive_count` times that comes up again moves to the dead-letter queue instead,
//! as SQS's redrive policy does. Depth counts visible rows, rows hidden after a receive
//! (in flight) and rows hidden since they were sent (delayed).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::doorbell::{self, Doorbells};
use crate::error::{CloudError, Result};
use crate::queue::{
    BatchEntryError, EntryResult, OutgoingMessage, Queue, QueueDepth, ReceiptHandle,
    ReceiveOptions, ReceivedMessage, validate_batch_len, validate_queue_name, validate_visibility,
};

/// How long a long poll sleeps between looks when no doorbell rings: the latest a
/// message made visible by a timeout (not by a send) is noticed.
const FALLBACK_POLL: Duration = Duration::from_millis(250);
/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The layout of the database; `PRAGMA user_version` records which one a file has.
/// Version 1 keeps message bodies in their own table: a receive, a heartbeat or a receipt
/// changes only the small `messages` row, and SQLite rewrites a whole row on every update,
/// so a body inline (an image of tens of kilobytes, base64) was copied into the write-ahead
/// log again at each of them.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    name                  TEXT PRIMARY KEY,
    visibility_timeout_ms INTEGER NOT NULL,
    max_receive_count     INTEGER,
    dead_letter_queue     TEXT,
    created_at_ms         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    sent_at_ms    INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS bodies (
    seq  INTEGER PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at_ms, seq);
-- A body goes with its message, whichever statement deletes the message.
CREATE TRIGGER IF NOT EXISTS bodies_follow_messages AFTER DELETE ON messages
BEGIN
    DELETE FROM bodies WHERE seq = old.seq;
END;
";

/// Brings a database of an earlier layout to [`SCHEMA_VERSION`], inside the schema
/// transaction: version 0 had the body as a column of `messages`. A database of a later
/// version (written by a newer iras) is refused rather than misread.
fn migrate(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "the queue database has layout version {version}; this iras knows up to \
                 {SCHEMA_VERSION} (a newer iras wrote it)"
            )),
        ));
    }
    let inline_bodies: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('messages') WHERE name = 'body')",
        [],
        |r| r.get(0),
    )?;
    if inline_bodies {
        tx.execute_batch(
            "INSERT OR IGNORE INTO bodies (seq, body) SELECT seq, body FROM messages;
             ALTER TABLE messages DROP COLUMN body;",
        )?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(())
}

/// The queue database, shared by every queue handle of one process.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    path: Arc<PathBuf>,
    /// One connection per process: SQLite serialises writers anyway, and transactions are
    /// short. Only ever locked inside `spawn_blocking`, never across an `.await`.
    conn: Arc<Mutex<Connection>>,
}

#[derive(Debug, Clone)]
struct QueueConfig {
    visibility_timeout: Duration,
    redrive: Option<(u32, String)>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Opens the database at `path`, in WAL mode with its schema (see [`Database::open`]).
fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never block the writer, and writers in other processes commit without
    // waiting for readers. NORMAL sync in WAL mode survives any process crash (what
    // at-least-once needs here); only an OS crash or power loss may lose the last commits.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // IMMEDIATE takes the write lock first, so the busy timeout applies to it, instead of
    // reading the schema and failing to upgrade while another tier creates it.
    let schema = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    schema.execute_batch(SCHEMA)?;
    migrate(&schema)?;
    schema.commit()?;
    Ok(conn)
}

/// SQLite's "database is busy/locked".
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

impl Database {
    /// Opens or creates the database, in WAL mode, and its schema. A file that is not a
    /// database is reported, never replaced.
    pub(crate) async fn open(path: PathBuf) -> Result<Self> {
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            // Tiers started together on a fresh directory race to create the database,
            // switch it to WAL and make the schema. SQLite answers some of those races with
            // an immediate SQLITE_BUSY that no busy timeout waits out (switching the journal
            // mode, or a read lock that cannot be upgraded while another connection writes),
            // so the whole opening is retried until the busy timeout has passed.
            let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
            loop {
                match open_connection(&p) {
                    Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                        // A little jitter (from the clock) so racing tiers do not retry in step.
                        let jitter = u64::from(
                            SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .unwrap_or_default()
                                .subsec_nanos()
                                % 40,
                        );
                        std::thread::sleep(Duration::from_millis(10 + jitter));
                    }
                    opened => return opened.map_err(|e| db_error(&p, "*", e)),
                }
            }
        })
        .await
        .map_err(|e| CloudError::Database {
            queue: "*".into(),
            message: e.to_string(),
            retryable: false,
        })??;
        Ok(Self {
            path: Arc::new(path),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        queue: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let queue = queue.to_owned();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (transactions
            // roll back on drop), so a poisoned lock is safe to keep using.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard).map_err(|e| db_error(&path, &queue, e))
        })
        .await
        .map_err(|e| CloudError::Database {
            queue: "*".into(),
            message: e.to_string(),
            retryable: false,
        })?
    }

    pub(crate) async fn create_queue(
        &self,
        name: &str,
        visibility_timeout: Duration,
        redrive: Option<(u32, String)>,
    ) -> Result<()> {
        validate_queue_name(name)?;
        validate_visibility(visibility_timeout)?;
        let name_owned = name.to_owned();
        self.with(name, move |conn| {
            let (max, dlq) = match redrive {
                Some((max, dlq)) => (Some(max), Some(dlq)),
                None => (None, None),
            };
            conn.execute(
                "INSERT INTO queues (name, visibility_timeout_ms, max_receive_count,
                                     dead_letter_queue, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO NOTHING",
                params![name_owned, millis(visibility_timeout), max, dlq, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// Creates `name` with the settings of `template` (its visibility timeout and its
    /// dead-letter queue with the same receive limit); an existing `name` is kept.
    pub(crate) async fn create_queue_like(&self, template: &str, name: &str) -> Result<()> {
        let config = self
            .config(template)
            .await?
            .ok_or_else(|| CloudError::QueueNotFound {
                queue: template.to_owned(),
            })?;
        self.create_queue(name, config.visibility_timeout, config.redrive)
            .await
    }

    /// Deletes queue `name` and its messages, as SQS's `DeleteQueue` does; a queue that
    /// does not exist is left as it is. `true` when there was one.
    pub(crate) async fn delete_queue(&self, name: &str) -> Result<bool> {
        validate_queue_name(name)?;
        let name_owned = name.to_owned();
        self.with(name, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM messages WHERE queue = ?1", params![name_owned])?;
            let deleted = tx.execute("DELETE FROM queues WHERE name = ?1", params![name_owned])?;
            tx.commit()?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn config(&self, name: &str) -> Result<Option<QueueConfig>> {
        let name_owned = name.to_owned();
        self.with(name, move |conn| {
            conn.query_row(
                "SELECT visibility_timeout_ms, max_receive_count, dead_letter_queue
                 FROM queues WHERE name = ?1",
                params![name_owned],
                |row| {
                    let vis: i64 = row.get(0)?;
                    let max: Option<u32> = row.get(1)?;
                    let dlq: Option<String> = row.get(2)?;
                    Ok(QueueConfig {
                        visibility_timeout: Duration::from_millis(vis.max(0) as u64),
                        redrive: max.zip(dlq),
                    })
                },
            )
            .optional()
        })
        .await
    }
}

/// Whether queue `name` exists, inside a transaction that then sends to or receives from
/// it: a handle outlives a deleted queue, and SQS refuses both calls on one.
fn queue_exists(tx: &rusqlite::Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1)")?
        .query_row(params![name], |r| r.get(0))
}

fn db_error(path: &Path, queue: &str, e: rusqlite::Error) -> CloudError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => CloudError::CorruptDatabase {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
        code => CloudError::Database {
            queue: queue.to_owned(),
            message: e.to_string(),
            retryable: matches!(
                code,
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ),
        },
    }
}

/// One local queue.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    name: String,
    db: Database,
    config: QueueConfig,
    /// Shared by the clones of this handle, which lend them to their long polls.
    doorbells: Arc<Doorbells>,
    dead_letter_doorbells: Option<PathBuf>,
}

/// What one receive transaction found.
struct Picked {
    messages: Vec<ReceivedMessage>,
    /// Whether any message moved to the dead-letter queue (its waiters need a ring).
    dead_lettered: bool,
    /// When the next hidden message becomes visible, if any.
    next_visible_at_ms: Option<i64>,
}

impl LocalQueue {
    pub(crate) async fn open(db: Database, root: &Path, name: &str) -> Result<Self> {
        validate_queue_name(name)?;
        let config = db
            .config(name)
            .await?
            .ok_or_else(|| CloudError::QueueNotFound {
                queue: name.to_owned(),
            })?;
        let dead_letter_doorbells = config
            .redrive
            .as_ref()
            .map(|(_, dlq)| doorbell::directory(root, dlq));
        Ok(Self {
            name: name.to_owned(),
            db,
            config,
            doorbells: Arc::new(Doorbells::new(doorbell::directory(root, name))),
            dead_letter_doorbells,
        })
    }

    /// Inserts the messages that passed their checks in one transaction.
    async fn insert(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<String>> {
        let queue = self.name.clone();
        let ids = self
            .in_live_queue(move |tx| {
                let now = now_ms();
                let mut ids = Vec::with_capacity(messages.len());
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO messages (queue, message_id, sent_at_ms, visible_at_ms)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    let mut insert_body =
                        tx.prepare_cached("INSERT INTO bodies (seq, body) VALUES (?1, ?2)")?;
                    for m in messages {
                        let id = uuid::Uuid::new_v4().to_string();
                        let seq = insert.insert(params![queue, id, now, now + millis(m.delay)])?;
                        insert_body.execute(params![seq, m.body])?;
                        ids.push(id);
                    }
                }
                Ok(ids)
            })
            .await?;
        doorbell::ring(self.doorbells.dir());
        Ok(ids)
    }

    /// One receive transaction (no waiting).
    async fn pick(&self, max: usize, visibility: Duration) -> Result<Picked> {
        let queue = self.name.clone();
        let redrive = self.config.redrive.clone();
        let picked = self
            .in_live_queue(move |tx| {
                let now = now_ms();
                let mut picked = Picked {
                    messages: Vec::new(),
                    dead_lettered: false,
                    next_visible_at_ms: None,
                };
                // Rows received in this transaction: with a zero visibility timeout they
                // are visible again at once and must not be picked twice.
                let mut taken = std::collections::HashSet::new();
                loop {
                    let want = max - picked.messages.len() + taken.len();
                    let rows: Vec<(i64, String, String, u32, i64)> = {
                        let mut select = tx.prepare_cached(
                            "SELECT m.seq, m.message_id, b.body, m.receive_count, m.sent_at_ms
                             FROM messages m JOIN bodies b ON b.seq = m.seq
                             WHERE m.queue = ?1 AND m.visible_at_ms <= ?2
                             ORDER BY m.visible_at_ms, m.seq LIMIT ?3",
                        )?;
                        select
                            .query_map(params![queue, now, want as i64], |r| {
                                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                            })?
                            .collect::<rusqlite::Result<_>>()?
                    };
                    let rows: Vec<_> = rows
                        .into_iter()
                        .filter(|(seq, ..)| !taken.contains(seq))
                        .collect();
                    if rows.is_empty() {
                        break;
                    }
                    let mut moved_any = false;
                    for (seq, message_id, body, count, sent_at_ms) in rows {
                        if let Some((max_receives, dlq)) = &redrive
                            && count >= *max_receives
                        {
                            tx.prepare_cached(
                                "UPDATE messages SET queue = ?2, visible_at_ms = ?3, receipt = NULL
                                 WHERE seq = ?1",
                            )?
                            .execute(params![seq, dlq, now])?;
                            picked.dead_lettered = true;
                            moved_any = true;
                            continue;
                        }
                        let receipt = format!("{seq}.{}", uuid::Uuid::new_v4().simple());
                        tx.prepare_cached(
                            "UPDATE messages SET receipt = ?2, receive_count = receive_count + 1,
                                                 visible_at_ms = ?3
                             WHERE seq = ?1",
                        )?
                        .execute(params![
                            seq,
                            receipt,
                            now + millis(visibility)
                        ])?;
                        taken.insert(seq);
                        picked.messages.push(ReceivedMessage {
                            message_id,
                            body,
                            receipt: ReceiptHandle(receipt),
                            receive_count: count + 1,
                            sent_at_ms: u64::try_from(sent_at_ms).unwrap_or(0),
                        });
                    }
                    // Only look again if dead-lettering left room in the batch.
                    if !moved_any || picked.messages.len() >= max {
                        break;
                    }
                }
                if picked.messages.is_empty() {
                    picked.next_visible_at_ms = tx
                        .prepare_cached(
                            "SELECT MIN(visible_at_ms) FROM messages
                             WHERE queue = ?1 AND visible_at_ms > ?2",
                        )?
                        .query_row(params![queue, now], |r| r.get(0))?;
                }
                Ok(picked)
            })
            .await?;
        if picked.dead_lettered
            && let Some(dir) = &self.dead_letter_doorbells
        {
            doorbell::ring(dir);
        }
        Ok(picked)
    }

    /// Deletes by receipts; per entry, whether a current receipt matched.
    async fn delete_receipts(&self, receipts: Vec<ReceiptHandle>) -> Result<Vec<bool>> {
        let queue = self.name.clone();
        self.db
            .with(&self.name, move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut out = Vec::with_capacity(receipts.len());
                {
                    let mut delete = tx
                        .prepare_cached("DELETE FROM messages WHERE queue = ?1 AND receipt = ?2")?;
                    for r in receipts {
                        out.push(delete.execute(params![queue, r.0])? == 1);
                    }
                }
                tx.commit()?;
                Ok(out)
            })
            .await
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the blocking pool, committed when
    /// `f` succeeds, once the queue is known to exist in that transaction: a handle outlives
    /// a deleted queue, and sending to or receiving from one is
    /// [`CloudError::QueueNotFound`], as on SQS.
    async fn in_live_queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let queue = self.name.clone();
        self.db
            .with(&self.name, move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !queue_exists(&tx, &queue)? {
                    return Ok(None);
                }
                let out = f(&tx)?;
                tx.commit()?;
                Ok(Some(out))
            })
            .await?
            .ok_or_else(|| self.gone())
    }

    /// The error for a queue deleted after this handle was made.
    fn gone(&self) -> CloudError {
        CloudError::QueueNotFound {
            queue: self.name.clone(),
        }
    }

    fn invalid_receipt(&self) -> CloudError {
        CloudError::InvalidReceipt {
            queue: self.name.clone(),
        }
    }
}

fn receipt_entry_error() -> BatchEntryError {
    BatchEntryError {
        code: "ReceiptHandleIsInvalid".into(),
        message: "the receipt handle is not valid (stale, already used or foreign)".into(),
        sender_fault: true,
    }
}

#[async_trait]
impl Queue for LocalQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, message: OutgoingMessage) -> Result<String> {
        message.validate(&self.name)?;
        let mut ids = self.insert(vec![message]).await?;
        ids.pop()
            .ok_or_else(|| CloudError::InvalidArgument("insert returned no id".into()))
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<EntryResult<String>>> {
        validate_batch_len(messages.len())?;
        let mut results: Vec<Option<EntryResult<String>>> = Vec::with_capacity(messages.len());
        let mut accepted = Vec::new();
        for m in messages {
            match m.validate(&self.name) {
                Ok(()) => {
                    results.push(None);
                    accepted.push(m);
                }
                Err(e) => results.push(Some(Err(BatchEntryError {
                    code: if matches!(e, CloudError::MessageTooLarge { .. }) {
                        "MessageTooLong".into()
                    } else {
                        "InvalidParameterValue".into()
                    },
                    message: e.to_string(),
                    sender_fault: true,
                }))),
            }
        }
        let mut ids = if accepted.is_empty() {
            Vec::new()
        } else {
            self.insert(accepted).await?
        }
        .into_iter();
        Ok(results
            .into_iter()
            .map(|r| match r {
                Some(failed) => failed,
                None => Ok(ids.next().unwrap_or_default()),
            })
            .collect())
    }

    async fn receive(&self, options: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        options.validate()?;
        let visibility = options
            .visibility_timeout
            .unwrap_or(self.config.visibility_timeout);
        let deadline = tokio::time::Instant::now() + options.wait;
        // Bound before the first look, so a send committed after it still rings us.
        let bell = if options.wait.is_zero() {
            None
        } else {
            self.doorbells.take()
        };
        loop {
            let picked = self.pick(options.max_messages, visibility).await?;
            let now = tokio::time::Instant::now();
            if !picked.messages.is_empty() || now >= deadline {
                return Ok(picked.messages);
            }
            let mut nap = (deadline - now).min(FALLBACK_POLL);
            if let Some(at) = picked.next_visible_at_ms {
                let until = Duration::from_millis((at - now_ms()).max(1) as u64);
                nap = nap.min(until);
            }
            match &bell {
                Some(bell) => bell.wait(nap).await,
                // No doorbell (path too long): poll a little faster instead.
                None => tokio::time::sleep(nap.min(Duration::from_millis(50))).await,
            }
        }
    }

    async fn delete(&self, receipt: &ReceiptHandle) -> Result<()> {
        let deleted = self.delete_receipts(vec![receipt.clone()]).await?;
        if deleted.first() == Some(&true) {
            Ok(())
        } else {
            Err(self.invalid_receipt())
        }
    }

    async fn delete_batch(&self, receipts: Vec<ReceiptHandle>) -> Result<Vec<EntryResult<()>>> {
        validate_batch_len(receipts.len())?;
        let deleted = self.delete_receipts(receipts).await?;
        Ok(deleted
            .into_iter()
            .map(|ok| {
                if ok {
                    Ok(())
                } else {
                    Err(receipt_entry_error())
                }
            })
            .collect())
    }

    async fn change_visibility(&self, receipt: &ReceiptHandle, timeout: Duration) -> Result<()> {
        validate_visibility(timeout)?;
        let queue = self.name.clone();
        let receipt_owned = receipt.0.clone();
        let changed = self
            .db
            .with(&self.name, move |conn| {
                conn.prepare_cached(
                    "UPDATE messages SET visible_at_ms = ?3 WHERE queue = ?1 AND receipt = ?2",
                )?
                .execute(params![
                    queue,
                    receipt_owned,
                    now_ms() + millis(timeout)
                ])
            })
            .await?;
        if changed != 1 {
            return Err(self.invalid_receipt());
        }
        if timeout.is_zero() {
            doorbell::ring(self.doorbells.dir());
        }
        Ok(())
    }

    async fn max_receive_count(&self) -> Result<Option<u32>> {
        Ok(self.config.redrive.as_ref().map(|(max, _)| *max))
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let queue = self.name.clone();
        self.db
            .with(&self.name, move |conn| {
                conn.prepare_cached(
                    "SELECT
                        COALESCE(SUM(visible_at_ms <= ?2), 0),
                        COALESCE(SUM(visible_at_ms > ?2 AND receipt IS NOT NULL), 0),
                        COALESCE(SUM(visible_at_ms > ?2 AND receipt IS NULL), 0)
                     FROM messages WHERE queue = ?1",
                )?
                .query_row(params![queue, now_ms()], |r| {
                    Ok(QueueDepth {
                        visible: r.get::<_, i64>(0)? as u64,
                        in_flight: r.get::<_, i64>(1)? as u64,
                        delayed: r.get::<_, i64>(2)? as u64,
                    })
                })
            })
            .await
    }
}
