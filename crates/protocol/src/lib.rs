//! Everything that crosses a process boundary between iras binaries: wire messages, object
//! keys, the message limit, the web tier's internal endpoints, and every environment
//! variable's name. No I/O.
//!
//! The web tier, the app-tier workers and the listener talk only through queue messages,
//! bucket objects and (the standalone listener) two loopback endpoints; systemd units, the
//! fleet and the emulator configure them through environment variables. This crate is the
//! one place that says what those look like, so the binaries cannot drift apart. It does no
//! I/O: everything here is a pure function or a plain data type, tested with unit and
//! property tests.
//!
//! # Main types
//!
//! - [`RequestId`]: the UUID that correlates a request with its result. Correlation always
//!   uses the id, never the file name.
//! - [`FileName`]: an upload file name reduced to a safe last path component
//!   ([`FileName::sanitize`] for browser input, strict [`FileName::parse`] for the wire).
//! - [`RequestMessage`] / [`ResponseMessage`]: the JSON bodies on the request and response
//!   queues, with [`ImagePayload`] (inline base64 or a claim check) and [`Outcome`]
//!   (a label with scores, or an [`ErrorKind`]). Both carry a `version`; decoding rejects
//!   versions this build does not speak with [`ProtocolError::UnsupportedVersion`].
//! - [`KeyScheme`] with [`input_key`], [`output_key`], [`claim_key`], [`output_value`] and
//!   [`parse_output_value`]: the bucket layout. The default [`KeyScheme::FileName`] is the
//!   layout the seed was graded on (`test_0.JPEG` in, `test_0` → `(test_0, bathtub)` out);
//!   [`KeyScheme::RequestId`] never collides. Under either scheme [`result_key`]
//!   (`results/<id>.json`) holds the whole response by id, for `GET /results/{id}`.
//! - [`build_request`] → [`PlannedRequest`]: the inline-versus-claim-check decision, with
//!   the queue's message limit [`MAX_MESSAGE_BYTES`]. The image limits (bytes, pixels, decode
//!   memory) live in one place, `iras_classifier::decode`, which both tiers use.
//! - [`internal`]: the paths and answers of the web tier's internal endpoints and the
//!   [`Token`] both sides share.
//! - [`env`]: the name of every environment variable, once.
//!
//! # Example
//!
//! ```
//! use iras_protocol::{
//!     build_request, FileName, KeyScheme, Outcome, PlannedRequest, Prediction, RequestId,
//!     RequestMessage, ResponseMessage, Timings, MAX_MESSAGE_BYTES,
//! };
//!
//! // Web tier: name the upload, plan the message.
//! let name = FileName::sanitize(r"C:\fakepath\test_0.JPEG")?;
//! let id = RequestId::new();
//! let plan = build_request(
//!     id, &name, b"jpeg bytes", "iras-response", 1_700_000_000_000, 1,
//!     KeyScheme::FileName, MAX_MESSAGE_BYTES,
//! )?;
//! let PlannedRequest::Inline(body) = plan else { unreachable!("tiny image") };
//!
//! // App tier: decode, classify, answer.
//! let request = RequestMessage::decode(&body)?;
//! assert_eq!(request.image.decode_inline()?.as_deref(), Some(&b"jpeg bytes"[..]));
//! assert_eq!(request.input_key(), "test_0.JPEG");
//! assert_eq!(request.output_key(), "test_0");
//! assert_eq!(request.output_value("bathtub"), "(test_0, bathtub)");
//! let top = Prediction { label: "bathtub".into(), index: 435, score: 0.9 };
//! let outcome = Outcome::Label { label: top.label.clone(), score: top.score, top_k: vec![top] };
//! let response =
//!     ResponseMessage::new(request.id, request.file_name, outcome, "app-instance-1", Timings::default());
//!
//! // Listener: correlate by id.
//! let response = ResponseMessage::decode(&response.encode()?)?;
//! assert_eq!((response.id, response.outcome.label()), (id, Some("bathtub")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design decisions a reader may question
//!
//! **The claim check is decided by the exact encoded size, not an estimate.** The queue
//! rejects a body one byte over its limit, and the non-image part of a request (file name,
//! reply-to queue URL, JSON escaping of non-ASCII names) varies per request. So
//! [`build_request`] measures the request with an empty image, adds the exact base64
//! length ([`base64_encoded_len`]; the base64 alphabet needs no JSON escaping), and then
//! checks the real body's length again before calling it inline. An inline body is
//! therefore never over the limit, and an image goes through the bucket only when inlining
//! it really would not fit. Claim-check objects always live under a request-id key
//! ([`claim_key`]), whatever the key scheme: two concurrent uploads of `test_0.JPEG` must
//! not overwrite each other's bytes before a worker reads them.
//!
//! **The request carries its reply-to queue and key scheme.** Workers hold no
//! per-web-tier configuration: every request says where its result goes and how its
//! objects are keyed, so several web tiers (or a test harness with its own response
//! queue) can share one worker fleet, and changing the key scheme never needs the fleet
//! restarted in lockstep. Keys still derive only from the request, so redelivery is
//! idempotent.
//!
//! **Encoded bodies are always valid SQS bodies.** SQS refuses a body containing
//! U+FFFE or U+FFFF even though JSON allows them, so the encoder writes those two as
//! `\uXXXX` escapes (JSON already escapes every control character). Unknown JSON fields
//! are ignored, so additive changes need no version bump; the version is for incompatible
//! ones.

pub mod env;
mod error;
mod file_name;
mod id;
pub mod internal;
mod json;
mod keys;
mod limits;
mod message;
mod token;

pub use error::{MessageKind, ProtocolError};
pub use file_name::{FileName, FileNameError, MAX_FILE_NAME_BYTES};
pub use id::{RequestId, RequestIdError};
pub use keys::{
    BATCHES_PREFIX, KeyScheme, KeySchemeError, OutputValue, OutputValueError, RESULTS_PREFIX,
    batch_key, claim_key, input_key, is_reserved_output_key, job_key, output_key, output_value,
    parse_output_value, result_key,
};
pub use limits::{MAX_MESSAGE_BYTES, PlannedRequest, base64_encoded_len, build_request};
pub use message::{
    DEFAULT_TOP_K, ErrorKind, ImagePayload, Outcome, PROTOCOL_VERSION, Prediction, RequestMessage,
    ResponseMessage, Timings,
};
