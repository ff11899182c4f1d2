//! The web tier over real loopback HTTP on the local backend. The app tier is replaced by
//! a small echo worker that answers `label-of-<stem>` (the real model runs in the system
//! tests of `app-tier/tests/system.rs`); everything else is the production code: queues,
//! buckets, the embedded and the standalone listener.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use iras_cloud::{Cloud, OutgoingMessage, ReceiveOptions};
use iras_protocol::internal::{
    DELIVERY_PATH, Delivery, DeliveryReply, REPLY_QUEUE_PATH, ReplyQueueReply,
};
use iras_protocol::{ErrorKind, Outcome, RequestMessage, ResponseMessage, Timings};
use iras_testkit::echo::local_echo_worker as echo_worker;
use iras_testkit::eventually;
use iras_testkit::web::Web;
use iras_web_tier::Cli;
use reqwest::multipart::{Form, Part};

/// A web tier on the local stack in `state`, with `extra` flags.
async fn start_web(state: &std::path::Path, extra: &[&str]) -> Web {
    start_web_with(state, extra, None).await
}

/// [`start_web`], with the internal endpoint on `internal`.
async fn start_web_with(
    state: &std::path::Path,
    extra: &[&str],
    internal: Option<tokio::net::TcpListener>,
) -> Web {
    let mut argv = vec!["web-tier", "--state-dir", state.to_str().unwrap()];
    argv.extend_from_slice(extra);
    Web::serve(Cli::try_parse_from(argv).unwrap(), internal).await
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Noise does not compress: a PNG of this size is large enough to need a claim check.
fn noisy_png(width: u32, height: u32) -> Vec<u8> {
    let mut seed = 0x2545_f491_u32;
    let img = image::RgbImage::from_fn(width, height, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let [a, b, c, _] = seed.to_le_bytes();
        image::Rgb([a, b, c])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn form(field: &str, name: &str, bytes: Vec<u8>) -> Form {
    Form::new().part(
        field.to_owned(),
        Part::bytes(bytes).file_name(name.to_owned()),
    )
}

async fn post(url: &str, form: Form, json: bool) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/"))
        .multipart(form);
    if json {
        req = req.header("accept", "application/json");
    }
    req.send().await.unwrap()
}

async fn request_depth(state: &std::path::Path) -> u64 {
    let cloud = Cloud::open_local(state).await.unwrap();
    cloud
        .queue("iras-requests")
        .await
        .unwrap()
        .depth()
        .await
        .unwrap()
        .total()
}

async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_a_4xx_with_a_reason_and_nothing_is_queued() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(
        state.path(),
        &["--max-image-bytes", "60000", "--max-image-pixels", "10000"],
    )
    .await;
    let good = png(64, 48);
    let mut truncated = png(80, 80);
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Form, u16, &str)> = vec![
        (
            "no file field",
            Form::new().text("note", "hello"),
            400,
            "missing_file",
        ),
        (
            "empty file",
            form("myfile", "a.png", vec![]),
            400,
            "empty_file",
        ),
        (
            "not an image",
            form("myfile", "a.png", b"hello world, not a picture".to_vec()),
            415,
            "not_an_image",
        ),
        (
            "truncated",
            form("myfile", "t.png", truncated),
            400,
            "not_an_image",
        ),
        (
            "over the byte limit",
            form("myfile", "big.png", noisy_png(150, 150)),
            413,
            "too_large",
        ),
        (
            "over the pixel limit",
            form("myfile", "wide.png", png(200, 100)),
            413,
            "too_large",
        ),
        (
            "over the body limit",
            form("myfile", "huge.png", noisy_png(300, 300)),
            413,
            "too_large",
        ),
        (
            "two files",
            form("myfile", "a.png", good.clone())
                .part("other", Part::bytes(good.clone()).file_name("b.png")),
            400,
            "several_files",
        ),
    ];
    let count = cases.len() + 1;
    for (what, form, status, code) in cases {
        let r = post(&web.url, form, true).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{what}");
    }
    // Not a multipart body at all.
    let r = reqwest::Client::new()
        .post(format!("{}/", web.url))
        .body("raw")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // A text answer is one line.
    let r = post(&web.url, form("myfile", "a.png", vec![]), false).await;
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");

    assert_eq!(request_depth(state.path()).await, 0, "nothing was queued");
    let m = metrics(&web.url).await;
    assert!(
        m.contains(&format!(
            r#"iras_web_uploads_total{{outcome="rejected"}} {}"#,
            count + 1
        )),
        "{m}"
    );
    web.stop().await;
}

/// A PNG whose framing is whole (every chunk inside the file, every CRC right) but whose
/// compressed pixels are not a zlib stream: only a decode finds out.
fn png_with_damaged_pixels() -> Vec<u8> {
    let mut bytes = png(64, 48);
    let idat = bytes.windows(4).position(|w| w == b"IDAT").unwrap();
    let len = u32::from_be_bytes(bytes[idat - 4..idat].try_into().unwrap()) as usize;
    // The zlib header (compression method 8) becomes method 0, which does not exist.
    bytes[idat + 4] = 0;
    bytes[idat + 5] = 0;
    let crc = crc32fast::hash(&bytes[idat..idat + 4 + len]);
    bytes[idat + 4 + len..idat + 8 + len].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pixels_in_whole_framing_are_refused_only_by_a_full_decode() {
    let damaged = png_with_damaged_pixels();
    // --validate full: the decode finds it, a 400 before anything is queued.
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path(), &["--validate", "full"]).await;
    let r = post(&web.url, form("myfile", "d.png", damaged.clone()), true).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_an_image", "{body}");
    assert!(body["message"].as_str().unwrap().contains("png"), "{body}");
    assert_eq!(request_depth(state.path()).await, 0, "nothing was queued");
    web.stop().await;

    // The default walks the framing only: the file is queued (no worker runs here, so the
    // request times out with its id) and the worker's decode will answer it with a 422.
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path(), &["--request-timeout-secs", "1"]).await;
    let r = post(&web.url, form("myfile", "d.png", damaged), true).await;
    assert_eq!(r.status(), 504);
    assert_eq!(
        request_depth(state.path()).await,
        1,
        "queued for the worker"
    );
    // A file cut short is still refused by the web tier.
    let mut cut = png(64, 48);
    cut.truncate(cut.len() - 20);
    let r = post(&web.url, form("myfile", "c.png", cut), true).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        request_depth(state.path()).await,
        1,
        "the cut file was not queued"
    );
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_the_bare_label_or_json_inline_and_by_claim_check() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path(), &[]).await;
    let worker = echo_worker(state.path());

    // The course's form: field `myfile`, answer is the bare label.
    let r = post(&web.url, form("myfile", "test_0.JPEG", png(32, 32)), false).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().await.unwrap(), "label-of-test_0");

    // Any single file field, a path in the browser's file name, and JSON.
    let big = noisy_png(300, 300);
    assert!(
        big.len() > iras_protocol::MAX_MESSAGE_BYTES,
        "needs a claim check"
    );
    let r = post(&web.url, form("upload", "C:\\photos\\big.png", big), true).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["filename"], "big.png");
    assert_eq!(body["label"], "label-of-big");
    assert_eq!(body["score"], 0.5);
    assert_eq!(body["top_k"][0]["index"], 7);
    assert_eq!(body["worker"], "echo");
    let id = body["id"].as_str().unwrap().to_owned();
    let cloud = Cloud::open_local(state.path()).await.unwrap();
    let input = cloud.bucket("iras-input").await.unwrap();
    assert_eq!(
        input.list(&id).await.unwrap(),
        [format!("{id}/big.png")],
        "claim-check object"
    );

    // The finished result stays available by id.
    let r = reqwest::get(format!("{}/results/{id}", web.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "label-of-big");
    let r = reqwest::get(format!("{}/results/not-an-id", web.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let unknown = iras_protocol::RequestId::new();
    let r = reqwest::get(format!("{}/results/{unknown}", web.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let m = metrics(&web.url).await;
    assert!(
        m.contains(r#"iras_web_uploads_total{outcome="label"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"iras_web_results_total{delivery="delivered"} 2"#),
        "{m}"
    );
    assert!(
        m.contains("iras_web_upload_duration_seconds_count 2"),
        "{m}"
    );

    worker.abort();
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_is_bounded_and_a_timed_out_request_is_fetched_by_id_later() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(
        state.path(),
        &["--max-waiting", "1", "--request-timeout-secs", "2"],
    )
    .await;
    let url = web.url.clone();
    let first =
        tokio::spawn(
            async move { post(&url, form("myfile", "slow.png", png(16, 16)), true).await },
        );
    // Wait until the first request holds the only slot.
    for _ in 0..100 {
        if metrics(&web.url)
            .await
            .contains("iras_web_waiting_requests 1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = post(&web.url, form("myfile", "second.png", png(16, 16)), false).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));

    let r = first.await.unwrap();
    assert_eq!(r.status(), 504);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "timeout");
    assert_eq!(body["id"], id.as_str());

    let r = reqwest::get(format!("{}/results/{id}", web.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "still queued");
    let worker = echo_worker(state.path());
    let mut label = None;
    for _ in 0..200 {
        let r = reqwest::get(format!("{}/results/{id}", web.url))
            .await
            .unwrap();
        if r.status() == 200 {
            label = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(label.as_deref(), Some("label-of-slow"));
    let m = metrics(&web.url).await;
    assert!(
        m.contains(r#"iras_web_uploads_total{outcome="timeout"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"iras_web_uploads_total{outcome="overloaded"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"iras_web_results_total{delivery="recorded"} 1"#),
        "{m}"
    );
    worker.abort();
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classify_error_is_a_422_with_its_kind() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path(), &[]).await;
    let url = web.url.clone();
    let upload =
        tokio::spawn(async move { post(&url, form("myfile", "x.png", png(8, 8)), true).await });
    // Answer with an error, as the app tier does for an image it cannot decode.
    let cloud = Cloud::open_local(state.path()).await.unwrap();
    let requests = cloud.queue("iras-requests").await.unwrap();
    let options = ReceiveOptions {
        max_messages: 1,
        wait: Duration::from_secs(5),
        visibility_timeout: None,
    };
    let m = loop {
        if let Some(m) = requests.receive(options).await.unwrap().pop() {
            break m;
        }
    };
    let req = RequestMessage::decode(&m.body).unwrap();
    let outcome = Outcome::Error {
        kind: ErrorKind::UndecodableImage,
        message: "corrupt png".into(),
    };
    let resp = ResponseMessage::new(req.id, req.file_name, outcome, "w", Timings::default());
    cloud
        .queue(&req.reply_to)
        .await
        .unwrap()
        .send(OutgoingMessage::new(resp.encode().unwrap()))
        .await
        .unwrap();
    let r = upload.await.unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "undecodable_image");
    assert_eq!(body["id"], req.id.to_string());
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_waiting_request_finish() {
    let state = tempfile::tempdir().unwrap();
    let mut web = start_web(state.path(), &[]).await;
    let url = web.url.clone();
    let upload =
        tokio::spawn(async move { post(&url, form("myfile", "late.png", png(8, 8)), false).await });
    while request_depth(state.path()).await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    web.ask_to_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!web.handle.is_finished(), "drains instead of exiting");
    let worker = echo_worker(state.path());
    let r = upload.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "label-of-late");
    tokio::time::timeout(Duration::from_secs(30), web.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_listener_delivers_over_loopback_with_the_token() {
    let state = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal_addr: SocketAddr = internal.local_addr().unwrap();
    let addr = internal_addr.to_string();
    let web = start_web_with(
        state.path(),
        &[
            "--listener",
            "external",
            "--internal-listen",
            &addr,
            "--listener-token",
            token,
        ],
        Some(internal),
    )
    .await;

    // A wrong token is refused.
    let r = reqwest::Client::new()
        .post(format!("http://{addr}{DELIVERY_PATH}"))
        .bearer_auth("f".repeat(32))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // What the standalone listener does, by hand: ask the web tier which queue to poll (its
    // own, not the stack's response queue), take the result from it, post it back.
    let client = reqwest::Client::new();
    let ask = |token: String| {
        client
            .get(format!("http://{addr}{REPLY_QUEUE_PATH}"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(ask("f".repeat(32)).await.unwrap().status(), 401);
    let named: ReplyQueueReply = ask(token.to_owned()).await.unwrap().json().await.unwrap();
    let reply_queue = named.reply_queue;
    assert!(
        reply_queue.starts_with("iras-responses-web-"),
        "{reply_queue}"
    );
    let cloud = Cloud::open_local(state.path()).await.unwrap();
    let replies = cloud.queue(&reply_queue).await.unwrap();
    let worker = echo_worker(state.path());
    let url = web.url.clone();
    let upload =
        tokio::spawn(
            async move { post(&url, form("myfile", "split.png", png(8, 8)), false).await },
        );
    let received = eventually(
        "the result on the web tier's reply queue",
        Duration::from_secs(30),
        || async {
            let options = ReceiveOptions {
                max_messages: 1,
                wait: Duration::from_secs(1),
                visibility_timeout: None,
            };
            replies.receive(options).await.unwrap().into_iter().next()
        },
    )
    .await;
    let delivered: DeliveryReply = client
        .post(format!("http://{addr}{DELIVERY_PATH}"))
        .bearer_auth(token)
        .body(received.body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(delivered.delivery, Delivery::Delivered);
    let r = upload.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "label-of-split");
    worker.abort();
    web.stop().await;
}

#[test]
fn an_external_listener_needs_a_token_and_a_loopback_address() {
    let args = Cli::try_parse_from(["web-tier", "--listener", "external"]).unwrap();
    assert!(args.validate().unwrap_err().to_string().contains("token"));
    let args = Cli::try_parse_from([
        "web-tier",
        "--listener",
        "external",
        "--internal-listen",
        "0.0.0.0:8001",
        "--listener-token",
        "0123456789abcdef0123456789abcdef",
    ])
    .unwrap();
    assert!(
        args.validate()
            .unwrap_err()
            .to_string()
            .contains("loopback")
    );
    assert!(Cli::try_parse_from(["web-tier", "--listener-token", "short"]).is_err());
}

/// Two web tiers on one stack, one burst split across them: each gets every one of its own
/// answers (none takes the other's), and each deletes its own reply queue at its stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_web_tiers_share_a_stack_without_taking_each_others_results() {
    let state = tempfile::tempdir().unwrap();
    let first = start_web(state.path(), &["--web-id", "first"]).await;
    let second = start_web(state.path(), &[]).await;
    let worker = echo_worker(state.path());
    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..40 {
        let url = if i % 2 == 0 { &first.url } else { &second.url }.clone();
        uploads.spawn(async move {
            let name = format!("burst_{i}.png");
            let r = post(&url, form("myfile", &name, png(8, 8)), false).await;
            (i, r.status(), r.text().await.unwrap())
        });
    }
    let mut answered = 0;
    while let Some(done) = uploads.join_next().await {
        let (i, status, body) = done.unwrap();
        assert_eq!(status, 200, "upload {i}: {body}");
        assert_eq!(body, format!("label-of-burst_{i}"));
        answered += 1;
    }
    assert_eq!(answered, 40);
    for web in [&first, &second] {
        let m = reqwest::get(format!("{}/metrics", web.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            m.contains(r#"iras_web_results_total{delivery="delivered"} 20"#),
            "{m}"
        );
        assert!(
            !m.contains(r#"iras_web_results_total{delivery="recorded"}"#)
                || m.contains(r#"iras_web_results_total{delivery="recorded"} 0"#),
            "a web tier recorded a result it did not wait for: {m}"
        );
    }
    worker.abort();
    first.stop().await;
    second.stop().await;
    let cloud = Cloud::open_local(state.path()).await.unwrap();
    let err = cloud
        .queue("iras-responses-web-first")
        .await
        .expect_err("the first tier's queue outlived its stop");
    assert!(
        matches!(err, iras_cloud::CloudError::QueueNotFound { .. }),
        "{err}"
    );
    cloud
        .queue("iras-responses")
        .await
        .expect("the stack's response queue stays");
}
