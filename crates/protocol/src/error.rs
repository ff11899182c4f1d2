//! The crate's error type.

use std::fmt;

use crate::ErrorKind;

/// Which message an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A [`RequestMessage`](crate::RequestMessage).
    Request,
    /// A [`ResponseMessage`](crate::ResponseMessage).
    Response,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Request => "request",
            Self::Response => "response",
        })
    }
}

/// Encoding, decoding or planning a message failed. Variants name the failed step.
///
/// Every variant is permanent: the same input fails the same way again, so a consumer
/// should answer with an error result (see [`ProtocolError::error_kind`]) and delete the
/// message rather than wait for a redelivery.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Serialising a message to JSON failed.
    #[error("encoding the {message} as JSON failed")]
    EncodeJson {
        /// The message being encoded.
        message: MessageKind,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// The body is not JSON, or not JSON of this message's shape.
    #[error("decoding the {message} JSON failed")]
    DecodeJson {
        /// The message being decoded.
        message: MessageKind,
        /// What serde_json reported (field, line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The body has no `version` field.
    #[error("the {message} has no version field")]
    MissingVersion {
        /// The message being decoded.
        message: MessageKind,
    },
    /// The message has a version this build does not speak.
    #[error("the {message} has protocol version {found}; this build speaks version {supported}")]
    UnsupportedVersion {
        /// The message being encoded or decoded.
        message: MessageKind,
        /// The version in the message.
        found: u64,
        /// [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        supported: u32,
    },
    /// Inline image data is not valid standard base64.
    #[error("decoding the inline image base64 failed")]
    DecodeBase64 {
        /// What the base64 decoder reported.
        #[source]
        source: base64::DecodeError,
    },
    /// A response score is NaN or infinite, which JSON cannot carry.
    #[error("the score for label {label:?} is not a finite number")]
    NonFiniteScore {
        /// The label whose score it is.
        label: String,
    },
    /// Even with the image behind a claim check, the request exceeds the message limit
    /// (a huge reply-to name, or a limit set absurdly low).
    #[error(
        "the request is {size_bytes} bytes even with a claim check, over the {max_bytes}-byte message limit"
    )]
    MessageTooLarge {
        /// Size of the claim-check body.
        size_bytes: usize,
        /// The limit it was planned against.
        max_bytes: usize,
    },
}

impl ProtocolError {
    /// The [`ErrorKind`] to report in a response for this failure: bad input is
    /// [`ErrorKind::BadPayload`], our own failures are [`ErrorKind::Internal`].
    pub fn error_kind(&self) -> ErrorKind {
        match self {
            Self::DecodeJson { .. }
            | Self::MissingVersion { .. }
            | Self::UnsupportedVersion { .. }
            | Self::DecodeBase64 { .. } => ErrorKind::BadPayload,
            Self::EncodeJson { .. }
            | Self::NonFiniteScore { .. }
            | Self::MessageTooLarge { .. } => ErrorKind::Internal,
        }
    }
}
