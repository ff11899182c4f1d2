//! The workload generator against real servers on loopback: the production web tier
//! (local backend) with an echo worker that answers `label-of-<stem>` in place of the
//! app tier, and small deliberately failing servers. The `workload` binary itself is run
//! for the command-line contract (course flags and output, `--json`, `--report`, exit
//! status).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use iras_testkit::echo::local_echo_worker as echo_worker;
use iras_testkit::web::Web;
use iras_workload::{Config, Expected, FailureClass, Image, Load};

/// A web tier on the local stack in `state`.
async fn start_web(state: &Path) -> Web {
    let cli =
        iras_web_tier::Cli::try_parse_from(["web-tier", "--state-dir", state.to_str().unwrap()])
            .unwrap();
    Web::serve(cli, None).await
}

/// The upload URL of `web` (the workload generator posts to `/`).
fn upload_url(web: &Web) -> String {
    format!("{}/", web.url)
}

fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 32, |x, y| {
        image::Rgb([(x * 7 + seed) as u8, (y * 13) as u8, ((x ^ y) + seed) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A folder of `n` PNGs named `img_00.png`, `img_01.png`, ….
fn image_folder(n: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        std::fs::write(dir.path().join(format!("img_{i:02}.png")), png(i)).unwrap();
    }
    dir
}

fn named(names: &[&str]) -> Vec<Image> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| Image::new(*n, png(i as u32)))
        .collect()
}

/// Serves `router` on an ephemeral loopback port; returns its URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

/// Answers by the uploaded file's name: `ok*` 200 with a label, `empty*` 200 with no
/// body, `e500*`, `e503*` (with `Retry-After`), `e504*` (with `X-Request-Id`), `slow*`
/// after 30 s.
async fn failing_server() -> String {
    async fn upload(mut form: Multipart) -> (StatusCode, HeaderMap, String) {
        let field = form.next_field().await.unwrap().unwrap();
        let name = field.file_name().unwrap().to_owned();
        let _ = field.bytes().await.unwrap();
        let mut headers = HeaderMap::new();
        let status = if name.starts_with("ok") {
            return (StatusCode::OK, headers, "fine".to_owned());
        } else if name.starts_with("empty") {
            return (StatusCode::OK, headers, String::new());
        } else if name.starts_with("e500") {
            StatusCode::INTERNAL_SERVER_ERROR
        } else if name.starts_with("e503") {
            headers.insert("retry-after", "0".parse().unwrap());
            StatusCode::SERVICE_UNAVAILABLE
        } else if name.starts_with("e504") {
            headers.insert("x-request-id", "req-1234".parse().unwrap());
            StatusCode::GATEWAY_TIMEOUT
        } else {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK
        };
        (status, headers, format!("reason for {name}\nsecond line"))
    }
    serve(axum::Router::new().route("/", axum::routing::post(upload))).await
}

/// Accepts connections and closes them without answering.
async fn hang_up_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        }
    });
    url
}

/// A URL nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    url
}

async fn run(config: &Config, images: &[Image]) -> iras_workload::Summary {
    tokio::time::timeout(
        Duration::from_secs(60),
        iras_workload::drive(config, images),
    )
    .await
    .expect("the run finishes")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_the_web_tier_are_scored_against_the_expected_labels() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    let worker = echo_worker(state.path());
    let folder = image_folder(5);
    let images = iras_workload::load_folder(folder.path(), None).unwrap();

    // 7 requests over 5 images: the first two are sent twice. The key has three right
    // labels (one by stem, two by full name), one wrong, and nothing for img_04.
    let csv = folder.path().join("../expected.csv");
    std::fs::write(
        &csv,
        "name,label\nimg_00,label-of-img_00\nimg_01.png,label-of-img_01\n\
         img_02.png,label-of-img_02\nimg_03.png,tabby\n",
    )
    .unwrap();
    let mut config = Config::new(&upload_url(&web), Load::Count(7)).unwrap();
    config.concurrency = 3.try_into().unwrap();
    config.expected = Some(Expected::load(&csv).unwrap());
    let s = run(&config, &images).await;

    assert_eq!(
        (s.planned, s.sent, s.answered, s.failed),
        (7, 7, 7, 0),
        "{}",
        s.table()
    );
    assert!(s.all_answered());
    assert!(s.errors.is_empty());
    let names: Vec<_> = s.records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "img_00.png",
            "img_01.png",
            "img_02.png",
            "img_03.png",
            "img_04.png",
            "img_00.png",
            "img_01.png"
        ]
    );
    for r in &s.records {
        let stem = r.name.trim_end_matches(".png");
        assert_eq!(
            r.outcome.as_deref(),
            Ok(format!("label-of-{stem}").as_str())
        );
        assert_eq!(r.attempts, 1);
    }
    let latency = s.latency_ms.unwrap();
    assert!(latency.min > 0.0 && latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    assert!(s.throughput_per_sec > 0.0);
    let a = s.accuracy.as_ref().unwrap();
    assert_eq!((a.scored, a.correct, a.unscored), (6, 5, 1));
    assert_eq!(a.wrong.len(), 1);
    assert_eq!(
        (
            a.wrong[0].name.as_str(),
            a.wrong[0].expected.as_str(),
            a.wrong[0].got.as_str()
        ),
        ("img_03.png", "tabby", "label-of-img_03")
    );
    worker.abort();
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_the_rate_for_the_duration() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    let worker = echo_worker(state.path());
    let images = named(&["a.png", "b.png", "c.png"]);
    let config = Config::new(
        &upload_url(&web),
        Load::Rate {
            per_sec: 10.0,
            duration: Duration::from_secs(1),
        },
    )
    .unwrap();
    let s = run(&config, &images).await;
    assert_eq!(
        (s.planned, s.answered, s.failed),
        (10, 10, 0),
        "{}",
        s.table()
    );
    // Request i is due at i/10 s.
    for r in &s.records {
        let due = Duration::from_millis(100 * r.seq);
        assert!(
            r.issued.abs_diff(due) < Duration::from_millis(1),
            "#{} {:?}",
            r.seq,
            r.issued
        );
    }
    assert!(s.elapsed_secs >= 0.9, "{}", s.elapsed_secs);
    worker.abort();
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_is_counted_by_kind_with_its_reason() {
    let url = failing_server().await;
    let images = named(&[
        "ok.png",
        "empty.png",
        "e500.png",
        "e503.png",
        "e504.png",
        "slow.png",
    ]);
    let mut config = Config::new(&url, Load::Count(6)).unwrap();
    config.timeout = Some(Duration::from_millis(500));
    let s = run(&config, &images).await;
    assert_eq!((s.sent, s.answered, s.failed), (6, 1, 5), "{}", s.table());
    assert!(!s.all_answered());
    let kinds: Vec<_> = s.errors.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(
        kinds,
        [
            ("HTTP 500", 1),
            ("HTTP 503", 1),
            ("HTTP 504", 1),
            ("empty answer", 1),
            ("timeout", 1)
        ]
    );
    let by_name = |name: &str| s.failures.iter().find(|f| f.name == name).unwrap();
    assert_eq!(by_name("e500.png").detail, "reason for e500.png");
    assert_eq!(
        by_name("e504.png").detail,
        "reason for e504.png; request id req-1234"
    );
    assert_eq!(by_name("slow.png").kind, FailureClass::Timeout);
    assert!(
        s.latency_ms.unwrap().max < 500.0,
        "only answers count in latency"
    );
    let table = s.table();
    for row in [
        "failed 5",
        "HTTP 503 1",
        "#3 e503.png HTTP 503 reason for e503.png",
    ] {
        assert!(has_row(&table, row), "{row:?} in\n{table}");
    }

    // A refused connection and a server that hangs up are failures too.
    let images = named(&["a.png", "b.png"]);
    let config = Config::new(&closed_port().await, Load::Count(2)).unwrap();
    let s = run(&config, &images).await;
    assert_eq!((s.sent, s.answered, s.failed), (2, 0, 2));
    assert_eq!(s.errors["connect error"], 2, "{}", s.table());
    assert!(s.latency_ms.is_none());
    assert!(s.table().contains("no answers"));

    let config = Config::new(&hang_up_server().await, Load::Count(2)).unwrap();
    let s = run(&config, &images).await;
    assert_eq!((s.sent, s.answered, s.failed), (2, 0, 2), "{}", s.table());
    assert!(
        s.failures.iter().all(|f| f.kind == FailureClass::Transport),
        "{}",
        s.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_repeat_only_what_the_server_did_not_take() {
    // 503 twice, then answers.
    let calls = Arc::new(AtomicU32::new(0));
    async fn busy_then_fine(State(calls): State<Arc<AtomicU32>>) -> (StatusCode, &'static str) {
        if calls.fetch_add(1, Ordering::SeqCst) < 2 {
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        } else {
            (StatusCode::OK, "late")
        }
    }
    let url = serve(
        axum::Router::new()
            .route("/", axum::routing::post(busy_then_fine))
            .with_state(Arc::clone(&calls)),
    )
    .await;
    let images = named(&["a.png"]);
    let mut config = Config::new(&url, Load::Count(1)).unwrap();
    let s = run(&config, &images).await;
    assert_eq!(s.errors["HTTP 503"], 1, "retries are off by default");
    config.retries = 3;
    let s = run(&config, &images).await;
    assert_eq!((s.answered, s.retries), (1, 1), "{}", s.table());
    assert_eq!(s.records[0].attempts, 2);
    assert_eq!(s.records[0].outcome.as_deref(), Ok("late"));

    // A timeout is never retried: the server may have taken the request.
    let mut config = Config::new(&failing_server().await, Load::Count(1)).unwrap();
    config.retries = 3;
    config.timeout = Some(Duration::from_millis(200));
    let s = run(&config, &named(&["slow.png"])).await;
    assert_eq!((s.failed, s.retries), (1, 0));
    // Connection refused is retried, and still counted once when it never succeeds.
    let mut config = Config::new(&closed_port().await, Load::Count(1)).unwrap();
    config.retries = 2;
    let s = run(&config, &named(&["a.png"])).await;
    assert_eq!((s.failed, s.retries), (1, 2));
    assert_eq!(s.failures[0].attempts, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_counts_what_was_in_flight_and_what_was_never_sent() {
    let url = failing_server().await;
    let mut config = Config::new(&url, Load::Count(5)).unwrap();
    config.concurrency = 2.try_into().unwrap();
    let seen = Arc::new(Counter(AtomicU32::new(0)));
    let s = tokio::time::timeout(
        Duration::from_secs(20),
        iras_workload::drive_with(
            &config,
            named(&["ok.png", "slow-1.png", "slow-2.png"]).into(),
            seen.clone(),
            tokio::time::sleep(Duration::from_millis(500)),
        ),
    )
    .await
    .expect("shutdown ends the run")
    .unwrap();
    // ok.png is answered; the two slow ones hold both permits until the shutdown
    // cancels them; the last two are never sent.
    assert_eq!(
        (s.planned, s.sent, s.answered, s.failed),
        (5, 3, 1, 2),
        "{}",
        s.table()
    );
    assert_eq!(s.errors["cancelled"], 2);
    assert!(!s.all_answered());
    assert_eq!(
        seen.0.load(Ordering::SeqCst),
        3,
        "the observer saw every completion"
    );
}

struct Counter(AtomicU32);

impl iras_workload::Observer for Counter {
    fn completed(&self, _: &iras_workload::Record) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs the `workload` binary; returns (exit code, stdout, stderr).
async fn workload(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_workload"))
            .args(args)
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("workload finishes")
    .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_the_course_flags_and_prints_the_course_lines() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    let worker = echo_worker(state.path());
    let folder = image_folder(5);
    let dir = folder.path().to_str().unwrap();

    let (code, stdout, stderr) = workload(&[
        "--num_request",
        "3",
        "--url",
        &upload_url(&web),
        "--image_folder",
        dir,
        "--course-output",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    // Each image's two lines together, in completion order: the first three files.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    let mut seen = BTreeSet::new();
    for pair in lines.chunks(2) {
        let name = pair[0].strip_suffix(" uploaded!").unwrap();
        let stem = name.strip_suffix(".png").unwrap();
        assert_eq!(pair[1], format!("Classification result: label-of-{stem}"));
        seen.insert(name.to_owned());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["img_00.png", "img_01.png", "img_02.png"]
    );
    assert!(has_row(&stderr, "answered 3"), "{stderr}");

    // Without --course-output: the table on stdout.
    let (code, stdout, _) = workload(&["--url", &upload_url(&web), "--image-folder", dir]).await;
    assert_eq!(code, 0);
    assert!(has_row(&stdout, "answered 5"), "{stdout}");

    worker.abort();
    web.stop().await;

    // Failures: `sendErr: URL` per request, the reason on stderr, exit status 1.
    let url = closed_port().await;
    let (code, stdout, stderr) = workload(&[
        "--num_request",
        "2",
        "--url",
        &url,
        "--image_folder",
        dir,
        "--course-output",
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout, format!("sendErr: {url}\nsendErr: {url}\n"));
    assert!(stderr.contains("connect error"), "{stderr}");

    // A folder that does not exist cannot start: exit status 2.
    let (code, _, stderr) =
        workload(&["--url", &url, "--image-folder", "/nonexistent/images"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read the image folder"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_json_and_an_html_report() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    let worker = echo_worker(state.path());
    let folder = image_folder(4);
    let out = tempfile::tempdir().unwrap();
    let csv = out.path().join("expected.csv");
    std::fs::write(&csv, "img_00,label-of-img_00\nimg_01,wrong <label>\n").unwrap();
    let report = out.path().join("report.html");

    let (code, stdout, stderr) = workload(&[
        "--url",
        &upload_url(&web),
        "--image-folder",
        folder.path().to_str().unwrap(),
        "--expected",
        csv.to_str().unwrap(),
        "--json",
        "--report",
        report.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["planned"], 4);
    assert_eq!(json["answered"], 4);
    assert_eq!(json["failed"], 0);
    assert_eq!(json["accuracy"]["scored"], 2);
    assert_eq!(json["accuracy"]["correct"], 1);
    assert_eq!(json["accuracy"]["wrong"][0]["expected"], "wrong <label>");
    assert!(json["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(
        has_row(&stderr, "answered 4"),
        "the table goes to stderr: {stderr}"
    );

    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), 2, "two charts");
    assert!(html.contains("wrong &lt;label&gt;"));
    assert_balanced(&html);

    worker.abort();
    web.stop().await;
}

/// Whether a line of `table` is `row`, whatever the column widths.
fn has_row(table: &str, row: &str) -> bool {
    table
        .lines()
        .any(|l| l.split_whitespace().eq(row.split_whitespace()))
}

/// Checks that every element of `html` (the SVG inside included) is closed in order.
fn assert_balanced(html: &str) {
    const VOID: [&str; 5] = ["meta", "br", "img", "hr", "link"];
    let mut open: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>').expect("unterminated tag");
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') || tag.ends_with('/') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == ':')
            .collect();
        assert!(!name.is_empty(), "bad tag <{tag}>");
        if VOID.contains(&name.as_str()) {
            continue;
        }
        if tag.starts_with('/') {
            assert_eq!(open.pop().as_deref(), Some(name.as_str()), "</{name}>");
        } else {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
}

/// `--async`: the folder goes as one batch; the results come from its event stream, with
/// the same summary and accuracy as a synchronous run, and a file that is no image
/// counted as rejected with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_sent_as_one_batch_is_summarised_like_a_synchronous_run() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    let worker = echo_worker(state.path());
    let mut images = named(&["a.png", "b.png", "c.png"]);
    images.insert(1, Image::new("broken.png", b"not an image".to_vec()));
    let mut config = Config::new(&upload_url(&web), Load::Count(4)).unwrap();
    config.expected =
        Some(Expected::parse("name,label\na,label-of-a\nb,label-of-b\nc,tabby\n").unwrap());
    let s = tokio::time::timeout(
        Duration::from_secs(60),
        iras_workload::drive_batch(
            &config,
            &images,
            Arc::new(iras_workload::Quiet),
            std::future::pending(),
        ),
    )
    .await
    .expect("the batch is collected")
    .unwrap();
    assert_eq!(
        (s.planned, s.sent, s.answered, s.failed),
        (4, 4, 3, 1),
        "{}",
        s.table()
    );
    assert_eq!(s.errors.get("rejected"), Some(&1));
    assert_eq!(s.failures[0].name, "broken.png");
    assert!(
        s.failures[0].detail.starts_with("not_an_image"),
        "{:?}",
        s.failures[0]
    );
    let a = s.accuracy.as_ref().unwrap();
    assert_eq!((a.scored, a.correct), (3, 2));
    assert_eq!(s.records[2].outcome.as_deref(), Ok("label-of-b"));

    // The binary: the same flag, its JSON summary and exit status.
    let folder = image_folder(3);
    let (code, stdout, stderr) = workload(&[
        "--url",
        &upload_url(&web),
        "--image-folder",
        folder.path().to_str().unwrap(),
        "--async",
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&summary["answered"], &summary["failed"]),
        (&3.into(), &0.into())
    );
    worker.abort();
    web.stop().await;
}
