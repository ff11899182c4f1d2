//! The fault and hostile-input suite: every fault the stack is built to survive, run
//! against one local stack, with what each cost.
//!
//! Starts the web tier and one app tier (the binaries given) on a fresh local state
//! directory and runs, one after another, resetting each process's peak-RSS counter
//! (`/proc/PID/clear_refs`) before each scenario and reading `VmHWM` after:
//! 1. **bombs via the web tier**: decompression bombs (6300×6300 16-bit RGBA PNGs of about
//!    300 KB) and photos uploaded at the same time;
//! 2. **bombs straight onto the request queue** (as a client that bypassed the web tier
//!    would leave them): the app tier must answer every one;
//! 3. **slowloris**: connections that each send half a request header and then nothing,
//!    held while a photo is uploaded; recovery is the time until the server closed them all;
//! 4. **a killed app tier**: a burst whose only app tier is SIGKILLed at the first answer
//!    and replaced at once; recovery is kill → last answer;
//! 5. **no app tier for a while**: the app tier stopped, a burst sent, a new app tier started
//!    after `--outage-secs`; recovery is start → last answer;
//! 6. **two web tiers, one burst split across them**: a second web tier on the same stack;
//!    every answer must reach the tier that asked.
//!
//! "Answered" counts requests that got an HTTP answer (for the bombs a 413 is the right
//! one) or, on the queue, a result; "lost" the rest, and must be 0. Prints one Markdown
//! table. Run through `scripts/bench-faults`.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: panics and prints are its report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use iras_cloud::{Cloud, OutgoingMessage, ReceiveOptions};

use iras_protocol::{FileName, KeyScheme, Outcome, PlannedRequest, RequestId, ResponseMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

#[derive(Parser)]
struct Args {
    /// The web-tier binary.
    #[arg(long)]
    web_tier: PathBuf,
    /// The app-tier binary.
    #[arg(long)]
    app_tier: PathBuf,
    /// Bombs per bomb scenario.
    #[arg(long, default_value_t = 20)]
    bombs: usize,
    /// Photos sent alongside the bombs.
    #[arg(long, default_value_t = 20)]
    normal: usize,
    /// Slowloris connections.
    #[arg(long, default_value_t = 2000)]
    slowloris: usize,
    /// The web tier's header timeout, in seconds.
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Uploads per burst in the killed, outage and two-web-tier scenarios.
    #[arg(long, default_value_t = 100)]
    burst: usize,
    /// How long no app tier runs in the outage scenario, in seconds.
    #[arg(long, default_value_t = 20)]
    outage_secs: u64,
}

fn process(pid: u32) -> Option<procfs::process::Process> {
    procfs::process::Process::new(i32::try_from(pid).ok()?).ok()
}

/// Peak resident set size since the last reset, in MB (0 when the process is gone).
fn peak_rss_mb(pid: u32) -> f64 {
    let kb = process(pid)
        .and_then(|p| p.status().ok())
        .and_then(|s| s.vmhwm)
        .unwrap_or(0);
    kb as f64 / 1000.0
}

/// Resets the peak RSS counter to the current RSS (Linux ≥ 4.0).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn open_fds(pid: u32) -> usize {
    process(pid).and_then(|p| p.fd_count().ok()).unwrap_or(0)
}

fn photo(n: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x * 3 + n) as u8, (y * 5) as u8, ((x ^ y) + n) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Uploads one file; its status, 0 for no answer.
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

/// `burst` photos at once, to `urls` in turn; (status, when answered) of each.
async fn burst(client: &reqwest::Client, urls: &[String], n: usize) -> Vec<(u16, Instant)> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, url) = (client.clone(), urls[i % urls.len()].clone());
        tasks.spawn(async move {
            let status = upload(&client, &url, format!("burst_{i}.jpg"), photo(i as u32)).await;
            (status, Instant::now())
        });
    }
    tasks.join_all().await
}

fn tally(statuses: impl IntoIterator<Item = u16>) -> String {
    let mut counts = BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_insert(0) += 1;
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

/// One line of the table.
struct Row {
    scenario: String,
    sent: usize,
    answered: usize,
    recovery: Option<Duration>,
    web_mb: String,
    app_mb: String,
    detail: String,
}

impl Row {
    fn print(&self) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.sent,
            self.answered,
            self.sent - self.answered,
            self.recovery
                .map_or("—".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
            self.web_mb,
            self.app_mb,
            self.detail,
        );
    }
}

fn mb(pid: u32) -> String {
    format!("{:.0} MB", peak_rss_mb(pid))
}

/// The local stack under test.
struct Stack {
    args: Args,
    state: tempfile::TempDir,
    url: String,
    port: u16,
    web: Child,
    app: Child,
    apps_started: usize,
    client: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_healthy(url: &str) {
    while reqwest::get(format!("{url}healthz")).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Stack {
    async fn start(args: Args) -> Self {
        let state = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/");
        let web = Self::web_tier(&args, state.path(), port, "web-tier");
        wait_healthy(&url).await;
        let stack = Self {
            app: Self::app_tier(&args, state.path(), "app-tier-1", true).await,
            apps_started: 1,
            args,
            state,
            url,
            port,
            web,
            client: reqwest::Client::new(),
        };
        // Warm-up: the first inference.
        let warm = upload(&stack.client, &stack.url, "warm.jpg".into(), photo(0)).await;
        assert_eq!(warm, 200);
        stack.reset();
        stack
    }

    fn web_tier(args: &Args, state: &Path, port: u16, name: &str) -> Child {
        iras_bench::spawn(
            &args.web_tier,
            &[
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--header-timeout-secs".into(),
                args.header_timeout_secs.to_string(),
            ],
            state,
            name,
            None,
        )
    }

    /// Starts an app tier; with `wait`, returns once it serves.
    async fn app_tier(args: &Args, state: &Path, name: &str, wait: bool) -> Child {
        let ready = state.join(format!("{name}.ready"));
        let app = iras_bench::spawn(
            &args.app_tier,
            &["serve".into(), "--wait-secs".into(), "1".into()],
            state,
            name,
            Some(&ready),
        );
        while wait && !ready.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app
    }

    /// Kills the app tier and starts the next one (without waiting for it).
    async fn replace_app_tier(&mut self, wait: bool) {
        self.kill_app_tier().await;
        self.start_app_tier(wait).await;
    }

    async fn kill_app_tier(&mut self) {
        self.app.start_kill().unwrap();
        self.app.wait().await.unwrap();
    }

    async fn start_app_tier(&mut self, wait: bool) {
        self.apps_started += 1;
        let name = format!("app-tier-{}", self.apps_started);
        self.app = Self::app_tier(&self.args, self.state.path(), &name, wait).await;
    }

    fn web_pid(&self) -> u32 {
        self.web.id().unwrap()
    }

    fn app_pid(&self) -> u32 {
        self.app.id().unwrap()
    }

    fn reset(&self) {
        reset_peak(self.web_pid());
        reset_peak(self.app_pid());
    }

    /// Results by id in the output bucket so far.
    fn results_written(&self) -> usize {
        let dir = self
            .state
            .path()
            .join("buckets/iras-output")
            .join(iras_protocol::RESULTS_PREFIX.trim_end_matches('/'));
        std::fs::read_dir(dir).map_or(0, |d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
    }
}

async fn bombs_via_the_web_tier(s: &Stack, bomb: &[u8]) -> Row {
    s.reset();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..s.args.bombs {
        let (client, url, bomb) = (s.client.clone(), s.url.clone(), bomb.to_vec());
        tasks.spawn(async move {
            let status = upload(&client, &url, format!("bomb_{n}.png"), bomb).await;
            (true, status)
        });
    }
    for n in 0..s.args.normal {
        let (client, url) = (s.client.clone(), s.url.clone());
        tasks.spawn(async move {
            let status = upload(&client, &url, format!("photo_{n}.jpg"), photo(n as u32)).await;
            (false, status)
        });
    }
    let all = tasks.join_all().await;
    let bombs: Vec<u16> = all.iter().filter(|(b, _)| *b).map(|(_, s)| *s).collect();
    let photos: Vec<u16> = all.iter().filter(|(b, _)| !*b).map(|(_, s)| *s).collect();
    // A bomb is answered with its 413, a photo with its label.
    let answered =
        bombs.iter().filter(|s| **s == 413).count() + photos.iter().filter(|s| **s == 200).count();
    Row {
        scenario: format!(
            "{} decompression bombs + {} photos via the web tier",
            s.args.bombs, s.args.normal
        ),
        sent: all.len(),
        answered,
        recovery: None,
        web_mb: mb(s.web_pid()),
        app_mb: mb(s.app_pid()),
        detail: format!(
            "bombs: {}; photos: {}",
            tally(bombs.iter().copied()),
            tally(photos.iter().copied())
        ),
    }
}

async fn bombs_onto_the_queue(s: &Stack, bomb: &[u8]) -> Row {
    let cloud = Cloud::open_local(s.state.path()).await.unwrap();
    let replies = "iras-responses-web-bench";
    let replies = cloud
        .create_queue_like("iras-responses", replies)
        .await
        .unwrap();
    let requests = cloud.queue("iras-requests").await.unwrap();
    let input = cloud.bucket("iras-input").await.unwrap();
    s.reset();
    let total = s.args.bombs + s.args.normal;
    for n in 0..total {
        let (name, bytes) = if n < s.args.bombs {
            (format!("qbomb_{n}.png"), bomb.to_vec())
        } else {
            (format!("qphoto_{n}.jpg"), photo(n as u32))
        };
        let planned = iras_protocol::build_request(
            RequestId::new(),
            &FileName::parse(&name).unwrap(),
            &bytes,
            replies.name(),
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
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while outcomes.values().sum::<usize>() < total && Instant::now() < deadline {
        let got = replies
            .receive(ReceiveOptions {
                max_messages: 10,
                wait: Duration::from_secs(1),
                visibility_timeout: Some(Duration::from_secs(30)),
            })
            .await
            .unwrap();
        for m in got {
            let what = match ResponseMessage::decode(&m.body).unwrap().outcome {
                Outcome::Label { .. } => "label".to_owned(),
                Outcome::Error { kind, .. } => kind.as_str().to_owned(),
            };
            *outcomes.entry(what).or_default() += 1;
            replies.delete(&m.receipt).await.unwrap();
        }
    }
    cloud.delete_queue(replies.name()).await.unwrap();
    Row {
        scenario: format!(
            "{} bombs + {} photos straight onto the request queue",
            s.args.bombs, s.args.normal
        ),
        sent: total,
        answered: outcomes.values().sum(),
        recovery: None,
        web_mb: "—".into(),
        app_mb: mb(s.app_pid()),
        detail: outcomes
            .iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

async fn slowloris(s: &Stack) -> Row {
    s.reset();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", s.port).parse().unwrap();
    let mut held = Vec::with_capacity(s.args.slowloris);
    let opened_at = Instant::now();
    for _ in 0..s.args.slowloris {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(mut c) => {
                if c.write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
                    .await
                    .is_ok()
                {
                    held.push(c);
                }
            }
            Err(_) => break,
        }
    }
    let opened = held.len();
    let fds = open_fds(s.web_pid());
    let t = Instant::now();
    let status = upload(&s.client, &s.url, "during.jpg".into(), photo(7)).await;
    let upload_secs = t.elapsed().as_secs_f64();
    let mut closes = tokio::task::JoinSet::new();
    for mut c in held {
        closes.spawn(async move {
            let mut buf = [0u8; 512];
            let closed = async {
                loop {
                    match c.read(&mut buf).await {
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
    let closed = closes.join_all().await.into_iter().filter(|c| *c).count();
    Row {
        scenario: format!("{opened} slowloris connections (half a header each) + 1 photo",),
        // The photo is the request; the connections are the attack.
        sent: 1,
        answered: usize::from(status == 200),
        recovery: Some(opened_at.elapsed()),
        web_mb: mb(s.web_pid()),
        app_mb: "—".into(),
        detail: format!(
            "photo: {status} in {upload_secs:.2} s; {closed}/{opened} closed by the server \
             (header timeout {} s; {fds} fds open while held)",
            s.args.header_timeout_secs
        ),
    }
}

async fn a_killed_app_tier(s: &mut Stack) -> Row {
    s.reset();
    let before = s.results_written();
    let urls = [s.url.clone()];
    let sent = s.args.burst;
    let client = s.client.clone();
    let burst = tokio::spawn(async move { burst(&client, &urls, sent).await });
    while s.results_written() == before {
        assert!(!burst.is_finished(), "the burst ended before any answer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let app_mb = mb(s.app_pid());
    s.replace_app_tier(false).await;
    let killed = Instant::now();
    let answers = burst.await.unwrap();
    let last = answers.iter().map(|(_, at)| *at).max().unwrap_or(killed);
    Row {
        scenario: format!(
            "the only app tier SIGKILLed at the first answer of a {sent}-photo burst, replaced at once"
        ),
        sent,
        answered: answers.iter().filter(|(s, _)| *s == 200).count(),
        recovery: Some(last.saturating_duration_since(killed)),
        web_mb: mb(s.web_pid()),
        app_mb: format!("{app_mb} / {}", mb(s.app_pid())),
        detail: format!(
            "{}; kill → last answer",
            tally(answers.iter().map(|(s, _)| *s))
        ),
    }
}

async fn no_app_tier_for_a_while(s: &mut Stack) -> Row {
    s.kill_app_tier().await;
    reset_peak(s.web_pid());
    let urls = [s.url.clone()];
    let sent = s.args.burst;
    let client = s.client.clone();
    let burst = tokio::spawn(async move { burst(&client, &urls, sent).await });
    tokio::time::sleep(Duration::from_secs(s.args.outage_secs)).await;
    let back = Instant::now();
    s.start_app_tier(false).await;
    let answers = burst.await.unwrap();
    let last = answers.iter().map(|(_, at)| *at).max().unwrap_or(back);
    Row {
        scenario: format!(
            "no app tier for {} s under a {sent}-photo burst, then one started",
            s.args.outage_secs
        ),
        sent,
        answered: answers.iter().filter(|(s, _)| *s == 200).count(),
        recovery: Some(last.saturating_duration_since(back)),
        web_mb: mb(s.web_pid()),
        app_mb: mb(s.app_pid()),
        detail: format!(
            "{}; start (model load included) → last answer",
            tally(answers.iter().map(|(s, _)| *s))
        ),
    }
}

async fn two_web_tiers(s: &Stack) -> Row {
    let port = free_port();
    let second_url = format!("http://127.0.0.1:{port}/");
    let mut second = Stack::web_tier(&s.args, s.state.path(), port, "web-tier-2");
    wait_healthy(&second_url).await;
    s.reset();
    let urls = [s.url.clone(), second_url];
    let answers = burst(&s.client, &urls, s.args.burst).await;
    let row = Row {
        scenario: format!(
            "two web tiers on one stack, a {}-photo burst split across them",
            s.args.burst
        ),
        sent: s.args.burst,
        answered: answers.iter().filter(|(s, _)| *s == 200).count(),
        recovery: None,
        web_mb: format!("{} / {}", mb(s.web_pid()), mb(second.id().unwrap())),
        app_mb: mb(s.app_pid()),
        detail: tally(answers.iter().map(|(s, _)| *s)),
    };
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    row
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut s = Stack::start(args).await;
    let bomb =
        tokio::task::spawn_blocking(|| iras_testkit::bomb::png_bomb(iras_testkit::bomb::BOMB_SIDE))
            .await
            .unwrap();
    println!(
        "Machine: {} CPUs, load {}; bomb: {}×{} 16-bit RGBA PNG, {} bytes",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        <procfs::LoadAverage as procfs::Current>::current().map_or_else(
            |_| "?".to_owned(),
            |l| format!("{} {} {}", l.one, l.five, l.fifteen)
        ),
        iras_testkit::bomb::BOMB_SIDE,
        iras_testkit::bomb::BOMB_SIDE,
        bomb.len()
    );
    println!();
    println!(
        "| scenario | sent | answered | lost | recovery | web tier peak RSS | app tier peak RSS | detail |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    bombs_via_the_web_tier(&s, &bomb).await.print();
    bombs_onto_the_queue(&s, &bomb).await.print();
    slowloris(&s).await.print();
    a_killed_app_tier(&mut s).await.print();
    no_app_tier_for_a_while(&mut s).await.print();
    two_web_tiers(&s).await.print();
}
