//! The iras app tier.
//!
//! - `app-tier serve` ([`worker`]): the queue worker — long-polls the request queue,
//!   classifies, writes both buckets, answers on the reply queue, then deletes the request.
//! - `app-tier classify FILE…` ([`classify`]): classify files on disk, printing
//!   `file,label` lines as the course classifier did.
//!
//! [`Cli`] is the command line and [`run`] runs it, as every iras binary does. Shared model
//! options live in [`ModelArgs`]; the backend, stack and input-limit flags are the shared
//! groups of `iras-cli`.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use iras_classifier::{Classifier, ClassifierOptions, ModelPack, paths};
use iras_protocol::env;

pub mod classify;
pub mod worker;

/// Command line of the `app-tier` binary.
#[derive(Debug, Parser)]
#[command(
    name = "app-tier",
    version = iras_cloud::version_with_backends!(),
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
    /// Serve as a queue worker until SIGTERM or Ctrl-C (then finish the batch in hand).
    Serve(Box<ServeArgs>),
}

/// Options of `app-tier serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Queues, buckets and backend.
    #[command(flatten)]
    pub cloud: iras_cli::CloudArgs,
    /// Model and inference.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Queue and bucket names, and whether to create them.
    #[command(flatten)]
    pub stack: iras_cli::StackArgs,
    /// Worker loops, each with its own ONNX session. Default: the CPUs divided by
    /// `--threads` when that is set, else 1 (one session using every CPU).
    #[arg(long, env = env::IRAS_WORKERS)]
    pub workers: Option<NonZeroUsize>,
    /// Messages taken per receive (1–10). 1 spreads a burst across instances best; more
    /// saves queue calls when each instance has plenty to do.
    #[arg(long, env = env::IRAS_BATCH_SIZE, default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=10))]
    pub batch_size: u8,
    /// How long a received request stays hidden from other workers, in seconds; the
    /// heartbeat renews it every third of that while the request is worked on. Short, so a
    /// worker that dies hands its requests back within seconds.
    #[arg(long, env = env::IRAS_VISIBILITY_TIMEOUT_SECS, default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(2..=43_200))]
    pub visibility_timeout_secs: u64,
    /// Longest a request may be worked on, in seconds: an inference still running then is
    /// given up (the request gets an `internal` error answer; the worker process ends, for
    /// its supervisor to restart), and no request is kept hidden longer.
    #[arg(long, env = env::IRAS_MAX_PROCESSING_SECS, default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=43_200))]
    pub max_processing_secs: u64,
    /// Long-poll wait per receive, in seconds (SQS's maximum is 20).
    #[arg(long, env = env::IRAS_WAIT_SECS, default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait_secs: u64,
    /// Memory and concurrency of the decodes, shared by the worker loops.
    #[command(flatten)]
    pub decode: iras_cli::DecodeArgs,
    /// Names this worker in responses and logs. Default: the instance name the local fleet
    /// sets, else the EC2 instance id (from the instance metadata), else the host name and
    /// process id.
    #[arg(long, env = env::IRAS_INSTANCE_NAME)]
    pub worker_id: Option<String>,
}

/// Which model to run and how: shared by every subcommand that classifies.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model pack directory (model.onnx + pack.toml + labels.txt). Default: the
    /// efficientnet-lite0 pack that `scripts/fetch-model` caches (~/.cache/iras/packs/).
    #[arg(long = "model", env = env::IRAS_MODEL_DIR, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// ONNX Runtime shared library (libonnxruntime.so >= 1.31). Default: the one
    /// `scripts/fetch-model` caches (~/.cache/iras/onnxruntime/).
    #[arg(long = "ort-lib", env = env::ORT_DYLIB_PATH, value_name = "PATH")]
    pub ort_library: Option<PathBuf>,
    /// ONNX Runtime intra-op threads. Default: the number of CPUs (one session per process).
    #[arg(long)]
    pub threads: Option<NonZeroUsize>,
    /// Input limits (the same flags and defaults as the web tier's).
    #[command(flatten)]
    pub limits: iras_cli::LimitArgs,
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
            limits: self.limits.limits(),
        };
        Ok(Classifier::new(&pack, options)?)
    }
}

/// Runs a parsed command line until done or until `shutdown` resolves; for `classify`, the
/// exit code says whether every input was classified.
pub async fn run(
    cli: Cli,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    match cli.command {
        // Inference is CPU work: off the async threads, like the worker's.
        Command::Classify(args) => tokio::task::spawn_blocking(move || {
            let stdout = std::io::stdout();
            classify::run(&args, &mut stdout.lock())
        })
        .await
        .context("classifying")?,
        Command::Serve(args) => {
            serve(*args, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `app-tier serve` with a shutdown future of the caller's choosing (tests pass their own).
pub async fn serve(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let limits = args.model.limits.limits();
    let decode_budget = args.decode.budget(limits.max_decoded_bytes)?;
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let (workers, threads) = sessions_and_threads(cpus, args.workers, args.model.threads);
    let mut model = args.model.clone();
    model.threads = Some(threads);
    // Loading the model and the self-test take seconds; a stop asked meanwhile (the scaler
    // terminating an instance that is still starting) ends the process cleanly at once,
    // holding no request. Polling `shutdown` here also installs its signal handlers before
    // the slow part.
    let startup = tokio::task::spawn_blocking(move || {
        let mut classifiers = (0..workers)
            .map(|_| model.build_classifier())
            .collect::<anyhow::Result<Vec<_>>>()?;
        for classifier in &mut classifiers {
            self_test(classifier)?;
        }
        anyhow::Ok(classifiers)
    });
    tokio::pin!(shutdown);
    let classifiers = tokio::select! {
        () = &mut shutdown => {
            tracing::info!("stopped while starting: nothing was taken from the queue");
            return Ok(());
        }
        started = startup => started.context("loading the model")??,
    };
    let cloud = args.cloud.connect().await?;
    args.stack.ensure(&cloud).await?;
    let instance_id = cloud.instance_id().await;
    let worker_id = args
        .worker_id
        .or_else(|| instance_id.clone())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
    let config = worker::WorkerConfig {
        request_queue: args.stack.request_queue,
        input_bucket: args.stack.input_bucket,
        output_bucket: args.stack.output_bucket,
        worker_id,
        instance_id,
        batch_size: usize::from(args.batch_size),
        visibility_timeout: std::time::Duration::from_secs(args.visibility_timeout_secs),
        wait: std::time::Duration::from_secs(args.wait_secs),
        max_processing: std::time::Duration::from_secs(args.max_processing_secs),
        limits,
        decode_budget,
    };
    worker::serve(config, cloud, classifiers, shutdown).await
}

/// Classifies a synthetic image (a colour gradient of the model's input size) through the
/// whole path a request takes (preprocessing, the ONNX Runtime session, the pack's labels)
/// before the worker reports ready, so an instance with a broken runtime, model or pack
/// fails here, in its log, and is never counted as capacity. Returns the label it got.
pub fn self_test(classifier: &mut Classifier) -> anyhow::Result<String> {
    let input = &classifier.pack().manifest().input;
    let (width, height) = (input.width.max(1), input.height.max(1));
    let (w, h) = (width as usize, height as usize);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            // Each channel < 256 by construction.
            pixels.extend([(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    let image = iras_classifier::RgbImage::from_raw(width, height, pixels)
        .context("building the self-test image")?;
    let result = classifier
        .classify_decoded(&[&image], 1)
        .context("self-test: classifying a synthetic image failed")?;
    let first = result
        .first()
        .context("self-test: the classifier returned no result")?;
    anyhow::ensure!(
        first.score.is_finite() && first.score > 0.0 && first.score <= 1.0 + 1e-3,
        "self-test: the model answered {:?} with score {} (not a probability): is the pack's \
         softmax setting right?",
        first.label,
        first.score
    );
    anyhow::ensure!(
        !first.label.is_empty(),
        "self-test: the model answered an empty label"
    );
    let pack = classifier.pack();
    tracing::info!(pack = pack.name(), dir = %pack.dir().display(), label = %first.label,
        score = first.score, "self-test classification passed");
    Ok(first.label.clone())
}

/// Worker loops and intra-op threads per session, so that together they use the CPUs
/// once: whichever is given decides the other; with neither, one session uses them all.
pub fn sessions_and_threads(
    cpus: usize,
    workers: Option<NonZeroUsize>,
    threads: Option<NonZeroUsize>,
) -> (usize, NonZeroUsize) {
    let per = |n: NonZeroUsize| NonZeroUsize::new(cpus / n.get()).unwrap_or(NonZeroUsize::MIN);
    match (workers, threads) {
        (Some(w), Some(t)) => (w.get(), t),
        (Some(w), None) => (w.get(), per(w)),
        (None, Some(t)) => (per(t).get(), t),
        (None, None) => (1, NonZeroUsize::new(cpus).unwrap_or(NonZeroUsize::MIN)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_times_threads_fill_the_cpus_once() {
        let n = |v| NonZeroUsize::new(v);
        assert_eq!(sessions_and_threads(8, None, None), (1, n(8).unwrap()));
        assert_eq!(sessions_and_threads(8, n(4), None), (4, n(2).unwrap()));
        assert_eq!(sessions_and_threads(8, None, n(2)), (4, n(2).unwrap()));
        assert_eq!(sessions_and_threads(2, n(4), None), (4, n(1).unwrap()));
        assert_eq!(sessions_and_threads(2, None, n(4)), (1, n(4).unwrap()));
        assert_eq!(sessions_and_threads(8, n(3), n(3)), (3, n(3).unwrap()));
    }
}
