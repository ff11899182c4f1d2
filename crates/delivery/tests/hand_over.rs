//! What the listener deletes and what it leaves: responses the sink took go, unreadable ones
//! and ones the sink could not take stay (and come back after the visibility timeout).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use iras_cloud::{Cloud, OutgoingMessage, ReceiveOptions, StackSpec};
use iras_delivery::{BatchReport, Delivery, DeliveryError, ResultSink};
use iras_protocol::{FileName, Outcome, RequestId, ResponseMessage, Timings};

/// Takes results whose file name starts with `ok`, records the rest, fails on `down`.
#[derive(Default)]
struct Sink(Mutex<Vec<RequestId>>);

#[async_trait]
impl ResultSink for Sink {
    async fn deliver(&self, r: &ResponseMessage) -> Result<Delivery, DeliveryError> {
        self.0.lock().unwrap().push(r.id);
        match r.file_name.as_str() {
            n if n.starts_with("ok") => Ok(Delivery::Delivered),
            n if n.starts_with("down") => Err(DeliveryError::Closed),
            _ => Ok(Delivery::Recorded),
        }
    }
}

fn body(name: &str) -> String {
    let outcome = Outcome::Label {
        label: "x".into(),
        score: 1.0,
        top_k: vec![],
    };
    ResponseMessage::new(
        RequestId::new(),
        FileName::parse(name).unwrap(),
        outcome,
        "w",
        Timings::default(),
    )
    .encode()
    .unwrap()
}

#[tokio::test]
async fn deletes_what_the_sink_took_and_leaves_the_rest() {
    let state = tempfile::tempdir().unwrap();
    let cloud = Cloud::open_local(state.path()).await.unwrap();
    cloud.provision(&StackSpec::default()).await.unwrap();
    let queue = cloud.queue("iras-responses").await.unwrap();
    for b in [
        body("ok.jpg"),
        body("late.jpg"),
        body("down.jpg"),
        "not json".into(),
    ] {
        queue.send(OutgoingMessage::new(b)).await.unwrap();
    }
    let sink = Sink::default();
    let options = ReceiveOptions {
        max_messages: 10,
        wait: Duration::ZERO,
        visibility_timeout: Some(Duration::from_secs(2)),
    };
    let report = iras_delivery::run_once(queue.as_ref(), &sink, options)
        .await
        .unwrap();
    assert_eq!(
        report,
        BatchReport {
            delivered: 1,
            recorded: 1,
            left: 2
        }
    );
    let depth = queue.depth().await.unwrap();
    assert_eq!(
        (depth.visible, depth.in_flight),
        (0, 2),
        "two left in flight"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        queue.depth().await.unwrap().visible,
        2,
        "and back after the timeout"
    );
}
