//! Locating the assets `scripts/fetch-model --with-test-assets` puts in the cache. Missing
//! assets fail the test with the command to run; nothing is skipped silently.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use iras_classifier::paths;

pub const FETCH: &str = "run `scripts/fetch-model --with-test-assets` first (it caches the model packs, \
     the ONNX Runtime library and the Python reference under ~/.cache/iras, or $IRAS_CACHE_DIR)";

pub fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} not found at {}: {FETCH}",
        path.display()
    );
    path
}

/// `$IRAS_MODEL_DIR`, else the cached efficientnet-lite0 pack.
pub fn default_pack_dir() -> PathBuf {
    require(paths::default_model_dir(), "model pack")
}

pub fn pack_dir(name: &str) -> PathBuf {
    require(paths::cached_pack_dir(name), &format!("model pack {name}"))
}

/// `$ORT_DYLIB_PATH`, else the cached library.
pub fn ort_library() -> PathBuf {
    require(paths::default_ort_library(), "ONNX Runtime library")
}

pub fn reference_dir(pack: &str) -> PathBuf {
    require(
        paths::cache_dir().join("reference").join(pack),
        &format!("Python reference for {pack}"),
    )
}

pub fn reference(pack: &str) -> serde_json::Value {
    let path = require(reference_dir(pack).join("reference.json"), "reference.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(require(path.to_path_buf(), "reference tensor")).unwrap();
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub fn golden(stem: &str) -> Vec<u8> {
    std::fs::read(require(
        paths::cache_dir()
            .join("golden")
            .join(format!("{stem}.png")),
        "golden image",
    ))
    .unwrap()
}

pub fn test_image(name: &str) -> Vec<u8> {
    std::fs::read(require(
        paths::cache_dir().join("test-images").join(name),
        "test image",
    ))
    .unwrap()
}

/// (max, mean) absolute difference.
pub fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "length");
    let mut max = 0.0f32;
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += f64::from(d);
    }
    (max, (sum / a.len() as f64) as f32)
}
