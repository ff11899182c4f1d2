//! The `listener` binary end to end: it asks the web tier which queue to poll, takes
//! responses off it, posts them to a delivery endpoint with the token, deletes them once
//! taken, asks again when the queue goes away (the web tier restarted with a new one), and
//! exits 0 on SIGTERM. The endpoints here are a stand-in that records what it gets (the web
//! tier's real ones are tested in `web-tier/tests/http.rs`).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use iras_cloud::{Cloud, OutgoingMessage, StackSpec};
use iras_protocol::internal::{DELIVERY_PATH, REPLY_QUEUE_PATH, ReplyQueueReply};
use iras_protocol::{FileName, Outcome, RequestId, ResponseMessage, Timings};
use iras_testkit::eventually;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn response(id: RequestId) -> String {
    let outcome = Outcome::Label {
        label: "tabby".into(),
        score: 0.9,
        top_k: vec![],
    };
    ResponseMessage::new(
        id,
        FileName::parse("a.jpg").unwrap(),
        outcome,
        "w",
        Timings::default(),
    )
    .encode()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_with_the_token_deletes_and_stops_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let cloud = Cloud::open_local(state.path()).await.unwrap();
    cloud.provision(&StackSpec::default()).await.unwrap();
    // The web tier's own reply queue, as it makes one at start.
    let first = "iras-responses-web-first";
    let responses = cloud
        .create_queue_like("iras-responses", first)
        .await
        .unwrap();
    let ids: Vec<RequestId> = (0..3).map(|_| RequestId::new()).collect();
    for id in &ids {
        responses
            .send(OutgoingMessage::new(response(*id)))
            .await
            .unwrap();
    }

    // The stand-in endpoints: name the reply queue; refuse the first delivery, so a
    // refused delivery is retried.
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reply_queue = Arc::new(Mutex::new(first.to_owned()));
    let app = {
        let got = got.clone();
        let reply_queue = reply_queue.clone();
        axum::Router::new()
            .route(
                REPLY_QUEUE_PATH,
                axum::routing::get(move |headers: HeaderMap| {
                    let reply_queue = reply_queue.clone();
                    async move {
                        assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));
                        let name = reply_queue.lock().unwrap().clone();
                        axum::Json(ReplyQueueReply { reply_queue: name })
                    }
                }),
            )
            .route(
                DELIVERY_PATH,
                axum::routing::post(move |headers: HeaderMap, body: String| {
                    let (got, calls) = (got.clone(), calls.clone());
                    async move {
                        assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));
                        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                            return (StatusCode::SERVICE_UNAVAILABLE, "busy".to_owned());
                        }
                        got.lock().unwrap().push(body);
                        (StatusCode::OK, r#"{"delivery":"delivered"}"#.to_owned())
                    }
                }),
            )
    };
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(server, app).await.unwrap() });

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_listener"))
        .args([
            "--deliver-to",
            &format!("http://{addr}"),
            "--listener-wait-secs",
            "1",
        ])
        .args(["--listener-visibility-timeout-secs", "2"])
        .env("IRAS_STATE_DIR", state.path())
        .env("IRAS_LISTENER_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    eventually(
        "all delivered and deleted",
        Duration::from_secs(30),
        || async {
            let delivered = got.lock().unwrap().len();
            (delivered >= 3 && responses.depth().await.unwrap().total() == 0).then_some(())
        },
    )
    .await;
    let delivered: Vec<RequestId> = got
        .lock()
        .unwrap()
        .iter()
        .map(|b| ResponseMessage::decode(b).unwrap().id)
        .collect();
    for id in &ids {
        assert!(delivered.contains(id), "{id} delivered");
    }

    // The web tier restarts: its queue is deleted and it names a new one. The listener
    // notices the old one is gone, asks again, and delivers from the new one.
    let second = "iras-responses-web-second";
    let responses = cloud
        .create_queue_like("iras-responses", second)
        .await
        .unwrap();
    *reply_queue.lock().unwrap() = second.to_owned();
    cloud.delete_queue(first).await.unwrap();
    let late = RequestId::new();
    responses
        .send(OutgoingMessage::new(response(late)))
        .await
        .unwrap();
    eventually(
        "a delivery from the web tier's new queue",
        Duration::from_secs(30),
        || async {
            let got = got.lock().unwrap();
            got.iter()
                .any(|b| ResponseMessage::decode(b).unwrap().id == late)
                .then_some(())
        },
    )
    .await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn refuses_a_delivery_address_off_this_machine_and_a_missing_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_listener"))
        .args(["--deliver-to", "http://10.1.2.3:8001"])
        .env("IRAS_LISTENER_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_listener"))
        .env_remove("IRAS_LISTENER_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
}

/// A web tier that refuses the token: the listener says so at start and exits non-zero,
/// instead of dead-lettering every result later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_web_tier_refuses_stops_the_listener_at_start() {
    let state = tempfile::tempdir().unwrap();
    let cloud = Cloud::open_local(state.path()).await.unwrap();
    cloud.provision(&StackSpec::default()).await.unwrap();
    let app = axum::Router::new().route(
        REPLY_QUEUE_PATH,
        axum::routing::get(|| async {
            (
                StatusCode::UNAUTHORIZED,
                "missing or wrong listener token\n",
            )
        }),
    );
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(server, app).await.unwrap() });
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_listener"))
            .args(["--deliver-to", &format!("http://{addr}")])
            .env("IRAS_STATE_DIR", state.path())
            .env("IRAS_LISTENER_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refuses this listener's token") && stderr.contains("IRAS_LISTENER_TOKEN"),
        "{stderr}"
    );
}
