//! Request and response messages.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::{FileName, KeyScheme, MessageKind, ProtocolError, RequestId, json, keys};

/// The message format version this build writes and the only one it reads. Bump it for
/// incompatible changes; additive ones (a new optional field) need no bump because unknown
/// fields are ignored.
pub const PROTOCOL_VERSION: u32 = 1;

/// How many predictions a client gets when it does not ask: just the top one.
pub const DEFAULT_TOP_K: u8 = 1;

fn default_top_k() -> u8 {
    DEFAULT_TOP_K
}

/// One image to classify: the body of a request-queue message.
///
/// Build it with [`build_request`](crate::build_request), which also decides between an
/// inline image and a claim check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct RequestMessage {
    /// [`PROTOCOL_VERSION`] when written by this build.
    pub version: u32,
    /// Correlates the request with its response.
    pub id: RequestId,
    /// The uploaded file name, sanitised.
    pub file_name: FileName,
    /// The image bytes, or where to fetch them.
    pub image: ImagePayload,
    /// Queue (name or URL, as the queue backend understands it) to send the response to.
    pub reply_to: String,
    /// When the web tier accepted the request, in milliseconds since the Unix epoch.
    pub submitted_at_ms: u64,
    /// How many predictions the client asked for (default 1). Workers treat 0 as 1 and
    /// cap it at the number of classes.
    #[serde(default = "default_top_k")]
    pub top_k: u8,
    /// How the worker keys this request's objects (default [`KeyScheme::FileName`]).
    #[serde(default)]
    pub key_scheme: KeyScheme,
}

impl RequestMessage {
    /// Encodes the message as a queue body.
    pub fn encode(&self) -> Result<String, ProtocolError> {
        json::encode(self, self.version, MessageKind::Request)
    }

    /// Decodes a queue body, rejecting other protocol versions.
    pub fn decode(body: &str) -> Result<Self, ProtocolError> {
        json::decode(body, MessageKind::Request)
    }

    /// Where the worker stores the image ([`input_key`](crate::input_key)).
    pub fn input_key(&self) -> String {
        keys::input_key(self.key_scheme, self.id, &self.file_name)
    }

    /// Where the worker stores the result ([`output_key`](crate::output_key)).
    pub fn output_key(&self) -> String {
        keys::output_key(self.key_scheme, self.id, &self.file_name)
    }

    /// The output-bucket value for `label`: `(stem, label)`.
    pub fn output_value(&self, label: &str) -> String {
        keys::output_value(self.file_name.stem(), label)
    }
}

/// The image of a request: inline, or a claim check on the input bucket.
///
/// On the wire: `{"type":"inline","data":"<base64>"}` or `{"type":"claim","key":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImagePayload {
    /// The image bytes, standard base64 with padding.
    Inline {
        /// The base64 text.
        data: String,
    },
    /// The bytes were put in the input bucket under `key` before the request was sent.
    Claim {
        /// Input-bucket key holding the bytes ([`claim_key`](crate::claim_key)).
        key: String,
    },
}

impl ImagePayload {
    /// An inline payload holding `bytes`.
    pub fn inline(bytes: &[u8]) -> Self {
        Self::Inline {
            data: STANDARD.encode(bytes),
        }
    }

    /// The inline image bytes, or `None` for a claim check (fetch the key instead).
    pub fn decode_inline(&self) -> Result<Option<Vec<u8>>, ProtocolError> {
        match self {
            Self::Inline { data } => STANDARD
                .decode(data)
                .map(Some)
                .map_err(|source| ProtocolError::DecodeBase64 { source }),
            Self::Claim { .. } => Ok(None),
        }
    }
}

/// The result of one request: the body of a response-queue message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ResponseMessage {
    /// [`PROTOCOL_VERSION`] when written by this build.
    pub version: u32,
    /// The request's id.
    pub id: RequestId,
    /// The request's file name.
    pub file_name: FileName,
    /// A label, or why there is none.
    pub outcome: Outcome,
    /// Which worker answered (instance and worker slot), for logs and debugging.
    pub worker: String,
    /// Where the time went.
    pub timings: Timings,
}

impl ResponseMessage {
    /// A response of the current protocol version.
    pub fn new(
        id: RequestId,
        file_name: FileName,
        outcome: Outcome,
        worker: impl Into<String>,
        timings: Timings,
    ) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            id,
            file_name,
            outcome,
            worker: worker.into(),
            timings,
        }
    }

    /// Encodes the message as a queue body. Fails on a NaN or infinite score, which JSON
    /// would silently turn into `null` and make the whole response undecodable.
    pub fn encode(&self) -> Result<String, ProtocolError> {
        if let Outcome::Label {
            label,
            score,
            top_k,
        } = &self.outcome
        {
            let scores = std::iter::once((label, *score)).chain(top_k.iter().map(|p| (&p.label, p.score)));
            for (label, score) in scores {
                if !score.is_finite() {
                    return Err(ProtocolError::NonFiniteScore {
                        label: label.clone(),
                    });
                }
            }
        }
        json::encode(self, self.version, MessageKind::Response)
    }

    /// Decodes a queue body, rejecting other protocol versions.
    pub fn decode(body: &str) -> Result<Self, ProtocolError> {
        json::decode(body, MessageKind::Response)
    }
}

/// What became of a request.
///
/// On the wire: `{"type":"label",…}` or `{"type":"error","kind":"…","message":"…"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// The image was classified.
    Label {
        /// The top-1 label.
        label: String,
        /// Its score (a probability in 0..=1 when the model's output is softmaxed).
        score: f32,
        /// The best predictions in descending score order, the first being `label`; as
        /// many as the request's `top_k` (capped at the number of classes).
        top_k: Vec<Prediction>,
    },
    /// The image could not be classified.
    Error {
        /// What went wrong, for code.
        kind: ErrorKind,
        /// What went wrong, for people: one line, no internal detail.
        message: String,
    },
}

impl Outcome {
    /// The top-1 label, if classified.
    pub fn label(&self) -> Option<&str> {
        match self {
            Self::Label { label, .. } => Some(label),
            Self::Error { .. } => None,
        }
    }
}

/// One class and its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Prediction {
    /// The class label.
    pub label: String,
    /// The class index in the model's output.
    pub index: u32,
    /// The class score.
    pub score: f32,
}

/// Why a request has no label. Serialised in snake_case (`bad_payload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request message was unreadable: bad JSON, bad base64, unknown version.
    BadPayload,
    /// The bytes are not an image the worker can decode.
    UndecodableImage,
    /// The image is over the byte or pixel limit.
    ImageTooLarge,
    /// The claim-check object was not in the input bucket.
    MissingClaim,
    /// The worker failed for a reason of its own.
    Internal,
    /// A kind added by a newer worker; lets an older web tier still read the response.
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The wire spelling, e.g. `bad_payload`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadPayload => "bad_payload",
            Self::UndecodableImage => "undecodable_image",
            Self::ImageTooLarge => "image_too_large",
            Self::MissingClaim => "missing_claim",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request's time went, in whole milliseconds.
///
/// `u64` like [`RequestMessage::submitted_at_ms`], so arithmetic between them needs no
/// conversions. `queued_ms` compares the web tier's clock with the worker's, so it is only
/// as good as their clock sync; compute it with `saturating_sub` so skew reads as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Timings {
    /// From `submitted_at_ms` to the worker receiving the message.
    pub queued_ms: u64,
    /// Fetching (for a claim check) and decoding the image.
    pub decode_ms: u64,
    /// Preprocessing and running the model.
    pub inference_ms: u64,
    /// From the worker receiving the message to sending the response.
    pub total_ms: u64,
}
