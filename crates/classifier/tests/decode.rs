//! Decoding and limits: no ONNX Runtime involved (this is what the web tier runs).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::io::Cursor;

use iras_classifier::{
    ImageError, Limits, Structure, check_structure, decode_image, probe_image, validate_image,
};

fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn rgb_png(w: u32, h: u32) -> Vec<u8> {
    png(image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(
        w,
        h,
        |x, y| image::Rgb([x as u8, y as u8, 7]),
    )))
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG signature plus a valid IHDR claiming `w` x `h`, and nothing else: a decompression
/// bomb's header without the bomb.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    out
}

#[test]
fn typed_errors_for_bad_input() {
    let limits = Limits::default();
    assert!(matches!(
        validate_image(b"", &limits),
        Err(ImageError::Empty)
    ));
    assert!(matches!(
        validate_image(b"hello, I am a text file\n", &limits),
        Err(ImageError::NotAnImage)
    ));

    let good = rgb_png(300, 200);
    let small = Limits {
        max_bytes: good.len() - 1,
        ..limits
    };
    assert!(matches!(
        validate_image(&good, &small),
        Err(ImageError::TooManyBytes { .. })
    ));

    let truncated = &good[..good.len() / 2];
    let err = validate_image(truncated, &limits).unwrap_err();
    assert!(matches!(err, ImageError::Truncated { .. }), "{err:?}");

    // Valid header and chunk framing, garbage where the compressed pixels should be.
    let mut corrupt = good.clone();
    let idat = corrupt.windows(4).position(|w| w == b"IDAT").unwrap();
    for b in &mut corrupt[idat + 4..idat + 60] {
        *b = 0x5a;
    }
    let err = validate_image(&corrupt, &limits).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err:?}");

    let err = validate_image(&png_header(0, 10), &limits).unwrap_err();
    assert!(matches!(err, ImageError::ZeroDimension { .. }), "{err:?}");

    // 100 000 x 100 000 declared in 33 bytes: refused from the header alone.
    let err = validate_image(&png_header(100_000, 100_000), &limits).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::TooManyPixels {
                width: 100_000,
                height: 100_000,
                ..
            }
        ),
        "{err:?}"
    );
    let tight = Limits {
        max_pixels: 300 * 200 - 1,
        ..limits
    };
    assert!(matches!(
        validate_image(&good, &tight),
        Err(ImageError::TooManyPixels {
            width: 300,
            height: 200,
            ..
        })
    ));
    assert_eq!(validate_image(&good, &limits).unwrap().width, 300);
}

#[test]
fn pixel_formats_become_rgb() {
    let limits = Limits::default();
    let gray = png(image::DynamicImage::ImageLuma8(
        image::GrayImage::from_pixel(3, 2, image::Luma([9])),
    ));
    let (info, img) = decode_image(&gray, &limits).unwrap();
    assert_eq!((info.format, info.color.as_str()), ("png", "L8"));
    assert_eq!(img.as_bytes(), &[9u8; 18][..]);

    let rgba16 = png(image::DynamicImage::ImageRgba16(
        image::ImageBuffer::from_pixel(2, 2, image::Rgba([65535u16, 0, 32896, 0])),
    ));
    let (info, img) = decode_image(&rgba16, &limits).unwrap();
    assert_eq!(info.color, "Rgba16");
    // Alpha dropped without compositing (as PIL's convert("RGB")), 16 bits scaled to 8.
    assert_eq!(&img.as_bytes()[..3], &[255, 0, 128]);
}

/// Formats only PIL writes here (CMYK JPEG, EXIF orientation, palette), from the test assets.
#[test]
fn cmyk_exif_and_palette_files() {
    let limits = Limits::default();
    let (info, img) = decode_image(&support::test_image("exif-rotated.jpg"), &limits).unwrap();
    assert!(info.reoriented);
    // Stored 300 wide x 451 high, shown upright as chelsea's 451 x 300.
    assert_eq!((img.width(), img.height()), (451, 300));
    let (info, img) = decode_image(&support::test_image("cmyk.jpg"), &limits).unwrap();
    assert_eq!((info.format, img.width()), ("jpeg", 451));
    let (_, img) = decode_image(&support::test_image("palette.png"), &limits).unwrap();
    assert_eq!(img.as_bytes().len(), 451 * 300 * 3);
}

#[test]
fn truncated_jpeg_is_an_error() {
    let jpeg = support::test_image("chelsea.jpg");
    for cut in [jpeg.len() / 2, jpeg.len() - 2, 600] {
        let err = validate_image(&jpeg[..cut], &Limits::default());
        assert!(
            matches!(err, Err(ImageError::Truncated { .. })),
            "cut at {cut}: {err:?}"
        );
    }
}

/// Every format variant `scripts/fetch-model --with-test-assets` caches.
const TEST_IMAGES: [&str; 13] = [
    "chelsea.jpg",
    "chelsea.webp",
    "chelsea.gif",
    "chelsea.bmp",
    "chelsea.tiff",
    "cmyk.jpg",
    "exif-rotated.jpg",
    "gray.png",
    "gray-alpha.png",
    "palette.png",
    "rgb16.png",
    "rgba.png",
    "small-64.png",
];

#[test]
fn validation_reports_what_decoding_reports_without_converting() {
    let limits = Limits::default();
    for name in TEST_IMAGES {
        let bytes = support::test_image(name);
        let validated = validate_image(&bytes, &limits).unwrap();
        let (decoded, _) = decode_image(&bytes, &limits).unwrap();
        assert_eq!(validated, decoded, "{name}");
    }
}

#[test]
fn the_decode_memory_estimate_counts_bytes_per_pixel_and_the_rgb_copy() {
    let rgba16 = png(image::DynamicImage::ImageRgba16(image::ImageBuffer::new(
        100, 100,
    )));
    let rgb8 = png(image::DynamicImage::ImageRgb8(image::RgbImage::new(
        100, 100,
    )));
    let limits = Limits::default();
    // 8 bytes a pixel as decoded, plus the 3-byte RGB copy.
    assert_eq!(
        iras_classifier::probe_image(&rgba16, &limits)
            .unwrap()
            .memory_bytes,
        110_000
    );
    // Already RGB: no copy.
    assert_eq!(
        iras_classifier::probe_image(&rgb8, &limits)
            .unwrap()
            .memory_bytes,
        30_000
    );
    let tight = Limits {
        max_decoded_bytes: 109_999,
        ..Limits::default()
    };
    for result in [
        iras_classifier::probe_image(&rgba16, &tight).map(|_| ()),
        decode_image(&rgba16, &tight).map(|_| ()),
        validate_image(&rgba16, &tight).map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::TooMuchMemory {
                    width: 100,
                    height: 100,
                    needed_bytes: 110_000,
                    max_bytes: 109_999,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_too_large());
        assert!(err.to_string().contains("100x100 Rgba16"), "{err}");
    }
    assert!(decode_image(&rgb8, &tight).is_ok());
}

/// The structural check on real files: every test image whose format it walks is whole
/// (and decodes), TIFF is left to the decoder, and half of any file is never whole.
#[test]
fn real_files_are_whole_and_their_halves_are_not() {
    let limits = Limits::default();
    for name in TEST_IMAGES {
        let want = if name.ends_with(".tiff") {
            Structure::Unsure
        } else {
            Structure::Whole
        };
        let bytes = support::test_image(name);
        let format = probe_image(&bytes, &limits).unwrap().format;
        assert_eq!(check_structure(&bytes, format), want, "{name}");
        validate_image(&bytes, &limits).unwrap();
        let half = &bytes[..bytes.len() / 2];
        assert_eq!(
            check_structure(half, format),
            Structure::Unsure,
            "half of {name}"
        );
    }
}
