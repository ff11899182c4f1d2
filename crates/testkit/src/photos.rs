//! The golden photos: the real photos the model pack's Python reference run classified
//! (`scripts/fetch-model --with-test-assets` caches them with `reference.json`), and the
//! label the reference gave each. The system tests, the benchmarks and the rehearsal's burst
//! send them, so a right answer is known for every upload.

use anyhow::Context;

/// An upload named like the course's (`test_7.png`) with the label the reference
/// pipeline gave the photo.
#[derive(Debug, Clone)]
pub struct Upload {
    /// File name sent with the upload.
    pub name: String,
    /// The image.
    pub bytes: Vec<u8>,
    /// The expected label.
    pub label: String,
}

/// `n` uploads cycling through the golden photos and their format variants (from the
/// pack's Python reference run, `scripts/fetch-model --with-test-assets`).
pub fn golden_uploads(n: usize) -> anyhow::Result<Vec<Upload>> {
    let reference = iras_classifier::paths::cache_dir()
        .join("reference")
        .join(iras_classifier::paths::DEFAULT_PACK)
        .join("reference.json");
    let text = std::fs::read_to_string(&reference).with_context(|| {
        format!(
            "{} missing: run `scripts/fetch-model --with-test-assets` first",
            reference.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let mut photos = Vec::new();
    for entry in json["images"]
        .as_object()
        .context("reference.json has no images")?
        .values()
    {
        let path = std::path::PathBuf::from(entry["image"].as_str().context("image path")?);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("img")
            .to_owned();
        let label = entry["top5"][0]["label"]
            .as_str()
            .context("top-1 label")?
            .to_owned();
        photos.push((extension, bytes, label));
    }
    anyhow::ensure!(
        !photos.is_empty(),
        "no golden photos in {}",
        reference.display()
    );
    photos.sort();
    Ok((0..n)
        .map(|i| {
            let (extension, bytes, label) = &photos[i % photos.len()];
            Upload {
                name: format!("test_{i}.{extension}"),
                bytes: bytes.clone(),
                label: label.clone(),
            }
        })
        .collect())
}
