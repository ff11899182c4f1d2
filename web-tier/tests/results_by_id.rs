//! Results by request id and idempotent retries, on both backends: every test runs as
//! `local::…` (a fresh state directory) and as `aws::…` (unique queue and bucket names on
//! the moto server named in `IRAS_TEST_AWS_ENDPOINT`, which `scripts/test` starts; the aws
//! variants fail, never skip, without it).
//!
//! The app tier is replaced by an echo worker that does what the real one does with the
//! buckets — the `(stem, label)` object, then the whole response under
//! `results/<id>.json`, then the answer — and labels each image by its size, so two
//! uploads with one file name get different labels. It counts the requests it received.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use iras_cloud::{Cloud, OutgoingMessage, ReceiveOptions};
use iras_protocol::{ImagePayload, RequestMessage};
use iras_testkit::TestStack;
use iras_testkit::web::Web;
use iras_web_tier::Cli;
use reqwest::multipart::{Form, Part};
use tokio::task::JoinHandle;

/// The stack under test: a local one or one on moto.
type Stack = TestStack;

/// A web tier on `stack`, with `extra` flags.
async fn start_web(stack: &Stack, extra: &[&str]) -> Web {
    let mut argv = vec!["web-tier".to_owned()];
    argv.extend(stack.flags());
    argv.extend(["--listener-wait-secs".to_owned(), "1".to_owned()]);
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    Web::serve(Cli::try_parse_from(argv).unwrap(), None).await
}

/// A PNG whose encoded size grows with `width`: the echo worker's label.
fn png(width: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, 8, |x, y| {
        image::Rgb([(x * 31 % 256) as u8, (y * 17 % 256) as u8, (x ^ y) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn label_of(bytes: &[u8]) -> String {
    format!("size-{}", bytes.len())
}

/// The app tier's bucket writes and answer, without the model. Counts what it received.
struct Echo {
    received: Arc<AtomicUsize>,
    handle: JoinHandle<()>,
}

impl Echo {
    fn start(cloud: Cloud, stack: &Stack, delay: Duration) -> Self {
        let (req, input, output) = (
            stack.spec.request_queue.clone(),
            stack.spec.input_bucket.clone(),
            stack.spec.output_bucket.clone(),
        );
        let received = Arc::new(AtomicUsize::new(0));
        let count = received.clone();
        let handle = tokio::spawn(async move {
            let requests = cloud.queue(&req).await.unwrap();
            let input = cloud.bucket(&input).await.unwrap();
            let output = cloud.bucket(&output).await.unwrap();
            loop {
                let batch = requests
                    .receive(ReceiveOptions {
                        max_messages: 10,
                        wait: Duration::from_secs(1),
                        visibility_timeout: Some(Duration::from_secs(30)),
                    })
                    .await
                    .unwrap();
                for m in batch {
                    count.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let req = RequestMessage::decode(&m.body).unwrap();
                    let bytes = match &req.image {
                        ImagePayload::Inline { .. } => req.image.decode_inline().unwrap().unwrap(),
                        ImagePayload::Claim { key } => input.get(key).await.unwrap(),
                    };
                    let label = label_of(&bytes);
                    output
                        .put(&req.output_key(), req.output_value(&label).into_bytes())
                        .await
                        .unwrap();
                    let resp = iras_testkit::echo::labelled(req.id, req.file_name.clone(), label);
                    let body = resp.encode().unwrap();
                    output
                        .put(&req.result_key(), body.clone().into_bytes())
                        .await
                        .unwrap();
                    let replies = cloud.queue(&req.reply_to).await.unwrap();
                    replies.send(OutgoingMessage::new(body)).await.unwrap();
                    requests.delete(&m.receipt).await.unwrap();
                }
            }
        });
        Self { received, handle }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn form(name: &str, bytes: Vec<u8>) -> Form {
    Form::new().part("myfile", Part::bytes(bytes).file_name(name.to_owned()))
}

async fn upload(url: &str, name: &str, bytes: Vec<u8>, key: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("accept", "application/json")
        .timeout(Duration::from_secs(60))
        .multipart(form(name, bytes));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await.unwrap()
}

async fn json_of(r: reqwest::Response) -> serde_json::Value {
    r.json().await.unwrap()
}

async fn result_json(url: &str, id: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(format!("{url}/results/{id}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Two uploads named `test_0.png` share the graded `test_0` object, but each id gets its
/// own label.
async fn same_file_name_gets_its_own_label_by_id(stack: Stack) {
    let web = start_web(&stack, &[]).await;
    let _echo = Echo::start(stack.cloud.clone(), &stack, Duration::ZERO);
    let (a, b) = (png(16), png(64));
    let (label_a, label_b) = (label_of(&a), label_of(&b));
    assert_ne!(label_a, label_b);
    let ra = json_of(upload(&web.url, "test_0.png", a, None).await).await;
    let rb = json_of(upload(&web.url, "test_0.png", b, None).await).await;
    assert_eq!(ra["label"], label_a.as_str());
    assert_eq!(rb["label"], label_b.as_str());
    for (r, label) in [(&ra, &label_a), (&rb, &label_b)] {
        let (status, got) = result_json(&web.url, r["id"].as_str().unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(got["label"], label.as_str(), "{got}");
        assert_eq!(got["filename"], "test_0.png");
    }
    web.stop().await;
    // After a restart (nothing in memory) the same, from the id-keyed objects.
    let web = start_web(&stack, &[]).await;
    for (r, label) in [(&ra, &label_a), (&rb, &label_b)] {
        let (status, got) = result_json(&web.url, r["id"].as_str().unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(got["label"], label.as_str(), "{got}");
    }
    // The graded layout is untouched: one `test_0` object, the later write's label.
    let output = stack
        .cloud
        .clone()
        .bucket(&stack.spec.output_bucket)
        .await
        .unwrap();
    assert_eq!(
        output.get("test_0").await.unwrap(),
        format!("(test_0, {label_b})").into_bytes()
    );
    web.stop().await;
}

/// A result is found by id after a restart, a result nobody fetched in time too; an
/// unknown id is a 404 and a malformed one a 400.
async fn result_by_id_after_a_restart(stack: Stack) {
    let web = start_web(&stack, &["--request-timeout-secs", "1"]).await;
    // The worker starts late, so the upload times out first (504 with its id).
    let r = upload(&web.url, "late.png", png(20), None).await;
    assert_eq!(r.status(), 504);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let (status, _) = result_json(&web.url, &id).await;
    assert_eq!(status, 202, "queued here, not answered yet");
    web.stop().await;

    let echo = Echo::start(stack.cloud.clone(), &stack, Duration::ZERO);
    let web = start_web(&stack, &[]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        let (status, got) = result_json(&web.url, &id).await;
        if status == 200 {
            break got;
        }
        assert_eq!(
            status, 404,
            "unknown to the new web tier until the result is stored"
        );
        assert!(tokio::time::Instant::now() < deadline, "never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["label"], label_of(&png(20)).as_str());
    assert_eq!(echo.received(), 1);
    let (status, got) = result_json(&web.url, "00000000-0000-4000-8000-000000000000").await;
    assert_eq!(status, 404, "{got}");
    let (status, got) = result_json(&web.url, "not-an-id").await;
    assert_eq!(status, 400, "{got}");
    web.stop().await;
}

/// Retries with one `Idempotency-Key`: concurrent ones join, later ones (on this web tier
/// or after a restart) are answered from the result; the image is classified once.
async fn a_retried_upload_is_classified_once(stack: Stack) {
    let web = start_web(&stack, &[]).await;
    let echo = Echo::start(stack.cloud.clone(), &stack, Duration::from_millis(1500));
    let key = "4f0c6e1e-6a51-4c44-9e7a-8d1c2b3a4f50";
    let image = png(24);
    let label = label_of(&image);
    let (first, second) = tokio::join!(
        upload(&web.url, "retry.png", image.clone(), Some(key)),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            upload(&web.url, "retry.png", image.clone(), Some(key)).await
        }
    );
    for r in [first, second] {
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-request-id"], key);
        let got = json_of(r).await;
        assert_eq!(got["label"], label.as_str());
        assert_eq!(got["id"], key);
    }
    assert_eq!(echo.received(), 1, "the joined retry was queued again");
    // A later retry here, with the key in the other header and upper case: from memory.
    let r = reqwest::Client::new()
        .post(format!("{}/", web.url))
        .header("x-request-id", key.to_uppercase())
        .multipart(form("retry.png", image.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), label);
    // The same key for another file is a conflict, not that file's answer.
    let r = upload(&web.url, "other.png", png(30), Some(key)).await;
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["error"], "id_conflict");
    // A key that is not a UUID is refused before anything is read.
    let r = upload(&web.url, "retry.png", image.clone(), Some("my-key")).await;
    assert_eq!(r.status(), 400);
    let got = json_of(r).await;
    assert_eq!(got["error"], "bad_request_id");
    assert!(got["message"].as_str().unwrap().contains("not a UUID"));
    web.stop().await;

    // After a restart: from the stored result.
    let web = start_web(&stack, &[]).await;
    let r = upload(&web.url, "retry.png", image.clone(), Some(key)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["label"], label.as_str());
    let r = upload(&web.url, "other.png", png(30), Some(key)).await;
    assert_eq!(r.status(), 409);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(echo.received(), 1, "a retry was classified again");
    web.stop().await;
}

/// Under the file-name scheme the stem `results` is reserved for the id-keyed objects.
async fn the_results_stem_is_reserved(stack: Stack) {
    let web = start_web(&stack, &[]).await;
    let r = upload(&web.url, "results.png", png(8), None).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r).await["error"], "reserved_file_name");
    web.stop().await;
    // Under the request-id scheme the name is just a name.
    let web = start_web(&stack, &["--key-scheme", "request-id"]).await;
    let _echo = Echo::start(stack.cloud.clone(), &stack, Duration::ZERO);
    let r = upload(&web.url, "results.png", png(8), None).await;
    assert_eq!(r.status(), 200);
    web.stop().await;
}

iras_testkit::both_backends!(
    same_file_name_gets_its_own_label_by_id,
    result_by_id_after_a_restart,
    a_retried_upload_is_classified_once,
    the_results_stem_is_reserved,
);
