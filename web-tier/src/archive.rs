//! The images of a batch: its files, with zip and tar archives unpacked, counted against
//! the batch's limits as they are read.
//!
//! The decision a reader may question: archives are unpacked here, in memory, rather
//! than queued as one request each. Every image must travel as its own request message
//! so the scaler sees the real backlog, and the web tier must check every image before
//! anything is queued (bad ones are reported, an oversized batch refused whole). The
//! limits bound the memory: every entry is read through a `take` of what is left of
//! `--batch-max-bytes`, so a zip bomb stops at the limit instead of at its claimed size.
//! Supported: zip (stored or deflated entries) and plain tar; a file of any other kind is
//! taken as an image and checked as one.

use std::io::Read;

use axum::body::Bytes;

use crate::error::AppError;

/// One file of a batch: as uploaded, or unpacked from an archive.
#[derive(Debug, Clone)]
pub struct BatchFile {
    /// Its name (an archive entry's path; the web tier keeps the base name).
    pub name: Option<String>,
    /// Its bytes.
    pub bytes: Bytes,
}

/// What a batch may still hold.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    max_images: usize,
    max_bytes: usize,
    images: usize,
    bytes: usize,
}

impl BatchLimits {
    /// Room for `max_images` images of `max_bytes` bytes in all.
    pub fn new(max_images: usize, max_bytes: usize) -> Self {
        Self {
            max_images,
            max_bytes,
            images: 0,
            bytes: 0,
        }
    }

    /// Bytes one more image may have.
    fn bytes_left(&self) -> usize {
        self.max_bytes - self.bytes
    }

    /// Counts one more image of `len` bytes, or refuses the batch.
    fn take(&mut self, len: usize) -> Result<(), AppError> {
        if self.images == self.max_images {
            return Err(AppError::BatchTooLarge(format!(
                "more than {} images",
                self.max_images
            )));
        }
        if len > self.bytes_left() {
            return Err(AppError::BatchTooLarge(format!(
                "more than {} bytes of images",
                self.max_bytes
            )));
        }
        self.images += 1;
        self.bytes += len;
        Ok(())
    }
}

/// The kinds of archive a batch may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveKind {
    Zip,
    Tar,
}

fn archive_kind(bytes: &[u8]) -> Option<ArchiveKind> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Some(ArchiveKind::Zip)
    } else if bytes.get(257..262) == Some(b"ustar") {
        Some(ArchiveKind::Tar)
    } else {
        None
    }
}

/// Entries that are an archiver's bookkeeping, not images: hidden files (`._x.jpg` of
/// macOS) and `__MACOSX/`.
fn is_bookkeeping(path: &str) -> bool {
    path.split(['/', '\\'])
        .any(|part| part == "__MACOSX" || part.starts_with('.') && part != "." && part != "..")
}

/// The images of `file`: itself, or the files of the archive it is, counted in `limits`.
pub fn unpack(file: BatchFile, limits: &mut BatchLimits) -> Result<Vec<BatchFile>, AppError> {
    let archive_name = file.name.clone().unwrap_or_else(|| "upload".into());
    let bad = |reason: String| AppError::BadArchive {
        name: archive_name.chars().take(64).collect(),
        reason,
    };
    match archive_kind(&file.bytes) {
        None => {
            limits.take(file.bytes.len())?;
            Ok(vec![file])
        }
        Some(ArchiveKind::Zip) => {
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(file.bytes))
                .map_err(|e| bad(e.to_string()))?;
            let mut files = Vec::new();
            for i in 0..zip.len() {
                let entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
                let name = entry.name().map_err(|e| bad(e.to_string()))?.into_owned();
                if !entry.is_dir() {
                    files.extend(entry_file(name, entry, limits, &bad)?);
                }
            }
            Ok(files)
        }
        Some(ArchiveKind::Tar) => {
            let mut tar = tar::Archive::new(std::io::Cursor::new(file.bytes));
            let mut files = Vec::new();
            for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
                let entry = entry.map_err(|e| bad(e.to_string()))?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let name = entry
                    .path()
                    .map_err(|e| bad(e.to_string()))?
                    .to_string_lossy()
                    .into_owned();
                files.extend(entry_file(name, entry, limits, &bad)?);
            }
            Ok(files)
        }
    }
}

/// One file entry of an archive, unless it is bookkeeping.
fn entry_file(
    name: String,
    entry: impl Read,
    limits: &mut BatchLimits,
    bad: &impl Fn(String) -> AppError,
) -> Result<Option<BatchFile>, AppError> {
    if is_bookkeeping(&name) {
        return Ok(None);
    }
    let bytes = read_within(entry, limits).map_err(|e| match e {
        Bounded::Io(e) => bad(format!("{name}: {e}")),
        Bounded::Limit(e) => e,
    })?;
    Ok(Some(BatchFile {
        name: Some(name),
        bytes,
    }))
}

/// Why an entry could not be read.
enum Bounded {
    Io(std::io::Error),
    Limit(AppError),
}

/// Reads one entry, never more than the batch has room for (plus one byte, to tell).
fn read_within(entry: impl Read, limits: &mut BatchLimits) -> Result<Bytes, Bounded> {
    let room = limits.bytes_left();
    let mut bytes = Vec::new();
    entry
        .take(room as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(Bounded::Io)?;
    limits.take(bytes.len()).map_err(Bounded::Limit)?;
    Ok(bytes.into())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_of(files: &[(&str, &[u8])]) -> Bytes {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in files {
            out.start_file(*name, options).unwrap();
            out.write_all(bytes).unwrap();
        }
        out.finish().unwrap().into_inner().into()
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Bytes {
        let mut out = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            out.append_data(&mut header, name, *bytes).unwrap();
        }
        out.into_inner().unwrap().into()
    }

    fn names(files: &[BatchFile]) -> Vec<&str> {
        files.iter().filter_map(|f| f.name.as_deref()).collect()
    }

    #[test]
    fn zips_and_tars_are_unpacked_and_bookkeeping_skipped() {
        let entries: &[(&str, &[u8])] = &[
            ("a.jpg", b"aaa"),
            ("dir/b.png", b"bb"),
            ("__MACOSX/dir/._b.png", b"x"),
            (".DS_Store", b"x"),
        ];
        for archive in [zip_of(entries), tar_of(entries)] {
            let mut limits = BatchLimits::new(10, 100);
            let files = unpack(
                BatchFile {
                    name: Some("all.zip".into()),
                    bytes: archive,
                },
                &mut limits,
            )
            .unwrap();
            assert_eq!(names(&files), ["a.jpg", "dir/b.png"]);
            assert_eq!(&files[0].bytes[..], b"aaa");
            assert_eq!((limits.images, limits.bytes), (2, 5));
        }
    }

    #[test]
    fn a_batch_over_its_limits_is_refused() {
        let many: Vec<(String, Vec<u8>)> =
            (0..4).map(|i| (format!("{i}.png"), vec![0; 10])).collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
        let archive = || BatchFile {
            name: Some("x.zip".into()),
            bytes: zip_of(&many),
        };
        let err = unpack(archive(), &mut BatchLimits::new(3, 1000)).unwrap_err();
        assert!(
            matches!(err, AppError::BatchTooLarge(ref m) if m.contains("3 images")),
            "{err}"
        );
        // A highly compressible entry stops at the byte limit, whatever it would unpack to.
        let bomb = zip_of(&[("big.png", &vec![0u8; 1 << 20])]);
        assert!(bomb.len() < 10_000);
        let err = unpack(
            BatchFile {
                name: None,
                bytes: bomb,
            },
            &mut BatchLimits::new(3, 64 * 1024),
        )
        .unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        // A plain file counts too.
        let mut limits = BatchLimits::new(1, 1000);
        let plain = || BatchFile {
            name: Some("a.png".into()),
            bytes: Bytes::from_static(b"abc"),
        };
        assert_eq!(unpack(plain(), &mut limits).unwrap().len(), 1);
        assert!(unpack(plain(), &mut limits).is_err());
    }

    #[test]
    fn a_broken_archive_is_a_bad_request() {
        let mut broken = zip_of(&[("a.png", b"abc")]).to_vec();
        broken.truncate(20);
        let err = unpack(
            BatchFile {
                name: Some("broken.zip".into()),
                bytes: broken.into(),
            },
            &mut BatchLimits::new(3, 1000),
        )
        .unwrap_err();
        assert_eq!(err.code(), "bad_archive");
        assert!(err.to_string().contains("broken.zip"));
    }
}
