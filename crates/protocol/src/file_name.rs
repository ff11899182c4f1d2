//! Upload file names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Longest file name accepted, in UTF-8 bytes: the usual file-system limit (ext4, APFS,
/// NTFS in UTF-16 units), so a name that fits here can also be a file in the local
/// backend's bucket directories.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// A file name that is safe to use as (part of) an object key and as a local file name.
///
/// A `FileName` is a single path component and never:
/// - empty, `.` or `..`;
/// - longer than [`MAX_FILE_NAME_BYTES`] bytes;
/// - containing `/` or `\`;
/// - starting or ending with whitespace (Unicode `White_Space`);
/// - containing a control character (Unicode `Cc`: U+0000–U+001F, DEL, U+0080–U+009F);
/// - containing a line or paragraph separator (U+2028, U+2029), which would split a log
///   line, or a bidirectional embedding, override or isolate (U+202A–U+202E,
///   U+2066–U+2069), which makes a name display as something else (`gpj.exe` shown as
///   `exe.jpg`);
/// - containing U+FEFF (byte-order mark) or the noncharacters U+FFFE and U+FFFF, which SQS
///   refuses in a message body.
///
/// Everything else is kept byte for byte: no case folding, no Unicode normalisation, no
/// replacement of characters that are legal but awkward in S3 keys (`%`, `#`, `{`…), since
/// the SDK percent-encodes keys and the seed's layout needs the name exactly as uploaded.
/// Zero-width joiners stay allowed because Persian and emoji sequences need them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

/// Why a file name was rejected. Messages are one line and fit a 400 response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileNameError {
    /// Nothing left (empty input, only whitespace, or a path ending in a separator).
    #[error("file name is empty")]
    Empty,
    /// The name is `.` or `..`.
    #[error("file name {0:?} is not a file name")]
    DotName(&'static str),
    /// The name contains `/` or `\` (only [`FileName::parse`]; `sanitize` keeps the last
    /// component instead).
    #[error("file name contains a path separator")]
    PathSeparator,
    /// The name starts or ends with whitespace (only [`FileName::parse`]; `sanitize` trims).
    #[error("file name starts or ends with whitespace")]
    SurroundingWhitespace,
    /// The name contains a character listed on [`FileName`] as forbidden.
    #[error("file name contains forbidden character U+{code_point:04X}")]
    ForbiddenChar {
        /// The first forbidden character, as a code point (never echoed raw).
        code_point: u32,
    },
    /// The name is longer than [`MAX_FILE_NAME_BYTES`].
    #[error("file name is {len_bytes} bytes, over the {MAX_FILE_NAME_BYTES}-byte limit")]
    TooLong {
        /// Length of the name in UTF-8 bytes.
        len_bytes: usize,
    },
}

/// Whether `c` may not appear anywhere in a [`FileName`]; see the type's doc for why.
fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'
        )
}

impl FileName {
    /// Reduces a client-supplied name to a safe file name, or says why it cannot.
    ///
    /// Browsers send `C:\fakepath\x.jpg`, and other clients may send `a/b/x.jpg`: the name
    /// is what follows the last `/` or `\`. Surrounding whitespace is then trimmed, and the
    /// result must pass [`FileName::parse`]. Nothing else is rewritten: a name with a
    /// control character is rejected, not silently altered. Sanitising a sanitised name
    /// returns it unchanged.
    pub fn sanitize(raw: &str) -> Result<Self, FileNameError> {
        let last = match raw.rfind(['/', '\\']) {
            // Both separators are one byte, so `i + 1` is a char boundary.
            Some(i) => &raw[i + 1..],
            None => raw,
        };
        Self::parse(last.trim())
    }

    /// Accepts `s` only if it already is a valid file name, unchanged. Used on the wire,
    /// where a path or padded name means a bug or a forged message, not a browser quirk.
    pub fn parse(s: &str) -> Result<Self, FileNameError> {
        if s.is_empty() {
            return Err(FileNameError::Empty);
        }
        match s {
            "." => return Err(FileNameError::DotName(".")),
            ".." => return Err(FileNameError::DotName("..")),
            _ => {}
        }
        if s.contains(['/', '\\']) {
            return Err(FileNameError::PathSeparator);
        }
        if s.trim() != s {
            return Err(FileNameError::SurroundingWhitespace);
        }
        if let Some(c) = s.chars().find(|&c| is_forbidden(c)) {
            return Err(FileNameError::ForbiddenChar {
                code_point: u32::from(c),
            });
        }
        if s.len() > MAX_FILE_NAME_BYTES {
            return Err(FileNameError::TooLong { len_bytes: s.len() });
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, by value.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Splits at the last `.` unless what precedes it is only dots (or nothing), so the
    /// stem is never empty, `.` or `..`: it becomes an object key in the seed's layout.
    fn split(&self) -> (&str, Option<&str>) {
        match self.0.rfind('.') {
            Some(i) if self.0[..i].bytes().any(|b| b != b'.') => {
                (&self.0[..i], Some(&self.0[i + 1..]))
            }
            _ => (&self.0, None),
        }
    }

    /// The name without its last extension: `test_0.JPEG` → `test_0`, `archive.tar.gz` →
    /// `archive.tar`, `.hidden` → `.hidden`, `noext` → `noext`, `..jpg` → `..jpg`.
    /// Never empty, `.` or `..`.
    pub fn stem(&self) -> &str {
        self.split().0
    }

    /// The last extension without its dot (`test_0.JPEG` → `JPEG`, `name.` → empty), or
    /// `None` when [`stem`](Self::stem) is the whole name.
    pub fn extension(&self) -> Option<&str> {
        self.split().1
    }
}

impl AsRef<str> for FileName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Strict, like [`FileName::parse`].
impl FromStr for FileName {
    type Err = FileNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Strict, like [`FileName::parse`].
impl TryFrom<String> for FileName {
    type Error = FileNameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<FileName> for String {
    fn from(name: FileName) -> Self {
        name.0
    }
}

impl Serialize for FileName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Re-validates strictly ([`FileName::parse`]): a message naming `../x` is rejected, not
/// quietly turned into `x`.
impl<'de> Deserialize<'de> for FileName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(raw: &str) -> String {
        FileName::sanitize(raw).unwrap().into_string()
    }

    fn err(raw: &str) -> FileNameError {
        FileName::sanitize(raw).unwrap_err()
    }

    #[test]
    fn keeps_plain_names() {
        assert_eq!(ok("test_0.JPEG"), "test_0.JPEG");
        assert_eq!(ok("ünïcødé 写真.png"), "ünïcødé 写真.png");
        assert_eq!(ok("100% #1 {a}.jpg"), "100% #1 {a}.jpg");
        assert_eq!(ok("..."), "...");
        assert_eq!(ok("a..b"), "a..b");
        assert_eq!(
            ok("👨\u{200D}👩\u{200D}👧.jpg"),
            "👨\u{200D}👩\u{200D}👧.jpg"
        );
    }

    #[test]
    fn takes_the_last_path_component() {
        assert_eq!(ok(r"C:\fakepath\x.jpg"), "x.jpg");
        assert_eq!(ok("a/b/x.jpg"), "x.jpg");
        assert_eq!(ok(r"a\b/c\x.jpg"), "x.jpg");
        assert_eq!(ok("../../etc/passwd"), "passwd");
        assert_eq!(ok("/abs/x"), "x");
        // Only the kept component is checked.
        assert_eq!(ok("bad\0dir/x.jpg"), "x.jpg");
    }

    #[test]
    fn trims_surrounding_whitespace() {
        assert_eq!(ok("  x.jpg \t"), "x.jpg");
        assert_eq!(ok("dir/ x y.jpg\u{3000}"), "x y.jpg");
        assert_eq!(ok("\u{2028}x\u{2029}"), "x");
    }

    #[test]
    fn rejects_empty_and_dot_names() {
        assert_eq!(err(""), FileNameError::Empty);
        assert_eq!(err("   "), FileNameError::Empty);
        assert_eq!(err("a/b/"), FileNameError::Empty);
        assert_eq!(err(r"C:\fakepath\"), FileNameError::Empty);
        assert_eq!(err("."), FileNameError::DotName("."));
        assert_eq!(err("a/.."), FileNameError::DotName(".."));
        assert_eq!(err(" .. "), FileNameError::DotName(".."));
    }

    #[test]
    fn rejects_forbidden_characters() {
        for (raw, code_point) in [
            ("a\0b", 0),
            ("a\nb", 0x0A),
            ("a\x1bb", 0x1B),
            ("a\x7fb", 0x7F),
            ("a\u{85}b", 0x85),
            ("a\u{9f}b", 0x9F),
            ("evil\u{202E}gpj.exe", 0x202E),
            ("a\u{2066}b", 0x2066),
            ("a\u{2028}b", 0x2028),
            ("a\u{feff}b", 0xFEFF),
            ("a\u{fffe}b", 0xFFFE),
            ("a\u{ffff}b", 0xFFFF),
        ] {
            assert_eq!(
                err(raw),
                FileNameError::ForbiddenChar { code_point },
                "{raw:?}"
            );
        }
        assert_eq!(
            err("a\u{202e}b").to_string(),
            "file name contains forbidden character U+202E"
        );
    }

    #[test]
    fn enforces_the_byte_limit() {
        let max = "a".repeat(MAX_FILE_NAME_BYTES);
        assert_eq!(ok(&max), max);
        assert_eq!(
            err(&format!("{max}b")),
            FileNameError::TooLong { len_bytes: 256 }
        );
        // Bytes, not chars: 128 two-byte chars are 256 bytes.
        assert_eq!(
            err(&"é".repeat(128)),
            FileNameError::TooLong { len_bytes: 256 }
        );
        // The limit applies after the directory is dropped.
        assert_eq!(ok(&format!("{}/{max}", "d".repeat(1000))), max);
    }

    #[test]
    fn parse_is_strict() {
        assert_eq!(
            FileName::parse("a/b").unwrap_err(),
            FileNameError::PathSeparator
        );
        assert_eq!(
            FileName::parse(r"a\b").unwrap_err(),
            FileNameError::PathSeparator
        );
        assert_eq!(
            FileName::parse(" a").unwrap_err(),
            FileNameError::SurroundingWhitespace
        );
        assert_eq!(FileName::parse("a b").unwrap().as_str(), "a b");
    }

    #[test]
    fn stem_and_extension() {
        let cases: [(&str, &str, Option<&str>); 9] = [
            ("test_0.JPEG", "test_0", Some("JPEG")),
            ("archive.tar.gz", "archive.tar", Some("gz")),
            (".hidden", ".hidden", None),
            (".hidden.txt", ".hidden", Some("txt")),
            ("noext", "noext", None),
            ("name.", "name", Some("")),
            ("..jpg", "..jpg", None),
            ("...", "...", None),
            ("a..jpg", "a.", Some("jpg")),
        ];
        for (name, stem, ext) in cases {
            let f = FileName::parse(name).unwrap();
            assert_eq!(f.stem(), stem, "{name}");
            assert_eq!(f.extension(), ext, "{name}");
        }
    }

    #[test]
    fn serde_revalidates() {
        let f = FileName::parse("x.jpg").unwrap();
        assert_eq!(serde_json::to_string(&f).unwrap(), "\"x.jpg\"");
        assert_eq!(serde_json::from_str::<FileName>("\"x.jpg\"").unwrap(), f);
        for bad in [
            r#""../x.jpg""#,
            r#""""#,
            r#"".."#,
            r#"" x""#,
            r#""a\u0000""#,
        ] {
            assert!(serde_json::from_str::<FileName>(bad).is_err(), "{bad}");
        }
    }

    /// Raw names built from the characters that matter to the sanitiser.
    fn tricky_raw() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just("\\".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just(" ".to_owned()),
            Just("\t".to_owned()),
            Just("\0".to_owned()),
            Just("\u{7f}".to_owned()),
            Just("\u{202e}".to_owned()),
            Just("\u{3000}".to_owned()),
            Just("\u{fffe}".to_owned()),
            Just("é".to_owned()),
            "[a-z0-9_]{1,8}",
            "[a-z]{60,130}",
        ];
        prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    fn any_raw() -> impl Strategy<Value = String> {
        prop_oneof![tricky_raw(), any::<String>(), "\\PC{0,300}"]
    }

    proptest! {
        #[test]
        fn sanitized_names_are_safe(raw in any_raw()) {
            if let Ok(name) = FileName::sanitize(&raw) {
                let s = name.as_str();
                prop_assert!(!s.is_empty());
                prop_assert!(s != "." && s != "..");
                prop_assert!(!s.contains(['/', '\\']));
                prop_assert!(!s.chars().any(char::is_control));
                prop_assert!(!s.chars().any(is_forbidden));
                prop_assert!(s.len() <= MAX_FILE_NAME_BYTES);
                prop_assert_eq!(s.trim(), s);
                prop_assert!(!name.stem().is_empty());
                prop_assert!(name.stem() != "." && name.stem() != "..");
                // The name is a suffix of the raw input's last component.
                let last = raw.rsplit(['/', '\\']).next().unwrap_or(&raw);
                prop_assert!(last.contains(s));
            }
        }

        #[test]
        fn sanitize_is_idempotent(raw in any_raw()) {
            if let Ok(name) = FileName::sanitize(&raw) {
                prop_assert_eq!(FileName::sanitize(name.as_str()).unwrap(), name.clone());
                prop_assert_eq!(FileName::parse(name.as_str()).unwrap(), name);
            }
        }

        #[test]
        fn sanitize_keeps_the_basename(
            dirs in prop::collection::vec("[^/\\\\]{0,10}", 0..4),
            sep in prop::collection::vec(prop_oneof![Just('/'), Just('\\')], 4),
            base in "[a-zA-Z0-9_.-]{0,20}[a-zA-Z0-9_-]",
        ) {
            let mut raw = String::new();
            for (d, s) in dirs.iter().zip(&sep) {
                raw.push_str(d);
                raw.push(*s);
            }
            raw.push_str(&base);
            // `base` never ends in a dot, so it is never `.` or `..`.
            prop_assert_eq!(FileName::sanitize(&raw).unwrap().into_string(), base);
        }

        #[test]
        fn serde_round_trip(raw in any_raw()) {
            if let Ok(name) = FileName::sanitize(&raw) {
                let json = serde_json::to_string(&name).unwrap();
                prop_assert_eq!(serde_json::from_str::<FileName>(&json).unwrap(), name);
            }
        }
    }
}
