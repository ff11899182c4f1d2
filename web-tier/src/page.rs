//! The web page: `GET /` for a browser, and the plain-text usage line for everyone else.
//!
//! The page is HTML from a maud template (escaped by construction) with its script and style
//! served from this binary (`/assets/…`, embedded at build time: no separate server, no
//! build step). It uploads through `POST /` like any client, one request per image, so the
//! limits and the answers are exactly what the course's client gets; without JavaScript the
//! form still posts one image and the browser shows the bare label. Its live view
//! ([`crate::live`], `/assets/live.js`) listens to `GET /live`. A strict
//! Content-Security-Policy allows only this origin's script, style, images (the recent
//! results' `/results/{id}/image`) and event stream, and `blob:` images (the thumbnails of
//! the files being uploaded).
//!
//! The decision a reader may question: `GET /` decides by `Accept`. Browsers ask for
//! `text/html`; curl and scripts (`*/*`) get one line saying how to use the service,
//! instead of the page's markup or a bare 405.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// Path of the page's script.
pub const SCRIPT_PATH: &str = "/assets/page.js";
/// Path of the live view's script.
pub const LIVE_SCRIPT_PATH: &str = "/assets/live.js";
/// Path of the page's style sheet.
pub const STYLE_PATH: &str = "/assets/page.css";

const SCRIPT: &str = include_str!("../assets/page.js");
const LIVE_SCRIPT: &str = include_str!("../assets/live.js");
const STYLE: &str = include_str!("../assets/page.css");

/// What `GET /` tells a client that does not ask for HTML.
pub const USAGE: &str = "iras: POST an image to this URL as multipart form field `myfile` \
(e.g. curl -F myfile=@photo.jpg URL); the answer is its label, or JSON with \
`Accept: application/json`. A result by id: GET /results/{id}. A browser gets a page here.\n";

/// Only this origin's script and style; images from here and from `blob:` (thumbnails).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
frame-ancestors 'none'";

/// `GET /`: the page for a browser, the usage line otherwise.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    // A browser navigating here asks for HTML.
    if !crate::handlers::accepts(&headers, "text/html") {
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], USAGE).into_response();
    }
    let mut response = Html(PAGE.as_str()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /assets/page.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /assets/live.js`.
pub(crate) async fn live_script() -> Response {
    asset("text/javascript; charset=utf-8", LIVE_SCRIPT)
}

/// `GET /assets/page.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The page, rendered once: nothing in it depends on the request.
static PAGE: LazyLock<String> = LazyLock::new(|| page().into_string());

/// The live view's panel; the script fills it from `GET /live`.
fn live_section() -> Markup {
    let tile = |id: &str, title: &str| {
        html! {
            div class="tile" id=(id) {
                span class="tile-title" { (title) }
                span class="tile-value" { "–" }
                span class="meta tile-detail" {}
            }
        }
    };
    let chart = |id: &str, caption: &str, legend: Markup| {
        html! {
            figure class="chart" {
                figcaption { (caption) " " (legend) }
                svg id=(id) viewBox="0 0 640 130" role="img" aria-label=(caption) {}
            }
        }
    };
    html! {
        section id="live" aria-labelledby="live-heading" {
            h2 id="live-heading" { "Live" }
            p id="live-status" class="meta" role="status" { "connecting…" }
            noscript {
                p class="meta" {
                    "The live view needs JavaScript. The same figures are at "
                    a href="/metrics" { "/metrics" } "."
                }
            }
            div class="tiles" {
                (tile("tile-requests", "Request queue"))
                (tile("tile-responses", "Response queue"))
                (tile("tile-throughput", "Results, last 10 s"))
                (tile("tile-latency", "Latency p50 / p95"))
            }
            (chart("chart-throughput", "Results per second, last 5 minutes",
                html! { span class="key key-labels" { "labels" } " " span class="key key-errors" { "errors" } }))
            (chart("chart-latency", "Latency, last 5 minutes",
                html! { span class="key key-p50" { "p50" } " " span class="key key-p95" { "p95" } }))
            h3 { "Fleet " span id="fleet-summary" class="meta" {} }
            p id="fleet-error" class="error" hidden {}
            div class="table-wrap" {
                table id="fleet" {
                    thead {
                        tr {
                            th scope="col" { "Instance" }
                            th scope="col" { "State" }
                            th scope="col" { "Up" }
                            th scope="col" { "Answered / min" }
                            th scope="col" { "Last answer" }
                        }
                    }
                    tbody {}
                }
            }
            h3 { "Recent results" }
            ol id="recent" {}
        }
    }
}

/// The page.
fn page() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "iras — image recognition" }
                link rel="stylesheet" href=(STYLE_PATH);
                script src=(SCRIPT_PATH) defer {}
                script src=(LIVE_SCRIPT_PATH) defer {}
            }
            body {
                header {
                    h1 { "iras — image recognition as a service" }
                    p class="lead" {
                        "Choose or drop images: each is queued, classified by an app tier, "
                        "and answered with its label. The live view shows the queues, the "
                        "fleet and the results as the system works."
                    }
                }
                main {
                    section id="classify" aria-labelledby="classify-heading" {
                        h2 id="classify-heading" { "Classify" }
                        form id="upload" method="post" action="/" enctype="multipart/form-data" {
                            label for="myfile" { "Images" }
                            input id="myfile" type="file" name="myfile" accept="image/*" multiple required;
                            button type="submit" { "Classify" }
                            noscript { span class="meta" { "Without JavaScript: one image at a time." } }
                        }
                        h3 { "Your results" }
                        ol id="results" aria-live="polite" {}
                    }
                    (live_section())
                }
            }
        }
    }
}
