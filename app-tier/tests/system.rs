//! The whole request path with real parts: the web tier serving on loopback, app-tier
//! *processes* (the real binary, the real model) and the local backend's queues and
//! buckets. Needs `scripts/fetch-model --with-test-assets` (the photos and their expected
//! labels come from the pack's Python reference run).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use iras_cloud::{Cloud, CloudArgs, OutgoingMessage};
use iras_protocol::{FileName, ImagePayload, KeyScheme, RequestId, RequestMessage};
use reqwest::multipart::{Form, Part};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// A photo with the label the Python reference pipeline gave it.
#[derive(Clone)]
struct Photo {
    bytes: Vec<u8>,
    extension: String,
    label: String,
}

/// The golden photos and their format variants (JPEG, WebP, GIF, BMP, TIFF, CMYK, EXIF
/// rotation, grayscale, palette, 16-bit, alpha, tiny).
fn photos() -> Vec<Photo> {
    let reference =
        iras_classifier::paths::cache_dir().join("reference/efficientnet-lite0/reference.json");
    let text = std::fs::read_to_string(&reference).unwrap_or_else(|_| {
        panic!(
            "{} missing: run `scripts/fetch-model --with-test-assets` first",
            reference.display()
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut photos: Vec<Photo> = json["images"]
        .as_object()
        .unwrap()
        .values()
        .map(|entry| {
            let path = PathBuf::from(entry["image"].as_str().unwrap());
            Photo {
                bytes: std::fs::read(&path).unwrap(),
                extension: path.extension().unwrap().to_str().unwrap().to_owned(),
                label: entry["top5"][0]["label"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    photos.sort_by(|a, b| {
        a.extension
            .cmp(&b.extension)
            .then(a.bytes.len().cmp(&b.bytes.len()))
    });
    assert!(
        photos.len() >= 10,
        "expected the golden photos and their variants"
    );
    photos
}

/// `n` uploads named like the course's (`test_0.png`, …), cycling through the photos.
fn burst(n: usize) -> Vec<(String, Photo)> {
    let photos = photos();
    (0..n)
        .map(|i| {
            let p = photos[i % photos.len()].clone();
            (format!("test_{i}.{}", p.extension), p)
        })
        .collect()
}

struct Web {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: JoinHandle<anyhow::Result<()>>,
}

async fn start_web(state: &Path) -> Web {
    let args = iras_web_tier::WebArgs::try_parse_from([
        "web-tier",
        "--state-dir",
        state.to_str().unwrap(),
        "--listener-wait-secs",
        "1",
    ])
    .unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", http.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(iras_web_tier::serve(args, http, None, async {
        let _ = stopped.await;
    }));
    for _ in 0..100 {
        if reqwest::get(format!("{url}healthz")).await.is_ok() {
            return Web { url, stop, handle };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("web tier did not come up");
}

impl Web {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// Starts an `app-tier serve` process and waits until it serves.
async fn app_tier(state: &Path, name: &str, visibility_timeout_secs: u32) -> Child {
    let ready = state.join(format!("{name}.ready"));
    let log = std::fs::File::create(state.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_app-tier"))
        .args([
            "serve",
            "--workers",
            "1",
            "--threads",
            "1",
            "--wait-secs",
            "1",
        ])
        .args([
            "--visibility-timeout-secs",
            &visibility_timeout_secs.to_string(),
        ])
        .env("IRAS_STATE_DIR", state)
        .env("IRAS_INSTANCE_NAME", name)
        .env("IRAS_READY_FILE", &ready)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if ready.exists() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} did not become ready: {}",
        std::fs::read_to_string(state.join(format!("{name}.log"))).unwrap_or_default()
    );
}

async fn upload(client: &reqwest::Client, url: &str, name: &str, bytes: Vec<u8>) -> (u16, String) {
    let form = Form::new().part("myfile", Part::bytes(bytes).file_name(name.to_owned()));
    let r = client.post(url).multipart(form).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Posts every upload at once; returns (name, status, body, expected label).
async fn post_all(url: &str, uploads: Vec<(String, Photo)>) -> Vec<(String, u16, String, String)> {
    let client = reqwest::Client::new();
    let tasks: Vec<_> = uploads
        .into_iter()
        .map(|(name, photo)| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let (status, body) = upload(&client, &url, &name, photo.bytes).await;
                (name, status, body, photo.label)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(
            tokio::time::timeout(Duration::from_secs(300), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    answers
}

fn assert_all_labelled(answers: &[(String, u16, String, String)]) {
    for (name, status, body, label) in answers {
        assert_eq!(*status, 200, "{name}: {body}");
        assert_eq!(body, label, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_100_photos_is_answered_right_and_both_buckets_hold_it() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    let _a = app_tier(state.path(), "app-tier-1", 60).await;
    let _b = app_tier(state.path(), "app-tier-2", 60).await;

    let uploads = burst(100);
    let answers = post_all(&web.url, uploads.clone()).await;
    assert_eq!(answers.len(), 100);
    assert_all_labelled(&answers);

    // The seed's graded layout: images by file name, `(stem, label)` by stem.
    let cloud = Cloud::connect(&CloudArgs::local(state.path()))
        .await
        .unwrap();
    let input = cloud.bucket("iras-input").await.unwrap();
    let output = cloud.bucket("iras-output").await.unwrap();
    let mut keys = input.list("test_").await.unwrap();
    keys.sort();
    let mut expected: Vec<_> = uploads.iter().map(|(n, _)| n.clone()).collect();
    expected.sort();
    assert_eq!(keys, expected);
    for (name, photo) in &uploads {
        assert_eq!(input.get(name).await.unwrap(), photo.bytes, "{name}");
        let stem = FileName::parse(name).unwrap().stem().to_owned();
        let value = String::from_utf8(output.get(&stem).await.unwrap()).unwrap();
        assert_eq!(value, format!("({stem}, {})", photo.label));
    }
    let depth = cloud
        .queue("iras-requests")
        .await
        .unwrap()
        .depth()
        .await
        .unwrap();
    assert_eq!(depth.total(), 0);
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_tier_killed_mid_burst_costs_a_redelivery_not_a_request() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    // A short visibility timeout so the killed worker's message comes back quickly (the
    // heartbeat keeps it hidden while a live worker is still on it).
    let mut victim = app_tier(state.path(), "app-tier-1", 3).await;
    let _survivor = app_tier(state.path(), "app-tier-2", 3).await;

    let url = web.url.clone();
    let burst = tokio::spawn(async move { post_all(&url, burst(60)).await });
    // Kill once the workers are busy, while messages are in flight.
    let cloud = Cloud::connect(&CloudArgs::local(state.path()))
        .await
        .unwrap();
    let requests = cloud.queue("iras-requests").await.unwrap();
    let output = cloud.bucket("iras-output").await.unwrap();
    loop {
        let done = output.list("test_").await.unwrap().len();
        let in_flight = requests.depth().await.unwrap().in_flight;
        if done >= 5 && in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    victim.start_kill().unwrap();
    let status = victim.wait().await.unwrap();
    assert!(!status.success(), "killed");

    let answers = burst.await.unwrap();
    assert_eq!(answers.len(), 60);
    assert_all_labelled(&answers);
    assert_eq!(requests.depth().await.unwrap().total(), 0);
    let dlq = cloud.queue("iras-requests-dlq").await.unwrap();
    assert_eq!(
        dlq.depth().await.unwrap().total(),
        0,
        "nothing dead-lettered"
    );
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_on_the_queue_becomes_an_error_result_and_delays_nothing() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    let _worker = app_tier(state.path(), "app-tier-1", 30).await;

    // Bad base64, put straight on the queue (the web tier would never send it).
    let poison = RequestMessage {
        version: iras_protocol::PROTOCOL_VERSION,
        id: RequestId::new(),
        file_name: FileName::parse("poison.jpg").unwrap(),
        image: ImagePayload::Inline {
            data: "!!! not base64 !!!".into(),
        },
        reply_to: "iras-responses".into(),
        submitted_at_ms: 0,
        top_k: 1,
        key_scheme: KeyScheme::FileName,
    };
    let cloud = Cloud::connect(&CloudArgs::local(state.path()))
        .await
        .unwrap();
    let requests = cloud.queue("iras-requests").await.unwrap();
    requests
        .send(OutgoingMessage::new(poison.encode().unwrap()))
        .await
        .unwrap();

    // A real upload behind it is answered normally.
    let answers = post_all(&web.url, burst(3)).await;
    assert_all_labelled(&answers);

    // The poison's error result was recorded by the listener and is served by id.
    let client = reqwest::Client::new();
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..100 {
        let r = client
            .get(format!("{}results/{}", web.url, poison.id))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        last = (r.status().as_u16(), r.json().await.unwrap());
        if last.0 == 422 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 422, "{}", last.1);
    assert_eq!(last.1["error"], "bad_payload");
    // Deleted, not cycling: the queue and its dead-letter queue are empty.
    assert_eq!(requests.depth().await.unwrap().total(), 0);
    let dlq = cloud.queue("iras-requests-dlq").await.unwrap();
    assert_eq!(dlq.depth().await.unwrap().total(), 0);
    web.stop().await;
}

/// The Python with `requests` that `scripts/test` prepares (the moto venv has it).
fn python() -> PathBuf {
    let python = std::env::var_os("IRAS_TEST_PYTHON").map_or_else(
        || iras_classifier::paths::cache_dir().join("venv-moto/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "{} missing: run the tests through scripts/test (or set IRAS_TEST_PYTHON to a Python with `requests`)",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_written_like_the_course_generator_gets_100_answers() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    let _a = app_tier(state.path(), "app-tier-1", 60).await;
    let _b = app_tier(state.path(), "app-tier-2", 60).await;

    let folder = state.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    let uploads = burst(100);
    for (name, photo) in &uploads {
        std::fs::write(folder.join(name), &photo.bytes).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/course_client.py");
    let out = Command::new(python())
        .arg(script)
        .args(["--num_request", "100", "--url", &web.url, "--image_folder"])
        .arg(&folder)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<_> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT\t"))
        .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert_eq!(results.len(), 100);
    for (name, photo) in &uploads {
        let r = results.iter().find(|r| &r[0] == name).unwrap();
        assert_eq!(
            (r[1].as_str(), r[2].as_str()),
            ("200", photo.label.as_str()),
            "{name}"
        );
        assert!(stdout.contains(&format!("{name} uploaded!")));
        assert!(stdout.contains(&format!("Classification result: {}", photo.label)));
    }
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scaler_grows_the_fleet_for_a_burst_and_shrinks_it_after() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path()).await;
    let max = 4;
    let cli = iras_scaler::Cli::try_parse_from([
        "scaler",
        "run",
        "--state-dir",
        state.path().to_str().unwrap(),
        "--app-tier-bin",
        env!("CARGO_BIN_EXE_app-tier"),
        "--max-instances",
        &max.to_string(),
        "--interval-secs",
        "0.5",
        "--scale-in-samples",
        "3",
        "--grace-secs",
        "10",
        "--terminate-on-exit",
        "--",
        "--workers",
        "1",
        "--threads",
        "1",
        "--wait-secs",
        "1",
    ])
    .unwrap();
    let iras_scaler::Command::Run(args) = cli.command else {
        panic!("run")
    };
    let config = args.config().unwrap();
    let cloud = Cloud::connect(&args.cloud).await.unwrap();
    let fleet = cloud.fleet(config.fleet.clone()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scaler = tokio::spawn(iras_scaler::run(config, cloud, async {
        let _ = stopped.await;
    }));

    let active = || async {
        let list = fleet.list().await.unwrap();
        list.iter().filter(|i| i.state.is_active()).count()
    };
    let url = web.url.clone();
    let burst = tokio::spawn(async move { post_all(&url, burst(100)).await });
    let mut peak = 0;
    while !burst.is_finished() {
        peak = peak.max(active().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers = burst.await.unwrap();
    assert_all_labelled(&answers);
    assert_eq!(peak, max, "scaled out to min(ceil(100 / 2), max)");

    // Idle queue: once the tracker agrees, back to min (0).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while active().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "did not scale back in"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    scaler.await.unwrap().unwrap();
    web.stop().await;
}
