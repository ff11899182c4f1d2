//! The dead-letter tools (`iras_cloud::dead_letter`) on both backends: scan and release,
//! redrive by id and all, purge.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iras_cloud::OutgoingMessage;
use iras_cloud::dead_letter::{self, Selection};

use crate::harness::TestEnv;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

const HOLD: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(60);

pub(crate) async fn dead_letter_scan_redrive_and_purge(env: &TestEnv) {
    let stack = env.stack().await;
    let q = env.cloud.queue(&stack.request_queue).await.expect("queue");
    let dlq_name = iras_cloud::StackSpec::dead_letter_queue(&stack.request_queue);
    let dlq = env.cloud.queue(&dlq_name).await.expect("dead-letter queue");
    let before = now_ms();
    let bodies: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    for chunk in bodies.chunks(10) {
        let sent = dlq
            .send_batch(chunk.iter().map(OutgoingMessage::new).collect())
            .await
            .expect("send_batch");
        assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    }

    // A partial look holds what it saw; released, everything is visible again.
    let some = dead_letter::scan(dlq.as_ref(), 5, HOLD, DEADLINE)
        .await
        .expect("scan");
    assert_eq!(some.messages.len(), 5);
    assert!(!some.complete);
    for m in &some.messages {
        // Sent a moment ago, by the clock of this machine (moto runs here too).
        assert!(
            m.sent_at_ms + 5_000 >= before && m.sent_at_ms <= now_ms() + 5_000,
            "sent_at_ms {} not near {before}",
            m.sent_at_ms
        );
    }
    dead_letter::release(dlq.as_ref(), &some.messages).await;
    let all = dead_letter::scan(dlq.as_ref(), 100, HOLD, DEADLINE)
        .await
        .expect("scan");
    assert!(all.complete);
    let mut seen: Vec<&str> = all.messages.iter().map(|m| m.body.as_str()).collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = bodies.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(seen, want);
    dead_letter::release(dlq.as_ref(), &all.messages).await;
    let id_of = |body: &str| {
        all.messages
            .iter()
            .find(|m| m.body == body)
            .map(|m| m.message_id.clone())
            .expect("scanned")
    };

    // Redrive two by id (and one id that is not there).
    let moved = dead_letter::redrive(
        dlq.as_ref(),
        q.as_ref(),
        &Selection::Ids(vec![id_of("m0"), id_of("m1"), "no-such-message".into()]),
        DEADLINE,
    )
    .await
    .expect("redrive");
    assert_eq!(moved.done.len(), 2, "{moved:?}");
    assert_eq!(moved.missing, vec!["no-such-message".to_owned()]);
    assert!(moved.failed.is_empty());
    let back = dead_letter::scan(q.as_ref(), 10, HOLD, DEADLINE)
        .await
        .expect("scan source");
    let mut back: Vec<&str> = back.messages.iter().map(|m| m.body.as_str()).collect();
    back.sort_unstable();
    assert_eq!(back, ["m0", "m1"]);
    assert!(
        dead_letter::scan(q.as_ref(), 10, HOLD, Duration::from_secs(5))
            .await
            .expect("scan")
            .messages
            .is_empty(),
        "a redriven message was sent twice"
    );

    // Purge one by id, then redrive the rest.
    let purged = dead_letter::purge(dlq.as_ref(), &Selection::Ids(vec![id_of("m2")]), DEADLINE)
        .await
        .expect("purge");
    assert_eq!(purged.done, vec![id_of("m2")]);
    assert_eq!(dlq.depth().await.expect("depth").total(), 9);
    let moved = dead_letter::redrive(dlq.as_ref(), q.as_ref(), &Selection::All, DEADLINE)
        .await
        .expect("redrive all");
    assert_eq!(moved.done.len(), 9, "{moved:?}");
    assert_eq!(dlq.depth().await.expect("depth").total(), 0);
    assert_eq!(q.depth().await.expect("depth").total(), 11);
    // Nothing left to purge.
    let purged = dead_letter::purge(dlq.as_ref(), &Selection::All, DEADLINE)
        .await
        .expect("purge all");
    assert!(purged.done.is_empty());
}
