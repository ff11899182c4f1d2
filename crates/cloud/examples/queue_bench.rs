//! Local queue benchmark: one producer process and two consumer processes on one state
//! directory, as the web tier and two app tiers would use it.
//!
//! Run it with `scripts/bench-queue` (a release build without the AWS SDK). It prints a
//! Markdown table with:
//! - send → receive latency (p50, p99, max) of single messages sent while both consumers
//!   wait in a long poll: what the doorbell buys;
//! - end-to-end throughput (send, receive, delete) with batches of 10 and with single
//!   messages.
//!
//! Percentiles come from an HDR histogram of the latencies in microseconds at three
//! significant figures: nearest rank, rounded up to the bucket (at most 0.1 % high).
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use iras_cloud::{Cloud, OutgoingMessage, Queue, ReceiveOptions, StackSpec};

const QUEUE: &str = "bench-requests";
const STOP: &str = "stop";

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Messages in the latency phase.
    #[arg(long, default_value_t = 2000)]
    latency_messages: usize,
    /// Messages in each throughput phase.
    #[arg(long, default_value_t = 20_000)]
    throughput_messages: usize,
    /// Body size of the image-sized phase: an upload of ~50 KB inline, as base64.
    #[arg(long, default_value_t = 64 * 1024)]
    image_body_bytes: usize,
}

#[derive(Subcommand, Clone)]
enum Role {
    /// Internal: receive until a stop message, print stats as one line.
    Consume {
        state: PathBuf,
        #[arg(action = clap::ArgAction::Set)]
        batch: bool,
    },
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn queue(state: &Path) -> std::sync::Arc<dyn Queue> {
    let cloud = Cloud::open_local(state).await.unwrap();
    cloud.queue(QUEUE).await.unwrap()
}

/// A consumer: long-poll receive, record latency from the timestamp in the body, delete.
async fn consume(state: &Path, batch: bool) {
    let q = queue(state).await;
    let opts = ReceiveOptions {
        max_messages: 10,
        wait: Duration::from_secs(20),
        visibility_timeout: Some(Duration::from_secs(60)),
    };
    let mut latencies_us = Vec::new();
    let mut processed = 0u64;
    let mut stop = false;
    while !stop {
        let messages = q.receive(opts).await.unwrap();
        let now = now_nanos();
        let mut receipts = Vec::new();
        for m in messages {
            if m.body == STOP {
                if stop {
                    // The other consumer's stop: hand it back.
                    q.send(OutgoingMessage::new(STOP)).await.unwrap();
                }
                stop = true;
            } else if let Some(sent) = m.body.split(':').nth(1).and_then(|t| t.parse::<u64>().ok())
            {
                latencies_us.push(now.saturating_sub(sent) / 1000);
                processed += 1;
            }
            receipts.push(m.receipt);
        }
        if batch {
            for chunk in iras_cloud::queue::batches(receipts) {
                q.delete_batch(chunk).await.unwrap();
            }
        } else {
            for r in receipts {
                q.delete(&r).await.unwrap();
            }
        }
    }
    let joined: Vec<String> = latencies_us.iter().map(u64::to_string).collect();
    println!("{processed} {}", joined.join(","));
}

/// The `q` quantile (0 to 1) of the latencies, microseconds; 0 without any.
fn percentile(latencies_us: &[u64], q: f64) -> u64 {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for &us in latencies_us {
        h.record(us).unwrap();
    }
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q).min(h.max())
    }
}

struct PhaseResult {
    latencies_us: Vec<u64>,
    processed: u64,
    elapsed: Duration,
}

/// Starts two consumers, runs `produce`, then stops the consumers and collects their stats.
async fn phase<F, Fut>(state: &Path, batch: bool, produce: F) -> PhaseResult
where
    F: FnOnce(std::sync::Arc<dyn Queue>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let exe = std::env::current_exe().unwrap();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .arg("consume")
                .arg(state)
                .arg(batch.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let q = queue(state).await;
    // Let both consumers reach their long poll before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    produce(q.clone()).await;
    for _ in 0..2 {
        q.send(OutgoingMessage::new(STOP)).await.unwrap();
    }
    let mut result = PhaseResult {
        latencies_us: Vec::new(),
        processed: 0,
        elapsed: Duration::ZERO,
    };
    for c in consumers {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (count, lat) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        result.processed += count.parse::<u64>().unwrap();
        result.latencies_us.extend(
            lat.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u64>().unwrap()),
        );
    }
    result.elapsed = started.elapsed();
    result
}

async fn run(args: &Args) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let cloud = Cloud::open_local(state).await.unwrap();
    cloud
        .provision(&StackSpec {
            request_queue: QUEUE.into(),
            response_queue: "bench-responses".into(),
            input_bucket: "bench-input".into(),
            output_bucket: "bench-output".into(),
            max_receive_count: 5,
            visibility_timeout: Duration::from_secs(60),
        })
        .await
        .unwrap();

    // 1. Latency: single messages, spaced so that consumers are waiting in a long poll.
    let n = args.latency_messages;
    let latency = phase(state, false, |q| async move {
        for i in 0..n {
            q.send(OutgoingMessage::new(format!("{i}:{}", now_nanos())))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;

    // 2. Throughput with batches of 10 (how the app tier deletes).
    let n = args.throughput_messages;
    let batched = phase(state, true, |q| async move {
        for chunk in 0..n / 10 {
            let batch = (0..10)
                .map(|i| OutgoingMessage::new(format!("{}:{}", chunk * 10 + i, now_nanos())))
                .collect();
            q.send_batch(batch).await.unwrap();
        }
    })
    .await;

    // 3. Throughput with single sends and single deletes (how the web tier sends).
    let n = args.throughput_messages / 4;
    let single = phase(state, false, |q| async move {
        for i in 0..n {
            q.send(OutgoingMessage::new(format!("{i}:{}", now_nanos())))
                .await
                .unwrap();
        }
    })
    .await;

    // 4. Throughput with image-sized bodies (an upload inline in its request, as the web
    //    tier sends it): what a receive, a delete and the log cost per kilobyte.
    let n = args.throughput_messages / 10;
    let padding = "x".repeat(args.image_body_bytes);
    let images = phase(state, false, |q| async move {
        for i in 0..n {
            q.send(OutgoingMessage::new(format!(
                "{i}:{}:{padding}",
                now_nanos()
            )))
            .await
            .unwrap();
        }
    })
    .await;

    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let rate =
        |r: &PhaseResult| format!("{:.0} msg/s", r.processed as f64 / r.elapsed.as_secs_f64());
    println!("| local queue, 1 producer + 2 consumer processes | figure | goal |");
    println!("|---|---|---|");
    println!(
        "| send → receive latency p50 (waiting long poll, {} msgs) | {} | ≤ 5 ms |",
        latency.processed,
        ms(percentile(&latency.latencies_us, 0.50))
    );
    println!(
        "| send → receive latency p99 | {} | |",
        ms(percentile(&latency.latencies_us, 0.99))
    );
    println!(
        "| send → receive latency max | {} | |",
        ms(latency.latencies_us.iter().max().copied().unwrap_or(0))
    );
    println!(
        "| end-to-end throughput, batches of 10 ({} msgs) | {} | ≥ 2,000 msg/s |",
        batched.processed,
        rate(&batched)
    );
    println!(
        "| end-to-end throughput, single send/delete ({} msgs) | {} | |",
        single.processed,
        rate(&single)
    );
    println!(
        "| end-to-end throughput, single send/delete of {} KiB bodies ({} msgs) | {} | |",
        args.image_body_bytes / 1024,
        images.processed,
        rate(&images)
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match &args.role {
        Some(Role::Consume { state, batch }) => consume(state, *batch).await,
        None => run(&args).await,
    }
}
