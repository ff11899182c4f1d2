//! Local buckets: one directory per bucket, one file per object.
//!
//! A key maps to a relative path (`a/b.png` → `<bucket>/a/b.png`); validated keys cannot
//! leave the directory. Writes go to a temporary file under `<state>/tmp`, are flushed to
//! disk, and are renamed into place, so a reader sees the old object or the new one and a
//! crash never leaves half an object behind. The one thing S3 allows that a file system
//! does not: `a` and `a/b` cannot both exist; such a put fails with an I/O error.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;

use crate::bucket::{Bucket, validate_bucket_name, validate_key};
use crate::error::{CloudError, Result};

pub(super) fn create(root: &Path, name: &str) -> Result<()> {
    validate_bucket_name(name)?;
    let dir = root.join("buckets").join(name);
    std::fs::create_dir_all(&dir).map_err(|source| CloudError::Io {
        action: "create bucket directory",
        path: dir,
        source,
    })
}

/// One local bucket.
#[derive(Debug, Clone)]
pub struct LocalBucket {
    name: String,
    dir: PathBuf,
    tmp: PathBuf,
}

impl LocalBucket {
    pub(super) fn open(root: &Path, name: &str) -> Result<Self> {
        validate_bucket_name(name)?;
        let dir = root.join("buckets").join(name);
        if !dir.is_dir() {
            return Err(CloudError::BucketNotFound {
                bucket: name.to_owned(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            dir,
            tmp: root.join("tmp"),
        })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.dir.join(key))
    }

    /// Deletes every object last written before `cutoff`, and the directories that leaves
    /// empty: the local backend's stand-in for an S3 lifecycle expiration rule. Returns how
    /// many objects it deleted. An object deleted meanwhile by another process is no error.
    pub async fn expire_before(&self, cutoff: SystemTime) -> Result<usize> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || expire_in(&dir, cutoff))
            .await
            .map_err(|e| CloudError::Io {
                action: "expire objects",
                path: self.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
    }
}

/// [`LocalBucket::expire_before`] in `dir`, depth first.
fn expire_in(dir: &Path, cutoff: SystemTime) -> Result<usize> {
    let mut expired = 0;
    for entry in std::fs::read_dir(dir).map_err(io("read bucket directory", dir))? {
        let entry = entry.map_err(io("read bucket directory", dir))?;
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io("inspect object", &path)(e)),
        };
        if meta.is_dir() {
            expired += expire_in(&path, cutoff)?;
            // Only if it is empty now (an object may have been written into it meanwhile).
            let _ = std::fs::remove_dir(&path);
        } else if meta.modified().is_ok_and(|written| written < cutoff) {
            match std::fs::remove_file(&path) {
                Ok(()) => expired += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("delete expired object", &path)(e)),
            }
        }
    }
    Ok(expired)
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CloudError {
    let path = path.to_path_buf();
    move |source| CloudError::Io {
        action,
        path,
        source,
    }
}

fn write_atomically(tmp_dir: &Path, target: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp =
        tempfile::NamedTempFile::new_in(tmp_dir).map_err(io("create temporary object", tmp_dir))?;
    tmp.write_all(bytes).map_err(io("write object", target))?;
    tmp.as_file()
        .sync_all()
        .map_err(io("flush object", target))?;
    let persisted = match tmp.persist(target) {
        // The key's directory is made on the first object under it only, not tried on
        // every put (a `mkdir` takes the parent directory's lock even when it exists).
        Err(e) if e.error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io("create object directory", parent))?;
            }
            e.file.persist(target)
        }
        other => other,
    };
    persisted.map_err(|e| CloudError::Io {
        action: "rename object into place",
        path: target.to_path_buf(),
        source: e.error,
    })?;
    // The rename itself is durable only once the directory entry is on disk.
    if let Some(parent) = target.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io("flush bucket directory", parent))?;
    }
    Ok(())
}

fn collect_keys(
    dir: &Path,
    prefix_of_dir: &str,
    wanted: &str,
    out: &mut Vec<String>,
) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("list bucket directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("list bucket directory", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let key = format!("{prefix_of_dir}{name}");
        let file_type = entry
            .file_type()
            .map_err(io("list bucket directory", &entry.path()))?;
        if file_type.is_dir() {
            let sub = format!("{key}/");
            // Descend only where keys can still start with the wanted prefix.
            if sub.starts_with(wanted) || wanted.starts_with(&sub) {
                collect_keys(&entry.path(), &sub, wanted, out)?;
            }
        } else if key.starts_with(wanted) {
            out.push(key);
        }
    }
    Ok(())
}

#[async_trait]
impl Bucket for LocalBucket {
    fn name(&self) -> &str {
        &self.name
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let target = self.path_of(key)?;
        let tmp = self.tmp.clone();
        tokio::task::spawn_blocking(move || write_atomically(&tmp, &target, &bytes))
            .await
            .map_err(|e| CloudError::Io {
                action: "write object",
                path: self.dir.join(key),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => {
                Err(CloudError::ObjectNotFound {
                    bucket: self.name.clone(),
                    key: key.to_owned(),
                })
            }
            Err(e) => Err(io("read object", &path)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.dir.clone();
        let prefix = prefix.to_owned();
        let mut keys = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            collect_keys(&dir, "", &prefix, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| CloudError::Io {
            action: "list bucket",
            path: self.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        keys.sort();
        Ok(keys)
    }
}
