//! The `workload` command line: flags (with the course's spellings as aliases), their
//! `IRAS_WORKLOAD_*` environment variables, and what goes to stdout and stderr.
//!
//! Output streams, so pipes get one clean thing:
//! - default: the summary table on stdout;
//! - `--json`: the JSON summary on stdout, the table on stderr;
//! - `--course-output`: the course's per-image lines on stdout, the table on stderr.
//!
//! The progress bar is on stderr, and only when stderr is a terminal.

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use iras_protocol::env;

use crate::{Config, Expected, Load, Observer, Record};

/// Uploads a folder of images to the iras web tier and reports answers, errors, latency
/// and accuracy.
///
/// Exit status: 0 when every request was answered, 1 when any failed (or the run was
/// interrupted before sending them all), 2 when the run could not start (bad flags,
/// unreadable folder). Wrong labels do not change it.
#[derive(Debug, Clone, Parser)]
#[command(name = "workload", version)]
pub struct Cli {
    /// The web tier's upload URL.
    #[arg(long, env = env::IRAS_WORKLOAD_URL)]
    pub url: String,

    /// Folder of images to upload: every non-hidden file, in name order.
    #[arg(long = "image-folder", visible_alias = "image_folder", env = env::IRAS_WORKLOAD_IMAGE_FOLDER)]
    pub image_folder: PathBuf,

    /// Number of requests (closed loop). Default: one per file in the folder. More
    /// requests than files cycle through them.
    #[arg(
        long = "num-request",
        visible_alias = "num_request",
        env = env::IRAS_WORKLOAD_NUM_REQUEST,
        conflicts_with = "rate"
    )]
    pub num_request: Option<u64>,

    /// Most requests in flight at once.
    #[arg(long, env = env::IRAS_WORKLOAD_CONCURRENCY, default_value_t = NonZeroUsize::new(crate::DEFAULT_CONCURRENCY).unwrap_or(NonZeroUsize::MIN))]
    pub concurrency: NonZeroUsize,

    /// Open loop: requests per second, evenly spaced, cycling through the images, for
    /// `--duration-secs`. Latency counts from when each request was due.
    #[arg(long, env = env::IRAS_WORKLOAD_RATE, requires = "duration_secs")]
    pub rate: Option<f64>,

    /// Open loop: how long requests keep arriving, seconds.
    #[arg(long, env = env::IRAS_WORKLOAD_DURATION_SECS, requires = "rate")]
    pub duration_secs: Option<u64>,

    /// Limit on each attempt, seconds (0: none). The web tier answers 504 after its own
    /// `--request-timeout-secs`; keep this longer to see those.
    #[arg(long, env = env::IRAS_WORKLOAD_TIMEOUT_SECS, default_value_t = 300)]
    pub timeout_secs: u64,

    /// Retries of a request the server surely did not take on (connection refused, 503,
    /// 429); never of a timeout or a 504.
    #[arg(long, env = env::IRAS_WORKLOAD_RETRIES, default_value_t = 0)]
    pub retries: u32,

    /// CSV of expected labels (`name,label`, name with or without extension) to score the
    /// answers against.
    #[arg(long, env = env::IRAS_WORKLOAD_EXPECTED)]
    pub expected: Option<PathBuf>,

    /// Print the course generator's lines on stdout (`NAME uploaded!`,
    /// `Classification result: LABEL`, or `sendErr: URL`); the summary goes to stderr.
    #[arg(long, conflicts_with = "json")]
    pub course_output: bool,

    /// Print the summary as JSON on stdout; the table goes to stderr.
    #[arg(long)]
    pub json: bool,

    /// Write an HTML report (summary, latency histogram, completions over time, every
    /// failure) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,

    /// Send the whole folder (or the first `--num-request` files) as one batch
    /// (`POST /batches` beside `--url`) and collect its results from the batch's event
    /// stream; `--timeout-secs` then bounds the whole collection.
    #[arg(long = "async", env = env::IRAS_WORKLOAD_ASYNC, conflicts_with = "rate")]
    pub batch: bool,
}

impl Cli {
    /// The run configuration these flags describe, with the expected labels loaded.
    /// `folder_len` is the number of files in the image folder (the default count).
    pub fn config(&self, folder_len: u64) -> anyhow::Result<Config> {
        let load = match (self.rate, self.duration_secs) {
            (Some(per_sec), Some(secs)) => Load::Rate {
                per_sec,
                duration: Duration::from_secs(secs),
            },
            _ => Load::Count(self.num_request.unwrap_or(folder_len)),
        };
        let mut config = Config::new(&self.url, load)?;
        config.concurrency = self.concurrency;
        config.timeout = (self.timeout_secs > 0).then(|| Duration::from_secs(self.timeout_secs));
        config.retries = self.retries;
        config.expected = self.expected.as_deref().map(Expected::load).transpose()?;
        Ok(config)
    }
}

/// Runs the command until every request completed or `shutdown` resolves: reads the
/// images, drives the load, prints, and maps the outcome to the exit status (see [`Cli`]).
pub async fn run(
    cli: Cli,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    // Closed loop reads only the first N files, as the course did; an open loop cycles
    // through all of them.
    let limit = if cli.rate.is_some() {
        None
    } else {
        cli.num_request
    };
    let images = crate::load_folder(&cli.image_folder, limit)?;
    let config = cli.config(images.len() as u64)?;
    let planned = config.load.planned();

    let bar = if cli.no_progress {
        ProgressBar::hidden()
    } else {
        // Hidden by indicatif itself when stderr is not a terminal.
        ProgressBar::with_draw_target(Some(planned), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {per_sec} {msg}")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    let observer = Arc::new(CliObserver {
        bar: bar.clone(),
        course_url: cli.course_output.then(|| cli.url.clone()),
        failed: AtomicU64::new(0),
    });

    let summary = if cli.batch {
        crate::drive_batch(&config, &images, observer, shutdown).await?
    } else {
        crate::drive_with(&config, images.into(), observer, shutdown).await?
    };
    bar.finish_and_clear();

    let table = summary.table();
    if cli.json || cli.course_output {
        #[allow(clippy::print_stderr)] // the command's output, not a log line
        {
            eprint!("{table}");
        }
    }
    let mut stdout = std::io::stdout().lock();
    if cli.json {
        serde_json::to_writer_pretty(&mut stdout, &summary).context("writing the JSON")?;
        writeln!(stdout).context("writing the JSON")?;
    } else if !cli.course_output {
        stdout
            .write_all(table.as_bytes())
            .context("writing the summary")?;
    }
    stdout.flush().context("writing the summary")?;
    if let Some(path) = &cli.report {
        crate::report::write_html(path, &summary)?;
        #[allow(clippy::print_stderr)] // the command's output, not a log line
        {
            eprintln!("report written to {}", path.display());
        }
    }
    Ok(if summary.all_answered() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Moves the progress bar and prints the course's lines as requests complete.
struct CliObserver {
    bar: ProgressBar,
    /// `Some(url)` when printing the course's per-image lines.
    course_url: Option<String>,
    failed: AtomicU64,
}

impl Observer for CliObserver {
    fn completed(&self, record: &Record) {
        if record.outcome.is_err() {
            let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
            self.bar.set_message(format!("{failed} failed"));
        }
        if let Some(url) = &self.course_url {
            let text = course_lines(record, url);
            self.bar.suspend(|| {
                // One write per record keeps a record's lines together; a closed stdout
                // (`| head`) must not stop the run, so the error is ignored.
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
            });
        }
        self.bar.inc(1);
    }
}

/// What the course's generator printed for one request.
pub fn course_lines(record: &Record, url: &str) -> String {
    match &record.outcome {
        Ok(label) => format!(
            "{} uploaded!\nClassification result: {label}\n",
            record.name
        ),
        Err(_) => format!("sendErr: {url}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FailureClass, RequestFailure};

    #[test]
    fn course_spellings_and_defaults() {
        let cli = Cli::try_parse_from([
            "workload",
            "--num_request",
            "3",
            "--url",
            "http://127.0.0.1:8000/",
            "--image_folder",
            "imgs",
        ])
        .unwrap();
        assert_eq!(cli.num_request, Some(3));
        assert_eq!(cli.image_folder, PathBuf::from("imgs"));
        assert_eq!(cli.concurrency.get(), 100);
        assert_eq!(cli.retries, 0);
        let config = cli.config(10).unwrap();
        assert_eq!(config.load, Load::Count(3));
        assert_eq!(config.timeout, Some(Duration::from_secs(300)));

        let cli = Cli::try_parse_from([
            "workload",
            "--url=http://h/",
            "--image-folder=imgs",
            "--num-request=4",
        ])
        .unwrap();
        assert_eq!(cli.num_request, Some(4));
        assert_eq!(cli.config(10).unwrap().load, Load::Count(4));
    }

    #[test]
    fn open_loop_needs_rate_and_duration_and_excludes_a_count() {
        let base = ["workload", "--url=http://h/", "--image-folder=i"];
        let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        assert!(parse(&["--rate=5"]).is_err());
        assert!(parse(&["--duration-secs=5"]).is_err());
        assert!(parse(&["--rate=5", "--duration-secs=2", "--num-request=3"]).is_err());
        assert!(parse(&["--json", "--course-output"]).is_err());
        let cli = parse(&["--rate=5", "--duration-secs=2", "--timeout-secs=0"]).unwrap();
        let config = cli.config(3).unwrap();
        assert_eq!(config.load.planned(), 10);
        assert_eq!(config.timeout, None);
        assert!(parse(&["--concurrency=0"]).is_err());
    }

    #[test]
    fn course_lines_match_the_generator() {
        let mut r = Record {
            seq: 0,
            name: "test_00.JPEG".to_owned(),
            issued: Duration::ZERO,
            latency: Duration::ZERO,
            attempts: 1,
            outcome: Ok("tabby".to_owned()),
        };
        assert_eq!(
            course_lines(&r, "http://h/"),
            "test_00.JPEG uploaded!\nClassification result: tabby\n"
        );
        r.outcome = Err(RequestFailure {
            kind: FailureClass::Timeout,
            detail: String::new(),
        });
        assert_eq!(course_lines(&r, "http://h/"), "sendErr: http://h/\n");
    }
}
