//! The live view over real HTTP, on both backends: `GET /live` streams snapshots in which a
//! backlog, the fleet's instances (launched through another handle, as the scaler does: a
//! local process, or an EC2 instance on moto) and the results as they arrive all show; the images behind the recent results are served back
//! as images; and an open stream does not hold up the web tier's shutdown.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use clap::Parser;
use iras_testkit::TestStack;
use iras_testkit::client::upload;
use iras_testkit::echo::echo_worker;
use iras_testkit::fleet::StandIn;
use iras_testkit::web::Web;
use iras_web_tier::Cli;
use serde_json::Value;

fn png(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 12, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, seed]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// An open `GET /live`, read event by event.
struct LiveStream {
    response: reqwest::Response,
    pending: String,
}

impl LiveStream {
    async fn open(url: &str) -> Self {
        let response = reqwest::get(format!("{url}/live")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            pending: String::new(),
        }
    }

    /// The next snapshot; `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let event: String = self.pending.drain(..end + 2).collect();
                let data = event.lines().find_map(|l| l.strip_prefix("data: "));
                if let (true, Some(data)) = (event.contains("event: snapshot"), data) {
                    return Some(serde_json::from_str(data).unwrap());
                }
            }
            let chunk = self.response.chunk().await.unwrap()?;
            self.pending.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The first snapshot (within 20 s) for which `want` holds.
    async fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(snapshot) = self.next().await {
                if want(&snapshot) {
                    return Some(snapshot);
                }
                last = snapshot;
            }
            None
        })
        .await;
        match found {
            Ok(Some(snapshot)) => snapshot,
            _ => panic!("no snapshot with {what} within 20 s; the last: {last:#}"),
        }
    }
}

/// The state of fleet member `name` in a snapshot.
fn member_state<'a>(snapshot: &'a Value, name: &str) -> Option<&'a str> {
    snapshot["fleet"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?["state"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_shows_the_backlog_the_fleet_and_the_results_on_the_local_backend() {
    live_view_on(TestStack::local().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_shows_the_backlog_the_fleet_and_the_results_on_aws() {
    live_view_on(TestStack::aws().await).await;
}

async fn live_view_on(stack: TestStack) {
    let instance = StandIn::launch(&stack).await;
    let mut args = vec!["web-tier".to_owned()];
    args.extend(stack.flags());
    args.extend(
        [
            "--stack-name",
            &instance.stack_name,
            "--live-interval-secs",
            "1",
        ]
        .map(str::to_owned),
    );
    let web = Web::serve(Cli::try_parse_from(args).unwrap(), None).await;
    let mut live = LiveStream::open(&web.url).await;

    // Three uploads and no worker yet: a backlog of three, three requests waiting here.
    let uploads: Vec<_> = (0..3u8)
        .map(|i| {
            let url = web.url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let answer = upload(&client, &url, &format!("img{i}.png"), png(i)).await;
                (i, answer.status(), answer.text().await.unwrap())
            })
        })
        .collect();
    let backlog = live
        .until("three requests queued", |s| s["requests"]["visible"] == 3)
        .await;
    assert_eq!(backlog["waiting"], 3);
    assert_eq!(backlog["backend"], stack.backend().name());
    assert_eq!(
        backlog["requests"]["name"],
        stack.spec.request_queue.as_str()
    );
    assert_eq!(member_state(&backlog, &instance.name), Some("pending"));
    assert!(backlog["recent"].as_array().unwrap().is_empty());

    // The instance reports ready: the fleet changes on the view.
    instance.ready().await;
    live.until("the instance running", |s| {
        member_state(s, &instance.name) == Some("running")
    })
    .await;

    // A worker takes the backlog: the queue drains and the results show, newest first.
    let worker = echo_worker(&stack);
    for upload in uploads {
        let (i, status, label) = upload.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(label, format!("label-of-img{i}"));
    }
    let done = live
        .until("three results and an empty queue", |s| {
            s["recent"].as_array().is_some_and(|r| r.len() == 3) && s["requests"]["visible"] == 0
        })
        .await;
    let mut labels: Vec<&str> = done["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    labels.sort();
    assert_eq!(labels, ["label-of-img0", "label-of-img1", "label-of-img2"]);
    assert_eq!(done["waiting"], 0);
    let answered: f64 = done["series"]["labels_per_sec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .sum();
    let bucket_secs = done["series"]["bucket_ms"].as_f64().unwrap() / 1000.0;
    assert_eq!(
        (answered * bucket_secs).round(),
        3.0,
        "throughput counts all three"
    );
    // The stand-in worker is not one of the fleet's instances: listed after them.
    let echo = done["fleet"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "echo")
        .unwrap();
    assert_eq!(echo["state"], Value::Null);
    assert_eq!(echo["answered_last_minute"], 3);

    // The image behind a recent result comes back as the image, never as a page.
    let recent = &done["recent"][0];
    let id = recent["id"].as_str().unwrap();
    let seed: u8 = recent["filename"].as_str().unwrap()[3..4].parse().unwrap();
    let image = reqwest::get(format!("{}/results/{id}/image", web.url))
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    assert_eq!(image.headers()["x-content-type-options"], "nosniff");
    assert_eq!(image.bytes().await.unwrap().as_ref(), png(seed).as_slice());
    let unknown = reqwest::get(format!(
        "{}/results/00000000-0000-4000-8000-000000000000/image",
        web.url
    ))
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);

    // An open stream ends when the web tier drains, and does not hold the shutdown up.
    let stopped = tokio::time::timeout(Duration::from_secs(10), web.stop()).await;
    assert!(
        stopped.is_ok(),
        "the web tier did not stop with a page open"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while live.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end");
    worker.abort();
    instance.stop().await;
}
