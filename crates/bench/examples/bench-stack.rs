//! Benchmark: the local stack against the raw classifier, side by side in one run.
//!
//! Starts the web tier and W app-tier sessions (release binaries; one process each, or
//! `--sessions-per-tier K` per process) on a fresh local state directory, then alternates,
//! `--repeats` times:
//! - a **burst** of N concurrent uploads through the stack (sent by the workload generator), against the same N images
//!   classified by W in-process sessions with the same threads (the raw throughput);
//! - at **low load**, each image uploaded alone, against the same image classified alone by
//!   one session (the raw latency).
//!
//! and prints a Markdown table with the median over the rounds of each figure and of the
//! per-round comparisons (each round pairs a raw run with a stack run taken right after it,
//! so load from elsewhere hits both): the burst wall-time ratio (goal ≤ 1.25) and the p50
//! latency overhead (goal ≤ 5 ms); then the peak resident memory of the web tier and of the
//! largest app tier over the whole run (goals ≤ 100 MB and ≤ 250 MB, the deployment's
//! instances having 1–2 GiB). Run through `scripts/bench-stack`, which builds the binaries;
//! with `--profile DIR` (`scripts/profile-stack`) it also records each tier's CPU profile
//! during the bursts with `perf record`, for the split of where the time goes.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::print_stderr)]

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use iras_classifier::{Classifier, ClassifierOptions, ModelPack, paths};
use reqwest::multipart::{Form, Part};

#[derive(Debug, Parser)]
struct Args {
    /// The web-tier binary.
    #[arg(long)]
    web_tier: PathBuf,
    /// The app-tier binary.
    #[arg(long)]
    app_tier: PathBuf,
    /// App-tier sessions in all (and raw sessions), W.
    #[arg(long, default_value_t = 2)]
    app_tiers: usize,
    /// Sessions per app-tier process (`app-tier serve --workers`): W / K processes of K
    /// sessions each instead of W processes of one.
    #[arg(long, default_value_t = 1, value_name = "K")]
    sessions_per_tier: usize,
    /// Uploads per burst, N.
    #[arg(long, default_value_t = 100)]
    images: usize,
    /// Alternating rounds; the median of each figure is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Records each tier's CPU profile during the stack bursts with `perf record` (call
    /// graphs by DWARF unwinding) into DIR/<tier>-r<round>.data. Profiling slows the tiers a
    /// little: its round's figures are for the breakdown, not for the ratio.
    #[arg(long, value_name = "DIR")]
    profile: Option<PathBuf>,
}

/// `perf record` attached to each tier for one burst.
struct Profile(Vec<std::process::Child>);

impl Profile {
    /// Attaches to every `(name, pid)`; waits a moment, as perf needs it to attach.
    async fn start(dir: &Path, round: usize, tiers: &[(String, u32)]) -> Self {
        let perfs = tiers
            .iter()
            .map(|(name, pid)| {
                std::process::Command::new("perf")
                    .args(["record", "-q", "-F", "499", "--call-graph", "dwarf,16384"])
                    .arg("-p")
                    .arg(pid.to_string())
                    .arg("-o")
                    .arg(dir.join(format!("{name}-r{round}.data")))
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("starting perf record (is perf installed?)")
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        Self(perfs)
    }

    /// Stops recording (SIGINT, as perf expects) and waits until the files are written.
    fn stop(self) {
        for mut perf in self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            perf.wait().unwrap();
        }
    }
}

/// The golden photos and their format variants, as uploaded in the tests.
fn photos() -> Vec<(String, Vec<u8>)> {
    let cache = paths::cache_dir();
    let mut files: Vec<PathBuf> = ["golden", "test-images"]
        .iter()
        .flat_map(|d| std::fs::read_dir(cache.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            matches!(
                ext.as_deref(),
                Some("png" | "jpg" | "jpeg" | "gif" | "webp" | "bmp" | "tiff")
            )
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn classifier(threads: usize) -> Classifier {
    let pack = ModelPack::load(paths::default_model_dir()).unwrap();
    let options = ClassifierOptions {
        intra_threads: NonZeroUsize::new(threads),
        ..ClassifierOptions::default()
    };
    Classifier::new(&pack, options).unwrap()
}

/// N images over W sessions on W threads; the wall time.
fn raw_burst(sessions: &mut [Classifier], images: &[Vec<u8>]) -> Duration {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in sessions.iter_mut() {
            let next = &next;
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(img) = images.get(i) else { break };
                    c.classify(img, 5).unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn post(client: &reqwest::Client, url: &str, name: &str, bytes: Vec<u8>) -> Duration {
    let start = Instant::now();
    let form = Form::new().part("myfile", Part::bytes(bytes).file_name(name.to_owned()));
    let r = client.post(url).multipart(form).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "{name}: {}",
        r.text().await.unwrap_or_default()
    );
    r.bytes().await.unwrap();
    start.elapsed()
}

/// The burst through the stack, driven by the workload generator (`iras-workload`): every
/// upload at once, every answer checked.
async fn stack_burst(url: &str, uploads: &[iras_workload::Image]) -> Duration {
    let mut config =
        iras_workload::Config::new(url, iras_workload::Load::Count(uploads.len() as u64)).unwrap();
    config.concurrency = NonZeroUsize::new(uploads.len()).unwrap_or(NonZeroUsize::MIN);
    let summary = iras_workload::drive(&config, uploads).await.unwrap();
    assert_eq!(
        summary.answered,
        uploads.len() as u64,
        "{}",
        summary.table()
    );
    Duration::from_secs_f64(summary.elapsed_secs)
}

/// Peak resident memory (`VmHWM`) of a process so far, in MB; 0 when it is gone.
fn peak_rss_mb(pid: u32) -> f64 {
    let kb = i32::try_from(pid)
        .ok()
        .and_then(|pid| procfs::process::Process::new(pid).ok())
        .and_then(|p| p.status().ok())
        .and_then(|s| s.vmhwm)
        .unwrap_or(0);
    kb as f64 / 1024.0
}

/// CPU seconds (user + system) a process has used so far.
/// 0 when the process is gone.
fn cpu_secs(pid: u32) -> f64 {
    let ticks = i32::try_from(pid)
        .ok()
        .and_then(|pid| procfs::process::Process::new(pid).ok())
        .and_then(|p| p.stat().ok())
        .map_or(0, |s| s.utime + s.stime);
    ticks as f64 / procfs::ticks_per_second() as f64
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let w = args.app_tiers.max(1);
    let per_tier = args.sessions_per_tier;
    assert!(
        per_tier > 0 && w % per_tier == 0,
        "--app-tiers {w} is not a multiple of --sessions-per-tier {per_tier}"
    );
    let processes = w / per_tier;
    let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let threads = (cpus / w).max(1);
    let photos = photos();
    let uploads: Vec<iras_workload::Image> = (0..args.images)
        .map(|i| {
            let (name, bytes) = &photos[i % photos.len()];
            let ext = Path::new(name).extension().unwrap().to_string_lossy();
            iras_workload::Image {
                name: format!("test_{i}.{ext}"),
                bytes: bytes.clone(),
            }
        })
        .collect();
    let raw_images: Vec<Vec<u8>> = uploads.iter().map(|u| u.bytes.clone()).collect();

    // The stack: web tier + W app tiers on a fresh state directory.
    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let web = iras_bench::spawn(
        &args.web_tier,
        &["--listen".into(), format!("127.0.0.1:{port}")],
        state.path(),
        "web-tier",
        None,
    );
    let mut app_tiers = Vec::new();
    for n in 1..=processes {
        let ready = state.path().join(format!("app-tier-{n}.ready"));
        let argv = [
            "serve",
            "--workers",
            &per_tier.to_string(),
            "--threads",
            &threads.to_string(),
        ]
        .map(String::from);
        app_tiers.push(iras_bench::spawn(
            &args.app_tier,
            &argv,
            state.path(),
            &format!("app-tier-{n}"),
            Some(&ready),
        ));
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let client = reqwest::Client::new();
    while reqwest::get(format!("{url}healthz")).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm-up: every process runs its first inference.
    stack_burst(&url, &uploads[..(4 * w).min(uploads.len())]).await;

    let mut sessions: Vec<Classifier> = (0..w).map(|_| classifier(threads)).collect();
    raw_burst(&mut sessions, &raw_images[..w.min(raw_images.len())]);
    let mut single = classifier(threads);

    let pids: Vec<u32> = std::iter::once(&web)
        .chain(&app_tiers)
        .map(|c| c.id().unwrap())
        .chain(std::iter::once(std::process::id()))
        .collect();
    let cpu_now = || pids.iter().map(|p| cpu_secs(*p)).collect::<Vec<f64>>();
    let tiers: Vec<(String, u32)> = std::iter::once("web-tier".to_owned())
        .chain((1..=processes).map(|n| format!("app-tier-{n}")))
        .zip(pids.iter().copied())
        .collect();
    let mut burst_cpu = vec![0.0; pids.len()];
    let mut rounds: Vec<[f64; 4]> = Vec::new();
    for round in 1..=args.repeats {
        let raw = raw_burst(&mut sessions, &raw_images);
        let profile = match &args.profile {
            Some(dir) => Some(Profile::start(dir, round, &tiers).await),
            None => None,
        };
        let before = cpu_now();
        let stack = stack_burst(&url, &uploads).await;
        for ((sum, after), before) in burst_cpu.iter_mut().zip(cpu_now()).zip(before) {
            *sum += after - before;
        }
        if let Some(profile) = profile {
            profile.stop();
        }
        let raw_lat: Vec<Duration> = photos
            .iter()
            .map(|(_, b)| {
                let t = Instant::now();
                single.classify(b, 5).unwrap();
                t.elapsed()
            })
            .collect();
        let mut e2e_lat = Vec::new();
        for (i, (name, bytes)) in photos.iter().enumerate() {
            e2e_lat.push(
                post(
                    &client,
                    &url,
                    &format!("low_{round}_{i}_{name}"),
                    bytes.clone(),
                )
                .await,
            );
        }
        let (raw_p50, e2e_p50) = (p50(raw_lat), p50(e2e_lat));
        eprintln!(
            "round {round}: burst raw {:.2} s, stack {:.2} s (x{:.2}); p50 raw {:.1} ms, e2e {:.1} ms",
            raw.as_secs_f64(),
            stack.as_secs_f64(),
            stack.as_secs_f64() / raw.as_secs_f64(),
            raw_p50.as_secs_f64() * 1e3,
            e2e_p50.as_secs_f64() * 1e3
        );
        rounds.push([
            raw.as_secs_f64(),
            stack.as_secs_f64(),
            raw_p50.as_secs_f64() * 1e3,
            e2e_p50.as_secs_f64() * 1e3,
        ]);
    }
    let median = |f: &dyn Fn(&[f64; 4]) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw_s, stack_s) = (median(&|r| r[0]), median(&|r| r[1]));
    let (raw_ms, e2e_ms) = (median(&|r| r[2]), median(&|r| r[3]));
    let ratio = median(&|r| r[1] / r[0]);
    let overhead_ms = median(&|r| r[3] - r[2]);
    println!(
        "Local stack vs raw classifier: {n} images, W = {w} sessions x {threads} threads in {processes} app-tier processes, {cpus} CPUs, median of {r} rounds",
        n = args.images,
        r = args.repeats
    );
    println!();
    println!("| figure | raw classifier | local stack | ratio / overhead | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| {n}-image burst, wall time | {raw_s:.2} s | {stack_s:.2} s | x{ratio:.2} | <= 1.25 |",
        n = args.images
    );
    println!(
        "| one image at a time, p50 latency | {raw_ms:.1} ms | {e2e_ms:.1} ms | +{overhead_ms:.1} ms | <= 5 ms |"
    );
    // Read before the processes are dropped: the peaks of the whole run, bursts included.
    let web_peak = peak_rss_mb(pids[0]);
    let app_peak = pids[1..=processes]
        .iter()
        .map(|p| peak_rss_mb(*p))
        .fold(0.0, f64::max);
    println!("| peak memory (RSS), web tier | | {web_peak:.0} MB | | <= 100 MB |");
    println!("| peak memory (RSS), largest app tier | | {app_peak:.0} MB | | <= 250 MB |");
    let per_image_ms = |secs: f64| secs * 1e3 / (args.images * args.repeats) as f64;
    let app_cpu: f64 = burst_cpu[1..=processes].iter().sum();
    println!();
    println!(
        "CPU per image during the bursts: web tier {:.1} ms, app tiers {:.1} ms, client (this process) {:.1} ms",
        per_image_ms(burst_cpu[0]),
        per_image_ms(app_cpu),
        per_image_ms(burst_cpu[processes + 1]),
    );
    drop(app_tiers);
    drop(web);
}
