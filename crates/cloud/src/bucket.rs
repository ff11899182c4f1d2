//! The bucket interface: a flat key → bytes store, as S3 is.
//!
//! Keys are validated the same way on both backends, so a key that works locally works on
//! S3 and can never escape the local bucket directory: no `..` or `.` segment, no empty
//! segment (so no leading, trailing or doubled `/`), no control characters, at most
//! [`MAX_KEY_BYTES`] bytes.

use async_trait::async_trait;

use crate::error::{CloudError, Result};

/// Longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// One bucket. Cheap to share as `Arc<dyn Bucket>`.
#[async_trait]
pub trait Bucket: Send + Sync + std::fmt::Debug {
    /// The bucket's name.
    fn name(&self) -> &str;

    /// Stores `bytes` under `key`, replacing any previous object atomically: a reader sees
    /// the old object or the new one, never a mix.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()>;

    /// Reads the object under `key`; [`CloudError::ObjectNotFound`] when there is none.
    async fn get(&self, key: &str) -> Result<Vec<u8>>;

    /// Lists the keys that start with `prefix` (all keys for `""`), in lexicographic order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
}

/// Checks an object key (see the module docs for the rules).
pub fn validate_key(key: &str) -> Result<()> {
    let invalid = |reason| {
        Err(CloudError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("must not be empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return invalid("must be at most 1024 bytes");
    }
    if key.chars().any(char::is_control) {
        return invalid("must not contain control characters");
    }
    if key.contains('\\') {
        return invalid("must not contain '\\'");
    }
    for segment in key.split('/') {
        match segment {
            "" => return invalid("must not have empty segments (leading, trailing or double '/')"),
            "." | ".." => return invalid("must not have '.' or '..' segments"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a bucket name against S3's rules (enforced locally too).
pub fn validate_bucket_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(CloudError::InvalidBucketName {
            name: name.to_owned(),
            reason,
        })
    };
    if !(3..=63).contains(&name.len()) {
        return invalid("must be 3 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return invalid("only lowercase letters, digits, '-' and '.' are allowed");
    }
    let first_last_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !first_last_ok(bytes[0]) || !first_last_ok(bytes[bytes.len() - 1]) {
        return invalid("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return invalid("must not contain '..'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in [
            "test_0.JPEG",
            "test_0",
            "a/b/c.png",
            "6f1c/x y.jpg",
            ".hidden",
            "a..b",
        ] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/abs", "a//b", "a/", "..", "../x", "a/../b", "./a", "a\nb", "a\\b",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"k".repeat(1025)).is_err());
    }

    #[test]
    fn bucket_names_are_checked() {
        assert!(validate_bucket_name("iras-input").is_ok());
        for bad in ["ab", "Upper", "-start", "end-", "a..b", "under_score"] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
