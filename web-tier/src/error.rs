//! Every way a request can fail, and the status and one-line reason each gets.
//!
//! Client errors say what was wrong; server errors say only what the client can do
//! (retry later), while their detail goes to the log, never to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use iras_protocol::{ErrorKind, RequestId};

use crate::metrics;

/// A request that ends without a label.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body is not a readable multipart form (or is over the body limit).
    #[error("{message}")]
    BadForm {
        /// The status the multipart parser chose (400, 413 or 415).
        status: StatusCode,
        /// Its reason.
        message: String,
    },
    /// The request body is over the upload limit.
    #[error("upload over the limit of {max_bytes} bytes")]
    BodyTooLarge {
        /// The image byte limit.
        max_bytes: usize,
    },
    /// The upload did not arrive within the body timeout.
    #[error("the upload was not received within {timeout_secs} s")]
    BodyTimeout {
        /// The body timeout.
        timeout_secs: u64,
    },
    /// The decode budget stayed full for the whole wait.
    #[error("too many images are being checked at once; retry shortly")]
    DecodeBusy(#[source] iras_classifier::BudgetError),
    /// The form has no file field.
    #[error("no file in the form: send the image as the multipart file field `myfile`")]
    MissingFile,
    /// The form has more than one file field.
    #[error("one image per request: the form has more than one file field")]
    SeveralFiles,
    /// The upload is not an acceptable image.
    #[error("{0}")]
    BadImage(#[from] iras_classifier::ImageError),
    /// The uploaded file's name is unusable even after taking its base name.
    #[error("unusable file name: {0}")]
    BadFileName(#[from] iras_protocol::FileNameError),
    /// Too many requests are waiting.
    #[error("too many requests waiting for results; retry shortly")]
    Overloaded,
    /// The queue or bucket failed; the detail is logged.
    #[error("the queue or bucket is unavailable; retry shortly")]
    Unavailable(#[source] anyhow::Error),
    /// No result before the deadline.
    #[error("no result within {timeout_secs} s; fetch it later from /results/{id}")]
    Timeout {
        /// The request, for `GET /results/{id}`.
        id: RequestId,
        /// The deadline that passed.
        timeout_secs: u64,
    },
    /// The app tier answered with an error.
    #[error("could not classify the image ({kind}): {message}")]
    Classify {
        /// The request.
        id: RequestId,
        /// What went wrong.
        kind: ErrorKind,
        /// The worker's one-line reason.
        message: String,
    },
    /// An `Idempotency-Key` or `X-Request-Id` header that is not a usable request id.
    #[error("bad request id: {0}")]
    BadRequestId(String),
    /// A client id already used for an upload of another file.
    #[error(
        "request id {0} was already used for an upload of another file; send a new id for a new upload"
    )]
    IdConflict(RequestId),
    /// Under the file-name key scheme, a file whose stem is the reserved `results`.
    #[error("the file name stem `results` is reserved (it holds results by id); rename the file")]
    ReservedFileName,
    /// `GET /results/{id}` with something that is not a request id.
    #[error("not a request id: {0}")]
    BadId(String),
    /// A query string that cannot be read (e.g. `?wait=soon`).
    #[error("bad query: {0}")]
    BadQuery(String),
    /// A batch over `--batch-max-images` or `--batch-max-bytes`, refused whole.
    #[error("batch over the limit: {0}; nothing was queued")]
    BatchTooLarge(String),
    /// An archive in a batch that cannot be read.
    #[error("unreadable archive {name}: {reason}")]
    BadArchive {
        /// The archive's file name.
        name: String,
        /// Why.
        reason: String,
    },
    /// `GET /batches/{id}` for a batch nobody knows.
    #[error("unknown batch id {0}")]
    UnknownBatch(RequestId),
    /// `GET /results/{id}` for an id nobody knows.
    #[error("unknown request id {0}")]
    UnknownId(RequestId),
    /// `GET /results/{id}/image` for a request whose image is not (or no longer) stored.
    #[error("no image stored for request {0}")]
    NoImage(RequestId),
    /// A bug or an unexpected failure; the detail is logged.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        use iras_classifier::ImageError as E;
        match self {
            Self::BadForm { status, .. } => *status,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MissingFile
            | Self::SeveralFiles
            | Self::BadFileName(_)
            | Self::BadId(_)
            | Self::BadRequestId(_)
            | Self::BadQuery(_)
            | Self::BadArchive { .. }
            | Self::ReservedFileName => StatusCode::BAD_REQUEST,
            Self::BatchTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::IdConflict(_) => StatusCode::CONFLICT,
            Self::BadImage(e) if e.is_too_large() => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::BadImage(E::NotAnImage | E::UnsupportedFormat { .. }) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::BadImage(_) => StatusCode::BAD_REQUEST,
            Self::Overloaded | Self::DecodeBusy(_) | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            // The worker's own failure or an outage it gave up on is not the client's fault.
            Self::Classify {
                kind: ErrorKind::Internal,
                ..
            } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Classify {
                kind: ErrorKind::Unavailable,
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Classify { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnknownId(_) | Self::UnknownBatch(_) | Self::NoImage(_) => StatusCode::NOT_FOUND,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short machine-readable name of the error, in JSON answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadForm { .. } => "bad_form",
            Self::BodyTooLarge { .. } => "too_large",
            Self::MissingFile => "missing_file",
            Self::SeveralFiles => "several_files",
            Self::BadImage(iras_classifier::ImageError::Empty) => "empty_file",
            Self::BadImage(e) if e.is_too_large() => "too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::DecodeBusy(_) => "overloaded",
            Self::BadImage(_) => "not_an_image",
            Self::BadFileName(_) => "bad_file_name",
            Self::Overloaded => "overloaded",
            Self::Unavailable(_) => "unavailable",
            Self::Timeout { .. } => "timeout",
            Self::Classify { kind, .. } => kind.as_str(),
            Self::BadId(_) => "bad_id",
            Self::BadRequestId(_) => "bad_request_id",
            Self::IdConflict(_) => "id_conflict",
            Self::ReservedFileName => "reserved_file_name",
            Self::UnknownId(_) => "unknown_id",
            Self::BadQuery(_) => "bad_query",
            Self::BatchTooLarge(_) => "batch_too_large",
            Self::BadArchive { .. } => "bad_archive",
            Self::UnknownBatch(_) => "unknown_batch",
            Self::NoImage(_) => "no_image",
            Self::Internal(_) => "internal",
        }
    }

    /// The outcome this error counts as in the upload metrics.
    pub fn outcome(&self) -> metrics::UploadOutcome {
        match self {
            Self::Overloaded | Self::DecodeBusy(_) => metrics::UploadOutcome::overloaded,
            Self::Unavailable(_) => metrics::UploadOutcome::unavailable,
            Self::Timeout { .. } => metrics::UploadOutcome::timeout,
            Self::Classify { .. } => metrics::UploadOutcome::classify_error,
            Self::Internal(_) => metrics::UploadOutcome::internal,
            _ => metrics::UploadOutcome::rejected,
        }
    }

    /// The request this error is about, if it got an id.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Self::Timeout { id, .. }
            | Self::Classify { id, .. }
            | Self::UnknownId(id)
            | Self::NoImage(id)
            | Self::IdConflict(id) => Some(*id),
            _ => None,
        }
    }

    /// The answer, as text or (when `json`) as `{"error": code, "message": …, "id": …}`.
    pub fn into_response_as(self, json: bool) -> Response {
        let status = self.status();
        if let Self::Unavailable(e) | Self::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let message = self.to_string();
        let id = self.request_id();
        let mut response = if json {
            let mut body = serde_json::json!({"error": self.code(), "message": message});
            if let Some(id) = id {
                body["id"] = serde_json::Value::String(id.to_string());
            }
            (status, axum::Json(body)).into_response()
        } else {
            (status, format!("{message}\n")).into_response()
        };
        let headers = response.headers_mut();
        if let Some(v) = id.and_then(|id| HeaderValue::from_str(&id.to_string()).ok()) {
            headers.insert(crate::REQUEST_ID_HEADER, v);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// `Retry-After` on 503 answers, in seconds.
const RETRY_AFTER_SECS: &str = "2";

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.into_response_as(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(kind: ErrorKind) -> AppError {
        AppError::Classify {
            id: RequestId::new(),
            kind,
            message: "m".into(),
        }
    }

    #[test]
    fn a_worker_error_is_the_clients_fault_only_when_it_is() {
        for kind in [
            ErrorKind::BadPayload,
            ErrorKind::UndecodableImage,
            ErrorKind::ImageTooLarge,
            ErrorKind::MissingClaim,
            ErrorKind::Unknown,
        ] {
            assert_eq!(
                classify(kind).status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{kind}"
            );
        }
        assert_eq!(
            classify(ErrorKind::Internal).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        // An outage the worker gave up on: try again later, as any 503 says.
        let r = classify(ErrorKind::Unavailable).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], RETRY_AFTER_SECS);
        assert!(r.headers().contains_key(crate::REQUEST_ID_HEADER));
    }
}
