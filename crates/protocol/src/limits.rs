//! The queue's size limit and the inline-versus-claim-check decision. The image limits
//! (bytes, pixels, decode memory) have their one home in `iras_classifier::decode`, next to
//! the decoder that enforces them in both tiers.

use crate::{
    FileName, ImagePayload, KeyScheme, PROTOCOL_VERSION, ProtocolError, RequestId, RequestMessage,
    claim_key,
};

/// Largest queue message body, in bytes: SQS's classic 256 KiB.
///
/// AWS raised the SQS limit to 1 MiB in 2025, but moto and queues created earlier still
/// enforce 256 KiB, so this stays the conservative default. It is only a default:
/// [`build_request`] takes the limit as a parameter, so a deployment that knows its queues
/// take 1 MiB can pass that.
pub const MAX_MESSAGE_BYTES: usize = 262_144;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::{arb_file_name, arb_id};
    use base64::Engine as _;
    use proptest::prelude::*;

    fn plan(bytes: &[u8], reply_to: &str, max: usize) -> Result<PlannedRequest, ProtocolError> {
        build_request(
            "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap(),
            &FileName::parse("test_0.JPEG").unwrap(),
            bytes,
            reply_to,
            1_700_000_000_000,
            1,
            KeyScheme::FileName,
            max,
        )
    }

    #[test]
    fn base64_len_matches_the_encoder() {
        for n in 0..100 {
            let encoded = base64::engine::general_purpose::STANDARD.encode(vec![0u8; n]);
            assert_eq!(base64_encoded_len(n), encoded.len(), "{n}");
        }
        assert_eq!(base64_encoded_len(usize::MAX), usize::MAX);
    }

    #[test]
    fn small_images_go_inline() {
        let planned = plan(&[1, 2, 3], "q", MAX_MESSAGE_BYTES).unwrap();
        let PlannedRequest::Inline(body) = &planned else {
            panic!("expected inline: {planned:?}");
        };
        let req = RequestMessage::decode(body).unwrap();
        assert_eq!(req.image.decode_inline().unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(planned.body(), body);
    }

    #[test]
    fn large_images_need_a_claim_under_a_request_id_key() {
        let bytes = vec![7u8; 200_000];
        let planned = plan(&bytes, "q", MAX_MESSAGE_BYTES).unwrap();
        let PlannedRequest::NeedsClaim { key, body } = &planned else {
            panic!("expected a claim: {planned:?}");
        };
        assert_eq!(key, "67e55044-10b1-426f-9247-bb680e5fe0c8/test_0.JPEG");
        let req = RequestMessage::decode(body).unwrap();
        assert_eq!(req.image, ImagePayload::Claim { key: key.clone() });
        // The seed layout still stores the image under its file name afterwards.
        assert_eq!(req.input_key(), "test_0.JPEG");
    }

    #[test]
    fn boundary_is_exact() {
        let bytes = vec![0u8; 3000];
        let PlannedRequest::Inline(body) = plan(&bytes, "q", MAX_MESSAGE_BYTES).unwrap() else {
            panic!("expected inline");
        };
        let exact = body.len();
        assert!(matches!(
            plan(&bytes, "q", exact).unwrap(),
            PlannedRequest::Inline(_)
        ));
        assert!(matches!(
            plan(&bytes, "q", exact - 1).unwrap(),
            PlannedRequest::NeedsClaim { .. }
        ));
    }

    #[test]
    fn too_large_even_with_a_claim() {
        let err = plan(&[0; 10], &"q".repeat(1000), 500).unwrap_err();
        assert!(
            matches!(err, ProtocolError::MessageTooLarge { max_bytes: 500, size_bytes } if size_bytes > 500),
            "{err:?}"
        );
    }

    proptest! {
        #[test]
        fn inline_exactly_when_it_fits(
            id in arb_id(),
            file_name in arb_file_name(),
            len in 0usize..4096,
            reply_to in any::<String>(),
            top_k in any::<u8>(),
            scheme in prop_oneof![Just(KeyScheme::FileName), Just(KeyScheme::RequestId)],
            max in 0usize..6000,
        ) {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let inline_body = RequestMessage {
                version: PROTOCOL_VERSION,
                id,
                file_name: file_name.clone(),
                image: ImagePayload::inline(&bytes),
                reply_to: reply_to.clone(),
                submitted_at_ms: 42,
                top_k,
                key_scheme: scheme,
            }
            .encode()
            .unwrap();
            match build_request(id, &file_name, &bytes, &reply_to, 42, top_k, scheme, max) {
                Ok(PlannedRequest::Inline(body)) => {
                    prop_assert!(body.len() <= max);
                    prop_assert_eq!(body, inline_body);
                }
                Ok(PlannedRequest::NeedsClaim { key, body }) => {
                    prop_assert!(inline_body.len() > max);
                    prop_assert!(body.len() <= max);
                    prop_assert_eq!(&key, &claim_key(id, &file_name));
                    let req = RequestMessage::decode(&body).unwrap();
                    prop_assert_eq!(req.image, ImagePayload::Claim { key });
                    prop_assert_eq!(req.file_name, file_name);
                }
                Err(ProtocolError::MessageTooLarge { size_bytes, max_bytes }) => {
                    prop_assert!(inline_body.len() > max);
                    prop_assert!(size_bytes > max_bytes);
                    prop_assert_eq!(max_bytes, max);
                }
                Err(e) => prop_assert!(false, "unexpected error {e:?}"),
            }
        }
    }
}
