//! A stand-in for the app tier: answers every request with `label-of-<stem>`, reading claim
//! checks from the input bucket, keeping every image there and writing the whole response
//! to the output bucket as `results/<id>.json` before answering, as the app tier does (a
//! reply queue that is gone is skipped, as the app tier skips it), without the model. Tests of the web
//! tier, the listener and the workload generator use it; the real model runs in the app
//! tier's and the system tests.

use std::time::Duration;

use std::path::Path;

use iras_cloud::{Cloud, CloudError, OutgoingMessage, ReceiveOptions, StackSpec};
use iras_protocol::{
    FileName, ImagePayload, Outcome, Prediction, RequestId, RequestMessage, ResponseMessage,
    Timings,
};
use tokio::task::JoinHandle;

/// The label the echo worker gives a file with this stem.
pub fn label_of(stem: &str) -> String {
    format!("label-of-{stem}")
}

/// The answer a stand-in worker gives: `label` with score 0.5 as the only prediction, from
/// the worker `echo`.
pub fn labelled(id: RequestId, file_name: FileName, label: String) -> ResponseMessage {
    let outcome = Outcome::Label {
        label: label.clone(),
        score: 0.5,
        top_k: vec![Prediction {
            label,
            index: 7,
            score: 0.5,
        }],
    };
    ResponseMessage::new(id, file_name, outcome, "echo", Timings::default())
}

/// Starts the echo worker on the local stack with the default names in `state`; abort the
/// handle to stop it.
pub fn local_echo_worker(state: &Path) -> JoinHandle<()> {
    let state = state.to_owned();
    tokio::spawn(async move {
        let cloud = Cloud::open_local(&state).await.unwrap();
        echo(cloud, StackSpec::default()).await;
    })
}

/// Starts the echo worker on `stack`'s request queue; abort the handle to stop it.
pub fn echo_worker(stack: &crate::TestStack) -> JoinHandle<()> {
    tokio::spawn(echo(stack.cloud.clone(), stack.spec.clone()))
}

async fn echo(cloud: Cloud, spec: StackSpec) {
    let requests = cloud.queue(&spec.request_queue).await.unwrap();
    let input = cloud.bucket(&spec.input_bucket).await.unwrap();
    let output = cloud.bucket(&spec.output_bucket).await.unwrap();
    {
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
                // The app tier keeps every image in the input bucket (a claim check is
                // already there).
                let key = req.input_key();
                if !matches!(&req.image, ImagePayload::Claim { key: claim } if *claim == key) {
                    input.put(&key, bytes).await.unwrap();
                }
                let label = label_of(req.file_name.stem());
                let resp = labelled(req.id, req.file_name.clone(), label);
                let body = resp.encode().unwrap();
                output
                    .put(&req.result_key(), body.clone().into_bytes())
                    .await
                    .unwrap();
                // A web tier that stopped cleanly has deleted its reply queue; the result is
                // kept by id all the same.
                match cloud.queue(&req.reply_to).await {
                    Ok(replies) => match replies.send(OutgoingMessage::new(body)).await {
                        Ok(_) | Err(CloudError::QueueNotFound { .. }) => {}
                        Err(e) => panic!("answering {}: {e}", req.id),
                    },
                    Err(CloudError::QueueNotFound { .. }) => {}
                    Err(e) => panic!("opening {}: {e}", req.reply_to),
                }
                requests.delete(&m.receipt).await.unwrap();
            }
        }
    }
}
