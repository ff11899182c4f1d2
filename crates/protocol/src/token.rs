//! The shared secret the standalone listener presents to the web tier's internal endpoints.

use std::fmt;

/// Shortest accepted token, in bytes: 128 bits of hex.
pub const MIN_TOKEN_BYTES: usize = 32;

/// A shared secret. Its `Debug` output is redacted so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_BYTES`].
    #[error(
        "the listener token must be at least {MIN_TOKEN_BYTES} bytes (e.g. `openssl rand -hex 32`)"
    )]
    TooShort,
    /// Contains a character that cannot travel in an HTTP header.
    #[error("the listener token may only contain visible ASCII characters")]
    NotVisibleAscii,
}

impl Token {
    /// Checks length and alphabet.
    pub fn new(token: impl Into<String>) -> Result<Self, TokenError> {
        let token = token.into();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(TokenError::TooShort);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotVisibleAscii);
        }
        Ok(Self(token))
    }

    /// The secret, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with a presented secret in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq::constant_time_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_odd_tokens_are_refused_and_debug_is_redacted() {
        assert_eq!(Token::new("short"), Err(TokenError::TooShort));
        assert_eq!(
            Token::new(format!("{}\n", "a".repeat(40))),
            Err(TokenError::NotVisibleAscii)
        );
        let t = Token::new("s3cr3t".repeat(8)).unwrap();
        assert!(t.matches(&"s3cr3t".repeat(8)));
        assert!(!t.matches(&"s3cr3t".repeat(7)));
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}
