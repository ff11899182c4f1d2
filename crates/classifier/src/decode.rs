//! Decoding with limits: header first, then pixels. No ONNX Runtime needed, so the web tier can
//! validate uploads with the same code the app tier classifies with.
//!
//! This module is the one home of the input limits both tiers apply ([`Limits`] and their
//! defaults, set from the command line by the flags of `iras-cli`): the web tier refuses with a
//! 4xx exactly what the app tier would refuse, because both call [`probe_image`] with the same
//! [`Limits`].
//!
//! Memory is bounded in two steps. [`probe_image`] reads only the header and estimates what a
//! full decode to RGB will allocate ([`Probe::memory_bytes`]: the decoder's own buffer, the RGB
//! copy, a rotated copy, a progressive JPEG's coefficients); an image over
//! [`Limits::max_decoded_bytes`] is refused there. Then every decode in a process takes its
//! estimate out of one shared [`DecodeBudget`](crate::DecodeBudget) before it starts, so all
//! concurrent decodes together stay within the budget. The pixel limit alone does not bound
//! memory: a 16-bit RGBA image takes 8 bytes a pixel, and a 308 KB all-zero PNG of
//! 6300×6300 (inside 40 MP) would decode to 318 MB plus a 119 MB RGB copy.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::error::ImageError;

/// Default for [`Limits::max_bytes`]: 10 MiB. Bigger uploads are refused before queueing.
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;
/// Default for [`Limits::max_pixels`]: 40 megapixels (a 24 MP camera photo fits; 40 MP of RGB is
/// 120 MB of decoded pixels).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Default for [`Limits::max_side`]: 20 000 pixels.
pub const DEFAULT_MAX_SIDE: u32 = 20_000;
/// Default for [`Limits::max_decoded_bytes`]: 256 MiB, what one decode may allocate (a 40 MP
/// RGB JPEG needs 120 MB; a 16-bit RGBA PNG of 6300×6300 would need 437 MB and is refused).
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

/// Input limits, checked from the header before any pixel is decoded. Both tiers apply the
/// same values (read from the same flags, `iras_cli::LimitArgs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes.
    pub max_bytes: usize,
    /// Largest accepted width × height, from the header.
    pub max_pixels: u64,
    /// Largest accepted width or height, from the header.
    pub max_side: u32,
    /// Most memory one decode to RGB may need, in bytes, as [`probe_image`] estimates it from
    /// the header (dimensions, colour type, format).
    pub max_decoded_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_side: DEFAULT_MAX_SIDE,
            max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES,
        }
    }
}

/// What the header says about an image, and what decoding it will cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Container format, lower case.
    pub format: &'static str,
    /// Width as stored.
    pub width: u32,
    /// Height as stored.
    pub height: u32,
    /// Pixel layout as stored, e.g. `Rgb8`, `Rgba16`.
    pub color: String,
    /// Estimated peak memory of [`decode_image`] on this image, in bytes.
    pub memory_bytes: u64,
}

/// Reads the header only (no pixel data) and checks it against `limits`: size in bytes,
/// format, dimensions, and the memory a decode would take. Cheap whatever the image.
pub fn probe_image(bytes: &[u8], limits: &Limits) -> Result<Probe, ImageError> {
    let (format, mut decoder) = open_decoder(bytes, limits)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    let color = decoder.color_type();
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let pixels = u64::from(width) * u64::from(height);
    let native = decoder.total_bytes();
    let mut memory = native;
    if color != image::ColorType::Rgb8 {
        memory = memory.saturating_add(pixels * 3);
    }
    if orientation != image::metadata::Orientation::NoTransforms {
        // `apply_orientation` builds the turned image beside the original.
        memory = memory.saturating_add(native);
    }
    if format == ImageFormat::Jpeg && jpeg_is_progressive(bytes) {
        // A progressive decoder keeps every coefficient (i16) of every component until the
        // last scan; counted at full resolution for all three components.
        memory = memory.saturating_add(pixels * 6);
    }
    let probe = Probe {
        format: format_name(format),
        width,
        height,
        color: format!("{color:?}"),
        memory_bytes: memory,
    };
    if probe.memory_bytes > limits.max_decoded_bytes {
        return Err(ImageError::TooMuchMemory {
            width,
            height,
            color: probe.color,
            needed_bytes: probe.memory_bytes,
            max_bytes: limits.max_decoded_bytes,
        });
    }
    Ok(probe)
}

/// What the header and the decoder said about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Container format, lower case (`jpeg`, `png`, `gif`, `webp`, `bmp`, `tiff`).
    pub format: &'static str,
    /// Width after applying the EXIF orientation.
    pub width: u32,
    /// Height after applying the EXIF orientation.
    pub height: u32,
    /// Pixel layout as stored, e.g. `Rgb8`, `La8`, `Rgba16` (palette images report the
    /// expanded layout; CMYK JPEGs report `Rgb8` because the decoder converts them).
    pub color: String,
    /// Whether an EXIF orientation other than "as stored" was applied.
    pub reoriented: bool,
}

/// A decoded image as packed 8-bit RGB, row-major, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl RgbImage {
    /// Wraps packed RGB bytes; `None` if the length is not `width * height * 3`.
    pub fn from_raw(width: u32, height: u32, data: Vec<u8>) -> Option<Self> {
        let want = (width as usize)
            .checked_mul(height as usize)?
            .checked_mul(3)?;
        (data.len() == want).then_some(RgbImage {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Packed RGB bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
}

/// Checks the header against `limits`, then decodes fully (so truncated and corrupt data is
/// caught), and throws the pixels away. This is what the web tier calls before queueing.
pub fn validate_image(bytes: &[u8], limits: &Limits) -> Result<ImageInfo, ImageError> {
    // Decoding proves the data whole; turning it upright and into RGB would prove nothing
    // more, so validation stops at the decoder's own pixel layout.
    let decoded = decode_native(bytes, limits)?;
    let (mut width, mut height) = (decoded.image.width(), decoded.image.height());
    if decoded.orientation.swaps_dimensions() {
        std::mem::swap(&mut width, &mut height);
    }
    Ok(ImageInfo {
        format: decoded.format,
        width,
        height,
        color: decoded.color,
        reoriented: decoded.orientation != image::metadata::Orientation::NoTransforms,
    })
}

/// An image as its decoder produced it, before orientation and RGB conversion.
struct Decoded {
    format: &'static str,
    color: String,
    orientation: image::metadata::Orientation,
    image: DynamicImage,
}

/// Whether an EXIF orientation turns the image by a quarter.
trait SwapsDimensions {
    fn swaps_dimensions(self) -> bool;
}

impl SwapsDimensions for image::metadata::Orientation {
    fn swaps_dimensions(self) -> bool {
        use image::metadata::Orientation as O;
        matches!(
            self,
            O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH
        )
    }
}

/// Size in bytes, format sniffing, and the header parse; no pixel data is read.
fn open_decoder<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<(ImageFormat, Box<dyn ImageDecoder + 'a>), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooManyBytes {
            len_bytes: bytes.len(),
            max_bytes: limits.max_bytes,
        });
    }
    let format = image::guess_format(bytes).map_err(|_| ImageError::NotAnImage)?;
    let name = format_name(format);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // A second line of defence for decoders that allocate more than the header suggests. Width
    // and height are left to `check_dimensions`, so the error can name them.
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_decoded_bytes);
    reader.limits(decoder_limits);
    let decoder = reader.into_decoder().map_err(|e| {
        // Some decoders refuse a zero or huge dimension while parsing the header (or read
        // past it); PNG states its dimensions at a fixed offset, so the error can name them.
        match png_dimensions(bytes).map(|(w, h)| check_dimensions(w, h, limits)) {
            Some(Err(err)) => err,
            _ => classify_error(e, name, limits),
        }
    })?;
    Ok((format, Box::new(decoder)))
}

/// The checks and the decoding shared by [`decode_image`] and [`validate_image`]: size in
/// bytes, format sniffing, header (dimensions against `limits`, before any pixel is decoded),
/// then the pixel data in the decoder's own layout.
fn decode_native(bytes: &[u8], limits: &Limits) -> Result<Decoded, ImageError> {
    // The header checks, memory estimate included, come first: nothing is allocated for an
    // image that would not fit.
    probe_image(bytes, limits)?;
    let (format, decoder) = open_decoder(bytes, limits)?;
    let name = format_name(format);
    let mut decoder = decoder;
    let color = format!("{:?}", decoder.color_type());
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(|e| classify_error(e, name, limits))?;
    if format == ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        // zune-jpeg pads a cut-off scan with grey and succeeds; a half-received upload must not
        // be classified as if it were whole.
        return Err(ImageError::Truncated {
            format: name.to_owned(),
            message: "no end-of-image marker after the image data".to_owned(),
        });
    }
    Ok(Decoded {
        format: name,
        color,
        orientation,
        image,
    })
}

/// Decodes `bytes` into 8-bit RGB with the EXIF orientation applied.
///
/// Order of checks: size in bytes, format sniffing, header (dimensions against `limits`, before
/// any pixel is decoded), then the pixel data. Grayscale is replicated to RGB, palette images
/// are expanded, 16-bit samples are scaled to 8 bits, CMYK JPEGs are converted by the decoder,
/// and alpha is dropped without compositing (as PIL's `convert("RGB")` does, which is what the
/// reference pipelines use).
pub fn decode_image(bytes: &[u8], limits: &Limits) -> Result<(ImageInfo, RgbImage), ImageError> {
    let Decoded {
        format: name,
        color,
        orientation,
        image: mut img,
    } = decode_native(bytes, limits)?;
    let reoriented = orientation != image::metadata::Orientation::NoTransforms;
    if reoriented {
        img.apply_orientation(orientation);
    }
    let rgb = match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    };
    let (width, height) = rgb.dimensions();
    let info = ImageInfo {
        format: name,
        width,
        height,
        color,
        reoriented,
    };
    Ok((
        info,
        RgbImage {
            width,
            height,
            data: rgb.into_raw(),
        },
    ))
}

/// Whether a JPEG's entropy-coded data is followed by an end-of-image marker. Walks the
/// marker segments to the first start-of-scan (so an EXIF thumbnail's own EOI does not count);
/// after it, `FF D9` can only be the real EOI because scan data stuffs every `FF` byte.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        match bytes[i + 1] {
            0xFF => i += 1,
            0xDA => return bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
            0x01 | 0xD0..=0xD9 => i += 2,
            _ => i += 2 + usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]])),
        }
    }
    false
}

/// Whether a JPEG's first frame header is progressive (SOF2, or SOF6/SOF10/SOF14).
fn jpeg_is_progressive(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        match bytes[i + 1] {
            0xFF => i += 1,
            0xC2 | 0xC6 | 0xCA | 0xCE => return true,
            0xC0 | 0xC1 | 0xC3 | 0xC5 | 0xC7 | 0xC9 | 0xCB | 0xCD | 0xCF | 0xDA => return false,
            0x01 | 0xD0..=0xD9 => i += 2,
            _ => i += 2 + usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]])),
        }
    }
    false
}

/// Width and height from a PNG's IHDR chunk, if `bytes` starts like one.
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let ihdr = bytes.get(12..24)?;
    if &ihdr[..4] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&ihdr[4..8]), be(&ihdr[8..12])))
}

fn check_dimensions(width: u32, height: u32, limits: &Limits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroDimension { width, height });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels
        || width > limits.max_side
        || height > limits.max_side
    {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            max_pixels: limits.max_pixels,
            max_side: limits.max_side,
        });
    }
    Ok(())
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::Gif => "gif",
        ImageFormat::WebP => "webp",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        other => other.extensions_str().first().copied().unwrap_or("unknown"),
    }
}

/// Maps the decoder's error onto our variants. "Truncated" is told apart by an unexpected
/// end of input, which decoders report as an I/O error or (zune-jpeg, png) in their message.
fn classify_error(err: image::ImageError, format: &'static str, limits: &Limits) -> ImageError {
    use image::ImageError as E;
    let message = err.to_string();
    let lower = message.to_ascii_lowercase();
    let looks_truncated = lower.contains("end of file")
        || lower.contains("unexpected eof")
        || lower.contains("unexpectedeof")
        || lower.contains("no more bytes")
        || lower.contains("truncated")
        || lower.contains("premature end")
        || lower.contains("not enough data")
        || lower.contains("not enough bytes");
    match err {
        E::Unsupported(_) if lower.contains("format") && !lower.contains("color") => {
            ImageError::UnsupportedFormat {
                format: format.to_owned(),
            }
        }
        E::Limits(_) => ImageError::TooManyPixels {
            width: 0,
            height: 0,
            max_pixels: limits.max_pixels,
            max_side: limits.max_side,
        },
        E::IoError(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated {
                format: format.to_owned(),
                message,
            }
        }
        _ if looks_truncated => ImageError::Truncated {
            format: format.to_owned(),
            message,
        },
        _ if lower.contains("zero") && (lower.contains("width") || lower.contains("dimension")) => {
            ImageError::ZeroDimension {
                width: 0,
                height: 0,
            }
        }
        _ => ImageError::Corrupt {
            format: format.to_owned(),
            message,
        },
    }
}
