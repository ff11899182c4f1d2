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

/// Room for everything in a message but its image (ids, names, queue URL, timings, top-k).
const ENVELOPE_BYTES: usize = 1024;

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
        let image = match &self.image {
            ImagePayload::Inline { data } => data.len(),
            ImagePayload::Claim { key } => key.len(),
        };
        json::encode(
            self,
            self.version,
            MessageKind::Request,
            ENVELOPE_BYTES + image,
        )
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

    /// Where the worker stores the whole response, by id ([`result_key`](crate::result_key)).
    pub fn result_key(&self) -> String {
        keys::result_key(self.id)
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
            let scores =
                std::iter::once((label, *score)).chain(top_k.iter().map(|p| (&p.label, p.score)));
            for (label, score) in scores {
                if !score.is_finite() {
                    return Err(ProtocolError::NonFiniteScore {
                        label: label.clone(),
                    });
                }
            }
        }
        json::encode(self, self.version, MessageKind::Response, ENVELOPE_BYTES)
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
    /// A service the worker needs (a bucket, a queue, room to decode) kept failing until
    /// the request's last attempt; trying again later may pass.
    Unavailable,
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
            Self::Unavailable => "unavailable",
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_request() -> RequestMessage {
        RequestMessage {
            version: PROTOCOL_VERSION,
            id: "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap(),
            file_name: FileName::parse("test_0.JPEG").unwrap(),
            image: ImagePayload::inline(b"\xff\xd8\xff"),
            reply_to: "iras-response".into(),
            submitted_at_ms: 1_700_000_000_000,
            top_k: 3,
            key_scheme: KeyScheme::RequestId,
        }
    }

    fn sample_response() -> ResponseMessage {
        ResponseMessage::new(
            "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap(),
            FileName::parse("test_0.JPEG").unwrap(),
            Outcome::Label {
                label: "bathtub".into(),
                score: 0.75,
                top_k: vec![
                    Prediction {
                        label: "bathtub".into(),
                        index: 435,
                        score: 0.75,
                    },
                    Prediction {
                        label: "tub".into(),
                        index: 876,
                        score: 0.125,
                    },
                ],
            },
            "app-instance-1/0",
            Timings {
                queued_ms: 12,
                decode_ms: 3,
                inference_ms: 40,
                total_ms: 45,
            },
        )
    }

    #[test]
    fn request_wire_format() {
        let body = sample_request().encode().unwrap();
        assert_eq!(
            body,
            r#"{"version":1,"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","file_name":"test_0.JPEG","image":{"type":"inline","data":"/9j/"},"reply_to":"iras-response","submitted_at_ms":1700000000000,"top_k":3,"key_scheme":"request-id"}"#
        );
        assert_eq!(RequestMessage::decode(&body).unwrap(), sample_request());
    }

    #[test]
    fn response_wire_format() {
        let body = sample_response().encode().unwrap();
        assert_eq!(
            body,
            r#"{"version":1,"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","file_name":"test_0.JPEG","outcome":{"type":"label","label":"bathtub","score":0.75,"top_k":[{"label":"bathtub","index":435,"score":0.75},{"label":"tub","index":876,"score":0.125}]},"worker":"app-instance-1/0","timings":{"queued_ms":12,"decode_ms":3,"inference_ms":40,"total_ms":45}}"#
        );
        assert_eq!(ResponseMessage::decode(&body).unwrap(), sample_response());

        let mut err = sample_response();
        err.outcome = Outcome::Error {
            kind: ErrorKind::UndecodableImage,
            message: "not an image".into(),
        };
        let body = err.encode().unwrap();
        assert!(body.contains(
            r#""outcome":{"type":"error","kind":"undecodable_image","message":"not an image"}"#
        ));
        assert_eq!(ResponseMessage::decode(&body).unwrap(), err);
    }

    #[test]
    fn request_defaults_and_unknown_fields() {
        let body = r#"{"version":1,"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","file_name":"a.png","image":{"type":"claim","key":"k"},"reply_to":"q","submitted_at_ms":5,"added_later":true}"#;
        let req = RequestMessage::decode(body).unwrap();
        assert_eq!(req.top_k, DEFAULT_TOP_K);
        assert_eq!(req.key_scheme, KeyScheme::FileName);
        assert_eq!(req.image, ImagePayload::Claim { key: "k".into() });
        assert_eq!(req.image.decode_inline().unwrap(), None);
        assert_eq!(req.input_key(), "a.png");
        assert_eq!(req.output_key(), "a");
        assert_eq!(req.output_value("cat"), "(a, cat)");
    }

    #[test]
    fn rejects_other_versions() {
        let body = sample_request().encode().unwrap();
        let v2 = body.replacen(r#""version":1"#, r#""version":2"#, 1);
        let err = RequestMessage::decode(&v2).unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::UnsupportedVersion {
                    message: MessageKind::Request,
                    found: 2,
                    supported: 1
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the request has protocol version 2; this build speaks version 1"
        );
        // Even when the rest of the body would not parse as version 1.
        let err = ResponseMessage::decode(r#"{"version":7,"totally":"different"}"#).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::UnsupportedVersion { found: 7, .. }
        ));

        let missing = body.replacen(r#""version":1,"#, "", 1);
        assert!(matches!(
            RequestMessage::decode(&missing).unwrap_err(),
            ProtocolError::MissingVersion { .. }
        ));

        let mut req = sample_request();
        req.version = 2;
        assert!(matches!(
            req.encode().unwrap_err(),
            ProtocolError::UnsupportedVersion { found: 2, .. }
        ));
    }

    #[test]
    fn rejects_bad_bodies_as_bad_payload() {
        let good = sample_request().encode().unwrap();
        for bad in [
            String::new(),
            "not json".into(),
            "[1]".into(),
            r#"{"version":"1"}"#.into(),
            good.replace("test_0.JPEG", "../test_0.JPEG"),
            good.replace("67e55044-", "67e55044"),
            good.replace(r#""type":"inline""#, r#""type":"smoke_signal""#),
            good.replace(r#""top_k":3"#, r#""top_k":300"#),
        ] {
            let err = RequestMessage::decode(&bad).unwrap_err();
            assert_eq!(err.error_kind(), ErrorKind::BadPayload, "{bad}: {err:?}");
        }
    }

    #[test]
    fn bad_base64_is_a_typed_error() {
        let payload = ImagePayload::Inline {
            data: "not base64!".into(),
        };
        let err = payload.decode_inline().unwrap_err();
        assert!(matches!(err, ProtocolError::DecodeBase64 { .. }));
        assert_eq!(err.error_kind(), ErrorKind::BadPayload);
    }

    #[test]
    fn refuses_to_encode_non_finite_scores() {
        let mut resp = sample_response();
        if let Outcome::Label { top_k, .. } = &mut resp.outcome {
            top_k[1].score = f32::NAN;
        }
        let err = resp.encode().unwrap_err();
        assert!(
            matches!(&err, ProtocolError::NonFiniteScore { label } if label == "tub"),
            "{err:?}"
        );
        assert_eq!(err.error_kind(), ErrorKind::Internal);
    }

    #[test]
    fn unknown_error_kinds_still_decode() {
        let body = sample_response()
            .encode()
            .unwrap()
            .replace(
                r#"{"type":"label","label":"bathtub","score":0.75,"top_k":[{"label":"bathtub","index":435,"score":0.75},{"label":"tub","index":876,"score":0.125}]}"#,
                r#"{"type":"error","kind":"gpu_on_fire","message":"m"}"#,
            );
        let resp = ResponseMessage::decode(&body).unwrap();
        assert_eq!(
            resp.outcome,
            Outcome::Error {
                kind: ErrorKind::Unknown,
                message: "m".into()
            }
        );
        assert_eq!(resp.outcome.label(), None);
    }

    #[test]
    fn error_kind_display_matches_serde() {
        for kind in [
            ErrorKind::BadPayload,
            ErrorKind::UndecodableImage,
            ErrorKind::ImageTooLarge,
            ErrorKind::MissingClaim,
            ErrorKind::Internal,
            ErrorKind::Unavailable,
            ErrorKind::Unknown,
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
    }

    // Strategies shared with the limits tests.

    pub(crate) fn arb_id() -> impl Strategy<Value = RequestId> {
        any::<[u8; 16]>().prop_map(|b| RequestId::from_uuid(uuid::Uuid::from_bytes(b)))
    }

    pub(crate) fn arb_file_name() -> impl Strategy<Value = FileName> {
        prop_oneof![
            "[a-zA-Z0-9_]{1,20}\\.(jpg|JPEG|png)",
            "\\PC{1,255}",
            any::<String>(),
        ]
        .prop_filter_map("not a valid file name", |raw| FileName::sanitize(&raw).ok())
    }

    fn arb_key_scheme() -> impl Strategy<Value = KeyScheme> {
        prop_oneof![Just(KeyScheme::FileName), Just(KeyScheme::RequestId)]
    }

    fn arb_payload() -> impl Strategy<Value = ImagePayload> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512).prop_map(|b| ImagePayload::inline(&b)),
            any::<String>().prop_map(|key| ImagePayload::Claim { key }),
        ]
    }

    fn arb_request() -> impl Strategy<Value = RequestMessage> {
        (
            arb_id(),
            arb_file_name(),
            arb_payload(),
            any::<String>(),
            any::<u64>(),
            any::<u8>(),
            arb_key_scheme(),
        )
            .prop_map(
                |(id, file_name, image, reply_to, submitted_at_ms, top_k, key_scheme)| {
                    RequestMessage {
                        version: PROTOCOL_VERSION,
                        id,
                        file_name,
                        image,
                        reply_to,
                        submitted_at_ms,
                        top_k,
                        key_scheme,
                    }
                },
            )
    }

    fn arb_score() -> impl Strategy<Value = f32> {
        prop_oneof![
            0.0f32..=1.0,
            prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO
        ]
    }

    fn arb_outcome() -> impl Strategy<Value = Outcome> {
        let prediction =
            (any::<String>(), any::<u32>(), arb_score()).prop_map(|(label, index, score)| {
                Prediction {
                    label,
                    index,
                    score,
                }
            });
        let kind = prop_oneof![
            Just(ErrorKind::BadPayload),
            Just(ErrorKind::UndecodableImage),
            Just(ErrorKind::ImageTooLarge),
            Just(ErrorKind::MissingClaim),
            Just(ErrorKind::Internal),
            Just(ErrorKind::Unavailable),
            Just(ErrorKind::Unknown),
        ];
        prop_oneof![
            (
                any::<String>(),
                arb_score(),
                prop::collection::vec(prediction, 0..5)
            )
                .prop_map(|(label, score, top_k)| Outcome::Label {
                    label,
                    score,
                    top_k
                }),
            (kind, any::<String>()).prop_map(|(kind, message)| Outcome::Error { kind, message }),
        ]
    }

    fn arb_response() -> impl Strategy<Value = ResponseMessage> {
        (
            arb_id(),
            arb_file_name(),
            arb_outcome(),
            any::<String>(),
            any::<[u64; 4]>(),
        )
            .prop_map(|(id, file_name, outcome, worker, t)| {
                ResponseMessage::new(
                    id,
                    file_name,
                    outcome,
                    worker,
                    Timings {
                        queued_ms: t[0],
                        decode_ms: t[1],
                        inference_ms: t[2],
                        total_ms: t[3],
                    },
                )
            })
    }

    /// Characters SQS accepts in a body: tab, LF, CR, U+0020–U+D7FF, U+E000–U+FFFD,
    /// U+10000 and up.
    fn sqs_accepts(body: &str) -> bool {
        body.chars().all(|c| {
            matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        })
    }

    proptest! {
        #[test]
        fn request_round_trip(req in arb_request()) {
            let body = req.encode().unwrap();
            prop_assert!(sqs_accepts(&body));
            prop_assert_eq!(RequestMessage::decode(&body).unwrap(), req);
        }

        #[test]
        fn response_round_trip(resp in arb_response()) {
            let body = resp.encode().unwrap();
            prop_assert!(sqs_accepts(&body));
            prop_assert_eq!(ResponseMessage::decode(&body).unwrap(), resp);
        }

        #[test]
        fn inline_payload_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let payload = ImagePayload::inline(&bytes);
            prop_assert_eq!(payload.decode_inline().unwrap(), Some(bytes));
        }

        #[test]
        fn decode_never_panics(body in any::<String>()) {
            let _ = RequestMessage::decode(&body);
            let _ = ResponseMessage::decode(&body);
        }
    }
}
