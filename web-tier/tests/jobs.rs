//! Asynchronous jobs and batches over real HTTP, on both backends: every test runs as
//! `local::…` (a fresh state directory) and as `aws::…` (unique names on the moto server
//! named in `IRAS_TEST_AWS_ENDPOINT`; the aws variants fail, never skip, without it).
//!
//! The app tier is the test kit's echo worker (`label-of-<stem>`), which writes
//! `results/<id>.json` before it answers, as the app tier does. It is started late on
//! purpose: what was accepted must wait in the queue, across a web-tier restart too, and
//! still be collected.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use iras_testkit::TestStack;
use iras_testkit::echo::{echo_worker, label_of};
use iras_testkit::web::Web;
use iras_web_tier::Cli;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

/// A web tier on `stack`, with `extra` flags.
async fn start_web(stack: &TestStack, extra: &[&str]) -> Web {
    let mut argv = vec!["web-tier".to_owned()];
    argv.extend(stack.flags());
    argv.extend(["--listener-wait-secs".to_owned(), "1".to_owned()]);
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    Web::serve(Cli::try_parse_from(argv).unwrap(), None).await
}

fn png(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, seed]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn zip_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in files {
        out.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

fn file(name: &str, bytes: Vec<u8>) -> Part {
    Part::bytes(bytes).file_name(name.to_owned())
}

async fn post(url: &str, path: &str, form: Form) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}{path}"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn get_json(url: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(url)
        .header("accept", "application/json")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// The request queue's depth (visible, in flight and delayed).
async fn backlog(stack: &TestStack) -> u64 {
    let queue = stack.cloud.queue(&stack.spec.request_queue).await.unwrap();
    queue.depth().await.unwrap().total()
}

/// Every event of a batch's stream until it ends: `(event, data)`.
async fn batch_events(url: &str, batch: &str) -> Vec<(String, Value)> {
    let mut response = reqwest::get(format!("{url}/batches/{batch}/events"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut pending = String::new();
    let mut events = Vec::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            pending.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                let name = event.lines().find_map(|l| l.strip_prefix("event: "));
                let data = event.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(name), Some(data)) = (name, data) {
                    events.push((name.to_owned(), serde_json::from_str(data).unwrap()));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the batch's event stream ends once every result is in");
    events
}

/// `POST /jobs` and `POST /` with `Prefer: respond-async` answer 202 at once; the result
/// is 202 while queued, then (long-polled) the label; it survives a restart. Bad input and
/// unknown ids get their 4xx.
async fn a_job_is_accepted_at_once_and_collected_by_id(stack: TestStack) {
    let web = start_web(&stack, &[]).await;
    let r = post(
        &web.url,
        "/jobs",
        Form::new().part("myfile", file("cat.png", png(1))),
    )
    .await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/results/{id}"));
    assert_eq!(body["status"], "pending");
    let (status, got) = get_json(&format!("{}{location}", web.url)).await;
    assert_eq!(
        (status, &got["status"]),
        (StatusCode::ACCEPTED, &"pending".into())
    );

    let r = reqwest::Client::new()
        .post(format!("{}/", web.url))
        .header("prefer", "respond-async")
        .multipart(Form::new().part("myfile", file("dog.png", png(2))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let dog: Value = r.json().await.unwrap();
    assert_eq!(backlog(&stack).await, 2, "both queued, nobody waiting");

    // Not an image: refused with its reason, nothing queued.
    let r = post(
        &web.url,
        "/jobs",
        Form::new().part("myfile", file("x.png", b"nope".to_vec())),
    )
    .await;
    assert_eq!(r.status(), 415);
    let refused: Value = r.json().await.unwrap();
    assert_eq!(refused["error"], "not_an_image");
    assert_eq!(backlog(&stack).await, 2);

    let _echo = echo_worker(&stack);
    let (status, got) = get_json(&format!("{}{location}?wait=30", web.url)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["label"], label_of("cat").as_str());
    let (status, got) = get_json(&format!(
        "{}/results/{}?wait=30",
        web.url,
        dog["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(
        (status, got["label"].as_str()),
        (StatusCode::OK, Some(label_of("dog").as_str()))
    );

    let unknown = "00000000-0000-4000-8000-000000000000";
    let (status, got) = get_json(&format!("{}/results/{unknown}?wait=1", web.url)).await;
    assert_eq!(
        (status, &got["error"]),
        (StatusCode::NOT_FOUND, &"unknown_id".into())
    );
    let (status, got) = get_json(&format!("{}{location}?wait=soon", web.url)).await;
    assert_eq!(
        (status, &got["error"]),
        (StatusCode::BAD_REQUEST, &"bad_query".into())
    );
    web.stop().await;

    let web = start_web(&stack, &[]).await;
    let (status, got) = get_json(&format!("{}{location}", web.url)).await;
    assert_eq!(
        (status, got["label"].as_str()),
        (StatusCode::OK, Some(label_of("cat").as_str()))
    );
    web.stop().await;
}

/// A job accepted by a web tier that then restarts is still pending (not unknown) on the
/// new one, and its result, answered to the old tier's reply queue that is gone, is found
/// by the long-poll's look at the output bucket.
async fn a_pending_job_survives_a_web_tier_restart(stack: TestStack) {
    let web = start_web(&stack, &[]).await;
    let r = post(
        &web.url,
        "/jobs",
        Form::new().part("myfile", file("owl.png", png(3))),
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    web.stop().await;

    let web = start_web(&stack, &[]).await;
    let url = format!("{}/results/{id}", web.url);
    let (status, got) = get_json(&url).await;
    assert_eq!(status, 202, "accepted before the restart: {got}");
    let _echo = echo_worker(&stack);
    let (status, got) = get_json(&format!("{url}?wait=30")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["label"], label_of("owl").as_str());
    web.stop().await;
}

/// A batch of files and a zip, one of them not an image: the others are accepted and
/// queued one message each, the bad one is reported with its reason. The web tier
/// restarts before any result is in; the new one streams every result (found in the
/// output bucket) and then serves them as JSON and CSV.
async fn a_batch_survives_a_web_tier_restart(stack: TestStack) {
    let web = start_web(&stack, &[]).await;
    let form = Form::new()
        .part("a", file("a.png", png(1)))
        .part("b", file("b.png", png(2)))
        .part("bad", file("bad.png", b"not an image".to_vec()))
        .part(
            "zip",
            file(
                "more.zip",
                zip_of(&[("dir/c.png", png(3)), ("d.png", png(4))]),
            ),
        );
    let r = post(&web.url, "/batches", form).await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let batch = accepted["batch"].as_str().unwrap().to_owned();
    assert_eq!(accepted["accepted"], 4);
    assert_eq!(accepted["refused"][0]["filename"], "bad.png");
    assert_eq!(accepted["refused"][0]["error"], "not_an_image");
    assert_eq!(backlog(&stack).await, 4, "one request message per image");
    let (status, progress) = get_json(&format!("{}/batches/{batch}", web.url)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &progress["done"],
            &progress["failed"],
            &progress["pending"],
            &progress["state"]
        ),
        (&0.into(), &1.into(), &4.into(), &"running".into())
    );
    web.stop().await;

    let web = start_web(&stack, &[]).await;
    let _echo = echo_worker(&stack);
    let events = batch_events(&web.url, &batch).await;
    let (last, results) = events.split_last().unwrap();
    assert_eq!(last.0, "done");
    assert_eq!((&last.1["done"], &last.1["failed"]), (&4.into(), &1.into()));
    let mut labels: Vec<_> = results
        .iter()
        .map(|(name, v)| {
            assert_eq!(name, "result");
            (
                v["filename"].as_str().unwrap(),
                v["label"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    labels.sort_unstable();
    let (a, b, c, d) = (label_of("a"), label_of("b"), label_of("c"), label_of("d"));
    assert_eq!(
        labels,
        [
            ("a.png", a.as_str()),
            ("b.png", b.as_str()),
            ("bad.png", "-"),
            ("c.png", c.as_str()),
            ("d.png", d.as_str())
        ]
    );

    let (status, progress) = get_json(&format!("{}/batches/{batch}", web.url)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&progress["state"], &progress["pending"]),
        (&"done".into(), &0.into())
    );
    assert_eq!(progress["items"].as_array().unwrap().len(), 5);
    let csv = reqwest::get(format!("{}/batches/{batch}?format=csv", web.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv,
        format!(
            "filename,label,status\na.png,{a},done\nb.png,{b},done\nbad.png,,not_an_image\nc.png,{c},done\nd.png,{d},done\n"
        )
    );

    // A batch on a web tier that receives its results: streamed as they arrive.
    let form = Form::new().part("e", file("e.png", png(5)));
    let second: Value = post(&web.url, "/batches", form).await.json().await.unwrap();
    let events = batch_events(&web.url, second["batch"].as_str().unwrap()).await;
    assert_eq!(events[0].1["label"], label_of("e").as_str());
    assert_eq!(events[1].0, "done");
    web.stop().await;
}

/// Over the image count or the byte limit, a batch is refused whole before anything is
/// queued; an unknown batch is a 404 and a malformed id a 400.
async fn a_batch_over_the_limits_is_refused_whole(stack: TestStack) {
    let web = start_web(
        &stack,
        &["--batch-max-images", "2", "--batch-max-bytes", "4096"],
    )
    .await;
    let three = Form::new().part("a", file("a.png", png(1))).part(
        "z",
        file("z.zip", zip_of(&[("b.png", png(2)), ("c.png", png(3))])),
    );
    let r = post(&web.url, "/batches", three).await;
    assert_eq!(r.status(), 413);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["error"], "batch_too_large");
    assert!(
        got["message"].as_str().unwrap().contains("2 images"),
        "{got}"
    );
    let big = Form::new().part("a", file("a.png", vec![0; 8192]));
    let r = post(&web.url, "/batches", big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        backlog(&stack).await,
        0,
        "nothing of a refused batch is queued"
    );

    let (status, got) = get_json(&format!(
        "{}/batches/00000000-0000-4000-8000-000000000000",
        web.url
    ))
    .await;
    assert_eq!(
        (status, &got["error"]),
        (StatusCode::NOT_FOUND, &"unknown_batch".into())
    );
    let r = reqwest::get(format!(
        "{}/batches/00000000-0000-4000-8000-000000000000/events",
        web.url
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let (status, _) = get_json(&format!("{}/batches/nope", web.url)).await;
    assert_eq!(status, 400);
    web.stop().await;
}

iras_testkit::both_backends!(
    a_job_is_accepted_at_once_and_collected_by_id,
    a_pending_job_survives_a_web_tier_restart,
    a_batch_survives_a_web_tier_restart,
    a_batch_over_the_limits_is_refused_whole,
);

/// Sets the modification time of every file under `dir` whose name contains one of `marks`
/// to two days ago, as if written then.
fn backdate(dir: &std::path::Path, marks: &[&str]) -> usize {
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    let mut changed = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            changed += backdate(&path, marks);
        } else if marks
            .iter()
            .any(|m| path.file_name().unwrap().to_string_lossy().contains(m))
        {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
            changed += 1;
        }
    }
    changed
}

/// `--retention-days` on the local backend: a web tier sweeps both buckets at start, so a
/// job whose image, result and record are older than the retention is gone (its id unknown,
/// its image too) while a newer one is still collected.
#[tokio::test]
async fn results_older_than_the_retention_are_swept_on_the_local_backend() {
    let stack = TestStack::local().await;
    let web = start_web(&stack, &[]).await;
    let _echo = echo_worker(&stack);
    let mut ids = Vec::new();
    for (name, seed) in [("old.png", 1), ("new.png", 2)] {
        let r = post(
            &web.url,
            "/jobs",
            Form::new().part("myfile", file(name, png(seed))),
        )
        .await;
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        let (status, got) = get_json(&format!("{}/results/{id}?wait=30", web.url)).await;
        assert_eq!(status, 200, "{got}");
        ids.push(id);
    }
    web.stop().await;
    let (old, new) = (&ids[0], &ids[1]);
    let buckets = stack.state_dir().unwrap().join("buckets");
    // The image, the result and the job record (the echo worker writes no (stem, label)
    // object; the app tier's is swept the same way, by age).
    assert_eq!(backdate(&buckets, &["old", old]), 3);

    let web = start_web(&stack, &["--retention-days", "1"]).await;
    let url = web.url.clone();
    iras_testkit::eventually("the old job to expire", Duration::from_secs(30), || async {
        let (status, _) = get_json(&format!("{url}/results/{old}")).await;
        (status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let image = reqwest::get(format!("{url}/results/{old}/image"))
        .await
        .unwrap();
    assert_eq!(image.status(), 404);
    let (status, got) = get_json(&format!("{url}/results/{new}")).await;
    assert_eq!(
        (status, got["label"].as_str()),
        (StatusCode::OK, Some(label_of("new").as_str()))
    );
    let image = reqwest::get(format!("{url}/results/{new}/image"))
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
    let input = stack.cloud.bucket(&stack.spec.input_bucket).await.unwrap();
    assert_eq!(input.list("").await.unwrap(), ["new.png"]);
    web.stop().await;
}

/// On AWS the buckets' lifecycle rules expire objects and the web tier sweeps nothing, but a
/// `--retention-days` must not end its background task early (which would stop the tier):
/// it keeps serving and still stops cleanly.
#[tokio::test]
async fn a_retention_on_aws_leaves_the_web_tier_serving() {
    let stack = TestStack::aws().await;
    let web = start_web(&stack, &["--retention-days", "1"]).await;
    let _echo = echo_worker(&stack);
    let r = post(
        &web.url,
        "/jobs",
        Form::new().part("myfile", file("kept.png", png(3))),
    )
    .await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    let (status, got) = get_json(&format!("{}/results/{id}?wait=30", web.url)).await;
    assert_eq!(
        (status, got["label"].as_str()),
        (StatusCode::OK, Some(label_of("kept").as_str()))
    );
    web.stop().await;
}
