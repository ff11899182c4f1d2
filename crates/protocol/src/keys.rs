//! Object keys and the output-bucket value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{FileName, RequestId};

/// How a request's objects are keyed in the input and output buckets.
///
/// Configured as `file-name` or `request-id` (`_` is accepted for `-`), and written the
/// same way on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyScheme {
    /// The seed's graded layout: input key = file name (`test_0.JPEG`), output key = file
    /// stem (`test_0`). Two requests with the same file name (or the same stem, e.g.
    /// `a.jpg` and `a.png`) share keys, and the later write wins; results still reach the
    /// right client, because correlation uses the request id, never the key.
    #[default]
    #[serde(rename = "file-name", alias = "file_name")]
    FileName,
    /// Never collides: input key `<request id>/<file name>`, output key `<request id>`.
    #[serde(rename = "request-id", alias = "request_id")]
    RequestId,
}

impl KeyScheme {
    /// Every scheme, for help text and tests.
    pub const ALL: [Self; 2] = [Self::FileName, Self::RequestId];

    /// The configuration spelling: `file-name` or `request-id`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FileName => "file-name",
            Self::RequestId => "request-id",
        }
    }
}

impl fmt::Display for KeyScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key scheme name that is neither `file-name` nor `request-id`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown key scheme {input:?}: expected `file-name` or `request-id`")]
pub struct KeySchemeError {
    input: String,
}

impl FromStr for KeyScheme {
    type Err = KeySchemeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "file-name" | "file_name" => Ok(Self::FileName),
            "request-id" | "request_id" => Ok(Self::RequestId),
            _ => Err(KeySchemeError {
                input: s.chars().take(48).collect(),
            }),
        }
    }
}

/// The input-bucket key of a request's image under `scheme`.
pub fn input_key(scheme: KeyScheme, id: RequestId, file_name: &FileName) -> String {
    match scheme {
        KeyScheme::FileName => file_name.as_str().to_owned(),
        KeyScheme::RequestId => claim_key(id, file_name),
    }
}

/// The output-bucket key of a request's result under `scheme`.
pub fn output_key(scheme: KeyScheme, id: RequestId, file_name: &FileName) -> String {
    match scheme {
        KeyScheme::FileName => file_name.stem().to_owned(),
        KeyScheme::RequestId => id.to_string(),
    }
}

/// The input-bucket key a claim-checked image is uploaded under before its request is
/// sent: `<request id>/<file name>` whatever the key scheme, because a claim check must
/// name exactly this request's bytes even when another upload has the same file name.
/// Under [`KeyScheme::RequestId`] it equals [`input_key`], so the bytes are stored once.
pub fn claim_key(id: RequestId, file_name: &FileName) -> String {
    format!("{id}/{file_name}")
}

/// Prefix of the id-keyed result objects in the output bucket ([`result_key`]).
pub const RESULTS_PREFIX: &str = "results/";

/// Whether `file_name` under `scheme` would have the output key `results`, the first
/// segment of every [`result_key`]. S3 keeps `results` and `results/…` apart, but a file
/// system (the local backend's buckets) cannot hold a file and a directory of one name, so
/// the web tier refuses such an upload under [`KeyScheme::FileName`] (with a reason), and
/// a worker given one anyway skips its `(stem, label)` object rather than block every
/// id-keyed result.
pub fn is_reserved_output_key(scheme: KeyScheme, file_name: &FileName) -> bool {
    scheme == KeyScheme::FileName && Some(file_name.stem()) == RESULTS_PREFIX.strip_suffix('/')
}

/// The output-bucket key of a request's id-keyed result: `results/<request id>.json`,
/// holding the whole response message (label, scores, worker, timings, or the error).
///
/// Written by the app tier beside the graded `(stem, label)` object under either key
/// scheme, before the response is sent, so `GET /results/{id}` finds exactly this
/// request's result from the id alone, after a web-tier restart too. It can never collide
/// with an [`output_key`]: a file stem is one path component (no `/`) and a request-id
/// output key is a bare UUID, while every result key has the `results/` segment.
pub fn result_key(id: RequestId) -> String {
    format!("{RESULTS_PREFIX}{id}.json")
}

/// The output-bucket key of an asynchronous request's record: `results/<id>.job.json`,
/// written by the web tier before the request is queued (file name, key scheme, batch).
///
/// It is what tells "accepted, no result yet" (`202`) from "never seen" (`404`) on any web
/// tier, after a restart too; the result itself is still [`result_key`]. It lives under
/// `results/` so the retention rule of the results covers it, and cannot collide with a
/// result key (`.job.json` is no UUID's `.json`).
pub fn job_key(id: RequestId) -> String {
    format!("{RESULTS_PREFIX}{id}.job.json")
}

/// Prefix of the batch records in the output bucket ([`batch_key`]).
pub const BATCHES_PREFIX: &str = "results/batches/";

/// The output-bucket key of a batch's record: `results/batches/<batch id>.json`, listing
/// its images (file name and request id, or the reason one was refused). A batch's
/// progress is derived from its requests' [`result_key`] objects, so any web tier can
/// answer for any batch.
pub fn batch_key(batch: RequestId) -> String {
    format!("{BATCHES_PREFIX}{batch}.json")
}

/// The output-bucket value of the seed's layout: `(test_0, bathtub)`.
pub fn output_value(stem: &str, label: &str) -> String {
    format!("({stem}, {label})")
}

/// A parsed output-bucket value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputValue {
    /// The file stem, before the first `", "`.
    pub stem: String,
    /// The label, after the first `", "`.
    pub label: String,
}

/// A string that is not an output value `(stem, label)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputValueError {
    /// The value is not wrapped in `(` and `)`.
    #[error("output value is not wrapped in parentheses")]
    MissingParentheses,
    /// There is no `", "` between stem and label.
    #[error("output value has no \", \" between stem and label")]
    MissingSeparator,
}

/// Parses an [`output_value`] back into stem and label.
///
/// The format has no escaping, so a stem or label containing `", "` is ambiguous; this
/// splits at the first one. Labels from ImageNet-style class lists often contain commas
/// (`tench, Tinca tinca`) while file stems rarely do, so every value round-trips whose
/// stem has no `", "`.
pub fn parse_output_value(value: &str) -> Result<OutputValue, OutputValueError> {
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or(OutputValueError::MissingParentheses)?;
    let (stem, label) = inner
        .split_once(", ")
        .ok_or(OutputValueError::MissingSeparator)?;
    Ok(OutputValue {
        stem: stem.to_owned(),
        label: label.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> FileName {
        FileName::parse(s).unwrap()
    }

    fn id(s: &str) -> RequestId {
        s.parse().unwrap()
    }

    #[test]
    fn file_name_scheme_is_the_seed_layout() {
        let id = RequestId::new();
        let f = name("test_0.JPEG");
        assert_eq!(input_key(KeyScheme::FileName, id, &f), "test_0.JPEG");
        assert_eq!(output_key(KeyScheme::FileName, id, &f), "test_0");
        assert_eq!(output_value(f.stem(), "bathtub"), "(test_0, bathtub)");
    }

    #[test]
    fn request_id_scheme() {
        let id = id("67e55044-10b1-426f-9247-bb680e5fe0c8");
        let f = name("test_0.JPEG");
        assert_eq!(
            input_key(KeyScheme::RequestId, id, &f),
            "67e55044-10b1-426f-9247-bb680e5fe0c8/test_0.JPEG"
        );
        assert_eq!(
            output_key(KeyScheme::RequestId, id, &f),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
        assert_eq!(claim_key(id, &f), input_key(KeyScheme::RequestId, id, &f));
        assert_eq!(
            result_key(id),
            "results/67e55044-10b1-426f-9247-bb680e5fe0c8.json"
        );
    }

    #[test]
    fn only_the_results_stem_is_reserved() {
        for f in ["results.jpg", "results"] {
            assert!(is_reserved_output_key(KeyScheme::FileName, &name(f)));
            assert!(!is_reserved_output_key(KeyScheme::RequestId, &name(f)));
        }
        for f in [
            "Results.jpg",
            "results.tar.gz",
            "my_results.png",
            "test_0.JPEG",
        ] {
            assert!(
                !is_reserved_output_key(KeyScheme::FileName, &name(f)),
                "{f}"
            );
        }
    }

    #[test]
    fn scheme_names() {
        assert_eq!(KeyScheme::default(), KeyScheme::FileName);
        for scheme in KeyScheme::ALL {
            assert_eq!(scheme.to_string().parse::<KeyScheme>().unwrap(), scheme);
            let json = serde_json::to_string(&scheme).unwrap();
            assert_eq!(json, format!("\"{scheme}\""));
            assert_eq!(serde_json::from_str::<KeyScheme>(&json).unwrap(), scheme);
        }
        assert_eq!(
            "request_id".parse::<KeyScheme>().unwrap(),
            KeyScheme::RequestId
        );
        assert_eq!(
            serde_json::from_str::<KeyScheme>("\"file_name\"").unwrap(),
            KeyScheme::FileName
        );
        let err = "uuid".parse::<KeyScheme>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key scheme \"uuid\": expected `file-name` or `request-id`"
        );
    }

    #[test]
    fn parses_output_values() {
        assert_eq!(
            parse_output_value("(test_0, bathtub)").unwrap(),
            OutputValue {
                stem: "test_0".into(),
                label: "bathtub".into()
            }
        );
        assert_eq!(
            parse_output_value("(t, tench, Tinca tinca)").unwrap().label,
            "tench, Tinca tinca"
        );
        assert_eq!(
            parse_output_value("test_0, bathtub"),
            Err(OutputValueError::MissingParentheses)
        );
        assert_eq!(
            parse_output_value("(test_0,bathtub)"),
            Err(OutputValueError::MissingSeparator)
        );
        assert_eq!(
            parse_output_value("("),
            Err(OutputValueError::MissingParentheses)
        );
    }

    proptest! {
        #[test]
        fn output_value_round_trip(
            stem in any::<String>().prop_filter("no separator", |s| !s.contains(", ")),
            label in any::<String>(),
        ) {
            let parsed = parse_output_value(&output_value(&stem, &label)).unwrap();
            prop_assert_eq!(parsed, OutputValue { stem, label });
        }

        #[test]
        fn request_id_keys_never_collide(
            a in any::<[u8; 16]>(),
            b in any::<[u8; 16]>(),
            fa in "[a-z]{1,3}(\\.[a-z]{1,3})?",
            fb in "[a-z]{1,3}(\\.[a-z]{1,3})?",
        ) {
            let (a, b) = (RequestId::from_uuid(uuid::Uuid::from_bytes(a)), RequestId::from_uuid(uuid::Uuid::from_bytes(b)));
            prop_assume!(a != b);
            let (fa, fb) = (name(&fa), name(&fb));
            let s = KeyScheme::RequestId;
            // Equal file names included: the id alone separates the keys.
            for fb in [&fa, &fb] {
                prop_assert_ne!(input_key(s, a, &fa), input_key(s, b, fb));
                prop_assert_ne!(output_key(s, a, &fa), output_key(s, b, fb));
                prop_assert_ne!(claim_key(a, &fa), claim_key(b, fb));
            }
            prop_assert_ne!(result_key(a), result_key(b));
        }

        #[test]
        fn result_keys_never_collide_with_output_keys(
            raw in "\\PC{1,300}",
            a in any::<[u8; 16]>(),
            b in any::<[u8; 16]>(),
        ) {
            let (a, b) = (RequestId::from_uuid(uuid::Uuid::from_bytes(a)), RequestId::from_uuid(uuid::Uuid::from_bytes(b)));
            if let Ok(f) = FileName::sanitize(&raw) {
                for scheme in KeyScheme::ALL {
                    let key = output_key(scheme, a, &f);
                    prop_assert_ne!(&key, &result_key(b));
                    prop_assert!(!key.starts_with(RESULTS_PREFIX));
                    // The one output key a file system could not hold beside the results.
                    prop_assert_eq!(key == "results", is_reserved_output_key(scheme, &f));
                }
            }
        }

        #[test]
        fn keys_are_safe_bucket_keys(raw in "\\PC{1,300}", bytes in any::<[u8; 16]>()) {
            let id = RequestId::from_uuid(uuid::Uuid::from_bytes(bytes));
            if let Ok(f) = FileName::sanitize(&raw) {
                for scheme in KeyScheme::ALL {
                    for key in [input_key(scheme, id, &f), output_key(scheme, id, &f), claim_key(id, &f), result_key(id)] {
                        prop_assert!(!key.is_empty());
                        prop_assert!(key.len() <= 1024, "S3's key limit");
                        prop_assert!(!key.starts_with('/'));
                        for segment in key.split('/') {
                            prop_assert!(!segment.is_empty() && segment != "." && segment != "..");
                        }
                    }
                }
            }
        }
    }
}
