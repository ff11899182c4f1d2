//! `app-tier serve` on the local backend with the real model: requests in, labels out, both
//! buckets written, poison answered with an error, garbage left for the dead-letter queue,
//! and a clean stop on shutdown. Needs `scripts/fetch-model --with-test-assets`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::num::NonZeroUsize;
use std::time::Duration;

use iras_app_tier::{ModelArgs, ServeArgs};
use iras_cli::CloudArgs;
use iras_cloud::{Cloud, OutgoingMessage, ReceiveOptions, StackSpec};
use iras_protocol::{
    ErrorKind, FileName, ImagePayload, KeyScheme, Outcome, PlannedRequest, RequestId,
    RequestMessage, ResponseMessage,
};

const CATS: [&str; 5] = [
    "tabby",
    "tiger cat",
    "Persian cat",
    "Siamese cat",
    "Egyptian cat",
];

fn golden(stem: &str) -> Vec<u8> {
    let path = iras_classifier::paths::cache_dir()
        .join("golden")
        .join(format!("{stem}.png"));
    std::fs::read(&path).unwrap_or_else(|_| {
        panic!(
            "{} missing: run `scripts/fetch-model --with-test-assets` first",
            path.display()
        )
    })
}

fn request(name: &str, image: ImagePayload) -> RequestMessage {
    RequestMessage {
        version: iras_protocol::PROTOCOL_VERSION,
        id: RequestId::new(),
        file_name: FileName::parse(name).unwrap(),
        image,
        reply_to: "iras-responses".into(),
        submitted_at_ms: 0,
        top_k: 3,
        key_scheme: KeyScheme::FileName,
    }
}

/// `app-tier serve` on the stack of [`provisioned`], one thread, named `app-tier-test`.
fn serve_args(state: &std::path::Path) -> ServeArgs {
    ServeArgs {
        cloud: CloudArgs::local(state),
        model: ModelArgs {
            model_dir: None,
            ort_library: None,
            threads: NonZeroUsize::new(1),
            limits: iras_cli::LimitArgs::default(),
        },
        stack: iras_cli::StackArgs {
            provision: iras_cli::Provision::Never,
            ..Default::default()
        },
        workers: None,
        batch_size: 10,
        visibility_timeout_secs: 30,
        wait_secs: 1,
        max_processing_secs: 120,
        decode: iras_cli::DecodeArgs::default(),
        worker_id: Some("app-tier-test".into()),
    }
}

/// A local stack with the worker's default queue and bucket names.
async fn provisioned(state: &std::path::Path) -> Cloud {
    let cloud = Cloud::open_local(state).await.unwrap();
    cloud
        .provision(&StackSpec {
            request_queue: "iras-requests".into(),
            response_queue: "iras-responses".into(),
            input_bucket: "iras-input".into(),
            output_bucket: "iras-output".into(),
            max_receive_count: 2,
            visibility_timeout: Duration::from_secs(30),
        })
        .await
        .unwrap();
    cloud
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_requests_end_to_end_and_stops_cleanly() {
    let state = tempfile::tempdir().unwrap();
    let cloud = provisioned(state.path()).await;
    let requests = cloud.queue("iras-requests").await.unwrap();
    let input = cloud.bucket("iras-input").await.unwrap();

    // As the web tier sends them: inline when the image fits a message, else a claim check
    // (chelsea.png, 220 KB as base64 JSON, is over the 256 KiB limit; coffee.png is not).
    let chelsea = golden("chelsea");
    let mut bodies = Vec::new();
    for (name, bytes) in [
        ("chelsea.png", chelsea.clone()),
        ("coffee.png", golden("coffee")),
    ] {
        let planned = iras_protocol::build_request(
            RequestId::new(),
            &FileName::parse(name).unwrap(),
            &bytes,
            "iras-responses",
            0,
            3,
            KeyScheme::FileName,
            iras_protocol::MAX_MESSAGE_BYTES,
        )
        .unwrap();
        if let PlannedRequest::NeedsClaim { key, .. } = &planned {
            input.put(key, bytes).await.unwrap();
        }
        bodies.push(planned.body().to_owned());
    }
    // … and what must not crash a worker: bad base64, a missing claim, a non-request.
    let poison = request(
        "poison.jpg",
        ImagePayload::Inline {
            data: "!!! not base64 !!!".into(),
        },
    );
    let lost = request(
        "lost.jpg",
        ImagePayload::Claim {
            key: "claims/nowhere.jpg".into(),
        },
    );
    // … and a request whose web tier stopped and deleted its own reply queue.
    cloud
        .create_queue_like("iras-responses", "iras-responses-web-gone")
        .await
        .unwrap();
    cloud.delete_queue("iras-responses-web-gone").await.unwrap();
    input
        .put("claims/orphan.png", golden("coffee"))
        .await
        .unwrap();
    let mut orphan = request(
        "orphan.png",
        ImagePayload::Claim {
            key: "claims/orphan.png".into(),
        },
    );
    orphan.reply_to = "iras-responses-web-gone".into();
    bodies.extend([
        poison.encode().unwrap(),
        lost.encode().unwrap(),
        orphan.encode().unwrap(),
    ]);
    for body in bodies {
        requests.send(OutgoingMessage::new(body)).await.unwrap();
    }
    requests
        .send(OutgoingMessage::new("this is not a request"))
        .await
        .unwrap();

    let args = serve_args(state.path());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(iras_app_tier::serve(args, async {
        let _ = stopped.await;
    }));

    let responses = cloud.queue("iras-responses").await.unwrap();
    let mut answers = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while answers.len() < 4 && tokio::time::Instant::now() < deadline {
        let got = responses
            .receive(ReceiveOptions {
                max_messages: 10,
                wait: Duration::from_secs(2),
                visibility_timeout: None,
            })
            .await
            .unwrap();
        for m in got {
            let r = ResponseMessage::decode(&m.body).unwrap();
            assert_eq!(r.worker, "app-tier-test");
            answers.insert(r.file_name.as_str().to_owned(), r.outcome);
            responses.delete(&m.receipt).await.unwrap();
        }
    }
    assert_eq!(answers.len(), 4, "answers: {answers:?}");
    match &answers["chelsea.png"] {
        Outcome::Label { label, top_k, .. } => {
            assert!(
                CATS.contains(&label.as_str()),
                "chelsea is a cat, not {label}"
            );
            assert_eq!(top_k.len(), 3);
        }
        other => panic!("chelsea: {other:?}"),
    }
    assert!(matches!(&answers["coffee.png"], Outcome::Label { label, .. } if label == "espresso"));
    assert!(matches!(
        &answers["poison.jpg"],
        Outcome::Error {
            kind: ErrorKind::BadPayload,
            ..
        }
    ));
    assert!(matches!(
        &answers["lost.jpg"],
        Outcome::Error {
            kind: ErrorKind::MissingClaim,
            ..
        }
    ));

    // The graded layout: images by file name, results by stem.
    assert_eq!(input.get("chelsea.png").await.unwrap(), chelsea);
    assert!(input.get("coffee.png").await.is_ok());
    let output = cloud.bucket("iras-output").await.unwrap();
    assert_eq!(output.get("coffee").await.unwrap(), b"(coffee, espresso)");
    // The orphan is answered by id only: nobody waits on a deleted queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let orphan_result = loop {
        match output.get(&orphan.result_key()).await {
            Ok(bytes) => break bytes,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the orphan was not answered by id: {e}"),
        }
    };
    let orphan_result =
        ResponseMessage::decode(std::str::from_utf8(&orphan_result).unwrap()).unwrap();
    assert!(matches!(&orphan_result.outcome, Outcome::Label { label, .. } if label == "espresso"));
    // Beside them, every answer (errors too) by request id, under `results/`.
    let keys = output.list("").await.unwrap();
    let graded: Vec<_> = keys
        .iter()
        .filter(|k| !k.starts_with(iras_protocol::RESULTS_PREFIX))
        .collect();
    assert!(
        graded
            .iter()
            .all(|k| ["chelsea", "coffee", "orphan"].contains(&k.as_str())),
        "{keys:?}"
    );
    assert_eq!(keys.len() - graded.len(), 5, "{keys:?}");
    let by_id = output.get(&poison.result_key()).await.unwrap();
    let by_id = ResponseMessage::decode(std::str::from_utf8(&by_id).unwrap()).unwrap();
    assert_eq!(by_id.id, poison.id);
    assert_eq!(&by_id.outcome, &answers["poison.jpg"]);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("serve did not stop after shutdown")
        .unwrap()
        .unwrap();
    // Everything answered was deleted, the orphan too; only the non-request is left (for
    // the dead-letter queue).
    let depth = requests.depth().await.unwrap();
    assert_eq!(depth.total(), 1, "{depth:?}");
}

/// The binary as the fleet runs it: reports ready through `IRAS_READY_FILE`, and on
/// SIGTERM stops receiving and exits 0 well within a long poll's wait.
#[tokio::test]
async fn the_binary_reports_ready_and_exits_cleanly_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let _cloud = provisioned(state.path()).await;
    let ready = state.path().join("ready");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_app-tier"))
        .args(["serve", "--threads", "1", "--wait-secs", "20"])
        .env("IRAS_STATE_DIR", state.path())
        .env("IRAS_READY_FILE", &ready)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "never reported ready");
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited before it was ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // In its 20 s long poll now; SIGTERM must not wait for it to end.
    let asked = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// An outage that outlasts every receive the queue allows (here the input bucket, replaced
/// by a file under the running worker, so even root cannot write to it): the request is
/// redelivered until its last receive, which answers the client with an `unavailable`
/// error (also kept by id) instead of leaving it to silence and the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_last_receive_is_an_error_answer_not_silence() {
    let state = tempfile::tempdir().unwrap();
    let cloud = provisioned(state.path()).await;
    let requests = cloud.queue("iras-requests").await.unwrap();
    let mut args = serve_args(state.path());
    // One message at a time, redelivered every 2 s, dead-lettered after 2 receives (as
    // provisioned above; the worker reads that from the queue).
    args.batch_size = 1;
    args.visibility_timeout_secs = 2;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(iras_app_tier::serve(args, async {
        let _ = stopped.await;
    }));
    let mut img = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 128]))
        .write_to(&mut img, image::ImageFormat::Png)
        .unwrap();
    let responses = cloud.queue("iras-responses").await.unwrap();
    let next_answer = || async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no answer");
            let got = responses
                .receive(ReceiveOptions {
                    max_messages: 1,
                    wait: Duration::from_secs(2),
                    visibility_timeout: None,
                })
                .await
                .unwrap();
            if let Some(m) = got.first() {
                responses.delete(&m.receipt).await.unwrap();
                break ResponseMessage::decode(&m.body).unwrap();
            }
        }
    };
    // A first request answered: the worker is up, with its bucket handles.
    let warm = request("warm.png", ImagePayload::inline(img.get_ref()));
    requests
        .send(OutgoingMessage::new(warm.encode().unwrap()))
        .await
        .unwrap();
    assert_eq!(next_answer().await.id, warm.id);

    // Now the input bucket breaks, and stays broken.
    let input_dir = state.path().join("buckets").join("iras-input");
    assert!(input_dir.is_dir(), "{}", input_dir.display());
    std::fs::rename(&input_dir, state.path().join("iras-input.away")).unwrap();
    std::fs::write(&input_dir, b"not a directory").unwrap();
    let doomed = request("doomed.png", ImagePayload::inline(img.get_ref()));
    requests
        .send(OutgoingMessage::new(doomed.encode().unwrap()))
        .await
        .unwrap();
    let answer = next_answer().await;
    assert_eq!(answer.id, doomed.id);
    match &answer.outcome {
        Outcome::Error { kind, message } => {
            assert_eq!(*kind, ErrorKind::Unavailable, "{message}");
            assert!(message.contains("gave up"), "{message}");
        }
        other => panic!("expected an error answer, got {other:?}"),
    }
    let by_id = cloud
        .bucket("iras-output")
        .await
        .unwrap()
        .get(&doomed.result_key())
        .await
        .unwrap();
    let by_id = ResponseMessage::decode(std::str::from_utf8(&by_id).unwrap()).unwrap();
    assert_eq!(by_id.outcome, answer.outcome);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("serve did not stop after shutdown")
        .unwrap()
        .unwrap();
    // Answered and deleted: nothing left for the dead-letter queue.
    assert_eq!(requests.depth().await.unwrap().total(), 0);
    let dlq = cloud.queue("iras-requests-dlq").await.unwrap();
    assert_eq!(dlq.depth().await.unwrap().total(), 0);
}
