//! The decompression bomb of issue 13: a PNG of a few hundred KB that declares 6300×6300
//! 16-bit RGBA (inside the 40 MP pixel limit) and inflates to 318 MB of zeros.
//! Shared by the web tier's hostile-input tests and the fault benchmark (`iras-bench`).

/// Width and height of the bomb.
pub const BOMB_SIDE: u32 = 6300;

/// Encodes an all-zero 16-bit RGBA PNG of `side`×`side`, row by row (the encoder never holds
/// the whole image), with the strongest zlib level.
pub fn png_bomb(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Sixteen);
        encoder.set_deflate_compression(png::DeflateCompression::Level(9));
        encoder.set_filter(png::Filter::NoFilter);
        let mut writer = encoder.write_header().expect("PNG header");
        let mut stream = writer.stream_writer().expect("PNG stream");
        let row = vec![0u8; side as usize * 8];
        for _ in 0..side {
            std::io::Write::write_all(&mut stream, &row).expect("PNG row");
        }
        stream.finish().expect("PNG end");
    }
    out
}
