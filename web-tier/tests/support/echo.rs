//! A stand-in for the app tier, shared by the web tier's integration tests: answers every
//! request with `label-of-<stem>` (the real model runs in the system tests).

use std::time::Duration;

use iras_cloud::{Cloud, OutgoingMessage, ReceiveOptions};
use iras_protocol::{ImagePayload, Outcome, Prediction, RequestMessage, ResponseMessage, Timings};
use tokio::task::JoinHandle;

/// Answers every request with `label-of-<stem>`, reading claim checks from the input
/// bucket, as the app tier would (without the model).
pub(crate) fn echo_worker(state: &std::path::Path) -> JoinHandle<()> {
    let state = state.to_owned();
    tokio::spawn(async move {
        let cloud = Cloud::open_local(&state).await.unwrap();
        let requests = cloud.queue("iras-requests").await.unwrap();
        let input = cloud.bucket("iras-input").await.unwrap();
        loop {
            let batch = requests
                .receive(ReceiveOptions {
                    max_messages: 10,
                    wait: Duration::from_secs(1),
                    visibility_timeout: Some(Duration::from_secs(30)),
                })
                .await
                .unwrap();
            for m in batch {
                let req = RequestMessage::decode(&m.body).unwrap();
                let bytes = match &req.image {
                    ImagePayload::Inline { .. } => req.image.decode_inline().unwrap().unwrap(),
                    ImagePayload::Claim { key } => input.get(key).await.unwrap(),
                };
                assert!(!bytes.is_empty());
                let label = format!("label-of-{}", req.file_name.stem());
                let outcome = Outcome::Label {
                    label: label.clone(),
                    score: 0.5,
                    top_k: vec![Prediction {
                        label,
                        index: 7,
                        score: 0.5,
                    }],
                };
                let resp = ResponseMessage::new(
                    req.id,
                    req.file_name.clone(),
                    outcome,
                    "echo",
                    Timings::default(),
                );
                let replies = cloud.queue(&req.reply_to).await.unwrap();
                replies
                    .send(OutgoingMessage::new(resp.encode().unwrap()))
                    .await
                    .unwrap();
                requests.delete(&m.receipt).await.unwrap();
            }
        }
    })
}
