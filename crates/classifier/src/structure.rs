//! Whether an image file is whole, from its container's framing alone: no pixel is decoded.
//!
//! The web tier used to decode every upload in full before queueing it, to refuse truncated
//! and corrupt files with a 4xx, although the app tier decodes it again: on the bench's photos
//! that decode and its buffers were half the web tier's CPU per upload (1.8 of 3.9 ms). Most
//! damage an upload can carry is truncation, and the framing shows it for the price of a walk
//! over the file: every PNG chunk inside the file with its CRC-32 right (the checksum covers
//! the compressed pixels too), a JPEG's segments and scans up to its end-of-image marker, a
//! GIF's blocks up to its trailer, a WebP's RIFF chunks, a BMP's pixel array inside the file.
//!
//! The answer is [`Structure::Whole`] only when the framing is complete; anything short of
//! that is [`Structure::Unsure`], and the caller then decodes in full, which decides as it
//! always did (with the decoder's own error message). So a file refused before is refused
//! still; what changes is that a file whose framing is whole but whose compressed data is
//! damaged (possible in JPEG, WebP and BMP, which carry no checksum; in PNG only with
//! checksums forged to match) is queued, and the worker answers it with an
//! `undecodable_image` error (HTTP 422) instead of the web tier's 400. TIFF has no cheap walk
//! that proves the strips whole; it is always `Unsure`.

/// What the framing of a file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// The container is complete: every part its headers announce lies inside the file, and
    /// the checksums the format has match.
    Whole,
    /// Not provably whole from the framing (truncated, damaged, or a format or variant this
    /// module does not walk): decode it to know.
    Unsure,
}

impl Structure {
    fn whole_if(whole: bool) -> Structure {
        if whole {
            Structure::Whole
        } else {
            Structure::Unsure
        }
    }
}

/// Walks the framing of `bytes`, an image of `format` (as [`crate::Probe::format`] names it:
/// `png`, `jpeg`, `gif`, `webp`, `bmp`, `tiff`).
pub fn check_structure(bytes: &[u8], format: &str) -> Structure {
    Structure::whole_if(match format {
        "png" => png_whole(bytes),
        "jpeg" => jpeg_whole(bytes),
        "gif" => gif_whole(bytes),
        "webp" => webp_whole(bytes),
        "bmp" => bmp_whole(bytes),
        _ => false,
    })
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// Every chunk from the signature to `IEND` inside the file with a matching CRC, and at least
/// one `IDAT`.
fn png_whole(bytes: &[u8]) -> bool {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        return false;
    }
    let mut at = SIGNATURE.len();
    let mut image_data = false;
    loop {
        let Some(len) = be_u32(bytes, at).and_then(|n| usize::try_from(n).ok()) else {
            return false;
        };
        let Some(typed) = at.checked_add(8 + len).filter(|&end| end <= bytes.len()) else {
            return false;
        };
        let Some(stored) = be_u32(bytes, typed) else {
            return false;
        };
        // The CRC covers the chunk type and data.
        if crc32fast::hash(&bytes[at + 4..typed]) != stored {
            return false;
        }
        match &bytes[at + 4..at + 8] {
            b"IDAT" => image_data = true,
            b"IEND" => return image_data,
            _ => {}
        }
        at = typed + 4;
    }
}

/// Segments and entropy-coded scans from SOI to EOI, with at least one scan.
fn jpeg_whole(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut at = 2;
    let mut scans = 0;
    loop {
        if bytes.get(at) != Some(&0xFF) {
            return false;
        }
        // A marker may be preceded by any number of 0xFF fill bytes.
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else {
            return false;
        };
        at += 1;
        match marker {
            0xD9 => return scans > 0,
            // Markers without a length: TEM and the restart markers.
            0x01 | 0xD0..=0xD7 => continue,
            // A second SOI, or a stuffed zero where a marker belongs.
            0xD8 | 0x00 => return false,
            _ => {}
        }
        let Some(len) = bytes
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return false;
        };
        if len < 2 || at + len > bytes.len() {
            return false;
        }
        at += len;
        if marker == 0xDA {
            // The scan's entropy-coded data runs to the next marker that is not a stuffed
            // zero (0xFF00) or a restart (0xFFD0-0xFFD7).
            scans += 1;
            loop {
                let Some(ff) = memchr::memchr(0xFF, &bytes[at..]) else {
                    return false;
                };
                at += ff;
                match bytes.get(at + 1) {
                    None => return false,
                    Some(0x00 | 0xD0..=0xD7) => at += 2,
                    // 0xFF fill bytes before a marker, or the marker itself.
                    Some(_) => break,
                }
            }
        }
    }
}

/// Skips GIF data sub-blocks (a length byte, that many bytes, until a zero length) from
/// `at`; the position after the terminator.
fn gif_sub_blocks(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = usize::from(*bytes.get(at)?);
        at += 1;
        if len == 0 {
            return Some(at);
        }
        at += len;
    }
}

/// The size of a GIF colour table that a packed field announces (flag in bit 7, size in
/// bits 0-2).
fn gif_colour_table(packed: u8) -> usize {
    if packed & 0x80 == 0 {
        0
    } else {
        3 << ((packed & 0x07) + 1)
    }
}

/// Header, colour table, extensions and images up to the trailer, with at least one image.
fn gif_whole(bytes: &[u8]) -> bool {
    if !(bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a")) {
        return false;
    }
    let Some(&packed) = bytes.get(10) else {
        return false;
    };
    let mut at = 13 + gif_colour_table(packed);
    let mut images = 0;
    loop {
        let next = match bytes.get(at) {
            Some(0x3B) => return images > 0,
            // Extension: introducer, label, sub-blocks.
            Some(0x21) => gif_sub_blocks(bytes, at + 2),
            // Image: descriptor (10 bytes), local colour table, LZW code size, sub-blocks.
            Some(0x2C) => bytes.get(at + 9).and_then(|&packed| {
                images += 1;
                gif_sub_blocks(bytes, at + 10 + gif_colour_table(packed) + 1)
            }),
            _ => None,
        };
        match next {
            Some(next) if next <= bytes.len() => at = next,
            _ => return false,
        }
    }
}

/// The RIFF container inside the file, its chunks inside the container, and an image chunk
/// (`VP8 ` or `VP8L`) among them.
fn webp_whole(bytes: &[u8]) -> bool {
    if !(bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP")) {
        return false;
    }
    let Some(end) = le_u32(bytes, 4)
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= bytes.len())
    else {
        return false;
    };
    let mut at = 12;
    let mut image = false;
    while at < end {
        // The chunk's size follows its four-letter name.
        let Some(len) = le_u32(bytes, at + 4) else {
            return false;
        };
        let Some(next) = usize::try_from(len)
            .ok()
            .and_then(|n| n.checked_add(at + 8 + (n & 1)))
        else {
            return false;
        };
        if matches!(&bytes[at..at + 4], b"VP8 " | b"VP8L") {
            image = true;
        }
        // The last chunk's padding byte may be missing.
        if next > end && next - (len as usize & 1) != end {
            return false;
        }
        at = next;
    }
    image
}

/// An uncompressed (or bit-field) BMP whose pixel array lies inside the file. Compressed
/// (RLE) and old-style (OS/2 core header) bitmaps are not walked.
fn bmp_whole(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"BM") {
        return false;
    }
    let fields = (
        le_u32(bytes, 10),
        le_u32(bytes, 14),
        le_u32(bytes, 18),
        le_u32(bytes, 22),
        le_u16(bytes, 28),
        le_u32(bytes, 30),
    );
    let (Some(offset), Some(header), Some(width), Some(height), Some(bits), Some(compression)) =
        fields
    else {
        return false;
    };
    // BITMAPINFOHEADER or later; BI_RGB or BI_BITFIELDS.
    if header < 40 || !matches!(compression, 0 | 3) {
        return false;
    }
    // Width and height are signed; a negative height means top-down rows.
    let (width, height) = (
        u64::from((width as i32).unsigned_abs()),
        u64::from((height as i32).unsigned_abs()),
    );
    let row = (u64::from(bits) * width).div_ceil(32) * 4;
    row.checked_mul(height)
        .and_then(|pixels| pixels.checked_add(u64::from(offset)))
        .is_some_and(|end| end <= bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A small photo-like image (a gradient with some texture) in `format`.
    fn encoded(format: image::ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_fn(37, 23, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 11) as u8, ((x * y) % 251) as u8])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, format)
            .unwrap();
        out.into_inner()
    }

    const WALKED: [(image::ImageFormat, &str); 5] = [
        (image::ImageFormat::Png, "png"),
        (image::ImageFormat::Jpeg, "jpeg"),
        (image::ImageFormat::Gif, "gif"),
        (image::ImageFormat::WebP, "webp"),
        (image::ImageFormat::Bmp, "bmp"),
    ];

    #[test]
    fn whole_files_are_whole() {
        for (format, name) in WALKED {
            let bytes = encoded(format);
            assert_eq!(check_structure(&bytes, name), Structure::Whole, "{name}");
            // Bytes after the end of the image (a common tail of uploads) change nothing.
            let mut tail = bytes.clone();
            tail.extend_from_slice(&[0; 3]);
            assert_eq!(
                check_structure(&tail, name),
                Structure::Whole,
                "{name} + tail"
            );
        }
    }

    #[test]
    fn no_truncated_file_is_whole() {
        for (format, name) in WALKED {
            let bytes = encoded(format);
            for len in 0..bytes.len() {
                assert_eq!(
                    check_structure(&bytes[..len], name),
                    Structure::Unsure,
                    "{name} cut to {len} of {} bytes",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn a_png_with_a_changed_byte_fails_its_crc() {
        let bytes = encoded(image::ImageFormat::Png);
        // Every byte after the signature is inside a chunk's length, type, data or CRC.
        for at in 8..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert_eq!(
                check_structure(&damaged, "png"),
                Structure::Unsure,
                "byte {at}"
            );
        }
    }

    #[test]
    fn formats_without_a_walk_are_unsure() {
        let tiff = encoded(image::ImageFormat::Tiff);
        assert_eq!(check_structure(&tiff, "tiff"), Structure::Unsure);
        assert_eq!(check_structure(b"", "png"), Structure::Unsure);
    }
}
