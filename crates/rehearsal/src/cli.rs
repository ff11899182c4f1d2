//! The `rehearsal` command line (what `scripts/run-local --backend aws` runs).
//!
//! ```text
//! rehearsal run [--port 8000] [--state-dir .iras-aws] [--boot-secs 5 | --ec2-boot]
//!               [--split-listener] [--burst 100 [--exit-after-burst]]
//! ```
//!
//! `run` starts a moto server (or uses `--endpoint`), deploys the template with
//! `scripts/deploy-aws`, boots the web instance in the emulator and prints the URL; with
//! `--burst N` it then sends the course's burst of N golden photos and prints the report.
//! Ctrl-C terminates every instance through EC2 (the tiers drain) and stops moto.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::burst::{golden_uploads, run_burst};
use crate::image::ImageSource;
use crate::rehearse::{Rehearsal, RehearsalOptions};

/// The boot delay of `--ec2-boot`: what an app-tier instance takes on EC2 from
/// RunInstances to a serving worker (boot, cloud-init, model load), typically 40–60 s.
pub const EC2_BOOT: Duration = Duration::from_secs(45);

/// `rehearsal`: the AWS deployment on this machine (test and rehearsal tooling).
#[derive(Debug, Parser)]
#[command(name = "rehearsal", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy to a moto server and run the whole deployment until Ctrl-C.
    Run(RunArgs),
}

/// Options of `rehearsal run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The web tier's loopback port (the split listener's is +1, the scaler's metrics +2,
    /// the emulator's control endpoint +3).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Image, instance roots, journals and logs.
    #[arg(long, default_value = ".iras-aws")]
    pub state_dir: PathBuf,
    /// Stack name (CloudFormation stack and `iras:stack` tag).
    #[arg(long, default_value = "iras-rehearsal")]
    pub stack: String,
    /// A moto server to use instead of starting one.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The repository (scripts/, ami/).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Directory of the aws-enabled tier binaries.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Model pack directory (default: the cached efficientnet-lite0 pack).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// ONNX Runtime library (default: the cached one).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Seconds from RunInstances to an instance's units starting.
    #[arg(long, default_value_t = 5.0)]
    pub boot_secs: f64,
    /// A realistic EC2 boot (45 s) instead of `--boot-secs`, for benchmarks.
    #[arg(long)]
    pub ec2_boot: bool,
    /// The template's MaxAppInstances.
    #[arg(long, default_value_t = 19)]
    pub max_app_instances: u32,
    /// Run the standalone listener beside the web tier.
    #[arg(long)]
    pub split_listener: bool,
    /// Extra drop-in settings, `UNIT:KEY=VALUE` (e.g.
    /// `iras-scaler.service:IRAS_SCALER_INTERVAL_SECS=2`); repeatable.
    #[arg(long = "override", value_parser = parse_override)]
    pub overrides: Vec<(String, String, String)>,
    /// After start-up, send a burst of this many golden photos and print the report.
    #[arg(long)]
    pub burst: Option<usize>,
    /// Stop after the burst's report instead of running until Ctrl-C.
    #[arg(long, requires = "burst")]
    pub exit_after_burst: bool,
}

fn parse_override(s: &str) -> Result<(String, String, String), String> {
    let (unit, kv) = s.split_once(':').ok_or("expected UNIT:KEY=VALUE")?;
    let (k, v) = kv.split_once('=').ok_or("expected UNIT:KEY=VALUE")?;
    Ok((unit.to_owned(), k.to_owned(), v.to_owned()))
}

/// Runs a parsed command line.
pub async fn run(
    cli: Cli,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    let Command::Run(args) = cli.command;
    tokio::pin!(shutdown);
    let boot_delay = if args.ec2_boot {
        EC2_BOOT
    } else {
        Duration::try_from_secs_f64(args.boot_secs).context("--boot-secs must be >= 0")?
    };
    let repo = std::path::absolute(&args.repo)?;
    let options = RehearsalOptions {
        repo: repo.clone(),
        state_dir: args.state_dir.clone(),
        endpoint: args.endpoint.clone(),
        stack: args.stack.clone(),
        port: args.port,
        image: ImageSource {
            units: repo.join("ami/systemd"),
            bin_dir: args.bin_dir.clone(),
            model_dir: args
                .model
                .clone()
                .unwrap_or_else(iras_classifier::paths::default_model_dir),
            ort_lib: args
                .ort_lib
                .clone()
                .unwrap_or_else(iras_classifier::paths::default_ort_library),
        },
        boot_delay,
        max_app_instances: args.max_app_instances,
        split_listener: args.split_listener,
        overrides: args.overrides.clone(),
    };
    tracing::info!(stack = %args.stack, "deploying to moto and booting the web instance");
    let rehearsal = Rehearsal::start(options).await?;
    let control = tokio::net::TcpListener::bind(("127.0.0.1", args.port.saturating_add(3)))
        .await
        .context("binding the emulator's control endpoint")?;
    let control_url = format!("http://{}", control.local_addr()?);
    let stop_control = tokio_util::sync::CancellationToken::new();
    let control_task = tokio::spawn(crate::control::serve(
        rehearsal.emulator.clone(),
        control,
        stop_control.clone().cancelled_owned(),
    ));
    tracing::info!(
        url = %rehearsal.url,
        moto = %rehearsal.endpoint,
        control = %control_url,
        image = %rehearsal.image_id,
        "rehearsal running: the web tier answers; app tiers boot as the scaler launches them \
         (Ctrl-C terminates everything)"
    );
    let mut status = ExitCode::SUCCESS;
    let mut interrupted = false;
    if let Some(n) = args.burst {
        let uploads = golden_uploads(n)?;
        let burst = run_burst(
            &rehearsal,
            &uploads,
            boot_delay,
            0,
            Duration::from_secs(600),
        );
        tokio::select! {
            report = burst => {
                let report = report?;
                let mut out = std::io::stdout().lock();
                std::io::Write::write_all(&mut out, report.table().as_bytes())?;
                if report.answered != report.sent {
                    status = ExitCode::FAILURE;
                }
            }
            () = &mut shutdown => interrupted = true,
        }
    }
    if !args.exit_after_burst && !interrupted {
        shutdown.await;
    }
    tracing::info!("terminating the stack's instances and stopping");
    stop_control.cancel();
    let _ = control_task.await;
    rehearsal.stop().await?;
    Ok(status)
}
