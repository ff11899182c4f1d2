//! Hostile clients against the web tier over real loopback HTTP: decompression bombs,
//! slowloris connections, slow bodies, and the connection limit. An echo worker stands in for
//! the app tier (the web tier's defences are what is under test); the figures (peak RSS of
//! both tiers under 20 bombs, 2,000 slowloris connections) come from `scripts/bench-faults`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use clap::Parser;
use iras_cloud::Cloud;
use iras_web_tier::Cli;
use reqwest::multipart::{Form, Part};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use iras_testkit::bomb::{BOMB_SIDE, png_bomb};
use iras_testkit::echo::local_echo_worker as echo_worker;
use iras_testkit::web::Web;

/// A web tier on the local stack in `state`, with `extra` flags.
async fn start_web(state: &std::path::Path, extra: &[&str]) -> Web {
    let mut argv = vec!["web-tier", "--state-dir", state.to_str().unwrap()];
    argv.extend_from_slice(extra);
    Web::serve(Cli::try_parse_from(argv).unwrap(), None).await
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x ^ y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn upload(url: &str, name: &str, bytes: Vec<u8>) -> reqwest::Response {
    let form = Form::new().part("myfile", Part::bytes(bytes).file_name(name.to_owned()));
    reqwest::Client::new()
        .post(format!("{url}/"))
        .header("accept", "application/json")
        .multipart(form)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap()
}

async fn queued(state: &std::path::Path) -> u64 {
    let cloud = Cloud::open_local(state).await.unwrap();
    let q = cloud.queue("iras-requests").await.unwrap();
    q.depth().await.unwrap().total()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_get_413_with_a_reason_while_normal_uploads_succeed() {
    let bomb = tokio::task::spawn_blocking(|| png_bomb(BOMB_SIDE))
        .await
        .unwrap();
    assert!(
        bomb.len() < 1024 * 1024,
        "the bomb is small: {}",
        bomb.len()
    );
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path(), &[]).await;

    // Nothing is queued for a bomb: checked before a worker runs.
    let r = upload(&web.url, "bomb.png", bomb.clone()).await;
    assert_eq!(r.status().as_u16(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_large", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("6300x6300") && message.contains("memory"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert_eq!(queued(state.path()).await, 0);

    let worker = echo_worker(state.path());
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (url, bomb) = (web.url.clone(), bomb.clone());
        tasks.spawn(async move {
            let r = upload(&url, &format!("bomb_{n}.png"), bomb).await;
            (false, r.status().as_u16(), r.text().await.unwrap())
        });
    }
    for n in 0..5 {
        let url = web.url.clone();
        tasks.spawn(async move {
            let r = upload(&url, &format!("ok_{n}.png"), png(640, 480)).await;
            (true, r.status().as_u16(), r.text().await.unwrap())
        });
    }
    let (mut bombs, mut normal) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (is_normal, status, body) = joined.unwrap();
        if is_normal {
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("label-of-ok_"), "{body}");
            normal += 1;
        } else {
            assert_eq!(status, 413, "{body}");
            assert!(body.contains("too_large"), "{body}");
            bombs += 1;
        }
    }
    assert_eq!((bombs, normal), (20, 5));
    worker.abort();
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_within_the_limits_but_over_the_budget_are_refused_at_start() {
    let state = tempfile::tempdir().unwrap();
    let args = Cli::try_parse_from([
        "web-tier",
        "--state-dir",
        state.path().to_str().unwrap(),
        "--max-decoded-bytes",
        "2000000",
        "--decode-memory-bytes",
        "1000000",
    ])
    .unwrap();
    let err = args.validate().unwrap_err().to_string();
    assert!(err.contains("--decode-memory-bytes"), "{err}");
}

/// Opens `n` connections that each send half a request header and then nothing.
async fn slowloris(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
            .await
            .unwrap();
        held.push(s);
    }
    held
}

/// Whether the server closed `s` (end of stream or reset) within `within`.
async fn closed_by_server(mut s: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // e.g. a 408 before the close
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_block_uploads_and_are_closed_after_the_header_timeout() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path(), &["--header-timeout-secs", "2"]).await;
    let worker = echo_worker(state.path());
    let held = slowloris(web.addr, 500).await;

    let r = upload(&web.url, "normal.png", png(64, 64)).await;
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("label-of-normal"), "{body}");
    let mut closes = tokio::task::JoinSet::new();
    for s in held {
        closes.spawn(closed_by_server(s, Duration::from_secs(20)));
    }
    let mut closed = 0;
    while let Some(c) = closes.join_next().await {
        closed += usize::from(c.unwrap());
    }
    assert_eq!(
        closed, 500,
        "every half-open connection is closed by the server"
    );
    worker.abort();
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_new_connections_wait_for_a_free_one() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(
        state.path(),
        &["--header-timeout-secs", "2", "--max-connections", "8"],
    )
    .await;
    let worker = echo_worker(state.path());
    // The health check of `start` has closed its connection; make sure the server saw it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = slowloris(web.addr, 8).await;
    // All eight slots are taken: a ninth client is not served while they are held...
    let client = reqwest::Client::new();
    let waiting = client
        .get(format!("{}/healthz", web.url))
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(waiting.is_err(), "served beyond the limit: {waiting:?}");
    // ...and is once the header timeout has closed them.
    let r = upload(&web.url, "after.png", png(32, 32)).await;
    assert_eq!(r.status().as_u16(), 200);
    drop(held);
    worker.abort();
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_a_408_with_a_reason() {
    let state = tempfile::tempdir().unwrap();
    let web = start_web(state.path(), &["--body-timeout-secs", "1"]).await;
    let mut s = TcpStream::connect(web.addr).await.unwrap();
    let head = "POST / HTTP/1.1\r\nHost: localhost\r\n\
        Content-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 100000\r\n\r\n\
        --XYZ\r\nContent-Disposition: form-data; name=\"myfile\"; filename=\"a.png\"\r\n\r\nPNG";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("within") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server answers");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within 1 s"), "{answer}");
    web.stop().await;
}
