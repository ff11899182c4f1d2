//! Image classification for iras: model packs, decoding with limits, preprocessing, and ONNX
//! Runtime inference.
//!
//! - [`ModelPack`] (module [`pack`]): a directory with `model.onnx`, a `pack.toml` manifest
//!   (input/output names, input size, resize mode and filter, scale/mean/std, channel order,
//!   logits or probabilities) and `labels.txt`.
//! - [`decode_image`] / [`validate_image`] / [`probe_image`] (module [`decode`]): header first,
//!   [`Limits`] (pixels, sides, bytes, and the decode memory estimated from the header) checked
//!   before any pixel is decoded, typed [`ImageError`]s; grayscale, palette, alpha, 16-bit, CMYK
//!   and EXIF orientation handled. Both tiers read the limits from the same flags (`iras-cli`).
//! - [`DecodeBudget`] (module [`budget`]): the memory and concurrency budget every decode in a
//!   process takes its estimate out of, with a bounded wait.
//! - [`Preprocessor`] (module [`preprocess`]): decoded pixels straight into the NCHW tensor, with
//!   a Pillow-exact, auto-vectorised resampler.
//! - [`Classifier`] (feature `inference`, on by default): one ONNX Runtime session checked
//!   against the manifest at load; [`Classifier::classify`] and
//!   [`Classifier::classify_batch`] return labels, scores, top-k and per-stage timings.
//!
//! # Design decisions
//!
//! **The ONNX Runtime library is loaded at run time, not linked.** The `ort` crate's default is
//! to download a prebuilt ONNX Runtime when building; the build machines cannot reach that CDN,
//! and the library is 35 MB that the web tier does not need. So `ort` is built with
//! `load-dynamic`, `scripts/fetch-model` takes `libonnxruntime.so` from the pinned PyPI
//! `onnxruntime` wheel into the cache, and [`Classifier::new`] finds it through
//! [`ClassifierOptions::ort_library`], `ORT_DYLIB_PATH` or the cache (in that order). A missing
//! library is an error at start-up that says what to run, never a crash at the first request.
//! Everything except [`Classifier`] works without the library, and without the `inference`
//! feature the crate does not even compile `ort`: the web tier validates uploads with the same
//! decoder, limits and errors as the app tier.
//!
//! **Preprocessing reproduces each pack's reference pipeline, not a generic one.** Scores are
//! only comparable with the published accuracy when the pixels match what the weights were
//! evaluated with, so the manifest names the pipeline (TensorFlow's crop-then-resize for
//! EfficientNet, torchvision's resize-then-crop for ResNet, or none for the course's raw 64×64
//! input) and the tests hold the tensor to the Python reference.
//!
//! **One `unsafe` block despite the workspace's `unsafe_code = "deny"`:** the Pillow-exact
//! resampler's inner loop is also compiled for AVX2 and chosen at run time, because baseline
//! x86-64 has no vector 32-bit multiply (see the module docs and SAFETY note in
//! `src/resample.rs`).
//!
//! Inference is blocking and CPU-bound; async callers use `spawn_blocking` (see
//! [`Classifier`]).

mod error;

pub mod budget;
pub mod decode;
pub mod pack;
pub mod paths;
pub mod preprocess;
mod resample;
pub mod scores;
pub mod structure;

#[cfg(feature = "inference")]
mod classifier;

pub use budget::{BudgetError, DecodeBudget, DecodePermit};
#[cfg(feature = "inference")]
pub use classifier::{Classification, Classifier, ClassifierOptions, Timings};
pub use decode::{ImageInfo, Limits, Probe, RgbImage, decode_image, probe_image, validate_image};
pub use error::{Error, FETCH_HINT, ImageError, PackError};
pub use pack::{Manifest, ModelPack};
pub use preprocess::Preprocessor;
pub use scores::Prediction;
pub use structure::{Structure, check_structure};
