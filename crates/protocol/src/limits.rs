//! Size limits and the inline-versus-claim-check decision.

use crate::{
    FileName, ImagePayload, KeyScheme, PROTOCOL_VERSION, ProtocolError, RequestId,
    RequestMessage, claim_key,
};

/// Largest queue message body, in bytes: SQS's classic 256 KiB.
///
/// AWS raised the SQS limit to 1 MiB in 2025, but moto and queues created earlier still
/// enforce 256 KiB, so this stays the conservative default. It is only a default:
/// [`build_request`] takes the limit as a parameter, so a deployment that knows its queues
/// take 1 MiB can pass that.
pub const MAX_MESSAGE_BYTES: usize = 262_144;

/// Default largest upload, in bytes (10 MiB). Bigger files are refused before queueing;
/// anything between the message limit and this goes through a claim check.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

/// Default largest image, in pixels (width × height, 40 megapixels). Checked from the
/// header before decoding, because a small compressed file can decode to gigabytes
/// (a decompression bomb); 40 MP covers any phone or DSLR photo.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// Length of the padded standard base64 encoding of `len` bytes: `4 × ⌈len / 3⌉`
/// (saturating at `usize::MAX`).
pub const fn base64_encoded_len(len: usize) -> usize {
    len.div_ceil(3).saturating_mul(4)
}

/// A request ready to send, from [`build_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlannedRequest {
    /// The image is inline: send this body. Its length is within the limit.
    Inline(String),
    /// Put the image bytes in the input bucket under `key` first, then send `body`
    /// (whose length is within the limit).
    NeedsClaim {
        /// Input-bucket key for the bytes ([`claim_key`]).
        key: String,
        /// The request body, pointing at `key`.
        body: String,
    },
}

impl PlannedRequest {
    /// The body to send, whichever the plan.
    pub fn body(&self) -> &str {
        match self {
            Self::Inline(body) | Self::NeedsClaim { body, .. } => body,
        }
    }
}

/// Builds the request message for an image and decides, by exact encoded size, whether the
/// image rides inline or behind a claim check.
///
/// The image goes inline exactly when the inline body is at most `max_message_bytes`
/// bytes (normally [`MAX_MESSAGE_BYTES`]); otherwise the body carries a claim check on
/// [`claim_key`]. Large images are never base64-encoded just to be measured: the inline
/// size is the size with empty data plus [`base64_encoded_len`], exact because base64
/// needs no JSON escaping, and the built body is checked again anyway.
///
/// Fails with [`ProtocolError::MessageTooLarge`] when even the claim-check body does not
/// fit.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the message fields one to one; every argument has a distinct type or name"
)]
pub fn build_request(
    id: RequestId,
    file_name: &FileName,
    image_bytes: &[u8],
    reply_to: &str,
    submitted_at_ms: u64,
    top_k: u8,
    key_scheme: KeyScheme,
    max_message_bytes: usize,
) -> Result<PlannedRequest, ProtocolError> {
    let mut msg = RequestMessage {
        version: PROTOCOL_VERSION,
        id,
        file_name: file_name.clone(),
        image: ImagePayload::Inline {
            data: String::new(),
        },
        reply_to: reply_to.to_owned(),
        submitted_at_ms,
        top_k,
        key_scheme,
    };
    let inline_len = msg
        .encode()?
        .len()
        .saturating_add(base64_encoded_len(image_bytes.len()));
    if inline_len <= max_message_bytes {
        msg.image = ImagePayload::inline(image_bytes);
        let body = msg.encode()?;
        debug_assert_eq!(body.len(), inline_len, "inline size prediction is exact");
        if body.len() <= max_message_bytes {
            return Ok(PlannedRequest::Inline(body));
        }
    }
    let key = claim_key(id, file_name);
    msg.image = ImagePayload::Claim { key: key.clone() };
    let body = msg.encode()?;
    if body.len() > max_message_bytes {
        return Err(ProtocolError::MessageTooLarge {
            size_bytes: body.len(),
            max_bytes: max_message_bytes,
        });
    }
    Ok(PlannedRequest::NeedsClaim { key, body })
}
