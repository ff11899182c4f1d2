//! The HTTP handlers: upload, result lookup, health, metrics, and the listener's delivery
//! endpoint.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iras_protocol::internal::{DeliveryReply, Token};
use iras_protocol::{FileName, Outcome, RequestId, ResponseMessage};
use tracing::Instrument;

use crate::error::AppError;
use crate::metrics;
use crate::waiters::{Entered, Lookup, Submitted};
use crate::{AppState, REQUEST_ID_HEADER};

/// The form field the course's workload generator uses; any single file field is accepted.
pub const FILE_FIELD: &str = "myfile";

/// Whether the client's `Accept` names `media_type`.
pub(crate) fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(media_type))
}

/// Whether the client asked for JSON.
fn wants_json(headers: &HeaderMap) -> bool {
    accepts(headers, "application/json")
}

fn with_request_id(mut response: Response, id: RequestId) -> Response {
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// Whether the client asked not to wait (`Prefer: respond-async`, RFC 7240).
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// `POST /`: validate, queue, wait for the label (or, with `Prefer: respond-async`, as
/// `POST /jobs`).
pub(crate) async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    if prefers_async(&headers) {
        return submit_job(State(state), headers, multipart).await;
    }
    let json = wants_json(&headers);
    let started = Instant::now();
    let submitted = match crate::request_id::from_headers(&headers) {
        Ok(client_id) => submit(&state, client_id, multipart).await,
        Err(e) => Err(e),
    };
    match submitted {
        Ok(result) => {
            state
                .metrics
                .upload(metrics::UploadOutcome::label, Some(started.elapsed()));
            answer(&result, json)
        }
        Err(e) => {
            let outcome = e.outcome();
            let queued = matches!(
                outcome,
                metrics::UploadOutcome::classify_error | metrics::UploadOutcome::timeout
            );
            state
                .metrics
                .upload(outcome, queued.then(|| started.elapsed()));
            if !queued && !e.status().is_server_error() {
                tracing::info!(status = e.status().as_u16(), reason = %e, "upload refused");
            }
            e.into_response_as(json)
        }
    }
}

/// A file taken from the form.
struct Upload {
    file_name: Option<String>,
    bytes: Bytes,
}

fn bad_form(e: MultipartError, max_bytes: usize) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return AppError::BodyTooLarge { max_bytes };
    }
    AppError::BadForm {
        status: e.status(),
        message: e.body_text(),
    }
}

/// Takes the one file field of the form (`myfile`, or any field with a file name).
async fn read_upload(multipart: &mut Multipart, max_bytes: usize) -> Result<Upload, AppError> {
    let bad_form = |e| bad_form(e, max_bytes);
    let mut found = None;
    while let Some(field) = multipart.next_field().await.map_err(bad_form)? {
        let is_file = field.file_name().is_some() || field.name() == Some(FILE_FIELD);
        if !is_file {
            continue;
        }
        if found.is_some() {
            return Err(AppError::SeveralFiles);
        }
        let file_name = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(bad_form)?;
        found = Some(Upload { file_name, bytes });
    }
    found.ok_or(AppError::MissingFile)
}

/// Reads the one file of the form within the body timeout, checks it, and names it.
pub(crate) async fn read_checked_upload(
    state: &AppState,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(FileName, Bytes), AppError> {
    let mut multipart = multipart.map_err(|r| AppError::BadForm {
        status: r.status(),
        message: r.body_text(),
    })?;
    let upload = tokio::time::timeout(
        state.config.body_timeout,
        read_upload(&mut multipart, state.config.limits.max_bytes),
    )
    .await
    .map_err(|_| AppError::BodyTimeout {
        timeout_secs: state.config.body_timeout.as_secs(),
    })??;
    check_image(state, upload.file_name.as_deref(), upload.bytes).await
}

/// Validates an image and gives it its file name (`upload.<format>` when it has none).
pub(crate) async fn check_image(
    state: &AppState,
    file_name: Option<&str>,
    bytes: Bytes,
) -> Result<(FileName, Bytes), AppError> {
    let (bytes, format) = crate::validate::validate(state, bytes).await?;
    let file_name = match file_name {
        Some(name) if !name.is_empty() => FileName::sanitize(name)?,
        _ => FileName::parse(&format!("upload.{format}"))?,
    };
    if iras_protocol::is_reserved_output_key(state.config.key_scheme, &file_name) {
        return Err(AppError::ReservedFileName);
    }
    Ok((file_name, bytes))
}

/// Validates, queues and waits. `client_id` is the id the client chose (its
/// `Idempotency-Key`): a retry of it is answered from the stored result, or joins the
/// request this web tier already queued, instead of being classified again.
async fn submit(
    state: &AppState,
    client_id: Option<RequestId>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Arc<ResponseMessage>, AppError> {
    let (file_name, bytes) = read_checked_upload(state, multipart).await?;
    let slot = state.waiters.try_slot().ok_or(AppError::Overloaded)?;
    let id = client_id.unwrap_or_else(RequestId::new);
    let span = tracing::info_span!("upload", request_id = %id, file_name = %file_name);
    async move {
        let submitted = Submitted {
            file_name: file_name.clone(),
            key_scheme: state.config.key_scheme,
        };
        let waiter = match client_id {
            // A fresh id of our own: nobody else can know it.
            None => state.waiters.register(id, submitted, slot),
            Some(_) => {
                // Answered before (by any web tier, before a restart too)?
                if state.waiters.lookup(id).is_unknown()
                    && let Some(stored) = crate::results::stored(state.output_bucket.as_ref(), id)
                        .await
                        .map_err(AppError::Unavailable)?
                {
                    same_file(id, &stored.file_name, &file_name)?;
                    tracing::info!("answered from the stored result, not queued again");
                    return conclude(Arc::new(stored));
                }
                match state.waiters.enter(id, submitted, slot) {
                    Entered::Finished(result) => {
                        same_file(id, &result.file_name, &file_name)?;
                        tracing::info!("answered from memory, not queued again");
                        return conclude(result);
                    }
                    Entered::Waiting {
                        waiter,
                        queue: false,
                        earlier,
                    } => {
                        if let Some(earlier) = earlier {
                            same_file(id, &earlier.file_name, &file_name)?;
                        }
                        tracing::info!("joined the request already queued with this id");
                        return wait(state, id, waiter).await;
                    }
                    Entered::Waiting { waiter, .. } => waiter,
                }
            }
        };
        // Registered before the send, so even an instant answer finds its waiter.
        if let Err(e) = crate::jobs::enqueue(state, id, &file_name, &bytes).await {
            state.waiters.forget(id);
            return Err(AppError::Unavailable(e));
        }
        drop(bytes);
        tracing::debug!("queued");
        wait(state, id, waiter).await
    }
    .instrument(span)
    .await
}

/// A retry must be of the same file as the upload that first used its id.
fn same_file(id: RequestId, first: &FileName, now: &FileName) -> Result<(), AppError> {
    if first == now {
        Ok(())
    } else {
        Err(AppError::IdConflict(id))
    }
}

/// A result as the upload's answer: the label, or the app tier's error.
fn conclude(result: Arc<ResponseMessage>) -> Result<Arc<ResponseMessage>, AppError> {
    match &result.outcome {
        Outcome::Label { label, .. } => {
            tracing::info!(label = %label, worker = %result.worker, "answered");
            Ok(result)
        }
        Outcome::Error { kind, message } => Err(AppError::Classify {
            id: result.id,
            kind: *kind,
            message: message.clone(),
        }),
    }
}

/// Waits, bounded by the request timeout, for the result of `id`.
async fn wait(
    state: &AppState,
    id: RequestId,
    mut waiter: crate::waiters::Waiter,
) -> Result<Arc<ResponseMessage>, AppError> {
    match tokio::time::timeout(state.config.request_timeout, waiter.result()).await {
        Ok(Some(result)) => conclude(result),
        // Only a joiner can see this: the upload it joined failed to queue.
        Ok(None) => Err(AppError::Unavailable(anyhow::anyhow!(
            "the upload this retry joined could not be queued"
        ))),
        Err(_) => {
            tracing::warn!("no result before the deadline");
            Err(AppError::Timeout {
                id,
                timeout_secs: state.config.request_timeout.as_secs(),
            })
        }
    }
}

/// The answer for a finished result: the bare label, or JSON.
fn answer(result: &ResponseMessage, json: bool) -> Response {
    let response = match &result.outcome {
        Outcome::Label { label, .. } if !json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            label.clone(),
        )
            .into_response(),
        Outcome::Label {
            label,
            score,
            top_k,
        } => Json(serde_json::json!({
            "id": result.id.to_string(),
            "filename": result.file_name.as_str(),
            "label": label,
            "score": score,
            "top_k": top_k,
            "worker": result.worker,
            "timings": result.timings,
        }))
        .into_response(),
        Outcome::Error { kind, message } => AppError::Classify {
            id: result.id,
            kind: *kind,
            message: message.clone(),
        }
        .into_response_as(json),
    };
    with_request_id(response, result.id)
}

/// `POST /jobs`: validate and queue one upload, answer `202` with its id at once.
pub(crate) async fn submit_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let accepted = async {
        let client_id = crate::request_id::from_headers(&headers)?;
        let (file_name, bytes) = read_checked_upload(&state, multipart).await?;
        let id = client_id.unwrap_or_else(RequestId::new);
        // A retry of an id already accepted (here or by any web tier) is not queued again.
        let known = match client_id {
            Some(id) => !matches!(
                crate::jobs::state_of(&state, id)
                    .await
                    .map_err(AppError::Unavailable)?,
                crate::jobs::JobState::Unknown
            ),
            None => false,
        };
        if !known {
            crate::jobs::accept(&state, id, file_name, bytes, None).await?;
        }
        Ok::<_, AppError>(id)
    }
    .await;
    match accepted {
        Ok(id) => {
            let location = format!("/results/{id}");
            let body = serde_json::json!({
                "id": id.to_string(), "status": "pending", "location": location,
            });
            accepted_at(&location, body, Some(id))
        }
        Err(e) => e.into_response_as(true),
    }
}

/// A `202 Accepted` answer pointing at `location`, always JSON.
pub(crate) fn accepted_at(
    location: &str,
    body: serde_json::Value,
    id: Option<RequestId>,
) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    match id {
        Some(id) => with_request_id(response, id),
        None => response,
    }
}

/// The query of `GET /results/{id}`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ResultQuery {
    /// Seconds to wait for a pending result (cut to `--result-wait-max-secs`).
    wait: Option<u64>,
}

/// `GET /results/{id}[?wait=SECONDS]`: a result from memory, else from the output bucket;
/// `202` while it is pending (after waiting up to `wait` seconds for it).
pub(crate) async fn result(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    query: Result<Query<ResultQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let json = wants_json(&headers);
    let id = match crate::request_id::parse(&raw_id) {
        Ok(id) => id,
        Err(_) => return AppError::BadId(raw_id.chars().take(64).collect()).into_response_as(json),
    };
    let wait = match query {
        Ok(Query(q)) => std::time::Duration::from_secs(q.wait.unwrap_or(0)),
        Err(e) => return AppError::BadQuery(e.body_text()).into_response_as(json),
    };
    // By id, whatever the key scheme and whichever web tier queued it.
    match crate::jobs::wait_for(&state, id, wait).await {
        Ok(crate::jobs::JobState::Finished(result)) => return answer(&result, json),
        Ok(crate::jobs::JobState::Pending) => return pending(id, json),
        Ok(crate::jobs::JobState::Unknown) => {}
        Err(e) => return AppError::Unavailable(e).into_response_as(json),
    }
    match crate::results::legacy_label(state.output_bucket.as_ref(), id).await {
        Ok(Some(label)) => from_bucket(id, None, &label, json),
        Ok(None) => AppError::UnknownId(id).into_response_as(json),
        Err(e) => AppError::Unavailable(e).into_response_as(json),
    }
}

/// `GET /results/{id}/image`: the image of a request as it was uploaded, from the input
/// bucket (the live view's thumbnails). Served only as the image type its header shows, with
/// `nosniff` and a sandboxing policy, so an upload can never be served as a page.
pub(crate) async fn result_image(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Response {
    match image(&state, &raw_id).await {
        Ok(response) => response,
        Err(e) => e.into_response_as(false),
    }
}

async fn image(state: &AppState, raw_id: &str) -> Result<Response, AppError> {
    let id = crate::request_id::parse(raw_id)
        .map_err(|_| AppError::BadId(raw_id.chars().take(64).collect()))?;
    let (file_name, scheme) = match state.waiters.lookup(id) {
        Lookup::Finished(result) => (result.file_name.clone(), state.config.key_scheme),
        Lookup::Pending(submitted) => (submitted.file_name, submitted.key_scheme),
        Lookup::Unknown => match crate::results::stored(state.output_bucket.as_ref(), id)
            .await
            .map_err(AppError::Unavailable)?
        {
            Some(stored) => (stored.file_name, state.config.key_scheme),
            None => return Err(AppError::UnknownId(id)),
        },
    };
    let key = iras_protocol::input_key(scheme, id, &file_name);
    let bytes = match state.input_bucket.get(&key).await {
        Ok(bytes) => bytes,
        Err(iras_cloud::CloudError::ObjectNotFound { .. }) => return Err(AppError::NoImage(id)),
        Err(e) => return Err(AppError::Unavailable(e.into())),
    };
    let content_type = iras_classifier::probe_image(&bytes, &state.config.limits)
        .ok()
        .and_then(|probe| image_media_type(probe.format))
        .ok_or(AppError::NoImage(id))?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox",
            ),
            // Under the file-name key scheme a later upload of the same name replaces it.
            (header::CACHE_CONTROL, "private, max-age=60"),
        ],
        bytes,
    )
        .into_response())
}

/// The media type of an image format as [`iras_classifier::probe_image`] names it.
fn image_media_type(format: &str) -> Option<&'static str> {
    Some(match format {
        "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "tiff" => "image/tiff",
        _ => return None,
    })
}

fn from_bucket(id: RequestId, file_name: Option<&FileName>, label: &str, json: bool) -> Response {
    let response = if json {
        Json(serde_json::json!({
            "id": id.to_string(),
            "filename": file_name.map(FileName::as_str),
            "label": label,
            "source": "output_bucket",
        }))
        .into_response()
    } else {
        label.to_owned().into_response()
    };
    with_request_id(response, id)
}

/// `202`: accepted, no result yet (queued or being classified: the queue cannot tell).
fn pending(id: RequestId, json: bool) -> Response {
    let response = if json {
        (
            StatusCode::ACCEPTED,
            [(header::RETRY_AFTER, "1")],
            Json(serde_json::json!({"id": id.to_string(), "status": "pending"})),
        )
            .into_response()
    } else {
        (StatusCode::ACCEPTED, "pending\n").into_response()
    };
    with_request_id(response, id)
}

/// `GET /healthz`: the process serves.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(state.waiters.waiting()),
    )
        .into_response()
}

/// The refusal to answer a request that does not present the listener's token.
fn refuse_without_token(headers: &HeaderMap, token: &Token) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| token.matches(p)) {
        None
    } else {
        Some(
            (
                StatusCode::UNAUTHORIZED,
                "missing or wrong listener token\n",
            )
                .into_response(),
        )
    }
}

/// `GET /internal/reply-queue`: the queue the standalone listener is to poll.
pub(crate) async fn reply_queue(
    State((state, token)): State<(AppState, Token)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_without_token(&headers, &token) {
        return refused;
    }
    Json(iras_protocol::internal::ReplyQueueReply {
        reply_queue: state.reply_to.to_string(),
    })
    .into_response()
}

/// `POST /internal/results`: a result from the standalone listener.
pub(crate) async fn deliver(
    State((state, token)): State<(AppState, Token)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(refused) = refuse_without_token(&headers, &token) {
        return refused;
    }
    match ResponseMessage::decode(&body) {
        Ok(response) => Json(DeliveryReply {
            delivery: state.complete(response),
        })
        .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("unreadable result: {e}\n")).into_response(),
    }
}
