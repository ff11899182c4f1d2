//! Benchmark: hostile input against the local stack, with the peak RSS of each tier.
//!
//! Starts the web tier and one app tier (the binaries given) on a fresh local state directory
//! and runs three scenarios, resetting each process's peak-RSS counter
//! (`/proc/PID/clear_refs`) before each and reading `VmHWM` after:
//! 1. **bombs via the web tier**: N decompression bombs (6300×6300 16-bit RGBA PNGs of about
//!    300 KB) and M normal uploads at the same time;
//! 2. **bombs straight onto the request queue** (as a client that bypassed the web tier, or a
//!    web tier with other limits, would leave them): the app tier must answer every one;
//! 3. **slowloris**: S connections that each send half a request header and then nothing are
//!    held open while a normal upload is made; then the time until the server closed them all.
//!
//! Prints a Markdown table. Run through `scripts/bench-hostile`.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: panics and prints are its report

#[path = "support/mod.rs"]
mod support;

#[path = "../../web-tier/tests/support/bomb.rs"]
mod bomb;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use iras_cloud::{Cloud, CloudArgs, OutgoingMessage, ReceiveOptions};
use iras_protocol::{FileName, KeyScheme, Outcome, PlannedRequest, RequestId, ResponseMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// The web-tier binary.
    #[arg(long)]
    web_tier: PathBuf,
    /// The app-tier binary.
    #[arg(long)]
    app_tier: PathBuf,
    /// Bombs per scenario.
    #[arg(long, default_value_t = 20)]
    bombs: usize,
    /// Normal uploads sent alongside the bombs.
    #[arg(long, default_value_t = 20)]
    normal: usize,
    /// Slowloris connections.
    #[arg(long, default_value_t = 2000)]
    slowloris: usize,
    /// The web tier's header timeout for the slowloris scenario, in seconds.
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
}

/// Peak resident set size since the last reset, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1000.0
}

/// Resets the peak RSS counter to the current RSS (Linux ≥ 4.0).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn photo(n: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x * 3 + n) as u8, (y * 5) as u8, ((x ^ y) + n) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

async fn upload(client: &reqwest::Client, url: &str, name: String, bytes: Vec<u8>) -> u16 {
    let form = reqwest::multipart::Form::new().part(
        "myfile",
        reqwest::multipart::Part::bytes(bytes).file_name(name),
    );
    match client
        .post(url)
        .multipart(form)
        .timeout(Duration::from_secs(300))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

fn tally(statuses: &[u16]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(*s).or_insert(0) += 1;
    }
    counts
        .iter()
        .map(|(s, n)| {
            if *s == 0 {
                format!("{n}× no answer")
            } else {
                format!("{n}× {s}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let web = support::spawn(
        &args.web_tier,
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--header-timeout-secs".into(),
            args.header_timeout_secs.to_string(),
        ],
        state.path(),
        "web-tier",
        None,
    );
    let client = reqwest::Client::new();
    while reqwest::get(format!("{url}healthz")).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = state.path().join("app-tier.ready");
    let app = support::spawn(
        &args.app_tier,
        &["serve".into(), "--wait-secs".into(), "1".into()],
        state.path(),
        "app-tier",
        Some(&ready),
    );
    while !ready.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (web_pid, app_pid) = (web.id().unwrap(), app.id().unwrap());
    let bomb = tokio::task::spawn_blocking(|| bomb::png_bomb(bomb::BOMB_SIDE))
        .await
        .unwrap();
    // Warm-up: the first inference.
    assert_eq!(
        upload(&client, &url, "warm.jpg".into(), photo(0)).await,
        200
    );

    println!(
        "Machine: {} CPUs, load {}; bomb: {}×{} 16-bit RGBA PNG, {} bytes",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        bomb::BOMB_SIDE,
        bomb::BOMB_SIDE,
        bomb.len()
    );
    println!();
    println!("| scenario | sent | answers | time | web tier peak RSS | app tier peak RSS |");
    println!("|---|---|---|---|---|---|");

    // 1. Bombs and normal uploads through the web tier, all at once.
    reset_peak(web_pid);
    reset_peak(app_pid);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.bombs {
        let (client, url, bomb) = (client.clone(), url.clone(), bomb.clone());
        tasks.spawn(async move {
            (
                true,
                upload(&client, &url, format!("bomb_{n}.png"), bomb).await,
            )
        });
    }
    for n in 0..args.normal {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            (
                false,
                upload(&client, &url, format!("photo_{n}.jpg"), photo(n as u32)).await,
            )
        });
    }
    let (mut bombs, mut normal) = (Vec::new(), Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (is_bomb, status) = joined.unwrap();
        if is_bomb {
            bombs.push(status)
        } else {
            normal.push(status)
        }
    }
    println!(
        "| {} bombs + {} photos via the web tier | {} | bombs: {}; photos: {} | {:.1} s | {:.0} MB | {:.0} MB |",
        args.bombs,
        args.normal,
        args.bombs + args.normal,
        tally(&bombs),
        tally(&normal),
        started.elapsed().as_secs_f64(),
        peak_rss_mb(web_pid),
        peak_rss_mb(app_pid),
    );

    // 2. Bombs and normal requests straight onto the request queue.
    let cloud = Cloud::connect(&CloudArgs::local(state.path()))
        .await
        .unwrap();
    let mut spec = iras_cloud::StackArgs::default().spec();
    spec.response_queue = "bench-replies".into();
    cloud.provision(&spec).await.unwrap();
    let requests = cloud.queue("iras-requests").await.unwrap();
    let input = cloud.bucket("iras-input").await.unwrap();
    let replies = cloud.queue("bench-replies").await.unwrap();
    reset_peak(app_pid);
    let started = Instant::now();
    let total = args.bombs + args.normal;
    for n in 0..total {
        let (name, bytes) = if n < args.bombs {
            (format!("qbomb_{n}.png"), bomb.clone())
        } else {
            (format!("qphoto_{n}.jpg"), photo(n as u32))
        };
        let id = RequestId::new();
        let planned = iras_protocol::build_request(
            id,
            &FileName::parse(&name).unwrap(),
            &bytes,
            "bench-replies",
            0,
            1,
            KeyScheme::RequestId,
            iras_protocol::MAX_MESSAGE_BYTES,
        )
        .unwrap();
        if let PlannedRequest::NeedsClaim { key, .. } = &planned {
            input.put(key, bytes).await.unwrap();
        }
        requests
            .send(OutgoingMessage::new(planned.body()))
            .await
            .unwrap();
    }
    let (mut labels, mut too_large, mut other) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    while labels + too_large + other < total && Instant::now() < deadline {
        let got = replies
            .receive(ReceiveOptions {
                max_messages: 10,
                wait: Duration::from_secs(1),
                visibility_timeout: Some(Duration::from_secs(30)),
            })
            .await
            .unwrap();
        for m in got {
            let r = ResponseMessage::decode(&m.body).unwrap();
            match r.outcome {
                Outcome::Label { .. } => labels += 1,
                Outcome::Error { kind, .. } if kind.as_str() == "image_too_large" => too_large += 1,
                Outcome::Error { .. } => other += 1,
            }
            replies.delete(&m.receipt).await.unwrap();
        }
    }
    println!(
        "| {} bombs + {} photos straight onto the request queue | {total} | {labels} labels, {too_large} image_too_large, {other} other errors, {} unanswered | {:.1} s | — | {:.0} MB |",
        args.bombs,
        args.normal,
        total - labels - too_large - other,
        started.elapsed().as_secs_f64(),
        peak_rss_mb(app_pid),
    );

    // 3. Slowloris.
    reset_peak(web_pid);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut held = Vec::with_capacity(args.slowloris);
    let opened_at = Instant::now();
    for _ in 0..args.slowloris {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(mut s) => {
                if s.write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
                    .await
                    .is_ok()
                {
                    held.push(s);
                }
            }
            Err(_) => break,
        }
    }
    let opened = held.len();
    let fds = open_fds(web_pid);
    let t = Instant::now();
    let status = upload(&client, &url, "during.jpg".into(), photo(7)).await;
    let upload_secs = t.elapsed().as_secs_f64();
    let mut closes = tokio::task::JoinSet::new();
    for mut s in held {
        closes.spawn(async move {
            let mut buf = [0u8; 512];
            let closed = async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(120), closed)
                .await
                .is_ok()
        });
    }
    let mut closed = 0;
    while let Some(c) = closes.join_next().await {
        closed += usize::from(c.unwrap());
    }
    println!(
        "| {opened} slowloris connections (half a header each, header timeout {} s) + 1 photo | {} | photo: {status} in {upload_secs:.2} s; {closed}/{opened} closed by the server after {:.1} s ({fds} fds open while held) | {:.1} s | {:.0} MB | — |",
        args.header_timeout_secs,
        opened + 1,
        opened_at.elapsed().as_secs_f64(),
        opened_at.elapsed().as_secs_f64(),
        peak_rss_mb(web_pid),
    );
    drop(web);
    drop(app);
}
