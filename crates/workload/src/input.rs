//! What a run sends and what it compares against: the images of a folder and the
//! expected labels of a `name,label` CSV.
//!
//! The folder is read the way the course's generator read it (`sorted(os.listdir())[:N]`):
//! every regular file, sorted by name, the first N. Hidden files (a leading `.`) are
//! skipped so an editor's or the OS's droppings are not uploaded; files are *not*
//! filtered by extension, because the web tier's 415 for a non-image is worth seeing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::WorkloadError;

/// One image to upload: its file name (sent as the multipart file name) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The file name, without directories.
    pub name: String,
    /// The file's content.
    pub bytes: Vec<u8>,
}

impl Image {
    /// An image from a name and bytes.
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
        }
    }
}

/// Reads the first `limit` files (all when `None`) of `folder`, sorted by name.
pub fn load_folder(folder: &Path, limit: Option<u64>) -> Result<Vec<Image>, WorkloadError> {
    let read_folder = |source| WorkloadError::ReadFolder {
        path: folder.to_owned(),
        source,
    };
    let mut paths: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(read_folder)? {
        let entry = entry.map_err(read_folder)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // `metadata` follows symlinks, so a link to an image counts as an image.
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => paths.push((name, path)),
            Ok(_) => {}
            Err(source) => return Err(WorkloadError::ReadImage { path, source }),
        }
    }
    if paths.is_empty() {
        return Err(WorkloadError::NoImages {
            path: folder.to_owned(),
        });
    }
    paths.sort();
    let take = limit.map_or(paths.len(), |n| {
        usize::try_from(n).unwrap_or(usize::MAX).min(paths.len())
    });
    paths
        .into_iter()
        .take(take)
        .map(|(name, path)| match std::fs::read(&path) {
            Ok(bytes) => Ok(Image { name, bytes }),
            Err(source) => Err(WorkloadError::ReadImage { path, source }),
        })
        .collect()
}

/// Expected labels by image name, from a `name,label` CSV.
///
/// A name matches an image by its full file name or by its stem (`test_00` matches
/// `test_00.JPEG`), because answer keys are written both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    labels: HashMap<String, String>,
}

impl Expected {
    /// Parses CSV text: one `name,label` record per line; a first line whose name column
    /// is `name`, `image`, `file` or `filename` (any case) is a header and skipped; blank
    /// lines are skipped. Fields follow CSV quoting (`"tiger, Panthera tigris"`, `""` for
    /// a quote); an unquoted label may still contain commas: the label is every field
    /// after the name, joined again by commas, trimmed.
    ///
    /// Errors carry the 1-based line number and the reason.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut labels = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                (usize::try_from(line).unwrap_or(usize::MAX), e.to_string())
            })?;
            let line = record
                .position()
                .map_or(0, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
            let name = record.get(0).unwrap_or("").trim();
            if record.len() < 2 {
                if name.is_empty() {
                    continue; // a line of spaces
                }
                return Err((line, "expected `name,label`".to_owned()));
            }
            if line == 1
                && ["name", "image", "file", "filename"]
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h))
            {
                continue;
            }
            if name.is_empty() {
                return Err((line, "empty name".to_owned()));
            }
            let label = record.iter().skip(1).collect::<Vec<_>>().join(",");
            if labels
                .insert(name.to_owned(), label.trim().to_owned())
                .is_some()
            {
                return Err((line, format!("`{name}` appears twice")));
            }
        }
        Ok(Self { labels })
    }

    /// Reads and parses a CSV file (see [`Expected::parse`]).
    pub fn load(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::ReadExpected {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| WorkloadError::ParseExpected {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// The expected label of an image, by full name, else by stem.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .get(name)
            .or_else(|| {
                let stem = Path::new(name).file_stem()?.to_str()?;
                self.labels.get(stem)
            })
            .map(String::as_str)
    }

    /// How many labels the file holds.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the file holds no labels.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

impl FromIterator<(String, String)> for Expected {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self {
            labels: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_quotes_and_commas() {
        let e = Expected::parse(
            "Image,Results\n\ntest_00,tabby\ntest_01.JPEG,\"tiger, Panthera tigris\"\n",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e.get("test_00.JPEG"), Some("tabby"));
        assert_eq!(e.get("test_00"), Some("tabby"));
        assert_eq!(e.get("test_01.JPEG"), Some("tiger, Panthera tigris"));
        assert_eq!(e.get("test_02.JPEG"), None);
    }

    #[test]
    fn quoting_follows_csv_and_unquoted_commas_stay_in_the_label() {
        let e = Expected::parse(
            "a.png,\"say \"\"hi\"\"\"\n  \nb.png, tiger, Panthera tigris \n\"c,d.png\",x\n",
        )
        .unwrap();
        assert_eq!(e.get("a.png"), Some("say \"hi\""));
        assert_eq!(e.get("b.png"), Some("tiger, Panthera tigris"));
        assert_eq!(e.get("c,d.png"), Some("x"));
        // Line numbers count blank lines too.
        assert_eq!(Expected::parse("a,b\n\n\nc,d\nc,e").unwrap_err().0, 5);
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(Expected::parse("a,b\nno comma").unwrap_err().0, 2);
        assert_eq!(Expected::parse("a,b\na,c").unwrap_err().0, 2);
        assert_eq!(Expected::parse(",x").unwrap_err().0, 1);
    }

    #[test]
    fn folder_is_sorted_limited_and_skips_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.png", "a.png", ".DS_Store", "c.png"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let all = load_folder(dir.path(), None).unwrap();
        let names: Vec<_> = all.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a.png", "b.png", "c.png"]);
        assert_eq!(all[0].bytes, b"a.png");
        assert_eq!(load_folder(dir.path(), Some(2)).unwrap().len(), 2);
        assert_eq!(load_folder(dir.path(), Some(99)).unwrap().len(), 3);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_folder(empty.path(), None),
            Err(WorkloadError::NoImages { .. })
        ));
    }
}
