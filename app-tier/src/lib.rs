//! The iras app tier. Today: `app-tier classify FILE…` (classify files on disk, printing
//! `file,label` lines as the course classifier did). The queue worker (`serve`) joins as another
//! subcommand with its own module; shared model options live in [`ModelArgs`].

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use iras_classifier::{Classifier, ClassifierOptions, Limits, ModelPack, paths};

pub mod classify;

/// Command line of the `app-tier` binary.
#[derive(Debug, Parser)]
#[command(
    name = "app-tier",
    version,
    about = "iras app tier: image classification"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Classify image files and print `file,label` lines (or JSON with --json).
    Classify(classify::ClassifyArgs),
}

/// Which model to run and how: shared by every subcommand that classifies.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model pack directory (model.onnx + pack.toml + labels.txt). Default: the
    /// efficientnet-lite0 pack that `scripts/fetch-model` caches (~/.cache/iras/packs/).
    #[arg(long = "model", env = paths::ENV_MODEL_DIR, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// ONNX Runtime shared library (libonnxruntime.so >= 1.31). Default: the one
    /// `scripts/fetch-model` caches (~/.cache/iras/onnxruntime/).
    #[arg(long = "ort-lib", env = paths::ENV_ORT_DYLIB_PATH, value_name = "PATH")]
    pub ort_library: Option<PathBuf>,
    /// ONNX Runtime intra-op threads. Default: the number of CPUs (one session per process).
    #[arg(long)]
    pub threads: Option<NonZeroUsize>,
    /// Largest accepted image file, in bytes.
    #[arg(long, default_value_t = iras_classifier::decode::DEFAULT_MAX_BYTES)]
    pub max_bytes: usize,
    /// Largest accepted image, in pixels (width × height, checked from the header).
    #[arg(long, default_value_t = iras_classifier::decode::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

impl ModelArgs {
    /// Loads the pack and builds a classifier (checks the model against its manifest).
    pub fn build_classifier(&self) -> anyhow::Result<Classifier> {
        let dir = self
            .model_dir
            .clone()
            .unwrap_or_else(paths::default_model_dir);
        let pack = ModelPack::load(&dir)?;
        let options = ClassifierOptions {
            intra_threads: self.threads,
            sessions: None,
            ort_library: self.ort_library.clone(),
            limits: Limits {
                max_bytes: self.max_bytes,
                max_pixels: self.max_pixels,
                ..Limits::default()
            },
        };
        Ok(Classifier::new(&pack, options)?)
    }
}

/// Runs a parsed command line; the exit code says whether every input was classified.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Classify(args) => {
            let stdout = std::io::stdout();
            classify::run(&args, &mut stdout.lock())
        }
    }
}
