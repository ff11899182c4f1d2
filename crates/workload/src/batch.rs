//! The `--async` mode: the whole folder as one batch (`POST /batches`), collected from the
//! batch's event stream (`GET /batches/{id}/events`), summarised like a synchronous run.
//!
//! Every image is one [`Record`]: issued when the batch was sent, completed when its
//! `result` event arrived, so latency is "from submitting the batch to this image's
//! result" (queueing behind the rest of the batch included: that is what a batch user
//! waits). An image the web tier refused at upload, or the app tier could not classify,
//! is a [`FailureClass::Rejected`] with its error code and reason. The web tier's stream
//! ends when it drains; the stream is then opened again (on the same URL: behind a load
//! balancer, another web tier), and results already counted are skipped, since it
//! replays every result it knows. `--timeout-secs` bounds the whole collection.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::time::Instant;

use crate::run::{RequestFailure, truncate};
use crate::{Config, FailureClass, Image, Observer, Record, Summary, WorkloadError};

/// Pause before opening the event stream again after it ended without `done`.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);

/// Sends `images` as one batch and waits for every result, until `shutdown` resolves.
pub async fn drive_batch(
    config: &Config,
    images: &[Image],
    observer: Arc<dyn Observer>,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, WorkloadError> {
    if images.is_empty() {
        return Err(WorkloadError::Config("no images to send".to_owned()));
    }
    let batches = config
        .url
        .join("/batches")
        .map_err(|e| WorkloadError::Config(format!("URL {}: {e}", config.url)))?;
    let client = reqwest::Client::builder()
        .build()
        .map_err(WorkloadError::Client)?;
    let start = Instant::now();
    let deadline = config.timeout.map(|t| start + t);
    let mut collector = Collector {
        images,
        start,
        observer,
        records: HashMap::new(),
        pending: HashMap::new(),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let work = async {
        let events = collector.submit(&client, batches).await?;
        loop {
            if collector.follow(&client, &events).await? {
                return Ok(());
            }
            tokio::time::sleep(REOPEN_PAUSE).await;
        }
    };
    let outcome: Result<(), RequestFailure> = tokio::select! {
        outcome = work => outcome,
        () = &mut shutdown => Err(RequestFailure {
            kind: FailureClass::Cancelled,
            detail: "interrupted".to_owned(),
        }),
        () = sleep_until(deadline) => Err(RequestFailure {
            kind: FailureClass::Timeout,
            detail: format!("no result within {} s", config.timeout.unwrap_or_default().as_secs()),
        }),
    };
    // Whatever did not complete fails the way the whole did.
    if let Err(failure) = outcome {
        for seq in 0..images.len() as u64 {
            collector.complete(seq, Err(failure.clone()));
        }
    }
    let elapsed = start.elapsed();
    let mut records: Vec<Record> = collector.records.into_values().collect();
    records.sort_by_key(|r| r.seq);
    Ok(Summary::new(
        config.url.as_str(),
        images.len() as u64,
        records,
        elapsed,
        config.expected.as_ref(),
    ))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The records of one batch as its results come in.
struct Collector<'a> {
    images: &'a [Image],
    start: Instant,
    observer: Arc<dyn Observer>,
    /// Completed images, by position.
    records: HashMap<u64, Record>,
    /// Accepted images without a result yet: request id → position.
    pending: HashMap<String, u64>,
}

impl Collector<'_> {
    fn complete(&mut self, seq: u64, outcome: Result<String, RequestFailure>) {
        if self.records.contains_key(&seq) {
            return;
        }
        let record = Record {
            seq,
            name: self.images[seq as usize].name.clone(),
            issued: Duration::ZERO,
            latency: self.start.elapsed(),
            attempts: 1,
            outcome,
        };
        self.observer.completed(&record);
        self.records.insert(seq, record);
    }

    /// Sends the batch; returns its event stream's URL.
    async fn submit(
        &mut self,
        client: &reqwest::Client,
        batches: reqwest::Url,
    ) -> Result<reqwest::Url, RequestFailure> {
        let mut form = Form::new();
        for image in self.images {
            form = form.part(
                crate::FILE_FIELD,
                Part::bytes(image.bytes.to_vec()).file_name(image.name.clone()),
            );
        }
        let answer = client
            .post(batches.clone())
            .multipart(form)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = answer.status();
        let body = answer.text().await.map_err(|e| transport(&e))?;
        if status != reqwest::StatusCode::ACCEPTED {
            return Err(RequestFailure {
                kind: FailureClass::Status(status.as_u16()),
                detail: truncate(body.trim()),
            });
        }
        let accepted: Value = serde_json::from_str(&body).map_err(|e| RequestFailure {
            kind: FailureClass::Body,
            detail: e.to_string(),
        })?;
        // One item per image, in upload order: a request id, or the reason it was refused.
        let items = accepted["items"].as_array().cloned().unwrap_or_default();
        for (seq, item) in items.iter().take(self.images.len()).enumerate() {
            match item["id"].as_str() {
                Some(id) => {
                    self.pending.insert(id.to_owned(), seq as u64);
                }
                None => self.complete(seq as u64, Err(rejected(item))),
            }
        }
        let location = accepted["events"].as_str().unwrap_or_default();
        batches.join(location).map_err(|e| RequestFailure {
            kind: FailureClass::Body,
            detail: e.to_string(),
        })
    }

    /// Reads the event stream; `true` once the batch is done.
    async fn follow(
        &mut self,
        client: &reqwest::Client,
        events: &reqwest::Url,
    ) -> Result<bool, RequestFailure> {
        let mut stream = client
            .get(events.clone())
            .send()
            .await
            .map_err(|e| transport(&e))?;
        if !stream.status().is_success() {
            return Err(RequestFailure {
                kind: FailureClass::Status(stream.status().as_u16()),
                detail: events.to_string(),
            });
        }
        let mut buffered = String::new();
        // A chunk may end mid-event (and mid-character): events are cut at blank lines.
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.chunk().await.map_err(|e| transport(&e))? {
            bytes.extend_from_slice(&chunk);
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            buffered.push_str(text);
            bytes.clear();
            while let Some(end) = buffered.find("\n\n") {
                let event: String = buffered.drain(..end + 2).collect();
                let name = event.lines().find_map(|l| l.strip_prefix("event: "));
                let data = event.lines().find_map(|l| l.strip_prefix("data: "));
                match (name, data.map(serde_json::from_str::<Value>)) {
                    (Some("done"), _) => return Ok(true),
                    (Some("result"), Some(Ok(item))) => self.result(&item),
                    _ => {}
                }
            }
        }
        Ok(self.pending.is_empty())
    }

    fn result(&mut self, item: &Value) {
        let Some(seq) = item["id"].as_str().and_then(|id| self.pending.remove(id)) else {
            return;
        };
        let outcome = match item["label"].as_str() {
            Some(label) if item["status"] == "done" => Ok(label.to_owned()),
            _ => Err(rejected(item)),
        };
        self.complete(seq, outcome);
    }
}

/// An image the web tier refused or the app tier could not classify.
fn rejected(item: &Value) -> RequestFailure {
    RequestFailure {
        kind: FailureClass::Rejected,
        detail: truncate(&format!(
            "{}: {}",
            item["error"].as_str().unwrap_or("failed"),
            item["message"].as_str().unwrap_or("")
        )),
    }
}

fn transport(e: &reqwest::Error) -> RequestFailure {
    RequestFailure {
        kind: if e.is_connect() {
            FailureClass::Connect
        } else if e.is_timeout() {
            FailureClass::Timeout
        } else {
            FailureClass::Transport
        },
        detail: truncate(&e.to_string()),
    }
}
