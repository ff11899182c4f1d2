//! Queue behaviour both backends must share.

use std::time::{Duration, Instant};

use iras_cloud::{CloudError, OutgoingMessage, ReceiptHandle, ReceiveOptions};

use crate::harness::{MAX_RECEIVES, TestEnv};

fn opts(max_messages: usize, wait_secs: u64, visibility_secs: Option<u64>) -> ReceiveOptions {
    ReceiveOptions {
        max_messages,
        wait: Duration::from_secs(wait_secs),
        visibility_timeout: visibility_secs.map(Duration::from_secs),
    }
}

/// Receives until `want` messages arrived or `limit` passed (SQS may return fewer than
/// asked per call even when more are visible).
async fn receive_n(
    queue: &dyn iras_cloud::Queue,
    want: usize,
    visibility_secs: u64,
    limit: Duration,
) -> Vec<iras_cloud::ReceivedMessage> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let batch = (want - got.len()).min(10);
        got.extend(
            queue
                .receive(opts(batch, 1, Some(visibility_secs)))
                .await
                .expect("receive"),
        );
    }
    got
}

pub(crate) async fn send_receive_delete(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    let id = q.send(OutgoingMessage::new("hello")).await.expect("send");
    assert!(!id.is_empty());

    let got = receive_n(q.as_ref(), 1, 30, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "hello");
    assert_eq!(got[0].message_id, id);
    assert_eq!(got[0].receive_count, 1);

    q.delete(&got[0].receipt).await.expect("delete");
    assert!(
        q.receive(opts(10, 0, None))
            .await
            .expect("receive")
            .is_empty()
    );
    assert_eq!(q.depth().await.expect("depth").total(), 0);
}

pub(crate) async fn batch_send_and_receive_up_to_ten(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    let bodies: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let results = q
        .send_batch(
            bodies
                .iter()
                .map(|b| OutgoingMessage::new(b.clone()))
                .collect(),
        )
        .await
        .expect("send_batch");
    assert_eq!(results.len(), 10);
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // Eleven entries is over the limit on both backends.
    let eleven = (0..11)
        .map(|i| OutgoingMessage::new(format!("x{i}")))
        .collect();
    assert!(matches!(
        q.send_batch(eleven).await,
        Err(CloudError::InvalidArgument(_))
    ));

    let got = receive_n(q.as_ref(), 10, 30, Duration::from_secs(10)).await;
    let mut seen: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
    seen.sort();
    let mut want = bodies.clone();
    want.sort();
    assert_eq!(seen, want);
}

pub(crate) async fn invalid_receive_options_are_rejected(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    for bad in [opts(0, 0, None), opts(11, 0, None), opts(1, 21, None)] {
        assert!(
            matches!(q.receive(bad).await, Err(CloudError::InvalidArgument(_))),
            "{bad:?}"
        );
    }
}

pub(crate) async fn visibility_expiry_redelivers_with_higher_receive_count(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    q.send(OutgoingMessage::new("again")).await.expect("send");

    let first = receive_n(q.as_ref(), 1, 1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    // Hidden while its visibility timeout runs.
    assert!(
        q.receive(opts(1, 0, None))
            .await
            .expect("receive")
            .is_empty()
    );

    let started = Instant::now();
    let second = receive_n(q.as_ref(), 1, 30, Duration::from_secs(10)).await;
    assert_eq!(
        second.len(),
        1,
        "message did not come back after its visibility timeout"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(second[0].body, "again");
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt, first[0].receipt);
    q.delete(&second[0].receipt)
        .await
        .expect("delete with the newest receipt");
}

pub(crate) async fn change_visibility_to_zero_redelivers_at_once(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    q.send(OutgoingMessage::new("heartbeat"))
        .await
        .expect("send");
    let got = receive_n(q.as_ref(), 1, 30, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    // A heartbeat extends it …
    q.change_visibility(&got[0].receipt, Duration::from_secs(60))
        .await
        .expect("extend");
    assert!(
        q.receive(opts(1, 0, None))
            .await
            .expect("receive")
            .is_empty()
    );
    // … and zero releases it.
    q.change_visibility(&got[0].receipt, Duration::ZERO)
        .await
        .expect("release");
    let again = receive_n(q.as_ref(), 1, 30, Duration::from_secs(5)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
}

pub(crate) async fn long_poll_returns_as_soon_as_a_message_arrives(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    let sender = q.clone();
    let send_after = Duration::from_millis(700);
    let send = tokio::spawn(async move {
        tokio::time::sleep(send_after).await;
        sender
            .send(OutgoingMessage::new("wake"))
            .await
            .expect("send");
    });
    let started = Instant::now();
    let got = q.receive(opts(1, 10, Some(30))).await.expect("receive");
    let waited = started.elapsed();
    send.await.expect("sender task");
    assert_eq!(got.len(), 1, "long poll returned empty after {waited:?}");
    assert_eq!(got[0].body, "wake");
    assert!(
        waited >= send_after,
        "returned before the message was sent: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "long poll did not wake promptly: {waited:?}"
    );
}

pub(crate) async fn long_poll_times_out_empty(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    let started = Instant::now();
    let got = q.receive(opts(1, 1, None)).await.expect("receive");
    assert!(got.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "returned too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "overstayed its wait: {waited:?}"
    );
}

pub(crate) async fn batch_delete_reports_bad_entry_and_deletes_good_ones(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    for i in 0..3 {
        q.send(OutgoingMessage::new(format!("d{i}")))
            .await
            .expect("send");
    }
    let got = receive_n(q.as_ref(), 3, 30, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3);
    let mut receipts: Vec<ReceiptHandle> = got.iter().map(|m| m.receipt.clone()).collect();
    receipts.insert(1, ReceiptHandle("not-a-receipt-handle".into()));
    let results = q.delete_batch(receipts).await.expect("delete_batch");
    assert_eq!(results.len(), 4);
    assert!(
        results[0].is_ok() && results[2].is_ok() && results[3].is_ok(),
        "{results:?}"
    );
    let bad = results[1].as_ref().expect_err("bad receipt must fail");
    assert!(bad.sender_fault, "{bad:?}");
    let depth = q.depth().await.expect("depth");
    assert_eq!(depth.total(), 0, "good entries were not deleted: {depth:?}");
}

pub(crate) async fn depth_counts_visible_in_flight_and_delayed(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    for i in 0..3 {
        q.send(OutgoingMessage::new(format!("v{i}")))
            .await
            .expect("send");
    }
    q.send(OutgoingMessage {
        body: "later".into(),
        delay: Duration::from_secs(60),
    })
    .await
    .expect("send delayed");
    let got = receive_n(q.as_ref(), 1, 60, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let depth = q.depth().await.expect("depth");
    assert_eq!(
        (depth.visible, depth.in_flight, depth.delayed),
        (2, 1, 1),
        "{depth:?}"
    );
    assert_eq!(depth.total(), 4);
}

pub(crate) async fn dead_letters_after_max_receives(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    let dlq_name = iras_cloud::StackSpec::dead_letter_queue(&stack.request_queue);
    let dlq = env.cloud.queue(&dlq_name).await.expect("dead-letter queue");
    assert_eq!(
        q.max_receive_count().await.expect("limit"),
        Some(MAX_RECEIVES)
    );
    assert_eq!(dlq.max_receive_count().await.expect("limit"), None);
    q.send(OutgoingMessage::new("poison")).await.expect("send");

    // Received MAX_RECEIVES times without being deleted …
    for n in 1..=MAX_RECEIVES {
        let got = receive_n(q.as_ref(), 1, 30, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 1, "receive #{n}");
        assert_eq!(got[0].receive_count, n);
        q.change_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .expect("release");
    }
    // … the next receive moves it to the dead-letter queue instead of returning it.
    let after = q.receive(opts(1, 1, Some(30))).await.expect("receive");
    assert!(
        after.is_empty(),
        "message was delivered past maxReceiveCount: {after:?}"
    );
    let dead = receive_n(dlq.as_ref(), 1, 30, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1, "message did not reach the dead-letter queue");
    assert_eq!(dead[0].body, "poison");
    assert_eq!(q.depth().await.expect("depth").total(), 0);
}

pub(crate) async fn oversized_message_is_rejected(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    let body = "x".repeat(iras_cloud::queue::MAX_MESSAGE_BYTES + 1);
    let err = q
        .send(OutgoingMessage::new(body))
        .await
        .expect_err("too large");
    assert!(matches!(err, CloudError::MessageTooLarge { .. }), "{err}");
    // At the limit is fine.
    let body = "y".repeat(iras_cloud::queue::MAX_MESSAGE_BYTES);
    q.send(OutgoingMessage::new(body))
        .await
        .expect("exactly at the limit");
}

pub(crate) async fn missing_queue_is_a_typed_error(env: &TestEnv) {
    let err = env
        .cloud
        .queue(&format!("{}-nope", env.prefix))
        .await
        .expect_err("missing");
    assert!(matches!(err, CloudError::QueueNotFound { .. }), "{err}");
    let err = env.cloud.queue("../etc/passwd").await.expect_err("invalid");
    assert!(matches!(err, CloudError::InvalidQueueName { .. }), "{err}");
}

pub(crate) async fn provision_is_idempotent(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    q.send(OutgoingMessage::new("survives"))
        .await
        .expect("send");
    env.cloud.provision(&stack).await.expect("second provision");
    let got = receive_n(q.as_ref(), 1, 30, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "provisioning again lost a message");
}

pub(crate) async fn a_queue_made_like_another_shares_its_dead_letter_queue_and_can_be_deleted(
    env: &TestEnv,
) {
    let stack = env.stack().await;
    let own = format!("{}-resp-web-1", env.prefix);
    let q = env
        .cloud
        .create_queue_like(&stack.response_queue, &own)
        .await
        .expect("create like the response queue");
    assert_eq!(q.name(), own);
    assert_eq!(
        q.max_receive_count().await.expect("limit"),
        Some(MAX_RECEIVES)
    );
    // Idempotent: a second create keeps the queue and what is in it.
    q.send(OutgoingMessage::new("poison")).await.expect("send");
    let again = env
        .cloud
        .create_queue_like(&stack.response_queue, &own)
        .await
        .expect("create again");
    assert_eq!(again.depth().await.expect("depth").total(), 1);

    // Dead-lettered to the template's dead-letter queue, after the template's limit.
    for n in 1..=MAX_RECEIVES {
        let got = receive_n(q.as_ref(), 1, 30, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 1, "receive #{n}");
        q.change_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .expect("release");
    }
    let after = q.receive(opts(1, 1, Some(30))).await.expect("receive");
    assert!(after.is_empty(), "delivered past the limit: {after:?}");
    let dlq_name = iras_cloud::StackSpec::dead_letter_queue(&stack.response_queue);
    let dlq = env.cloud.queue(&dlq_name).await.expect("dead-letter queue");
    let dead = receive_n(dlq.as_ref(), 1, 30, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1, "not in the template's dead-letter queue");
    assert_eq!(dead[0].body, "poison");

    // Deleted: the handle and new handles say so; deleting twice is fine; the template
    // is untouched.
    env.cloud.delete_queue(&own).await.expect("delete");
    let err = q
        .send(OutgoingMessage::new("late"))
        .await
        .expect_err("send to a deleted queue");
    assert!(matches!(err, CloudError::QueueNotFound { .. }), "{err}");
    let err = env
        .cloud
        .queue(&own)
        .await
        .expect_err("open a deleted queue");
    assert!(matches!(err, CloudError::QueueNotFound { .. }), "{err}");
    env.cloud.delete_queue(&own).await.expect("delete again");
    env.cloud
        .queue(&stack.response_queue)
        .await
        .expect("the template is still there");

    let err = env
        .cloud
        .create_queue_like(&format!("{}-nope", env.prefix), &own)
        .await
        .expect_err("no template");
    assert!(matches!(err, CloudError::QueueNotFound { .. }), "{err}");
}
