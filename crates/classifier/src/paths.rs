//! Where packs and the ONNX Runtime library live by default, and the environment variables that
//! move them. `scripts/fetch-model` writes to the same places.

use std::path::PathBuf;

use iras_protocol::env::{IRAS_CACHE_DIR, IRAS_MODEL_DIR, ORT_DYLIB_PATH};

/// The pack used when none is named.
pub const DEFAULT_PACK: &str = "efficientnet-lite0";
/// ONNX Runtime version that `scripts/fetch-model` installs.
pub const ORT_VERSION: &str = "1.32.0";

fn non_empty_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$IRAS_CACHE_DIR`, else `$HOME/.cache/iras` (`./.cache/iras` without a home).
pub fn cache_dir() -> PathBuf {
    non_empty_env(IRAS_CACHE_DIR).unwrap_or_else(|| {
        non_empty_env("HOME")
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache")
            .join("iras")
    })
}

/// Directory of the cached pack `name`.
pub fn cached_pack_dir(name: &str) -> PathBuf {
    cache_dir().join("packs").join(name)
}

/// `$IRAS_MODEL_DIR`, else the cached default pack.
pub fn default_model_dir() -> PathBuf {
    non_empty_env(IRAS_MODEL_DIR).unwrap_or_else(|| cached_pack_dir(DEFAULT_PACK))
}

/// The library `scripts/fetch-model` caches.
pub fn cached_ort_library() -> PathBuf {
    cache_dir()
        .join("onnxruntime")
        .join(ORT_VERSION)
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// `$ORT_DYLIB_PATH`, else the cached library.
pub fn default_ort_library() -> PathBuf {
    non_empty_env(ORT_DYLIB_PATH).unwrap_or_else(cached_ort_library)
}
