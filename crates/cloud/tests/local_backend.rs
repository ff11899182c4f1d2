//! What only the local backend has to prove: it is shared safely by several processes
//! (each with its own database connection), it survives restarts, and a damaged or
//! unusable state directory is a clear error that damages nothing.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iras_cloud::{
    Cloud, CloudError, FleetSpec, InstanceState, LocalLaunch, OutgoingMessage, ReceiveOptions,
    StackSpec,
};

fn stack() -> StackSpec {
    StackSpec {
        request_queue: "requests".into(),
        response_queue: "responses".into(),
        input_bucket: "input".into(),
        output_bucket: "output".into(),
        max_receive_count: 3,
        visibility_timeout: Duration::from_secs(30),
    }
}

/// A second `Cloud` on the same directory has its own SQLite connection and doorbells,
/// exactly like another process.
async fn open(dir: &std::path::Path) -> Cloud {
    Cloud::open_local(dir).await.expect("open local backend")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_on_separate_connections_never_share_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let producer = open(dir.path()).await;
    producer.provision(&stack()).await.unwrap();
    let q = producer.queue("requests").await.unwrap();

    let mut consumers = Vec::new();
    for _ in 0..6 {
        let cloud = open(dir.path()).await;
        consumers.push(tokio::spawn(async move {
            let q = cloud.queue("requests").await.unwrap();
            let mut seen = Vec::new();
            loop {
                let opts = ReceiveOptions {
                    max_messages: 3,
                    wait: Duration::from_secs(2),
                    visibility_timeout: Some(Duration::from_secs(60)),
                };
                let got = q.receive(opts).await.unwrap();
                if got.is_empty() {
                    return seen;
                }
                for m in got {
                    q.delete(&m.receipt).await.unwrap();
                    seen.push(m.body);
                }
            }
        }));
    }
    for i in 0..300 {
        q.send(OutgoingMessage::new(format!("m{i}"))).await.unwrap();
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 300, "a message was delivered twice or lost");
    assert_eq!(unique.len(), 300);
}

#[tokio::test]
async fn a_waiting_receive_wakes_for_a_send_from_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    a.provision(&stack()).await.unwrap();
    let b = open(dir.path()).await;
    let receiver = a.queue("requests").await.unwrap();
    let sender = b.queue("requests").await.unwrap();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let got = receiver
            .receive(ReceiveOptions {
                max_messages: 1,
                wait: Duration::from_secs(20),
                visibility_timeout: None,
            })
            .await
            .unwrap();
        (got, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_at = Instant::now();
    sender.send(OutgoingMessage::new("ding")).await.unwrap();
    let (got, _) = waiter.await.unwrap();
    assert_eq!(got.len(), 1);
    // Far below the 250 ms fallback poll: the doorbell woke it.
    assert!(
        sent_at.elapsed() < Duration::from_millis(200),
        "woke after {:?}",
        sent_at.elapsed()
    );
}

/// The names of the doorbell sockets in a queue's doorbell directory.
fn bells(dir: &std::path::Path, queue: &str) -> HashSet<std::ffi::OsString> {
    std::fs::read_dir(dir.join("doorbells").join(queue))
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_reuse_their_handles_doorbells_and_still_wake() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    a.provision(&stack()).await.unwrap();
    let b = open(dir.path()).await;
    let receiver = std::sync::Arc::new(a.queue("requests").await.unwrap());
    let sender = b.queue("requests").await.unwrap();
    let wait = |max_messages| ReceiveOptions {
        max_messages,
        wait: Duration::from_secs(20),
        visibility_timeout: None,
    };
    // One long poll after another, each woken by a send: one socket serves them all, and
    // a ring left in it while nobody waited does not end the next poll early.
    let mut first = None;
    for round in 0..4 {
        let r = receiver.clone();
        let waiter = tokio::spawn(async move { r.receive(wait(1)).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = bells(dir.path(), "requests");
        assert_eq!(now.len(), 1, "round {round}");
        assert_eq!(
            first.get_or_insert_with(|| now.clone()),
            &now,
            "round {round}"
        );
        let sent_at = Instant::now();
        sender
            .send(OutgoingMessage::new(format!("m{round}")))
            .await
            .unwrap();
        let got = waiter.await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            sent_at.elapsed() < Duration::from_millis(200),
            "round {round} woke after {:?}",
            sent_at.elapsed()
        );
        receiver.delete(&got[0].receipt).await.unwrap();
        // A stale ring: sent while nobody waits, its message taken by another consumer.
        sender.send(OutgoingMessage::new("stale")).await.unwrap();
        let taken = sender
            .receive(ReceiveOptions {
                wait: Duration::ZERO,
                ..wait(1)
            })
            .await
            .unwrap();
        sender.delete(&taken[0].receipt).await.unwrap();
    }
    // Two polls at once on the same handle get a socket each, and both wake.
    let (r1, r2) = (receiver.clone(), receiver.clone());
    let w1 = tokio::spawn(async move { r1.receive(wait(1)).await.unwrap() });
    let w2 = tokio::spawn(async move { r2.receive(wait(1)).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bells(dir.path(), "requests").len(), 2);
    let sent_at = Instant::now();
    sender.send(OutgoingMessage::new("x")).await.unwrap();
    sender.send(OutgoingMessage::new("y")).await.unwrap();
    assert_eq!(w1.await.unwrap().len() + w2.await.unwrap().len(), 2);
    assert!(
        sent_at.elapsed() < Duration::from_millis(200),
        "woke after {:?}",
        sent_at.elapsed()
    );
    // The handle gone, its sockets go too.
    drop(receiver);
    assert!(bells(dir.path(), "requests").is_empty());
}

#[tokio::test]
async fn messages_and_objects_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cloud = open(dir.path()).await;
        cloud.provision(&stack()).await.unwrap();
        cloud
            .queue("requests")
            .await
            .unwrap()
            .send(OutgoingMessage::new("durable"))
            .await
            .unwrap();
        cloud
            .bucket("output")
            .await
            .unwrap()
            .put("k", b"v".to_vec())
            .await
            .unwrap();
    }
    let cloud = open(dir.path()).await;
    let got = cloud
        .queue("requests")
        .await
        .unwrap()
        .receive(ReceiveOptions {
            max_messages: 10,
            wait: Duration::ZERO,
            visibility_timeout: None,
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "durable");
    assert_eq!(
        cloud
            .bucket("output")
            .await
            .unwrap()
            .get("k")
            .await
            .unwrap(),
        b"v"
    );
}

/// Writes `queues.db` as the first release laid it out: bodies inline in `messages`, no
/// `user_version`; one queue `requests` holding one message.
fn write_version_0_database(dir: &std::path::Path, body: &str) {
    let conn = rusqlite::Connection::open(dir.join("queues.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE queues (name TEXT PRIMARY KEY, visibility_timeout_ms INTEGER NOT NULL,
             max_receive_count INTEGER, dead_letter_queue TEXT, created_at_ms INTEGER NOT NULL);
         CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
             message_id TEXT NOT NULL, body TEXT NOT NULL, sent_at_ms INTEGER NOT NULL,
             visible_at_ms INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0,
             receipt TEXT UNIQUE);
         CREATE INDEX messages_by_visibility ON messages (queue, visible_at_ms, seq);
         INSERT INTO queues VALUES ('requests', 30000, NULL, NULL, 0);",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO messages (queue, message_id, body, sent_at_ms, visible_at_ms)
         VALUES ('requests', 'm-1', ?1, 0, 0)",
        [body],
    )
    .unwrap();
}

#[tokio::test]
async fn a_database_of_the_first_layout_keeps_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    write_version_0_database(dir.path(), "queued before the upgrade");
    let receive = ReceiveOptions {
        max_messages: 10,
        wait: Duration::ZERO,
        visibility_timeout: Some(Duration::ZERO),
    };
    // Opened twice: the second opening finds the new layout and changes nothing.
    for _ in 0..2 {
        let queue = open(dir.path()).await.queue("requests").await.unwrap();
        let got = queue.receive(receive).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "queued before the upgrade");
        assert_eq!(got[0].message_id, "m-1");
    }
    let cloud = open(dir.path()).await;
    let queue = cloud.queue("requests").await.unwrap();
    queue
        .send(OutgoingMessage::new("sent after"))
        .await
        .unwrap();
    let got = queue.receive(receive).await.unwrap();
    assert_eq!(got.len(), 2);
    for m in &got {
        queue.delete(&m.receipt).await.unwrap();
    }
    assert!(queue.receive(receive).await.unwrap().is_empty());
    let conn = rusqlite::Connection::open(dir.path().join("queues.db")).unwrap();
    let bodies: i64 = conn
        .query_row("SELECT COUNT(*) FROM bodies", [], |r| r.get(0))
        .unwrap();
    assert_eq!(bodies, 0, "a deleted message leaves no body behind");
}

#[tokio::test]
async fn a_database_of_a_newer_layout_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).await);
    let path = dir.path().join("queues.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Cloud::open_local(dir.path())
        .await
        .expect_err("newer layout");
    assert!(err.to_string().contains("layout version 99"), "{err}");
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99);
}

#[tokio::test]
async fn a_corrupt_database_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queues.db");
    let garbage = b"this is not an SQLite database, and it must not be overwritten".repeat(100);
    std::fs::write(&db, &garbage).unwrap();
    let err = Cloud::open_local(dir.path()).await.expect_err("corrupt");
    assert!(matches!(err, CloudError::CorruptDatabase { .. }), "{err}");
    assert!(err.to_string().contains("queues.db"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
}

#[tokio::test]
async fn an_unusable_state_directory_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Cloud::open_local(file.join("state").as_ref())
        .await
        .expect_err("not a dir");
    assert!(matches!(err, CloudError::StateDir { .. }), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

fn fleet_spec(script: &str, grace: Duration) -> FleetSpec {
    FleetSpec {
        name_prefix: "app-tier-".into(),
        stack: "test".into(),
        tags: vec![],
        local: Some(LocalLaunch {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            grace,
        }),
        ec2: None,
    }
}

async fn wait_for_state(
    fleet: &Arc<dyn iras_cloud::Fleet>,
    id: &str,
    state: InstanceState,
) -> InstanceState {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let current = fleet
            .list()
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.id == id)
            .map(|i| i.state);
        if current == Some(state) || Instant::now() > deadline {
            return current.unwrap_or(InstanceState::Terminated);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_restarted_scaler_sees_and_stops_the_processes_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let script = "touch \"$IRAS_READY_FILE\"; exec sleep 300";
    let id = {
        let fleet = open(dir.path())
            .await
            .fleet(fleet_spec(script, Duration::from_secs(5)))
            .await
            .unwrap();
        let launched = fleet.launch(1).await.unwrap().instances;
        assert_eq!(launched[0].state, InstanceState::Pending);
        launched[0].id.clone()
    };
    // A new process (a restarted scaler) opens the same state directory.
    let fleet = open(dir.path())
        .await
        .fleet(fleet_spec(script, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        wait_for_state(&fleet, &id, InstanceState::Running).await,
        InstanceState::Running
    );
    fleet.terminate(std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(
        wait_for_state(&fleet, &id, InstanceState::Terminated).await,
        InstanceState::Terminated
    );
}

#[tokio::test]
async fn a_fleet_view_in_another_process_sees_the_states_change() {
    let dir = tempfile::tempdir().unwrap();
    // Watching before the scaler ever ran: an empty fleet, not an error.
    let watcher = open(dir.path()).await;
    let view = watcher.fleet_view("test", "app-tier-").unwrap();
    assert!(view.list().await.unwrap().is_empty());
    let other_prefix = watcher.fleet_view("test", "web-").unwrap();
    assert!(watcher.fleet_view("../up", "app-tier-").is_err());

    // Ready once a file appears, so the test decides when the instance serves.
    let ready_when = dir.path().join("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; touch \"$IRAS_READY_FILE\"; exec sleep 300",
        ready_when.display()
    );
    let fleet = open(dir.path())
        .await
        .fleet(fleet_spec(&script, Duration::from_secs(5)))
        .await
        .unwrap();
    let id = fleet.launch(1).await.unwrap().instances[0].id.clone();
    let seen = |state| {
        let view = view.clone();
        let id = id.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let listed = view.list().await.unwrap();
                let now = listed.iter().find(|i| i.id == id).map(|i| i.state);
                if now == Some(state) || Instant::now() > deadline {
                    return (now, listed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (state, listed) = seen(InstanceState::Pending).await;
    assert_eq!(state, Some(InstanceState::Pending));
    assert_eq!(listed[0].name, "app-tier-1");
    assert!(other_prefix.list().await.unwrap().is_empty());
    std::fs::write(&ready_when, b"").unwrap();
    assert_eq!(
        seen(InstanceState::Running).await.0,
        Some(InstanceState::Running)
    );
    fleet.terminate(std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(
        seen(InstanceState::Terminated).await.0,
        Some(InstanceState::Terminated)
    );
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let script = "trap '' TERM; touch \"$IRAS_READY_FILE\"; while :; do sleep 0.1; done";
    let fleet = open(dir.path())
        .await
        .fleet(fleet_spec(script, Duration::from_secs(1)))
        .await
        .unwrap();
    let id = fleet.launch(1).await.unwrap().instances[0].id.clone();
    assert_eq!(
        wait_for_state(&fleet, &id, InstanceState::Running).await,
        InstanceState::Running
    );
    let asked = Instant::now();
    fleet.terminate(std::slice::from_ref(&id)).await.unwrap();
    // Still draining (ignoring SIGTERM) inside the grace period …
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fleet
            .list()
            .await
            .unwrap()
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.state),
        Some(InstanceState::Stopping)
    );
    // … and gone soon after it, without anyone else listing in between.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        wait_for_state(&fleet, &id, InstanceState::Terminated).await,
        InstanceState::Terminated
    );
    assert!(asked.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_zero_visibility_receive_never_returns_a_message_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = open(dir.path()).await;
    let spec = StackSpec {
        max_receive_count: 1,
        ..stack()
    };
    cloud.provision(&spec).await.unwrap();
    let q = cloud.queue("requests").await.unwrap();
    let zero = ReceiveOptions {
        max_messages: 10,
        wait: Duration::ZERO,
        visibility_timeout: Some(Duration::ZERO),
    };
    q.send(OutgoingMessage::new("poison")).await.unwrap();
    // Received once (the limit), and visible again at once.
    assert_eq!(q.receive(zero).await.unwrap().len(), 1);
    q.send(OutgoingMessage::new("fresh")).await.unwrap();
    // This receive dead-letters "poison", looks again to fill the batch, and must return
    // "fresh" exactly once even though receiving it made it visible again.
    let got = q.receive(zero).await.unwrap();
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["fresh"]);
    assert_eq!(got[0].receive_count, 1);
}

#[tokio::test]
async fn a_stack_that_sqs_would_refuse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = open(dir.path()).await;
    let err = cloud
        .provision(&StackSpec {
            max_receive_count: 0,
            ..stack()
        })
        .await
        .expect_err("zero receives");
    assert!(matches!(err, CloudError::InvalidArgument(_)), "{err}");
    let err = cloud
        .fleet(FleetSpec {
            name_prefix: "../x".into(),
            ..fleet_spec("true", Duration::ZERO)
        })
        .await;
    assert!(matches!(err, Err(CloudError::Config(_))), "{err:?}");
}

/// Tiers started together on a fresh state directory (as `scripts/run-local` starts the web
/// tier and the scaler) all open it: creating the database, switching it to WAL and making
/// its schema race, and none may fail with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tiers_opening_a_fresh_state_directory_at_once_all_succeed() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let path = dir.path().to_owned();
                tokio::spawn(async move { Cloud::open_local(&path).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            open.await.unwrap().unwrap();
        }
    }
}

/// Retention on the local backend: objects written before the cutoff go, with the
/// directories they leave empty; newer ones stay.
#[tokio::test]
async fn objects_older_than_the_retention_are_expired_and_newer_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = open(dir.path()).await;
    cloud.provision(&stack()).await.unwrap();
    let name = &stack().input_bucket;
    let bucket = cloud.bucket(name).await.unwrap();
    for key in ["old.png", "batch/old.png", "new.png", "batch2/new.png"] {
        bucket.put(key, b"x".to_vec()).await.unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    for key in ["old.png", "batch/old.png"] {
        let path = dir.path().join("buckets").join(name).join(key);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    let expired = cloud
        .expire_objects(name, Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(expired, Some(2));
    let mut left = bucket.list("").await.unwrap();
    left.sort();
    assert_eq!(left, ["batch2/new.png", "new.png"]);
    assert!(!dir.path().join("buckets").join(name).join("batch").exists());
    assert!(matches!(
        bucket.get("old.png").await,
        Err(CloudError::ObjectNotFound { .. })
    ));
}
