//! The request id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use uuid::Uuid;

/// The identity of one classification request: a random (v4) UUID given by the web tier.
///
/// It correlates a request with its response, names its objects under
/// [`KeyScheme::RequestId`](crate::KeyScheme::RequestId) and is what a client uses to fetch a
/// late result. It renders, serialises and parses as the lowercase hyphenated form
/// (`67e55044-10b1-426f-9247-bb680e5fe0c8`); parsing accepts upper case too, but no other
/// UUID form, so one id has one spelling in keys and URLs. Parsing does not insist on
/// version 4, so fixed ids in tests and tools still parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(Uuid);

impl RequestId {
    /// A fresh random id.
    #[expect(
        clippy::new_without_default,
        reason = "a Default that returns a different random id each call would surprise"
    )]
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl From<Uuid> for RequestId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl From<RequestId> for Uuid {
    fn from(id: RequestId) -> Self {
        id.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// Length of the hyphenated UUID form, the only form [`RequestId`] parses.
const HYPHENATED_LEN: usize = 36;

/// Longest prefix of a rejected input kept in a [`RequestIdError`], so an error built from
/// a hostile URL stays one short line.
const MAX_ECHOED_CHARS: usize = 48;

/// A string that is not a hyphenated UUID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid request id {input:?}: expected a hyphenated UUID")]
pub struct RequestIdError {
    input: String,
}

impl RequestIdError {
    /// The rejected input (its first 48 characters).
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl FromStr for RequestId {
    type Err = RequestIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RequestIdError {
            input: s.chars().take(MAX_ECHOED_CHARS).collect(),
        };
        if s.len() != HYPHENATED_LEN {
            return Err(err());
        }
        Uuid::try_parse(s).map(Self).map_err(|_| err())
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn new_ids_are_v4_and_distinct() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_uuid().get_version_num(), 4);
    }

    #[test]
    fn display_is_lowercase_hyphenated() {
        let id: RequestId = "67E55044-10B1-426F-9247-BB680E5FE0C8".parse().unwrap();
        assert_eq!(id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
    }

    #[test]
    fn rejects_other_uuid_forms_and_garbage() {
        for bad in [
            "",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0cg",
            "../../../../../../../../../../../../../etc/passwd",
        ] {
            let err = bad.parse::<RequestId>().unwrap_err();
            assert!(err.to_string().starts_with("invalid request id"), "{err}");
        }
    }

    #[test]
    fn error_echo_is_bounded() {
        let long = "x".repeat(10_000);
        let err = long.parse::<RequestId>().unwrap_err();
        assert_eq!(err.input().chars().count(), MAX_ECHOED_CHARS);
    }

    #[test]
    fn serde_is_the_hyphenated_string() {
        let id: RequestId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"67e55044-10b1-426f-9247-bb680e5fe0c8\"");
        assert_eq!(serde_json::from_str::<RequestId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<RequestId>("\"nope\"").is_err());
        assert!(serde_json::from_str::<RequestId>("42").is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(bytes in any::<[u8; 16]>()) {
            let id = RequestId::from_uuid(Uuid::from_bytes(bytes));
            prop_assert_eq!(id.to_string().parse::<RequestId>().unwrap(), id);
        }
    }
}
