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
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if matches!(c, '\u{FFFE}' | '\u{FFFF}') {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Encodes `value` as compact, SQS-safe JSON, checking its version first.
pub(crate) fn encode<T: Serialize>(
    value: &T,
    version: u32,
    message: MessageKind,
) -> Result<String, ProtocolError> {
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            message,
            found: u64::from(version),
            supported: PROTOCOL_VERSION,
        });
    }
    let mut out = Vec::with_capacity(512);
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
        let body = encode(&msg, msg.version, MessageKind::Request).unwrap();
        assert_eq!(
            body,
            "{\"version\":1,\"text\":\"a\\ufffeb\\uffff\\u0000é\u{7f}\"}"
        );
        assert_eq!(decode::<Msg>(&body, MessageKind::Request).unwrap(), msg);
    }
}
