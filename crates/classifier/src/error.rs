//! Error types: [`ImageError`] for bad input (permanent: retrying cannot help), [`PackError`]
//! for model packs, and [`Error`] for everything the classifier can report.

use std::path::PathBuf;

/// The command that puts the default pack, the ONNX Runtime library and the test assets in the
/// cache. Error messages point here.
pub const FETCH_HINT: &str = "run `scripts/fetch-model` (add `--with-test-assets` for the tests)";

/// Why an input could not be turned into pixels. Every variant is the client's fault and
/// permanent: a queue worker should answer with an error result, not redeliver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Zero bytes.
    #[error("empty input (0 bytes)")]
    Empty,
    /// More bytes than [`Limits::max_bytes`](crate::Limits::max_bytes).
    #[error("input is {len_bytes} bytes, over the limit of {max_bytes} bytes")]
    TooManyBytes {
        /// Size of the input.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The bytes start like no supported image format.
    #[error("not an image (no supported format recognised: JPEG, PNG, GIF, WebP, BMP or TIFF)")]
    NotAnImage,
    /// A recognised format whose codec is not compiled in.
    #[error("unsupported image format {format}")]
    UnsupportedFormat {
        /// The format, as the decoder names it.
        format: String,
    },
    /// The header declares more pixels (or a longer side) than the limits allow. Checked before
    /// any pixel is decoded, so a decompression bomb costs nothing.
    #[error(
        "image is {width}x{height} pixels, over the limit of {max_pixels} pixels or {max_side} per side"
    )]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// [`Limits::max_pixels`](crate::Limits::max_pixels).
        max_pixels: u64,
        /// [`Limits::max_side`](crate::Limits::max_side).
        max_side: u32,
    },
    /// Decoding the image would take more memory than
    /// [`Limits::max_decoded_bytes`](crate::Limits::max_decoded_bytes) allows (estimated from
    /// the header: dimensions, colour type and format). A decompression bomb ends here.
    #[error(
        "image is {width}x{height} {color}: decoding it needs about {needed_bytes} bytes of memory, over the limit of {max_bytes} bytes"
    )]
    TooMuchMemory {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Pixel layout as stored.
        color: String,
        /// The estimate.
        needed_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// The header declares a zero width or height.
    #[error("image has a zero dimension ({width}x{height})")]
    ZeroDimension {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The data ends before the image does.
    #[error("truncated {format} image: {message}")]
    Truncated {
        /// The format.
        format: String,
        /// The decoder's description.
        message: String,
    },
    /// The data is not a valid image of its format.
    #[error("corrupt {format} image: {message}")]
    Corrupt {
        /// The format.
        format: String,
        /// The decoder's description.
        message: String,
    },
}

impl ImageError {
    /// Whether the image was refused for its size (bytes, pixels or decode memory): HTTP 413.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::TooManyBytes { .. } | Self::TooManyPixels { .. } | Self::TooMuchMemory { .. }
        )
    }
}

/// Why a model pack could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// The directory or its `pack.toml` does not exist.
    #[error("model pack not found: {} has no pack.toml; {FETCH_HINT}, or point --model / IRAS_MODEL_DIR at a pack directory", dir.display())]
    NotFound {
        /// The pack directory.
        dir: PathBuf,
    },
    /// A file of the pack could not be read.
    #[error("model pack {pack}: cannot read {}: {source}", path.display())]
    Read {
        /// Pack name or directory.
        pack: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML or misses fields.
    #[error("model pack {pack}: invalid manifest {}: {message}", path.display())]
    Manifest {
        /// Pack name or directory.
        pack: String,
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model file named by the manifest does not exist.
    #[error("model pack {pack}: model file {} is missing; {FETCH_HINT}", path.display())]
    ModelMissing {
        /// Pack name.
        pack: String,
        /// Expected model path.
        path: PathBuf,
    },
    /// The labels file does not have one label per class.
    #[error("model pack {pack}: labels file has {labels} labels, manifest says {classes} classes")]
    LabelCount {
        /// Pack name.
        pack: String,
        /// Labels found.
        labels: usize,
        /// Classes declared.
        classes: usize,
    },
}

/// Everything the classifier can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input image (permanent).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The model pack could not be loaded.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// The image does not fit a pack whose manifest says `resize = none`.
    #[error(
        "image is {width}x{height}, but pack {pack} takes exactly {want_width}x{want_height} (resize mode none)"
    )]
    SizeMismatch {
        /// Pack name.
        pack: String,
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// Model input width.
        want_width: u32,
        /// Model input height.
        want_height: u32,
    },
    /// The ONNX Runtime shared library is missing or could not be loaded.
    #[error("ONNX Runtime library {}: {message}", path.display())]
    OrtLibrary {
        /// Where it was looked for.
        path: PathBuf,
        /// What went wrong, with what to run.
        message: String,
    },
    /// The model does not match its manifest (names, shapes, element types).
    #[error("model pack {pack}: model does not match the manifest: {message}")]
    ModelMismatch {
        /// Pack name.
        pack: String,
        /// The mismatch.
        message: String,
    },
    /// ONNX Runtime failed to create a session or run the model.
    #[error("model pack {pack}: ONNX Runtime: {message}")]
    Runtime {
        /// Pack name.
        pack: String,
        /// ONNX Runtime's message.
        message: String,
    },
}

impl Error {
    /// True when the input itself is at fault and retrying the same bytes cannot succeed (the
    /// queue worker answers with an error result and deletes the message). False for
    /// configuration and runtime failures, which may be transient or fixable by an operator.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::Image(_) | Error::SizeMismatch { .. })
    }
}
