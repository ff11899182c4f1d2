//! From decoded RGB pixels straight into the NCHW `f32` input tensor.
//!
//! Resizing is Pillow-exact (see [`crate::resample`] for why not `fast_image_resize`). For
//! `resize-then-center-crop` there is no full-size intermediate: the crop window is mapped back
//! onto the source as a Pillow `box`, which gives the same sample positions and filter support
//! as resizing the whole image and cropping afterwards. Normalisation is a 256-entry lookup
//! table per channel, so the tensor fill is one table load per value.

use crate::decode::RgbImage;
use crate::error::Error;
use crate::pack::{ChannelOrder, Filter, Manifest, ResizeMode};
use crate::resample::{self, Pixels, Scratch, SourceBox};

/// Where in the source the model's input window comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Window {
    /// An integer crop that is resampled as an image of its own (edge pixels clamp at the crop).
    Crop {
        left: u32,
        top: u32,
        width: u32,
        height: u32,
    },
    /// A sub-pixel window of the whole image (edge pixels clamp at the image).
    Box {
        left: f64,
        top: f64,
        width: f64,
        height: f64,
    },
}

/// Turns decoded images into input tensors for one pack. Holds the resizer's scratch buffers,
/// so keep one per worker.
pub struct Preprocessor {
    pack: String,
    width: u32,
    height: u32,
    resize: ResizeMode,
    filter: Filter,
    /// `lut[c][p]`: tensor value of channel `c` (tensor order) for pixel value `p`.
    lut: Box<[[f32; 256]; 3]>,
    /// Source RGB channel feeding tensor channel `c`.
    source_channel: [usize; 3],
    scratch: Scratch,
    resized: Vec<u8>,
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("pack", &self.pack)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("resize", &self.resize)
            .finish_non_exhaustive()
    }
}

impl Preprocessor {
    /// Builds the preprocessor a manifest describes.
    pub fn new(manifest: &Manifest) -> Preprocessor {
        let p = &manifest.preprocess;
        let mut lut = Box::new([[0.0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                // Same operation order and precision as the numpy reference:
                // (f32(v) * scale - mean) / std.
                *slot = (v as f32 * p.scale - p.mean[c]) / p.std[c];
            }
        }
        let (width, height) = (manifest.input.width, manifest.input.height);
        Preprocessor {
            pack: manifest.name.clone(),
            width,
            height,
            resize: p.resize,
            filter: p.filter,
            lut,
            source_channel: match manifest.input.channel_order {
                ChannelOrder::Rgb => [0, 1, 2],
                ChannelOrder::Bgr => [2, 1, 0],
            },
            scratch: Scratch::default(),
            resized: vec![0; width as usize * height as usize * 3],
        }
    }

    /// Number of `f32` values one image occupies in the tensor (3 × height × width).
    pub fn tensor_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// Input width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Writes one image's NCHW values into `out` (length [`tensor_len`](Self::tensor_len)).
    ///
    /// Fails only for `resize = none` packs when the image is not exactly the input size.
    ///
    /// # Panics
    /// If `out` has the wrong length (a caller bug, not an input problem).
    pub fn preprocess_into(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<(), Error> {
        assert_eq!(out.len(), self.tensor_len(), "tensor slice length");
        let (w, h) = (img.width(), img.height());
        let plane = self.width as usize * self.height as usize;
        let pixels: &[u8] = match self.window(w, h) {
            None => {
                if (w, h) != (self.width, self.height) {
                    return Err(Error::SizeMismatch {
                        pack: self.pack.clone(),
                        width: w,
                        height: h,
                        want_width: self.width,
                        want_height: self.height,
                    });
                }
                img.as_bytes()
            }
            Some(window) => {
                self.resize_window(img, window);
                &self.resized
            }
        };
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let [l0, l1, l2] = &*self.lut;
        let [s0, s1, s2] = self.source_channel;
        let planes = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
        for (px, ((r, g), b)) in pixels.chunks_exact(3).zip(planes) {
            *r = l0[usize::from(px[s0])];
            *g = l1[usize::from(px[s1])];
            *b = l2[usize::from(px[s2])];
        }
        Ok(())
    }

    /// Allocating convenience wrapper around [`preprocess_into`](Self::preprocess_into).
    pub fn preprocess(&mut self, img: &RgbImage) -> Result<Vec<f32>, Error> {
        let mut out = vec![0.0; self.tensor_len()];
        self.preprocess_into(img, &mut out)?;
        Ok(out)
    }

    /// The source window for an image of `w` × `h`, or `None` when no resizing happens.
    fn window(&self, w: u32, h: u32) -> Option<Window> {
        match self.resize {
            ResizeMode::None => None,
            ResizeMode::Exact => Some(Window::Crop {
                left: 0,
                top: 0,
                width: w,
                height: h,
            }),
            ResizeMode::CenterCropThenResize { crop_fraction } => {
                // As the reference computes it: int(fraction * min(h, w)), at least one pixel.
                let crop = ((crop_fraction * f64::from(w.min(h))) as u32).clamp(1, w.min(h));
                Some(Window::Crop {
                    left: (w - crop).div_ceil(2),
                    top: (h - crop).div_ceil(2),
                    width: crop,
                    height: crop,
                })
            }
            ResizeMode::ResizeThenCenterCrop { shorter_side } => {
                let s = f64::from(shorter_side);
                let (rw, rh) = if w <= h {
                    (s, (s * f64::from(h) / f64::from(w)).floor())
                } else {
                    ((s * f64::from(w) / f64::from(h)).floor(), s)
                };
                let left = ((rw - f64::from(self.width)) / 2.0).round_ties_even();
                let top = ((rh - f64::from(self.height)) / 2.0).round_ties_even();
                let (sx, sy) = (f64::from(w) / rw, f64::from(h) / rh);
                Some(Window::Box {
                    left: left * sx,
                    top: top * sy,
                    width: f64::from(self.width) * sx,
                    height: f64::from(self.height) * sy,
                })
            }
        }
    }

    fn resize_window(&mut self, img: &RgbImage, window: Window) {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let whole = Pixels::packed(img.as_bytes(), w, h);
        let (src, bx) = match window {
            // Pillow crops first and resizes the crop: the kernel stops at the crop's edges,
            // so the crop is resized as an image of its own (a window onto the source rows).
            Window::Crop {
                left,
                top,
                width,
                height,
            } => (
                whole.window(left as usize, top as usize, width as usize, height as usize),
                SourceBox {
                    left: 0.0,
                    top: 0.0,
                    right: f64::from(width),
                    bottom: f64::from(height),
                },
            ),
            Window::Box {
                left,
                top,
                width,
                height,
            } => (
                whole,
                SourceBox {
                    left,
                    top,
                    right: left + width,
                    bottom: top + height,
                },
            ),
        };
        resample::resize(
            src,
            bx,
            self.width as usize,
            self.height as usize,
            self.filter,
            &mut self.scratch,
            &mut self.resized,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::Manifest;
    use proptest::prelude::*;
    use std::path::Path;

    fn manifest(resize: &str, w: u32, h: u32) -> Manifest {
        let text = format!(
            "name = \"t\"\n[input]\nwidth = {w}\nheight = {h}\n[preprocess]\nresize = {resize}\n\
             filter = \"bicubic\"\nscale = 1.0\nmean = [127.0, 127.0, 127.0]\nstd = [128.0, 128.0, 128.0]\n\
             [output]\nclasses = 10\n"
        );
        Manifest::parse(&text, Path::new("t")).unwrap()
    }

    const MODES: [&str; 3] = [
        "{ mode = \"center-crop-then-resize\", crop_fraction = 0.875 }",
        "{ mode = \"resize-then-center-crop\", shorter_side = 256 }",
        "{ mode = \"exact\" }",
    ];

    fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data = (0..w as usize * h as usize * 3)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        RgbImage::from_raw(w, h, data).unwrap()
    }

    #[test]
    fn efficientnet_crop_window_matches_reference_formula() {
        let p = Preprocessor::new(&manifest(MODES[0], 224, 224));
        // chelsea.png is 451x300: crop int(0.875*300) = 262 at ((451-262+1)/2, (300-262+1)/2).
        assert_eq!(
            p.window(451, 300),
            Some(Window::Crop {
                left: 95,
                top: 19,
                width: 262,
                height: 262
            })
        );
    }

    #[test]
    fn constant_image_gives_constant_tensor() {
        for mode in MODES {
            let mut p = Preprocessor::new(&manifest(mode, 32, 24));
            let img = RgbImage::from_raw(50, 70, vec![200; 50 * 70 * 3]).unwrap();
            let t = p.preprocess(&img).unwrap();
            let want = (200.0 - 127.0) / 128.0;
            assert!(t.iter().all(|v| (v - want).abs() < 1e-6), "{mode}");
        }
    }

    #[test]
    fn bgr_swaps_planes() {
        let m = manifest(MODES[2], 4, 4);
        let mut bgr = m.clone();
        bgr.input.channel_order = ChannelOrder::Bgr;
        let img = noise(9, 7, 3);
        let a = Preprocessor::new(&m).preprocess(&img).unwrap();
        let b = Preprocessor::new(&bgr).preprocess(&img).unwrap();
        assert_eq!(a[..16], b[32..]);
        assert_eq!(a[32..], b[..16]);
    }

    #[test]
    fn none_requires_exact_size() {
        let mut p = Preprocessor::new(&manifest("{ mode = \"none\" }", 64, 64));
        assert!(p.preprocess(&noise(64, 64, 1)).is_ok());
        let err = p.preprocess(&noise(65, 64, 1)).unwrap_err();
        assert!(
            matches!(err, Error::SizeMismatch { width: 65, .. }),
            "{err}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Shapes and ranges hold for any size, from 1x1 to extreme aspect ratios: every value is
        /// finite and inside the normalised range of 0..=255.
        #[test]
        fn shape_and_range(
            mode in 0usize..3,
            w in prop_oneof![Just(1u32), Just(64), 1u32..400, Just(3000)],
            h in prop_oneof![Just(1u32), Just(64), 1u32..400, Just(2)],
            seed in any::<u64>(),
        ) {
            let mut p = Preprocessor::new(&manifest(MODES[mode], 224, 224));
            let t = p.preprocess(&noise(w, h, seed)).unwrap();
            prop_assert_eq!(t.len(), 3 * 224 * 224);
            let (lo, hi) = (-127.0 / 128.0, 128.0 / 128.0);
            prop_assert!(t.iter().all(|v| v.is_finite() && *v >= lo - 1e-6 && *v <= hi + 1e-6));
        }
    }
}
