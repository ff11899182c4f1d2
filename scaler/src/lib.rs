//! The iras scaler: grows the app tier when the request queue fills and shrinks it when it
//! drains, and simulates scaling policies at any scale.
//!
//! - [`policy`]: the decisions, as pure functions of (queue depth, active instances,
//!   remembered state, `now`): the seed's policy (the default, kept exactly) and
//!   backlog-per-instance target tracking.
//! - [`control`]: the control loop (`scaler run`) over an [`iras_cloud::Fleet`] (EC2 or local
//!   processes), with structured logs of every decision and Prometheus metrics.
//! - [`simulate`]: a discrete-event simulator (`scaler simulate`) that drives the same
//!   decision functions and writes a CSV, an SVG plot and a Markdown summary.
//! - [`config`]: the command line and its `IRAS_SCALER_*` environment variables.
//!
//! The decision a reader may question: the seed's policy is the default *exactly*, even
//! though, at a queue depth that stays put, its scale-out target (`ceil(depth / 2)`) and its
//! scale-in target (`ceil(depth / 10)`) disagree and it cycles once every K + 1 polls. It is
//! the behaviour the project was specified and graded on; the tracker keeps the cycle slow,
//! the choices where the seed is silent are made against flapping (see [`policy`]), and
//! target tracking sits beside it for anyone who wants one steady target.
//!
//! # Usage
//!
//! ```text
//! # Scale the local stack (app-tier processes under the state directory):
//! scaler run --max-instances 4 --metrics-listen 127.0.0.1:9102 -- --workers 1
//!
//! # Scale EC2 instances from the app-tier AMI:
//! scaler run --backend aws --request-queue https://sqs…/iras-requests \
//!     --ami ami-0123 --security-group sg-0123 --instance-profile iras-app-tier \
//!     --user-data-file ami/user-data.yaml --tag Type=apptier
//!
//! # Compare the seed with target tracking on the course's 100-image burst:
//! scaler simulate --arrivals burst:100 --service fixed:1 --boot-secs 40 \
//!     --compare seed --compare target:5:30:120 --csv burst.csv --svg burst.svg
//!
//! # Internet scale: 10,000 requests/s for five minutes, 1,000-instance cap:
//! scaler simulate --arrivals poisson:10000:300 --service exp:0.1 --max-instances 1000
//! ```
//!
//! `scaler run` counts pending and running instances of `--stack-name` (default `iras`),
//! names new ones `--name-prefix` + the lowest free number (`app-tier-1`, …), and on the
//! local backend starts `app-tier serve` (the binary next to the scaler, or
//! `--app-tier-bin`) with the arguments after `--`, passing it the backend, state
//! directory, queue and bucket names through `IRAS_*` variables. Every flag has an
//! `IRAS_SCALER_*` variable (`iras_protocol::env`); the policy defaults are the seed's:
//! `--out-divisor 2 --in-divisor 10 --scale-in-samples 5 --min-instances 0
//! --max-instances 19 --interval-secs 10`. On SIGTERM or Ctrl-C the loop stops deciding
//! and leaves the fleet serving, unless `--terminate-on-exit` is given.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

pub mod config;
pub mod control;
pub mod policy;
pub mod simulate;

pub use config::{Cli, Command};
pub use control::RunConfig;

/// Runs a parsed command line: `scaler run` until `shutdown` resolves, or `scaler simulate`
/// to the end.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()>) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let config = args.config()?;
            let cloud = args.cloud.connect().await?;
            args.stack.ensure(&cloud).await?;
            control::run(config, cloud, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        // A simulation is CPU work from start to end: off the async threads.
        Command::Simulate(args) => tokio::task::spawn_blocking(move || simulate_and_report(&args))
            .await
            .context("simulating")?,
    }
}

/// `scaler simulate`: runs the scenario under every policy, writes the CSV and the SVG, and
/// prints the summary.
fn simulate_and_report(args: &config::SimulateArgs) -> anyhow::Result<ExitCode> {
    let (scenario, policies) = args.scenario()?;
    let started = std::time::Instant::now();
    let outcomes = simulate::compare(&scenario, &policies)?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        requests = outcomes.first().map_or(0, |o| o.requests),
        "simulated"
    );
    simulate::write_csv_file(&args.csv, &outcomes)?;
    simulate::write_svg(&args.svg, &outcomes)?;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", simulate::summary_markdown(&outcomes))
        .and_then(|()| {
            writeln!(
                stdout,
                "\nwrote {} and {}",
                args.csv.display(),
                args.svg.display()
            )
        })
        .context("writing the summary")?;
    Ok(ExitCode::SUCCESS)
}
