//! The page in a real browser: headless Chromium driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, which `scripts/test` installs). Images are chosen in the page's
//! file input and uploaded by its script through `POST /`; an echo worker answers for the
//! app tier. A file name made of markup must show as text. A screenshot of the page after
//! the uploads is left in the target directory (`page-after-uploads.png`).

#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests: a panic is the report; the screenshot's path is printed

use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use fantoccini::{ClientBuilder, Locator};
use iras_testkit::echo::local_echo_worker;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_uploaded_through_the_page_show_their_labels_and_names_stay_text() {
    let state = tempfile::tempdir().unwrap();
    let web = Web::serve(
        Cli::try_parse_from(["web-tier", "--state-dir", state.path().to_str().unwrap()]).unwrap(),
        None,
    )
    .await;
    let worker = local_echo_worker(state.path());
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
                                    "--window-size=900,1000"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .unwrap();

    browser.goto(&format!("{}/", web.url)).await.unwrap();
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

    let labels = eventually(
        "both labels on the page",
        Duration::from_secs(30),
        || async {
            let found = browser
                .find_all(Locator::Css("#results .label"))
                .await
                .ok()?;
            let mut texts = Vec::new();
            for label in found {
                texts.push(label.text().await.ok()?);
            }
            (texts.len() == 2).then_some(texts)
        },
    )
    .await;
    let mut labels = labels;
    labels.sort();
    assert_eq!(
        labels,
        ["label-of-<img src=x onerror=alert(1)>", "label-of-cat"]
    );
    let mut names = Vec::new();
    for name in browser
        .find_all(Locator::Css("#results .name"))
        .await
        .unwrap()
    {
        names.push(name.text().await.unwrap());
    }
    names.sort();
    assert_eq!(names, [MARKUP_NAME, "cat.png"], "file names shown as text");
    assert!(
        browser
            .find_all(Locator::Css("img[src=x]"))
            .await
            .unwrap()
            .is_empty(),
        "a file name became an element"
    );

    let shot = browser.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-after-uploads.png");
    std::fs::write(&path, shot).unwrap();
    eprintln!("screenshot: {}", path.display());

    browser.close().await.unwrap();
    worker.abort();
    web.stop().await;
}
