//! Every route of the web tier, in process and without a socket: the router is called with
//! `tower::ServiceExt::oneshot` on a local stack, and a small task plays app tier and
//! listener at once (it takes each request off the queue and completes its waiter), so the
//! handlers' contract is tested apart from HTTP serving and the response loop.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use http_body_util::BodyExt;
use iras_cloud::ReceiveOptions;
use iras_protocol::internal::{DELIVERY_PATH, REPLY_QUEUE_PATH, Token};
use iras_protocol::{FileName, RequestId, RequestMessage, ResponseMessage};
use iras_testkit::TestStack;
use iras_web_tier::{AppState, Cli, live::Live, metrics::Metrics, waiters::Waiters};
use tower::ServiceExt;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const BOUNDARY: &str = "iras-test-boundary";

/// The web tier's state on a fresh local stack, with default settings.
async fn state(stack: &TestStack) -> AppState {
    let config = Cli::try_parse_from(["web-tier"])
        .unwrap()
        .validate()
        .unwrap();
    let cloud = &stack.cloud;
    AppState {
        requests: cloud.queue(&stack.spec.request_queue).await.unwrap(),
        input_bucket: cloud.bucket(&stack.spec.input_bucket).await.unwrap(),
        output_bucket: cloud.bucket(&stack.spec.output_bucket).await.unwrap(),
        reply_to: stack.spec.response_queue.as_str().into(),
        waiters: Arc::new(Waiters::new(config.max_waiting, config.results_kept)),
        metrics: Arc::new(Metrics::new()),
        live: Arc::new(Live::new(
            config.live_interval,
            tokio_util::sync::CancellationToken::new(),
        )),
        config: Arc::new(config),
    }
}

/// Takes requests off the queue and completes their waiters with `label-of-<stem>`, as the
/// app tier and the listener would together.
fn complete_requests(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let batch = state
                .requests
                .receive(ReceiveOptions {
                    max_messages: 10,
                    wait: Duration::from_secs(1),
                    visibility_timeout: None,
                })
                .await
                .unwrap();
            for message in batch {
                let request = RequestMessage::decode(&message.body).unwrap();
                state.complete(labelled(request.id, request.file_name.clone()));
                state.requests.delete(&message.receipt).await.unwrap();
            }
        }
    })
}

fn labelled(id: RequestId, file_name: FileName) -> ResponseMessage {
    let label = iras_testkit::echo::label_of(file_name.stem());
    iras_testkit::echo::labelled(id, file_name, label)
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A multipart upload of `bytes` in field `field` named `file_name`.
fn upload(field: &str, file_name: &str, bytes: &[u8]) -> Request<Body> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; \
         filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Request::post("/")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body))
        .unwrap()
}

/// Calls `router` once; the status and the body as text.
async fn call(router: Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let stack = TestStack::local().await;
    let app = iras_web_tier::app(state(&stack).await);
    let (status, body) = call(
        app.clone(),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    let (status, body) = call(app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("iras_web_upload_duration_seconds_count 0"),
        "{body}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF: {body}"
    );
}

#[tokio::test]
async fn an_upload_is_answered_with_its_label_and_kept_by_id() {
    let stack = TestStack::local().await;
    let state = state(&stack).await;
    let worker = complete_requests(state.clone());
    let app = iras_web_tier::app(state);

    let response = app
        .clone()
        .oneshot(upload("myfile", "cat.png", &png()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"label-of-cat");

    let by_id = Request::get(format!("/results/{id}"))
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(app, by_id).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["label"], "label-of-cat");
    assert_eq!(json["filename"], "cat.png");
    worker.abort();
}

#[tokio::test]
async fn bad_uploads_get_a_reason_and_queue_nothing() {
    let stack = TestStack::local().await;
    let state = state(&stack).await;
    let requests = state.requests.clone();
    let app = iras_web_tier::app(state);
    for (request, expected) in [
        (
            upload("myfile", "notes.txt", b"plain text"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (upload("myfile", "empty.png", b""), StatusCode::BAD_REQUEST),
        (
            Request::post("/")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("hello"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = call(app.clone(), request).await;
        assert_eq!(status, expected, "{body}");
        assert!(!body.trim().is_empty(), "a reason comes with the {status}");
    }
    assert_eq!(requests.depth().await.unwrap().visible, 0, "nothing queued");
}

#[tokio::test]
async fn results_by_id_refuse_bad_and_unknown_ids() {
    let stack = TestStack::local().await;
    let app = iras_web_tier::app(state(&stack).await);
    let (status, _) = call(
        app.clone(),
        Request::get("/results/not-an-id")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let unknown = format!("/results/{}", RequestId::new());
    let (status, _) = call(app, Request::get(unknown).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_internal_routes_want_the_token() {
    let stack = TestStack::local().await;
    let state = state(&stack).await;
    let internal = iras_web_tier::internal_app(state.clone(), Token::new(TOKEN).unwrap());

    let ask = |token: &str| {
        Request::get(REPLY_QUEUE_PATH)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, _) = call(internal.clone(), ask(&"f".repeat(32))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(internal.clone(), ask(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let named: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(named["reply_queue"], stack.spec.response_queue);

    let result = labelled(RequestId::new(), FileName::parse("late.png").unwrap());
    let deliver = |token: &str| {
        Request::post(DELIVERY_PATH)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(result.encode().unwrap()))
            .unwrap()
    };
    let (status, _) = call(internal.clone(), deliver("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(internal, deliver(TOKEN)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"delivery":"recorded"}"#)
    );
    // Nobody waited, but it is kept for `GET /results/{id}`.
    let (status, body) = call(
        iras_web_tier::app(state),
        Request::get(format!("/results/{}", result.id))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "label-of-late"));
}

#[tokio::test]
async fn get_root_is_a_page_for_browsers_and_a_usage_line_for_curl() {
    let stack = TestStack::local().await;
    let app = iras_web_tier::app(state(&stack).await);

    let browser = Request::get("/")
        .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(browser).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let page = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    // A form that works without the script: the same endpoint and field as every client.
    for part in [
        r#"action="/""#,
        r#"enctype="multipart/form-data""#,
        r#"name="myfile""#,
        iras_web_tier::page::SCRIPT_PATH,
        iras_web_tier::page::STYLE_PATH,
    ] {
        assert!(page.contains(part), "the page lacks {part}: {page}");
    }

    let curl = Request::get("/")
        .header(header::ACCEPT, "*/*")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(app.clone(), curl).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, iras_web_tier::page::USAGE)
    );

    for (path, kind) in [
        (iras_web_tier::page::SCRIPT_PATH, "text/javascript"),
        (iras_web_tier::page::STYLE_PATH, "text/css"),
    ] {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let got = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(got.starts_with(kind), "{path}: {got}");
    }
}

/// The page's own upload path is the API's: a form post from a browser (which asks for
/// HTML) gets the same bare label as the course's client.
#[tokio::test]
async fn a_form_post_from_the_page_gets_the_plain_label() {
    let stack = TestStack::local().await;
    let state = state(&stack).await;
    let worker = complete_requests(state.clone());
    let mut request = upload("myfile", "dog.png", &png());
    request.headers_mut().insert(
        header::ACCEPT,
        "text/html,application/xhtml+xml,*/*;q=0.8".parse().unwrap(),
    );
    let (status, body) = call(iras_web_tier::app(state), request).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "label-of-dog"));
    worker.abort();
}
