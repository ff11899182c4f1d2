//! ONNX Runtime inference: one [`Classifier`] = one session = one worker.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::Serialize;

use crate::decode::{Limits, RgbImage, decode_image};
use crate::error::{Error, FETCH_HINT, ImageError};
use crate::pack::{ModelPack, OutputKind};
use crate::paths;
use crate::preprocess::Preprocessor;
use crate::scores::{Prediction, softmax_in_place, top_k};

/// How to build a [`Classifier`].
#[derive(Debug, Clone, Default)]
pub struct ClassifierOptions {
    /// ONNX Runtime intra-op threads for this session. Default: the CPU count divided by
    /// `sessions` (at least 1), so that sessions × threads ≤ cores.
    pub intra_threads: Option<NonZeroUsize>,
    /// How many classifiers (sessions) the process will run side by side; only used to derive
    /// the default `intra_threads`. Default 1.
    pub sessions: Option<NonZeroUsize>,
    /// The ONNX Runtime shared library. Default: `$ORT_DYLIB_PATH`, else the library
    /// `scripts/fetch-model` caches. The library is loaded once per process: the first
    /// classifier's choice wins.
    pub ort_library: Option<PathBuf>,
    /// Input limits applied by [`Classifier::classify`].
    pub limits: Limits,
}

impl ClassifierOptions {
    /// The intra-op thread count these options resolve to.
    pub fn resolved_intra_threads(&self) -> usize {
        if let Some(n) = self.intra_threads {
            return n.get();
        }
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let sessions = self.sessions.map_or(1, NonZeroUsize::get);
        (cores / sessions).max(1)
    }
}

/// Time spent per stage, for one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Header check and full decode to RGB.
    pub decode_us: u64,
    /// Resize and tensor fill.
    pub preprocess_us: u64,
    /// Session run, plus softmax and top-k. For a batch this is the batch's time divided by
    /// its size.
    pub inference_us: u64,
}

/// The answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// Top-1 label.
    pub label: String,
    /// Top-1 class index.
    pub index: usize,
    /// Top-1 probability.
    pub score: f32,
    /// The best `top_k` classes, best first (always at least the top-1).
    pub top_k: Vec<Prediction>,
    /// Where the time went.
    pub timings: Timings,
}

/// A model pack bound to an ONNX Runtime session.
///
/// Inference is CPU-bound and blocking: async callers run it in `tokio::task::spawn_blocking`
/// or on a dedicated thread. `Session::run` needs `&mut self`, so a classifier serves one
/// caller at a time: give each worker its own.
pub struct Classifier {
    pack: ModelPack,
    session: Session,
    input_name: String,
    output_name: String,
    /// Largest batch the model accepts (1 when its batch dimension is fixed).
    max_batch: usize,
    intra_threads: usize,
    limits: Limits,
    preprocessor: Preprocessor,
    /// Reused input tensor storage (batch × 3 × H × W).
    tensor: Vec<f32>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("pack", &self.pack.name())
            .field("input", &self.input_name)
            .field("output", &self.output_name)
            .field("intra_threads", &self.intra_threads)
            .finish_non_exhaustive()
    }
}

/// Loads the ONNX Runtime library once per process and returns the shared environment.
fn environment(library: &Path) -> Result<Environment, Error> {
    static ENV: OnceLock<(PathBuf, Environment)> = OnceLock::new();
    let lib_err = |message: String| Error::OrtLibrary {
        path: library.to_path_buf(),
        message,
    };
    if !library.is_file() {
        return Err(lib_err(format!(
            "not found; {FETCH_HINT}, or set ORT_DYLIB_PATH / --ort-lib to libonnxruntime.so (>= 1.31)"
        )));
    }
    let canonical = library
        .canonicalize()
        .unwrap_or_else(|_| library.to_path_buf());
    if let Some((loaded, env)) = ENV.get() {
        if *loaded != canonical {
            return Err(lib_err(format!(
                "ONNX Runtime is already loaded from {} in this process",
                loaded.display()
            )));
        }
        return Ok(env.clone());
    }
    let env = ort::init_from(&canonical)
        .map_err(|e| lib_err(format!("{e}; {FETCH_HINT}")))?
        .with_name("iras")
        .build()
        .map_err(|e| lib_err(e.to_string()))?;
    let (_, env) = ENV.get_or_init(|| (canonical, env));
    Ok(env.clone())
}

fn tensor_dims(vt: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match vt {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
        _ => None,
    }
}

/// ONNX Runtime graph rewrites this crate turns off. `WeightBiasQuantization` (ONNX Runtime
/// 1.20 and later) quantises, per tensor, the float weights of every Conv or Gemm whose input
/// comes from a DequantizeLinear: in a quantised pack that keeps some layers in float on
/// purpose, it silently quantises exactly those layers, and coarsely (a depthwise conv's
/// channels span ranges a single scale cannot hold: keeping only the first one in float
/// turned 56 of 62 photos agreeing with fp32 into 42). A fully quantised or a float pack is
/// untouched either way.
const DISABLED_OPTIMIZERS: &str = "WeightBiasQuantization";

impl Classifier {
    /// Opens the pack's model, checks it against the manifest (names, element type, input and
    /// output shapes, with a trial run on a blank image) and keeps the session.
    pub fn new(pack: &ModelPack, options: ClassifierOptions) -> Result<Classifier, Error> {
        let library = options
            .ort_library
            .clone()
            .unwrap_or_else(paths::default_ort_library);
        let env = environment(&library)?;
        let name = pack.name().to_owned();
        let rt = |e: &dyn std::fmt::Display| Error::Runtime {
            pack: name.clone(),
            message: e.to_string(),
        };
        let mismatch = |message: String| Error::ModelMismatch {
            pack: name.clone(),
            message,
        };
        let intra_threads = options.resolved_intra_threads();
        let session = Session::builder(&env)
            .map_err(|e| rt(&e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| rt(&e))?
            .with_disabled_optimizers(DISABLED_OPTIMIZERS)
            .map_err(|e| rt(&e))?
            .with_intra_threads(intra_threads)
            .map_err(|e| rt(&e))?
            .with_inter_threads(1)
            .map_err(|e| rt(&e))?
            .commit_from_file(pack.model_path())
            .map_err(|e| rt(&e))?;

        let manifest = pack.manifest();
        let pick = |outlets: &[ort::value::Outlet], wanted: &Option<String>, what: &str| {
            let names: Vec<&str> = outlets.iter().map(|o| o.name()).collect();
            match wanted {
                Some(w) => outlets.iter().position(|o| o.name() == w).ok_or_else(|| {
                    mismatch(format!(
                        "manifest names {what} `{w}`, the model has {names:?}"
                    ))
                }),
                None if outlets.len() == 1 => Ok(0),
                None => Err(mismatch(format!(
                    "the model has {what}s {names:?}; name one in the manifest"
                ))),
            }
        };
        let inputs = session.inputs();
        let input = &inputs[pick(inputs, &manifest.input.name, "input")?];
        let outputs = session.outputs();
        let output = &outputs[pick(outputs, &manifest.output.name, "output")?];
        let (input_name, output_name) = (input.name().to_owned(), output.name().to_owned());

        let (ty, dims) = tensor_dims(input.dtype())
            .ok_or_else(|| mismatch(format!("input `{input_name}` is not a tensor")))?;
        let (w, h) = (
            i64::from(manifest.input.width),
            i64::from(manifest.input.height),
        );
        let fits = |got: i64, want: i64| got == want || got < 0;
        if ty != TensorElementType::Float32
            || dims.len() != 4
            || !fits(dims[1], 3)
            || !fits(dims[2], h)
            || !fits(dims[3], w)
        {
            return Err(mismatch(format!(
                "input `{input_name}` is {ty:?} {dims:?}; the manifest expects Float32 [N, 3, {h}, {w}] (NCHW)"
            )));
        }
        let max_batch = if dims[0] > 0 {
            usize::try_from(dims[0]).unwrap_or(1)
        } else {
            usize::MAX
        };
        let (oty, odims) = tensor_dims(output.dtype())
            .ok_or_else(|| mismatch(format!("output `{output_name}` is not a tensor")))?;
        let classes = manifest.output.classes;
        let static_classes = odims.last().copied().unwrap_or(-1);
        if oty != TensorElementType::Float32
            || odims.len() != 2
            || (static_classes >= 0 && usize::try_from(static_classes).ok() != Some(classes))
        {
            return Err(mismatch(format!(
                "output `{output_name}` is {oty:?} {odims:?}; the manifest expects Float32 [N, {classes}]"
            )));
        }

        let preprocessor = Preprocessor::new(manifest);
        let mut classifier = Classifier {
            pack: pack.clone(),
            session,
            input_name,
            output_name,
            max_batch,
            intra_threads,
            limits: options.limits,
            preprocessor,
            tensor: Vec::new(),
        };
        // A trial run settles dynamic output shapes and warms the session up.
        let len = classifier.preprocessor.tensor_len();
        classifier.tensor.resize(len, 0.0);
        let (shape, _) = classifier.run(1)?;
        if shape != [1, classes as i64] {
            return Err(mismatch(format!(
                "a trial run returned shape {shape:?}; the manifest expects [1, {classes}]"
            )));
        }
        Ok(classifier)
    }

    /// The pack this classifier runs.
    pub fn pack(&self) -> &ModelPack {
        &self.pack
    }

    /// The intra-op threads its session uses.
    pub fn intra_threads(&self) -> usize {
        self.intra_threads
    }

    /// The limits [`classify`](Self::classify) applies.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes, preprocesses and classifies one encoded image. Returns at least the top-1 even
    /// when `top_k` is 0.
    pub fn classify(&mut self, bytes: &[u8], top_k: usize) -> Result<Classification, Error> {
        let t0 = Instant::now();
        let (_, img) = decode_image(bytes, &self.limits)?;
        let decode = t0.elapsed();
        let mut out = self.classify_decoded(&[&img], top_k)?;
        let mut c = out.pop().ok_or_else(|| Error::Runtime {
            pack: self.pack.name().to_owned(),
            message: "no result for a batch of one".to_owned(),
        })?;
        c.timings.decode_us = micros(decode);
        Ok(c)
    }

    /// Classifies several encoded images, running the model on batches of the decodable ones.
    /// The outer error is a runtime failure; each inner result is that image's own outcome
    /// (bad input fails only its own slot).
    pub fn classify_batch(
        &mut self,
        images: &[&[u8]],
        top_k: usize,
    ) -> Result<Vec<Result<Classification, Error>>, Error> {
        let mut decoded: Vec<Result<(RgbImage, Duration), ImageError>> = Vec::new();
        for bytes in images {
            let t0 = Instant::now();
            decoded.push(decode_image(bytes, &self.limits).map(|(_, img)| (img, t0.elapsed())));
        }
        let ok: Vec<&RgbImage> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok().map(|(img, _)| img))
            .collect();
        let mut classified = self.classify_decoded_lenient(&ok, top_k)?.into_iter();
        let mut results = Vec::with_capacity(images.len());
        for d in decoded {
            results.push(match d {
                Err(e) => Err(Error::Image(e)),
                Ok((_, decode)) => classified
                    .next()
                    .unwrap_or_else(|| {
                        Err(Error::Runtime {
                            pack: self.pack.name().to_owned(),
                            message: "missing batch result".to_owned(),
                        })
                    })
                    .map(|mut c| {
                        c.timings.decode_us = micros(decode);
                        c
                    }),
            });
        }
        Ok(results)
    }

    /// Classifies already-decoded images in batches (as large as the model allows). Fails as a
    /// whole if any image does not fit the pack (`resize = none`).
    pub fn classify_decoded(
        &mut self,
        images: &[&RgbImage],
        top_k: usize,
    ) -> Result<Vec<Classification>, Error> {
        self.classify_decoded_lenient(images, top_k)?
            .into_iter()
            .collect()
    }

    /// Like [`classify_decoded`](Self::classify_decoded), with a result per image.
    fn classify_decoded_lenient(
        &mut self,
        images: &[&RgbImage],
        top_k: usize,
    ) -> Result<Vec<Result<Classification, Error>>, Error> {
        let mut results = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.max_batch.max(1)) {
            let len = self.preprocessor.tensor_len();
            self.tensor.resize(len * chunk.len(), 0.0);
            // Images that do not fit the pack are left out of the batch, keeping their slot.
            let mut slots: Vec<Result<Duration, Error>> = Vec::with_capacity(chunk.len());
            let mut n = 0;
            for img in chunk {
                let t0 = Instant::now();
                let dst = &mut self.tensor[n * len..(n + 1) * len];
                match self.preprocessor.preprocess_into(img, dst) {
                    Ok(()) => {
                        n += 1;
                        slots.push(Ok(t0.elapsed()));
                    }
                    Err(e) => slots.push(Err(e)),
                }
            }
            if n == 0 {
                // No image fitted, so every slot holds an error.
                results.extend(slots.into_iter().filter_map(Result::err).map(Err));
                continue;
            }
            let t0 = Instant::now();
            let (_, mut scores) = self.run(n)?;
            let classes = self.pack.manifest().output.classes;
            let mut ranked = Vec::with_capacity(n);
            for row in scores.chunks_exact_mut(classes) {
                if self.pack.manifest().output.kind == OutputKind::Logits {
                    softmax_in_place(row);
                }
                ranked.push(top_k_at_least_one(row, self.pack.labels(), top_k));
            }
            let inference = micros(t0.elapsed()) / n as u64;
            let mut ranked = ranked.into_iter();
            for slot in slots {
                results.push(slot.and_then(|pre| {
                    let top = ranked.next().ok_or_else(|| Error::Runtime {
                        pack: self.pack.name().to_owned(),
                        message: "fewer output rows than images".to_owned(),
                    })?;
                    let best = &top[0];
                    Ok(Classification {
                        label: best.label.clone(),
                        index: best.index,
                        score: best.score,
                        timings: Timings {
                            decode_us: 0,
                            preprocess_us: micros(pre),
                            inference_us: inference,
                        },
                        top_k: top,
                    })
                }));
            }
        }
        Ok(results)
    }

    /// Runs the session on the first `n` images in `self.tensor`; returns the output shape and
    /// the raw output values.
    fn run(&mut self, n: usize) -> Result<(Vec<i64>, Vec<f32>), Error> {
        let (w, h) = self.preprocessor.size();
        let len = self.preprocessor.tensor_len();
        let rt = |e: ort::Error| Error::Runtime {
            pack: self.pack.name().to_owned(),
            message: e.to_string(),
        };
        let input =
            TensorRef::from_array_view(([n, 3, h as usize, w as usize], &self.tensor[..n * len]))
                .map_err(rt)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(rt)?;
        let (shape, data) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(rt)?;
        Ok((shape.to_vec(), data.to_vec()))
    }
}

fn top_k_at_least_one(row: &[f32], labels: &[String], k: usize) -> Vec<Prediction> {
    top_k(row, labels, k.max(1))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
