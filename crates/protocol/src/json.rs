//! JSON encoding that always yields a valid SQS message body, and versioned decoding.

use std::io;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, ser::Error as _};
use serde_json::ser::Formatter;

use crate::{MessageKind, PROTOCOL_VERSION, ProtocolError};

/// serde_json's compact output, except that U+FFFE and U+FFFF are written as `\uXXXX`:
/// JSON allows them raw but SQS refuses a body containing them. (Control characters are
/// escaped by serde_json already.)
struct SqsSafe;

impl Formatter for SqsSafe {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Both are EF BF BE / EF BF BF in UTF-8, and in valid UTF-8 an EF byte only ever
        // starts a three-byte character: look for that byte (a vectorised search, so a
        // base64 image of a few hundred kilobytes costs next to nothing) and check the rest.
        let bytes = fragment.as_bytes();
        let mut start = 0;
        for i in memchr::memchr_iter(0xEF, bytes) {
            let escaped = match bytes.get(i + 1..i + 3) {
                Some([0xBF, 0xBE]) => "\\ufffe",
                Some([0xBF, 0xBF]) => "\\uffff",
                _ => continue,
            };
            writer.write_all(&bytes[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + 3;
        }
        writer.write_all(&bytes[start..])
    }
}

/// Encodes `value` as compact, SQS-safe JSON, checking its version first. `capacity` is
/// the expected length: a body holding an image is written into one buffer of about its
/// size instead of one that doubles its way up.
pub(crate) fn encode<T: Serialize>(
    value: &T,
    version: u32,
    message: MessageKind,
    capacity: usize,
) -> Result<String, ProtocolError> {
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            message,
            found: u64::from(version),
            supported: PROTOCOL_VERSION,
        });
    }
    let mut out = Vec::with_capacity(capacity);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, SqsSafe);
    value
        .serialize(&mut ser)
        .and_then(|()| String::from_utf8(out).map_err(serde_json::Error::custom))
        .map_err(|source| ProtocolError::EncodeJson { message, source })
}

/// Just the version, read before the body so an unknown version is reported as such
/// rather than as whatever field it happened to change.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<u64>,
}

/// Decodes a body of the current protocol version.
pub(crate) fn decode<T: DeserializeOwned>(
    body: &str,
    message: MessageKind,
) -> Result<T, ProtocolError> {
    let decode_err = |source| ProtocolError::DecodeJson { message, source };
    let probe: VersionProbe = serde_json::from_str(body).map_err(decode_err)?;
    match probe.version {
        None => return Err(ProtocolError::MissingVersion { message }),
        Some(v) if v != u64::from(PROTOCOL_VERSION) => {
            return Err(ProtocolError::UnsupportedVersion {
                message,
                found: v,
                supported: PROTOCOL_VERSION,
            });
        }
        Some(_) => {}
    }
    serde_json::from_str(body).map_err(decode_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Msg {
        version: u32,
        text: String,
    }

    #[test]
    fn escapes_what_sqs_refuses_and_round_trips() {
        let msg = Msg {
            version: PROTOCOL_VERSION,
            text: "a\u{fffe}b\u{ffff}\u{0}é\u{7f}".into(),
        };
        let body = encode(&msg, msg.version, MessageKind::Request, 0).unwrap();
        assert_eq!(
            body,
            "{\"version\":1,\"text\":\"a\\ufffeb\\uffff\\u0000é\u{7f}\"}"
        );
        assert_eq!(decode::<Msg>(&body, MessageKind::Request).unwrap(), msg);
    }

    /// Characters next to the two escaped ones in UTF-8 (same lead byte EF, same or other
    /// continuation bytes) and a few others, so the byte-level search is checked where it
    /// could go wrong.
    fn near_miss_char() -> impl Strategy<Value = char> {
        prop_oneof![
            (0xF000u32..=0xFFFF).prop_filter_map("a scalar value", char::from_u32),
            any::<char>(),
            Just('a'),
        ]
    }

    proptest! {
        /// Whatever the text, the body holds neither U+FFFE nor U+FFFF raw, and decodes to
        /// the same text; every other character is written as serde_json writes it.
        #[test]
        fn any_text_is_sqs_safe_and_round_trips(chars in proptest::collection::vec(near_miss_char(), 0..40)) {
            let msg = Msg { version: PROTOCOL_VERSION, text: chars.into_iter().collect() };
            let body = encode(&msg, msg.version, MessageKind::Request, 16).unwrap();
            let raw = body.contains(['\u{fffe}', '\u{ffff}']);
            prop_assert!(!raw, "a raw U+FFFE or U+FFFF in {:?}", body);
            let plain = serde_json::to_string(&msg).unwrap()
                .replace('\u{fffe}', "\\ufffe")
                .replace('\u{ffff}', "\\uffff");
            prop_assert_eq!(&body, &plain);
            prop_assert_eq!(decode::<Msg>(&body, MessageKind::Request).unwrap(), msg);
        }
    }
}
