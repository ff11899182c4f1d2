//! Batches: many images in one upload, each queued as its own request, collected together.
//!
//! `POST /batches` takes a form with any number of file fields, each an image or a zip or
//! tar of images ([`crate::archive`]). A batch over `--batch-max-images` or
//! `--batch-max-bytes` is refused whole with `413` before anything is queued; so is one
//! that cannot be checked for a reason of the server's (`503`). Otherwise every image is
//! checked: a bad one is listed with its reason and the others are accepted, each queued
//! as its own request message (so the scaler sees the real backlog) through
//! [`crate::jobs::accept`], and the answer is `202` with the batch id and every image in
//! upload order (its request id, or its refusal).
//!
//! The batch record, `results/batches/<id>.json` in the output bucket, lists each image's
//! file name and request id (or its refusal). Progress is not stored anywhere: it is
//! derived from the requests' results (`results/<id>.json`, from memory when this web tier
//! received them), so any web tier, after a restart too, answers for any batch, and a
//! result can never be counted twice nor lost between two records. The record is written
//! once every image is queued; should that write fail, the answer is `503` and the queued
//! images still run (their results are kept by id).
//!
//! - `GET /batches/{id}`: every image's state, then the counts (`done`, `failed`,
//!   `pending`), as JSON, or as CSV (`filename,label,status`) with `Accept: text/csv` or
//!   `?format=csv`. The body is streamed while the results are looked up.
//! - `GET /batches/{id}/events`: server-sent events, one `result` per image as its result
//!   is known (those already known at once), then one `done` with the counts, and the
//!   stream ends. Results this web tier receives come at once; the others (delivered to
//!   another web tier, or before a restart) are found by a look at the output bucket every
//!   [`crate::jobs::BUCKET_CHECK_INTERVAL`]. Like the live view's, the stream ends when the
//!   server starts to drain; a client that reconnects gets every result again from the
//!   start (they carry their request ids).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use iras_cloud::CloudError;
use iras_protocol::{FileName, Outcome, RequestId, ResponseMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::archive::{BatchFile, BatchLimits};
use crate::error::AppError;
use crate::handlers::{FILE_FIELD, accepted_at, accepts, check_image};

/// Images queued, or looked up, at once.
const CONCURRENT_LOOKS: usize = 16;

/// What the output bucket keeps of a batch (`results/batches/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRecord {
    /// The batch.
    pub id: RequestId,
    /// When it was accepted (unix ms).
    pub created_at_ms: u64,
    /// Its images, in upload order.
    pub items: Vec<BatchItem>,
}

/// One image of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchItem {
    /// Its file name.
    pub filename: String,
    /// Its request, when it was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// Why it was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// Why an image of a batch was refused at upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    /// The error code, as in the web tier's JSON errors (`not_an_image`, …).
    pub error: String,
    /// The one-line reason.
    pub message: String,
}

/// One image as progress, CSV and events show it.
#[derive(Debug, Clone, Serialize)]
struct ItemView {
    filename: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<RequestId>,
    /// `done`, `failed` or `pending`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

fn view(item: &BatchItem, result: Option<&ResponseMessage>) -> ItemView {
    let mut v = ItemView {
        filename: item.filename.clone(),
        id: item.id,
        status: "pending",
        label: None,
        score: None,
        error: None,
        message: None,
    };
    if let Some(refused) = &item.refused {
        v.status = "failed";
        v.error = Some(refused.error.clone());
        v.message = Some(refused.message.clone());
    }
    match result.map(|r| &r.outcome) {
        Some(Outcome::Label { label, score, .. }) => {
            v.status = "done";
            v.label = Some(label.clone());
            v.score = Some(*score);
        }
        Some(Outcome::Error { kind, message }) => {
            v.status = "failed";
            v.error = Some(kind.to_string());
            v.message = Some(message.clone());
        }
        None => {}
    }
    v
}

/// How many images are done, failed and pending.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Tally {
    total: usize,
    done: usize,
    failed: usize,
    pending: usize,
}

impl Tally {
    fn count(&mut self, v: &ItemView) {
        self.total += 1;
        match v.status {
            "done" => self.done += 1,
            "failed" => self.failed += 1,
            _ => self.pending += 1,
        }
    }

    fn state(&self) -> &'static str {
        if self.pending == 0 { "done" } else { "running" }
    }
}

/// `POST /batches`: check every image, queue the good ones, answer `202` with the batch id.
pub(crate) async fn submit(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    match accept_batch(&state, multipart).await {
        Ok(record) => {
            let location = format!("/batches/{}", record.id);
            let refused: Vec<_> = record
                .items
                .iter()
                .filter(|i| i.refused.is_some())
                .map(|i| view(i, None))
                .collect();
            let items: Vec<_> = record.items.iter().map(|i| view(i, None)).collect();
            let body = serde_json::json!({
                "batch": record.id,
                "location": location,
                "events": format!("{location}/events"),
                "accepted": items.len() - refused.len(),
                "items": items,
                "refused": refused,
            });
            accepted_at(&location, body, None)
        }
        Err(e) => {
            if !e.status().is_server_error() {
                tracing::info!(status = e.status().as_u16(), reason = %e, "batch refused");
            }
            e.into_response_as(true)
        }
    }
}

async fn accept_batch(
    state: &AppState,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<BatchRecord, AppError> {
    let config = &state.config;
    let mut multipart = multipart.map_err(|r| AppError::BadForm {
        status: r.status(),
        message: r.body_text(),
    })?;
    let files = tokio::time::timeout(
        config.body_timeout,
        read_files(&mut multipart, config.batch_max_bytes),
    )
    .await
    .map_err(|_| AppError::BodyTimeout {
        timeout_secs: config.body_timeout.as_secs(),
    })??;
    let mut limits = BatchLimits::new(config.batch_max_images, config.batch_max_bytes);
    let files = tokio::task::spawn_blocking(move || {
        let mut images = Vec::new();
        for file in files {
            images.extend(crate::archive::unpack(file, &mut limits)?);
        }
        Ok::<_, AppError>(images)
    })
    .await
    .map_err(|e| AppError::Internal(e.into()))??;
    if files.is_empty() {
        return Err(AppError::MissingFile);
    }

    // Every image is checked before any is queued.
    let mut items = Vec::with_capacity(files.len());
    let mut to_queue = Vec::new();
    for (n, file) in files.into_iter().enumerate() {
        let shown_name = file
            .name
            .as_deref()
            .and_then(|n| FileName::sanitize(n).ok())
            .map_or_else(|| format!("upload-{}", n + 1), FileName::into_string);
        match check_image(state, file.name.as_deref(), file.bytes).await {
            Ok((file_name, bytes)) => {
                let id = RequestId::new();
                items.push(BatchItem {
                    filename: file_name.as_str().to_owned(),
                    id: Some(id),
                    refused: None,
                });
                to_queue.push((id, file_name, bytes));
            }
            Err(e) if e.status().is_server_error() => return Err(e),
            Err(e) => items.push(BatchItem {
                filename: shown_name,
                id: None,
                refused: Some(Refusal {
                    error: e.code().to_owned(),
                    message: e.to_string(),
                }),
            }),
        }
    }

    let batch = RequestId::new();
    stream::iter(to_queue)
        .map(|(id, file_name, bytes)| crate::jobs::accept(state, id, file_name, bytes, Some(batch)))
        .buffer_unordered(CONCURRENT_LOOKS)
        .try_collect::<Vec<()>>()
        .await?;
    let record = BatchRecord {
        id: batch,
        created_at_ms: crate::jobs::now_ms(),
        items,
    };
    let body = serde_json::to_vec(&record).map_err(|e| AppError::Internal(e.into()))?;
    state
        .output_bucket
        .put(&iras_protocol::batch_key(batch), body)
        .await
        .map_err(|e| AppError::Unavailable(e.into()))?;
    tracing::info!(batch = %batch, images = record.items.len(), "batch accepted");
    Ok(record)
}

/// Every file field of the form (any field with a file name, or named `myfile`).
async fn read_files(
    multipart: &mut Multipart,
    max_bytes: usize,
) -> Result<Vec<BatchFile>, AppError> {
    let over = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::BatchTooLarge(format!("the upload is over {max_bytes} bytes"))
        } else {
            AppError::BadForm {
                status: e.status(),
                message: e.body_text(),
            }
        }
    };
    let mut files = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(over)? {
        if field.file_name().is_none() && field.name() != Some(FILE_FIELD) {
            continue;
        }
        let name = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(over)?;
        files.push(BatchFile { name, bytes });
    }
    Ok(files)
}

/// The record of batch `id`.
async fn load(state: &AppState, raw_id: &str) -> Result<Arc<BatchRecord>, AppError> {
    let id = crate::request_id::parse(raw_id)
        .map_err(|_| AppError::BadId(raw_id.chars().take(64).collect()))?;
    let key = iras_protocol::batch_key(id);
    match state.output_bucket.get(&key).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Arc::new)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("{key}: {e}"))),
        Err(CloudError::ObjectNotFound { .. }) => Err(AppError::UnknownBatch(id)),
        Err(e) => Err(AppError::Unavailable(e.into())),
    }
}

/// Every image of `record` with its state, in order, looked up a few at a time.
fn item_views(
    state: AppState,
    record: Arc<BatchRecord>,
) -> impl Stream<Item = anyhow::Result<ItemView>> + Send + 'static {
    stream::iter(0..record.items.len())
        .map(move |i| {
            let (state, record) = (state.clone(), record.clone());
            async move {
                let item = &record.items[i];
                let result = match item.id {
                    Some(id) => crate::jobs::finished(&state, id).await?,
                    None => None,
                };
                Ok(view(item, result.as_deref()))
            }
        })
        .buffered(CONCURRENT_LOOKS)
}

/// The query of `GET /batches/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ProgressQuery {
    /// `json` or `csv` (beats `Accept`).
    format: Option<String>,
}

/// `GET /batches/{id}`: every image's state and the counts, as JSON or CSV, streamed.
pub(crate) async fn progress(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    query: Result<Query<ProgressQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let csv = match query.map(|Query(q)| q.format) {
        Ok(None) => accepts(&headers, "text/csv"),
        Ok(Some(f)) if f == "csv" => true,
        Ok(Some(f)) if f == "json" => false,
        Ok(Some(_)) => {
            return AppError::BadQuery("format must be `json` or `csv`".into())
                .into_response_as(true);
        }
        Err(e) => return AppError::BadQuery(e.body_text()).into_response_as(true),
    };
    let record = match load(&state, &raw_id).await {
        Ok(record) => record,
        Err(e) => return e.into_response_as(!csv),
    };
    let id = record.id;
    let views = item_views(state, record);
    if csv {
        let head = stream::once(async { Ok(Bytes::from_static(b"filename,label,status\n")) });
        let rows = views.map_ok(|v| {
            let status = v.error.as_deref().unwrap_or(v.status);
            let label = v.label.as_deref().unwrap_or("");
            Bytes::from(format!(
                "{},{},{}\n",
                csv_field(&v.filename),
                csv_field(label),
                csv_field(status)
            ))
        });
        (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            Body::from_stream(head.chain(rows)),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(json_body(id, views)),
        )
            .into_response()
    }
}

/// `{"batch":…,"items":[…],"total":…,"done":…,"failed":…,"pending":…,"state":…}`, the items
/// written as they are looked up and the counts after them.
fn json_body(
    id: RequestId,
    views: impl Stream<Item = anyhow::Result<ItemView>> + Send + 'static,
) -> impl Stream<Item = anyhow::Result<Bytes>> + Send + 'static {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let counted = tally.clone();
    let head =
        stream::once(async move { Ok(Bytes::from(format!("{{\"batch\":\"{id}\",\"items\":["))) });
    let items = views.enumerate().map(move |(i, v)| {
        let v = v?;
        counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .count(&v);
        let sep = if i == 0 { "" } else { "," };
        Ok(Bytes::from(format!("{sep}{}", serde_json::to_string(&v)?)))
    });
    // Polled only after the last item: the counts are complete.
    let tail = stream::once(async move {
        let tally = *tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counts = serde_json::to_value(tally)?;
        Ok(Bytes::from(format!(
            "],\"total\":{},\"done\":{},\"failed\":{},\"pending\":{},\"state\":\"{}\"}}",
            counts["total"],
            counts["done"],
            counts["failed"],
            counts["pending"],
            tally.state()
        )))
    });
    head.chain(items).chain(tail)
}

/// A CSV field, quoted when it must be (labels such as `tench, Tinca tinca` hold commas).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `GET /batches/{id}/events`: a `result` event per image as its result is known, then
/// `done` with the counts.
pub(crate) async fn events(State(state): State<AppState>, Path(raw_id): Path<String>) -> Response {
    // Subscribed before the first look, so no result slips between the two.
    let announced = state.waiters.subscribe();
    let record = match load(&state, &raw_id).await {
        Ok(record) => record,
        Err(e) => return e.into_response_as(true),
    };
    let follower = Follower::new(state, record, announced);
    let events = stream::unfold(follower, |mut f| async move {
        let event = f.next().await?;
        Some((Ok::<_, Infallible>(event), f))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Follows one batch's results for its event stream.
struct Follower {
    state: AppState,
    record: Arc<BatchRecord>,
    /// Requests without a result yet, with their index in the record.
    pending: HashMap<RequestId, usize>,
    /// Events to send before looking further.
    ready: VecDeque<Event>,
    tally: Tally,
    announced: broadcast::Receiver<Arc<ResponseMessage>>,
    /// Looks in the output bucket; the first tick is at once (the results known already).
    check: tokio::time::Interval,
    /// Cancelled when the server starts to drain: the stream ends.
    draining: CancellationToken,
    ended: bool,
}

impl Follower {
    fn new(
        state: AppState,
        record: Arc<BatchRecord>,
        announced: broadcast::Receiver<Arc<ResponseMessage>>,
    ) -> Self {
        let mut f = Self {
            draining: state.live.draining(),
            check: tokio::time::interval(crate::jobs::BUCKET_CHECK_INTERVAL),
            state,
            pending: HashMap::new(),
            ready: VecDeque::new(),
            tally: Tally::default(),
            announced,
            record: record.clone(),
            ended: false,
        };
        f.check
            .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for (i, item) in record.items.iter().enumerate() {
            match item.id {
                Some(id) => {
                    f.pending.insert(id, i);
                }
                None => f.send(view(item, None)),
            }
        }
        f
    }

    fn send(&mut self, v: ItemView) {
        self.tally.count(&v);
        let data = serde_json::to_string(&v).unwrap_or_default();
        self.ready
            .push_back(Event::default().event("result").data(data));
    }

    fn resolve(&mut self, result: &ResponseMessage) {
        if let Some(i) = self.pending.remove(&result.id) {
            let record = self.record.clone();
            self.send(view(&record.items[i], Some(result)));
        }
    }

    /// Looks up every pending request, in memory and in the output bucket.
    async fn look(&mut self) {
        let ids: Vec<RequestId> = self.pending.keys().copied().collect();
        let state = &self.state;
        let found: Vec<_> = stream::iter(ids)
            .map(|id| crate::jobs::finished(state, id))
            .buffer_unordered(CONCURRENT_LOOKS)
            .collect()
            .await;
        for result in found {
            match result {
                Ok(Some(result)) => self.resolve(&result),
                Ok(None) => {}
                // The next look tries again.
                Err(e) => tracing::warn!(error = format!("{e:#}"), "looking up a batch's result"),
            }
        }
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            if self.pending.is_empty() {
                self.ended = true;
                let data = serde_json::json!({
                    "batch": self.record.id,
                    "total": self.tally.total,
                    "done": self.tally.done,
                    "failed": self.tally.failed,
                    "pending": 0,
                    "state": "done",
                });
                return Some(Event::default().event("done").data(data.to_string()));
            }
            let look = tokio::select! {
                () = self.draining.cancelled() => return None,
                announcement = self.announced.recv() => match announcement {
                    Ok(result) => {
                        self.resolve(&result);
                        false
                    }
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return None,
                },
                _ = self.check.tick() => true,
            };
            if look {
                self.look().await;
            }
        }
    }
}
