//! The page in a real browser: headless Chromium driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, which `scripts/test` installs).
//!
//! A burst of uploads with no worker shows on the live view as a backlog, a stand-in fleet
//! instance as pending and then running; once an echo worker (standing in for the app tier)
//! takes the backlog, the queue empties and the results show with their thumbnails. Then
//! images are chosen in the page's file input and uploaded by its script through `POST /`;
//! a file name made of markup must show as text, in the upload list and the live view. A
//! screenshot of the page after the burst is left in the target directory
//! (`page-after-burst.png`; the README's `docs/page.png` is one).

#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests: a panic is the report; the screenshot's path is printed

use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use fantoccini::{ClientBuilder, Locator};
use iras_testkit::TestStack;
use iras_testkit::client::upload;
use iras_testkit::echo::echo_worker;
use iras_testkit::fleet::StandIn;
use iras_testkit::web::Web;
use iras_testkit::{eventually, ports};
use iras_web_tier::Cli;

/// A file name a careless page would turn into an element.
const MARKUP_NAME: &str = "<img src=x onerror=alert(1)>.png";

fn png(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, seed]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Starts chromedriver on a port of its own; killed when dropped.
async fn chromedriver() -> (tokio::process::Child, String) {
    let port = ports::free_block(1);
    let child = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver could not start ({e}): install Debian's chromium and \
                 chromium-driver (scripts/test does, as root)"
            )
        });
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    eventually(
        "chromedriver to answer",
        Duration::from_secs(20),
        || async {
            reqwest::get(&status)
                .await
                .ok()
                .filter(|r| r.status().is_success())
        },
    )
    .await;
    (child, url)
}

/// The text of every element matching `css`.
async fn texts(browser: &fantoccini::Client, css: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for found in browser.find_all(Locator::Css(css)).await.ok()? {
        out.push(found.text().await.ok()?);
    }
    Some(out)
}

/// Waits (30 s at most) until the text of `css` satisfies `want`.
async fn until_text(
    browser: &fantoccini::Client,
    what: &str,
    css: &str,
    want: impl Fn(&str) -> bool,
) {
    eventually(what, Duration::from_secs(30), || async {
        let text = browser
            .find(Locator::Css(css))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        want(&text).then_some(())
    })
    .await;
}

/// Sends `n` uploads at once, as the workload generator does; their handles.
fn burst(url: &str, n: u8) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..n)
        .map(|i| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let name = format!("burst_{i}.png");
                let client = reqwest::Client::new();
                upload(&client, &url, &name, png(10 + i))
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_burst_live_and_uploads_keep_names_as_text() {
    let stack = TestStack::local().await;
    let mut args = vec!["web-tier".to_owned()];
    args.extend(stack.flags());
    args.extend(["--live-interval-secs", "1"].map(str::to_owned));
    let web = Web::serve(Cli::try_parse_from(args).unwrap(), None).await;
    let instance = StandIn::launch(&stack).await;
    let files = tempfile::tempdir().unwrap();
    let cat = files.path().join("cat.png");
    let markup = files.path().join(MARKUP_NAME);
    std::fs::write(&cat, png(1)).unwrap();
    std::fs::write(&markup, png(2)).unwrap();

    let (_driver, driver_url) = chromedriver().await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                                    "--window-size=1280,1500"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .unwrap();
    browser.goto(&format!("{}/", web.url)).await.unwrap();
    until_text(&browser, "the live view connected", "#live-status", |t| {
        t.starts_with("live · local backend")
    })
    .await;

    // A burst and no worker: the backlog and the pending instance show.
    const BURST: u8 = 8;
    let uploads = burst(&web.url, BURST);
    until_text(
        &browser,
        "the backlog on the request queue tile",
        "#tile-requests .tile-value",
        |t| t == BURST.to_string(),
    )
    .await;
    until_text(
        &browser,
        "the instance pending",
        "#fleet tbody tr:first-child",
        |t| t.starts_with(&instance.name) && t.contains("pending"),
    )
    .await;
    instance.ready().await;
    until_text(
        &browser,
        "the instance running",
        "#fleet tbody tr:first-child",
        |t| t.contains("running"),
    )
    .await;

    // A worker takes the backlog: the queue empties and the results show with thumbnails.
    let worker = echo_worker(&stack);
    for upload in uploads {
        assert_eq!(upload.await.unwrap(), 200);
    }
    until_text(
        &browser,
        "an empty request queue",
        "#tile-requests .tile-value",
        |t| t == "0",
    )
    .await;
    let labels = eventually(
        "the burst's results on the live view",
        Duration::from_secs(30),
        || async {
            let labels = texts(&browser, "#recent .label").await?;
            (labels.len() == usize::from(BURST)).then_some(labels)
        },
    )
    .await;
    assert!(
        labels.iter().all(|l| l.starts_with("label-of-burst_")),
        "{labels:?}"
    );
    let thumbnails: i64 = eventually("the thumbnails loaded", Duration::from_secs(30), || async {
        let loaded = browser
            .execute(
                "return [...document.querySelectorAll('#recent img')].filter(i => i.complete && i.naturalWidth > 0).length",
                vec![],
            )
            .await
            .ok()?
            .as_i64()?;
        (loaded == i64::from(BURST)).then_some(loaded)
    })
    .await;
    assert_eq!(thumbnails, i64::from(BURST));
    until_text(&browser, "the worker's row", "#fleet tbody", |t| {
        t.contains("echo")
    })
    .await;
    let chart_lines = browser
        .find_all(Locator::Css("#chart-throughput .line-labels"))
        .await
        .unwrap()
        .len();
    assert!(chart_lines > 0, "the throughput chart draws the burst");
    let shot = browser.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-after-burst.png");
    std::fs::write(&path, shot).unwrap();
    eprintln!("screenshot: {}", path.display());

    // Uploads through the page: labels appear, and a name made of markup stays text.
    let input = browser.find(Locator::Css("#myfile")).await.unwrap();
    let chosen = format!("{}\n{}", cat.display(), markup.display());
    input.send_keys(&chosen).await.unwrap();
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut labels = eventually(
        "both labels on the page",
        Duration::from_secs(30),
        || async {
            let labels = texts(&browser, "#results .label").await?;
            (labels.len() == 2).then_some(labels)
        },
    )
    .await;
    labels.sort();
    assert_eq!(
        labels,
        ["label-of-<img src=x onerror=alert(1)>", "label-of-cat"]
    );
    let mut names = texts(&browser, "#results .name").await.unwrap();
    names.sort();
    assert_eq!(names, [MARKUP_NAME, "cat.png"], "file names shown as text");
    eventually(
        "the markup name in the live view",
        Duration::from_secs(30),
        || async {
            let names = texts(&browser, "#recent .name").await?;
            names.iter().any(|n| n == MARKUP_NAME).then_some(())
        },
    )
    .await;
    assert!(
        browser
            .find_all(Locator::Css("img[src=x]"))
            .await
            .unwrap()
            .is_empty(),
        "a file name became an element"
    );

    browser.close().await.unwrap();
    worker.abort();
    instance.stop().await;
    web.stop().await;
}
