//! Benchmark: how long a burst takes when its only app tier is SIGKILLed at the first
//! answer, with the old visibility timeout (60 s) against the current default (10 s), side
//! by side in one run.
//!
//! For each timeout, `--repeats` times: a fresh local state directory, the web tier and one
//! app tier; a burst of N concurrent uploads through the workload generator; at the first
//! result in the output bucket the app tier is SIGKILLed and a replacement started at once
//! (what systemd's `Restart=` or the scaler does). What the killed worker held comes back
//! when its visibility timeout runs out, so that timeout bounds the recovery. Prints a
//! Markdown table: requests answered and lost (must be 0), burst wall time, and the time
//! from the kill to the last answer, the median of the rounds, and the ratio of the
//! timeouts. Run through `scripts/bench-recovery`, which builds the binaries.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::print_stderr)]

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// The web-tier binary.
    #[arg(long)]
    web_tier: PathBuf,
    /// The app-tier binary.
    #[arg(long)]
    app_tier: PathBuf,
    /// Uploads per burst.
    #[arg(long, default_value_t = 100)]
    images: usize,
    /// Rounds per timeout; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Visibility timeouts to compare, in seconds (the first is the baseline).
    #[arg(long, value_delimiter = ',', default_values_t = [60, 10])]
    timeouts: Vec<u64>,
}

/// Files under `dir` (the local output bucket), recursively.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                count_files(&path)
            } else {
                usize::from(!e.file_name().to_string_lossy().starts_with('.'))
            }
        })
        .sum()
}

struct Round {
    answered: u64,
    sent: u64,
    wall: Duration,
    kill_to_last: Duration,
}

async fn round(args: &Args, uploads: &[iras_workload::Image], timeout: u64) -> Round {
    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let _web = iras_bench::spawn(
        &args.web_tier,
        &["--listen".into(), format!("127.0.0.1:{port}")],
        state.path(),
        "web-tier",
        None,
    );
    let app_args: Vec<String> = [
        "serve",
        "--visibility-timeout-secs",
        &timeout.to_string(),
        "--wait-secs",
        "1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut app = iras_bench::spawn(&args.app_tier, &app_args, state.path(), "app-tier-1", None);
    while reqwest::get(format!("{url}healthz")).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut config =
        iras_workload::Config::new(&url, iras_workload::Load::Count(uploads.len() as u64)).unwrap();
    config.concurrency = NonZeroUsize::new(uploads.len()).unwrap_or(NonZeroUsize::MIN);
    let started = Instant::now();
    let burst = {
        let uploads = uploads.to_vec();
        tokio::spawn(async move { iras_workload::drive(&config, &uploads).await })
    };
    let output = state.path().join("buckets").join("iras-output");
    while count_files(&output) == 0 {
        assert!(!burst.is_finished(), "the burst ended before any answer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.start_kill().unwrap();
    app.wait().await.unwrap();
    let killed = Instant::now();
    let _replacement =
        iras_bench::spawn(&args.app_tier, &app_args, state.path(), "app-tier-2", None);
    let summary = burst.await.unwrap().unwrap();
    let wall = started.elapsed();
    if summary.answered < uploads.len() as u64 {
        eprintln!("{}", summary.table());
    }
    Round {
        answered: summary.answered,
        sent: uploads.len() as u64,
        wall,
        kill_to_last: wall.saturating_sub(killed - started),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let golden = iras_classifier::paths::cache_dir().join("golden");
    let mut photos: Vec<(String, Vec<u8>)> = std::fs::read_dir(&golden)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/fetch-model --with-test-assets)",
                golden.display()
            )
        })
        .flatten()
        .filter(|e| {
            let ext = e
                .path()
                .extension()
                .map(|x| x.to_string_lossy().to_lowercase());
            e.path().is_file()
                && ext.is_some_and(|x| {
                    ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"]
                        .contains(&x.as_str())
                })
        })
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    photos.sort();
    let uploads: Vec<iras_workload::Image> = (0..args.images)
        .map(|i| {
            let (name, bytes) = &photos[i % photos.len()];
            let ext = Path::new(name)
                .extension()
                .map_or("jpg".into(), |e| e.to_string_lossy());
            iras_workload::Image {
                name: format!("test_{i}.{ext}"),
                bytes: bytes.clone(),
            }
        })
        .collect();
    let mut rows = Vec::new();
    for &timeout in &args.timeouts {
        let mut rounds = Vec::new();
        for r in 1..=args.repeats {
            let got = round(&args, &uploads, timeout).await;
            eprintln!(
                "visibility {timeout} s, round {r}: {}/{} answered, burst {:.1} s, kill -> last answer {:.1} s",
                got.answered,
                got.sent,
                got.wall.as_secs_f64(),
                got.kill_to_last.as_secs_f64()
            );
            rounds.push(got);
        }
        let lost: u64 = rounds.iter().map(|r| r.sent - r.answered).sum();
        let answered: u64 = rounds.iter().map(|r| r.answered).sum();
        let sent: u64 = rounds.iter().map(|r| r.sent).sum();
        let wall = median(rounds.iter().map(|r| r.wall.as_secs_f64()).collect());
        let recovery = median(
            rounds
                .iter()
                .map(|r| r.kill_to_last.as_secs_f64())
                .collect(),
        );
        rows.push((timeout, answered, sent, lost, wall, recovery));
    }
    println!(
        "One app tier SIGKILLed at the first answer of a {}-image burst, a replacement started at once; median of {} rounds",
        args.images, args.repeats
    );
    println!();
    println!(
        "| visibility timeout | answered / sent | lost | burst wall time | kill → last answer | vs baseline |"
    );
    println!("|---|---|---|---|---|---|");
    let base = rows.first().map_or(1.0, |r| r.5);
    for (timeout, answered, sent, lost, wall, recovery) in rows {
        println!(
            "| {timeout} s | {answered} / {sent} | {lost} | {wall:.1} s | {recovery:.1} s | x{:.2} |",
            recovery / base
        );
    }
}
