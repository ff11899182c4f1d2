//! Model packs: a directory with `model.onnx`, `pack.toml` (the manifest) and `labels.txt`.
//!
//! ```toml
//! name = "efficientnet-lite0"
//! model = "model.onnx"          # default
//! labels = "labels.txt"         # default; one label per line, in class-index order
//!
//! [input]
//! name = "images"               # optional: discovered when the model has one input
//! width = 224
//! height = 224
//! channel_order = "rgb"         # or "bgr"
//!
//! [preprocess]
//! resize = { mode = "center-crop-then-resize", crop_fraction = 0.875 }
//! filter = "bicubic"            # nearest | bilinear | bicubic | lanczos3
//! scale = 1.0                   # x = (pixel * scale - mean[c]) / std[c], pixel in 0..=255
//! mean = [127.0, 127.0, 127.0]
//! std = [128.0, 128.0, 128.0]
//!
//! [output]
//! name = "logits"               # optional: discovered when the model has one output
//! kind = "logits"               # "logits" (softmax applied) or "probabilities"
//! classes = 1000
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::PackError;

/// File name of the manifest inside a pack directory.
pub const MANIFEST_FILE: &str = "pack.toml";

/// How the decoded image becomes `width` × `height`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ResizeMode {
    /// TensorFlow's eval crop (EfficientNet): a centred square of side
    /// `floor(crop_fraction × min(w, h))` at offset `(dim − crop + 1) / 2`, resized to the input
    /// size.
    CenterCropThenResize {
        /// Fraction of the shorter side kept, in (0, 1].
        crop_fraction: f64,
    },
    /// torchvision's `Resize(shorter_side)` + `CenterCrop(size)`: the shorter side becomes
    /// `shorter_side` (the longer `floor(shorter_side × long / short)`), then the centre is cut
    /// at offset `round_half_even((dim − size) / 2)`.
    ResizeThenCenterCrop {
        /// Length of the shorter side after resizing; at least the input size.
        shorter_side: u32,
    },
    /// Resize to exactly the input size, aspect ratio not kept.
    Exact,
    /// No resizing: the image must already be `width` × `height` (the course's raw pipeline).
    None,
}

/// Resampling filter (convolution-based with antialiasing when downscaling, as PIL does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Nearest neighbour.
    Nearest,
    /// Triangle filter (PIL `BILINEAR`).
    Bilinear,
    /// Catmull-Rom, a = −0.5 (PIL `BICUBIC`).
    Bicubic,
    /// Lanczos, 3 lobes (PIL `LANCZOS`).
    Lanczos3,
}

/// Order of the three channels in the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue.
    #[default]
    Rgb,
    /// Blue, green, red (Caffe-style models).
    Bgr,
}

/// What the model outputs per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unnormalised scores: softmax is applied.
    #[default]
    Logits,
    /// Already probabilities: used as they are.
    Probabilities,
}

/// `[input]` of the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Graph input name; `None` means "the model's only input".
    pub name: Option<String>,
    /// Input width in pixels.
    pub width: u32,
    /// Input height in pixels.
    pub height: u32,
    /// Channel order of the tensor (layout is always NCHW).
    #[serde(default)]
    pub channel_order: ChannelOrder,
}

fn default_filter() -> Filter {
    Filter::Bilinear
}
fn default_scale() -> f32 {
    1.0
}
fn default_mean() -> [f32; 3] {
    [0.0; 3]
}
fn default_std() -> [f32; 3] {
    [1.0; 3]
}

/// `[preprocess]` of the manifest: `x = (pixel × scale − mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// Resize mode.
    pub resize: ResizeMode,
    /// Resampling filter (default bilinear).
    #[serde(default = "default_filter")]
    pub filter: Filter,
    /// Multiplier applied to 0..=255 pixels before mean/std (e.g. 1/255 for `ToTensor()`).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Per-channel mean, in tensor channel order, after scaling.
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    /// Per-channel standard deviation, in tensor channel order, after scaling.
    #[serde(default = "default_std")]
    pub std: [f32; 3],
}

/// `[output]` of the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Graph output name; `None` means "the model's only output".
    pub name: Option<String>,
    /// Logits or probabilities.
    #[serde(default)]
    pub kind: OutputKind,
    /// Number of classes (must equal the number of labels).
    pub classes: usize,
}

fn default_model() -> String {
    "model.onnx".to_owned()
}
fn default_labels() -> String {
    "labels.txt".to_owned()
}

/// The parsed `pack.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Pack name, used in messages and results.
    pub name: String,
    /// Free text: model, weights, licence.
    #[serde(default)]
    pub description: String,
    /// Model file, relative to the pack directory.
    #[serde(default = "default_model")]
    pub model: String,
    /// Labels file, relative to the pack directory.
    #[serde(default = "default_labels")]
    pub labels: String,
    /// Where the labels came from (documentation only).
    #[serde(default)]
    pub labels_source: String,
    /// Model input.
    pub input: InputSpec,
    /// Preprocessing.
    pub preprocess: PreprocessSpec,
    /// Model output.
    pub output: OutputSpec,
}

impl Manifest {
    /// Parses and validates a manifest; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Manifest, PackError> {
        let bad = |message: String| PackError::Manifest {
            pack: origin.display().to_string(),
            path: origin.to_path_buf(),
            message,
        };
        let manifest: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        manifest.validate().map_err(bad)?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        let (w, h) = (self.input.width, self.input.height);
        if w == 0 || h == 0 || w > 8192 || h > 8192 {
            return Err(format!("input size {w}x{h} must be within 1..=8192"));
        }
        match self.preprocess.resize {
            ResizeMode::CenterCropThenResize { crop_fraction }
                if !(crop_fraction > 0.0 && crop_fraction <= 1.0) =>
            {
                return Err(format!("crop_fraction {crop_fraction} must be in (0, 1]"));
            }
            ResizeMode::ResizeThenCenterCrop { shorter_side } if shorter_side < w.max(h) => {
                return Err(format!(
                    "shorter_side {shorter_side} must be at least the input size {w}x{h}"
                ));
            }
            _ => {}
        }
        let p = &self.preprocess;
        if !p.scale.is_finite() || p.scale == 0.0 {
            return Err(format!("scale {} must be finite and non-zero", p.scale));
        }
        if p.std.iter().any(|s| !s.is_finite() || *s == 0.0)
            || p.mean.iter().any(|m| !m.is_finite())
        {
            return Err("mean must be finite and std finite and non-zero".to_owned());
        }
        if self.output.classes == 0 {
            return Err("output.classes must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// A loaded model pack: manifest, labels and the path of the model (not yet opened; that is the
/// [`Classifier`](crate::Classifier)'s job, which checks the model against this manifest).
#[derive(Debug, Clone)]
pub struct ModelPack {
    dir: PathBuf,
    manifest: Manifest,
    labels: Vec<String>,
}

impl ModelPack {
    /// Loads `dir/pack.toml` and the labels, and checks the model file exists.
    pub fn load(dir: impl AsRef<Path>) -> Result<ModelPack, PackError> {
        let dir = dir.as_ref();
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.is_file() {
            return Err(PackError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PackError::Read {
                pack: dir.display().to_string(),
                path: path.to_path_buf(),
                source,
            })
        };
        let manifest = Manifest::parse(&read(&manifest_path)?, &manifest_path)?;
        let model = dir.join(&manifest.model);
        if !model.is_file() {
            return Err(PackError::ModelMissing {
                pack: manifest.name.clone(),
                path: model,
            });
        }
        let labels: Vec<String> = read(&dir.join(&manifest.labels))?
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if labels.len() != manifest.output.classes {
            return Err(PackError::LabelCount {
                pack: manifest.name.clone(),
                labels: labels.len(),
                classes: manifest.output.classes,
            });
        }
        Ok(ModelPack {
            dir: dir.to_path_buf(),
            manifest,
            labels,
        })
    }

    /// The pack's name from its manifest.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The pack directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Class labels, indexed by class.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Path of the ONNX model.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EFFNET: &str = r#"
name = "t"
[input]
width = 224
height = 224
[preprocess]
resize = { mode = "center-crop-then-resize", crop_fraction = 0.875 }
filter = "bicubic"
mean = [127.0, 127.0, 127.0]
std = [128.0, 128.0, 128.0]
[output]
classes = 1000
"#;

    #[test]
    fn parses_with_defaults() {
        let m = Manifest::parse(EFFNET, Path::new("pack.toml")).unwrap();
        assert_eq!(m.model, "model.onnx");
        assert_eq!(m.input.name, None);
        assert_eq!(m.input.channel_order, ChannelOrder::Rgb);
        assert_eq!(m.output.kind, OutputKind::Logits);
        assert_eq!(
            m.preprocess.resize,
            ResizeMode::CenterCropThenResize {
                crop_fraction: 0.875
            }
        );
    }

    #[test]
    fn rejects_bad_values_and_unknown_fields() {
        for (from, to) in [
            ("crop_fraction = 0.875", "crop_fraction = 1.5"),
            ("width = 224", "width = 0"),
            ("std = [128.0, 128.0, 128.0]", "std = [128.0, 0.0, 128.0]"),
            ("filter = \"bicubic\"", "filter = \"cubic\""),
            ("classes = 1000", "classes = 1000\nsoftmax = true"),
            ("center-crop-then-resize", "crop-center"),
        ] {
            let text = EFFNET.replace(from, to);
            assert!(
                Manifest::parse(&text, Path::new("p.toml")).is_err(),
                "accepted {to}"
            );
        }
    }

    #[test]
    fn resize_then_crop_needs_room() {
        let text = EFFNET.replace(
            "{ mode = \"center-crop-then-resize\", crop_fraction = 0.875 }",
            "{ mode = \"resize-then-center-crop\", shorter_side = 200 }",
        );
        let err = Manifest::parse(&text, Path::new("p.toml")).unwrap_err();
        assert!(err.to_string().contains("shorter_side"), "{err}");
    }
}
