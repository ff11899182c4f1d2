//! One worker loop as a small pipeline: a receiver task keeps the next batch ready, the
//! loop classifies, and storing and answering run in the background; on shutdown it
//! drains what it holds. Its own module because this is the concurrency of the worker,
//! apart from what is done to each message.

use std::sync::Arc;
use std::time::Duration;

use iras_classifier::Classifier;
use iras_cloud::{ReceiptHandle, ReceiveOptions, ReceivedMessage};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::answer::{delete, finish};
use super::heartbeat::Heartbeat;
use super::process::{Step, classify_message};

/// Longest pause between failed receives (capped exponential backoff).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Most answered messages one loop stores and answers in the background while it already
/// classifies the next: enough to keep the session busy, few enough to bound memory.
const MAX_FINISHING: usize = 4;

/// One worker loop: a receiver task keeps the next batch ready (received while the current
/// image is classified), this task classifies, and storing and answering run in the
/// background so the session never waits on a bucket or a queue.
pub(super) async fn worker_loop(
    n: usize,
    shared: Arc<Shared>,
    classifier: Classifier,
    stop: CancellationToken,
) {
    let heartbeat = Heartbeat::start(shared.clone());
    // Capacity = one batch: the receiver asks for the next batch only once the previous
    // one was taken, so a loop holds at most one batch beyond the image it works on.
    let (tx, mut rx) = tokio::sync::mpsc::channel(shared.config.batch_size);
    let receiver = tokio::spawn(receive_loop(
        n,
        shared.clone(),
        heartbeat.clone(),
        tx,
        stop.clone(),
    ));
    let mut classifier = Some(classifier);
    let mut finishing: tokio::task::JoinSet<(ReceiptHandle, bool)> = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(joined) = finishing.join_next(), if !finishing.is_empty() => {
                let mut done = Vec::new();
                collect(joined, &heartbeat, &mut done);
                while let Some(joined) = finishing.try_join_next() {
                    collect(joined, &heartbeat, &mut done);
                }
                delete(&shared, done).await;
            }
            message = rx.recv() => {
                let Some(message) = message else { break };
                let (back, step) = classify_message(&shared, classifier.take(), &message).await;
                classifier = back;
                match step {
                    Step::Finished(handled) => {
                        heartbeat.release(&message.receipt);
                        if handled {
                            delete(&shared, vec![message.receipt]).await;
                        }
                    }
                    Step::Finish(work) => {
                        if finishing.len() >= MAX_FINISHING {
                            let mut done = Vec::new();
                            if let Some(joined) = finishing.join_next().await {
                                collect(joined, &heartbeat, &mut done);
                            }
                            delete(&shared, done).await;
                        }
                        let shared = shared.clone();
                        finishing.spawn(async move {
                            let handled = finish(&shared, work).await;
                            (message.receipt, handled)
                        });
                    }
                }
                if classifier.is_none() {
                    tracing::error!(worker_loop = n, "classifier lost (inference panicked): loop stops");
                    break;
                }
            }
        }
    }
    // Stop receiving (the receiver also stops on shutdown); what it still held comes back
    // after its visibility timeout.
    drop(rx);
    let mut done = Vec::new();
    while let Some(joined) = finishing.join_next().await {
        collect(joined, &heartbeat, &mut done);
    }
    delete(&shared, done).await;
    heartbeat.stop();
    if let Err(e) = receiver.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Long-polls for the next batch whenever the worker has taken the previous one.
async fn receive_loop(
    n: usize,
    shared: Arc<Shared>,
    heartbeat: Heartbeat,
    tx: tokio::sync::mpsc::Sender<ReceivedMessage>,
    stop: CancellationToken,
) {
    let options = ReceiveOptions {
        max_messages: shared.config.batch_size,
        wait: shared.config.wait,
        visibility_timeout: Some(shared.config.visibility_timeout),
    };
    let mut backoff = iras_service::Backoff::new(MAX_BACKOFF);
    loop {
        let permits = tokio::select! {
            () = stop.cancelled() => break,
            permits = tx.reserve_many(options.max_messages) => match permits {
                Ok(permits) => permits,
                Err(_) => break, // the worker stopped
            },
        };
        let received = tokio::select! {
            () = stop.cancelled() => break,
            r = shared.requests.receive(options) => r,
        };
        match received {
            Ok(batch) => {
                backoff.reset();
                heartbeat.hold(&batch);
                for (message, permit) in batch.into_iter().zip(permits) {
                    permit.send(message);
                }
            }
            Err(e) => {
                let pause = backoff.next_pause();
                tracing::warn!(worker_loop = n, error = %e, retry_in = ?pause, "receive failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Takes a finished message out of the heartbeat and queues it for deletion if answered.
fn collect(
    joined: Result<(ReceiptHandle, bool), tokio::task::JoinError>,
    heartbeat: &Heartbeat,
    done: &mut Vec<ReceiptHandle>,
) {
    match joined {
        Ok((receipt, handled)) => {
            heartbeat.release(&receipt);
            if handled {
                done.push(receipt);
            }
        }
        // The message stays in the heartbeat and is answered again after a redelivery.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => tracing::error!(error = %e, "finishing task cancelled"),
    }
}
