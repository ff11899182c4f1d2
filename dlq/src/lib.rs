//! `dlq`: the operator's tool for a dead-letter queue, on either backend.
//!
//! ```text
//! dlq list [--limit N] [--json]          count, then the first N: id, receives, age, content
//! dlq show MESSAGE_ID [--raw]            one message in full (inline image data shortened)
//! dlq redrive (--all | MESSAGE_ID...)    back to the source queue
//! dlq purge (--all | MESSAGE_ID...) --yes
//! ```
//!
//! The queue is chosen with `--queue` (the source queue, default `iras-requests`; use
//! `iras-responses` for the response queue's) and `--dead-letter-queue` (default: the
//! source's name or URL plus `-dlq`, which is what tiers provision; a CloudFormation stack
//! names its dead-letter queues in its outputs `RequestDeadLetterQueueUrl` and
//! `ResponseDeadLetterQueueUrl`). Backend flags are every tier's (`--backend`,
//! `--state-dir`, `--aws-endpoint-url`, `--aws-region`).
//!
//! Everything is done through [`iras_cloud::dead_letter`] on the `Queue` trait, so both
//! backends behave alike; see there for why redrive is receive + send + delete (moto has
//! no `StartMessageMoveTask`, and the local backend needs the same anyway), what a look
//! costs (a receive each: the shown receive counts grow by one per look) and how every
//! run is bounded (`--deadline-secs`). Library entry points write to a `Write` so tests
//! read exactly what an operator sees.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use iras_cli::CloudArgs;
use iras_cloud::dead_letter::{self, Moved, Selection};
use iras_cloud::{Queue, ReceivedMessage};
use iras_protocol::env;
use iras_protocol::{ImagePayload, Outcome, RequestMessage, ResponseMessage};

/// Command line of the `dlq` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dlq",
    version,
    about = "iras dead-letter queues: list, show, redrive and purge dead-lettered messages"
)]
pub struct Cli {
    /// Backend and state directory.
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Which queues.
    #[command(flatten)]
    pub queues: QueueArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The source queue and its dead-letter queue.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// The source queue (name, or URL on AWS) whose dead-letter queue to work on; redrive
    /// sends messages back to it.
    #[arg(
        long,
        env = env::IRAS_DLQ_QUEUE,
        default_value = "iras-requests",
        global = true
    )]
    pub queue: String,
    /// The dead-letter queue (name, or URL on AWS). Default: the source queue's name or
    /// URL plus `-dlq`, as the tiers provision it.
    #[arg(long, env = env::IRAS_DEAD_LETTER_QUEUE, global = true)]
    pub dead_letter_queue: Option<String>,
    /// Longest a command runs, in seconds (scanning a large queue takes a receive per ten
    /// messages).
    #[arg(long, default_value_t = 300, global = true,
          value_parser = clap::value_parser!(u64).range(1..=43_200))]
    pub deadline_secs: u64,
}

impl QueueArgs {
    /// The dead-letter queue's name or URL.
    pub fn dead_letter(&self) -> String {
        self.dead_letter_queue
            .clone()
            .unwrap_or_else(|| iras_cloud::StackSpec::dead_letter_queue(&self.queue))
    }
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// How many messages are dead-lettered, and the first ones: message id, receive
    /// count, age, and what they are (request id and file name when readable).
    List {
        /// Messages to show.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One message in full.
    Show {
        /// Its message id (from `list`).
        message_id: String,
        /// The body exactly as stored (inline image data included).
        #[arg(long)]
        raw: bool,
        /// Most messages to look through for it.
        #[arg(long, default_value_t = 10_000)]
        scan_limit: usize,
    },
    /// Send messages back to the source queue (and delete them from the dead-letter queue).
    Redrive(Select),
    /// Delete messages from the dead-letter queue for good.
    Purge {
        /// Which messages.
        #[command(flatten)]
        select: Select,
        /// Confirms that the messages are to be deleted for good.
        #[arg(long)]
        yes: bool,
    },
}

/// `--all` or message ids.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Select {
    /// Every message in the dead-letter queue (as many as it held when the command began).
    #[arg(long)]
    pub all: bool,
    /// These message ids (from `list`).
    pub message_ids: Vec<String>,
}

impl Select {
    fn selection(&self) -> Selection {
        if self.all {
            Selection::All
        } else {
            Selection::Ids(self.message_ids.clone())
        }
    }
}

/// Runs the command, writing to stdout, until it is done or `shutdown` resolves. A stop
/// in the middle of a redrive costs at most a duplicate: a message sent back but not yet
/// deleted from the dead-letter queue is still there, and is moved again by the next run.
pub async fn run(
    cli: Cli,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout();
    tokio::select! {
        done = run_to(cli, &mut stdout) => done,
        () = shutdown => anyhow::bail!("interrupted"),
    }
}

/// Runs the command, writing what an operator reads to `out`. Exit code 1 when a redrive
/// or purge left something undone (an id not found, a send or delete that failed).
pub async fn run_to(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<ExitCode> {
    let cloud = cli.cloud.connect().await?;
    let dlq_name = cli.queues.dead_letter();
    let dlq = cloud
        .queue(&dlq_name)
        .await
        .with_context(|| format!("dead-letter queue {dlq_name}"))?;
    let deadline = Duration::from_secs(cli.queues.deadline_secs);
    match cli.command {
        Command::List { limit, json } => {
            list(dlq.as_ref(), &cli.queues.queue, limit, json, deadline, out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Show {
            message_id,
            raw,
            scan_limit,
        } => show(dlq.as_ref(), &message_id, raw, scan_limit, deadline, out).await,
        Command::Redrive(select) => {
            let source = cloud
                .queue(&cli.queues.queue)
                .await
                .with_context(|| format!("source queue {}", cli.queues.queue))?;
            let moved =
                dead_letter::redrive(dlq.as_ref(), source.as_ref(), &select.selection(), deadline)
                    .await?;
            report(&moved, &format!("redrove to {}", source.name()), out)
        }
        Command::Purge { select, yes } => {
            anyhow::ensure!(
                yes,
                "purge deletes messages for good: add --yes to confirm (or `dlq list` first)"
            );
            let moved = dead_letter::purge(dlq.as_ref(), &select.selection(), deadline).await?;
            report(&moved, &format!("deleted from {}", dlq.name()), out)
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A message's age as `1h 2m 3s` (whole seconds), or `?` when its sent time is unknown.
fn age(m: &ReceivedMessage, now_ms: u64) -> String {
    if m.sent_at_ms == 0 {
        return "?".into();
    }
    let secs = now_ms.saturating_sub(m.sent_at_ms) / 1000;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Longest body excerpt shown for a message that is neither a request nor a response.
const PREVIEW_CHARS: usize = 60;

/// What a body is, in one line: a request or response with its id and file name, or an
/// excerpt of something unreadable.
pub fn describe(body: &str) -> String {
    if let Ok(request) = RequestMessage::decode(body) {
        let image = match &request.image {
            ImagePayload::Inline { data } => format!("inline, {} base64 chars", data.len()),
            ImagePayload::Claim { key } => format!("claim check {key}"),
        };
        return format!(
            "request {} {} ({image}), reply to {}",
            request.id, request.file_name, request.reply_to
        );
    }
    if let Ok(response) = ResponseMessage::decode(body) {
        let outcome = match &response.outcome {
            Outcome::Label { label, .. } => format!("label {label:?}"),
            Outcome::Error { kind, .. } => format!("error {kind}"),
        };
        return format!(
            "response {} {} ({outcome}), from {}",
            response.id, response.file_name, response.worker
        );
    }
    let excerpt: String = body.chars().take(PREVIEW_CHARS).collect();
    let more = if body.chars().count() > PREVIEW_CHARS {
        "…"
    } else {
        ""
    };
    format!("unreadable: {excerpt:?}{more}")
}

async fn list(
    dlq: &dyn Queue,
    source: &str,
    limit: u64,
    json: bool,
    deadline: Duration,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let depth = dlq.depth().await?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let scan = dead_letter::scan(dlq, limit, dead_letter::DEFAULT_HOLD, deadline).await?;
    dead_letter::release(dlq, &scan.messages).await;
    let now = now_ms();
    if json {
        let messages: Vec<_> = scan
            .messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "message_id": m.message_id,
                    "receive_count": m.receive_count,
                    "sent_at_ms": m.sent_at_ms,
                    "age_secs": now.saturating_sub(m.sent_at_ms) / 1000,
                    "content": describe(&m.body),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "dead_letter_queue": dlq.name(),
            "source_queue": source,
            "depth": depth,
            "messages": messages,
        });
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: {} message(s) ({} visible, {} in flight, {} delayed); source queue {source}",
        dlq.name(),
        depth.total(),
        depth.visible,
        depth.in_flight,
        depth.delayed
    )?;
    if scan.messages.is_empty() {
        return Ok(());
    }
    let width = scan
        .messages
        .iter()
        .map(|m| m.message_id.len())
        .max()
        .unwrap_or(10)
        .max(10);
    writeln!(
        out,
        "{:<width$}  RECEIVES  {:<12}  CONTENT",
        "MESSAGE ID", "AGE"
    )?;
    for m in &scan.messages {
        writeln!(
            out,
            "{:<width$}  {:>8}  {:<12}  {}",
            m.message_id,
            m.receive_count,
            age(m, now),
            describe(&m.body)
        )?;
    }
    if (scan.messages.len() as u64) < depth.total() {
        writeln!(out, "({} shown; --limit for more)", scan.messages.len())?;
    }
    Ok(())
}

/// The body for `show`: pretty JSON with inline image data shortened, unless `raw`.
fn render_body(body: &str, raw: bool) -> String {
    if raw {
        return body.to_owned();
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut value) => {
            if let Some(data) = value.pointer_mut("/image/data")
                && let Some(text) = data.as_str()
            {
                *data = serde_json::Value::String(format!(
                    "<{} base64 chars; --raw shows them>",
                    text.len()
                ));
            }
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| body.to_owned())
        }
        Err(_) => body.to_owned(),
    }
}

async fn show(
    dlq: &dyn Queue,
    message_id: &str,
    raw: bool,
    scan_limit: usize,
    deadline: Duration,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<ExitCode> {
    let scan = dead_letter::scan(dlq, scan_limit, dead_letter::DEFAULT_HOLD, deadline).await?;
    dead_letter::release(dlq, &scan.messages).await;
    let Some(m) = scan.messages.iter().find(|m| m.message_id == message_id) else {
        let looked = if scan.complete {
            "the whole queue"
        } else {
            "as far as --scan-limit and --deadline-secs allowed"
        };
        anyhow::bail!(
            "no message {message_id} in {} (looked through {} message(s), {looked})",
            dlq.name(),
            scan.messages.len()
        );
    };
    let sent = if m.sent_at_ms == 0 {
        "unknown".to_owned()
    } else {
        let at = UNIX_EPOCH + Duration::from_millis(m.sent_at_ms);
        format!(
            "{} ({} ago)",
            humantime::format_rfc3339_seconds(at),
            age(m, now_ms())
        )
    };
    writeln!(out, "message id:    {}", m.message_id)?;
    writeln!(out, "queue:         {}", dlq.name())?;
    writeln!(out, "receive count: {}", m.receive_count)?;
    writeln!(out, "sent:          {sent}")?;
    writeln!(out, "content:       {}", describe(&m.body))?;
    writeln!(out, "body ({} bytes):", m.body.len())?;
    writeln!(out, "{}", render_body(&m.body, raw))?;
    Ok(ExitCode::SUCCESS)
}

fn report(moved: &Moved, what: &str, out: &mut (dyn Write + Send)) -> anyhow::Result<ExitCode> {
    writeln!(out, "{what}: {} message(s)", moved.done.len())?;
    for id in &moved.done {
        writeln!(out, "  {id}")?;
    }
    for id in &moved.missing {
        writeln!(out, "not found: {id}")?;
    }
    for (id, reason) in &moved.failed {
        writeln!(out, "failed: {id}: {reason}")?;
    }
    Ok(if moved.missing.is_empty() && moved.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_requests_responses_and_garbage() {
        let request = RequestMessage {
            version: iras_protocol::PROTOCOL_VERSION,
            id: "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap(),
            file_name: iras_protocol::FileName::parse("test_0.JPEG").unwrap(),
            image: ImagePayload::inline(b"abc"),
            reply_to: "iras-responses".into(),
            submitted_at_ms: 0,
            top_k: 1,
            key_scheme: iras_protocol::KeyScheme::FileName,
        };
        let body = request.encode().unwrap();
        assert_eq!(
            describe(&body),
            "request 67e55044-10b1-426f-9247-bb680e5fe0c8 test_0.JPEG (inline, 4 base64 chars), reply to iras-responses"
        );
        assert!(render_body(&body, false).contains("<4 base64 chars; --raw shows them>"));
        assert_eq!(render_body(&body, true), body);
        assert_eq!(describe("not a request"), "unreadable: \"not a request\"");
        let long = "x".repeat(100);
        assert!(describe(&long).ends_with('…'));
    }
}
