//! The control loop against the local backend: real child processes (a stand-in for the
//! app tier that reports ready and sleeps), a real SQLite queue, short intervals.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use iras_cli::StackArgs;
use iras_cloud::{Cloud, Fleet, FleetSpec, LocalLaunch, OutgoingMessage, Queue, ReceiveOptions};
use iras_scaler::RunConfig;
use iras_scaler::policy::{Bounds, Policy, SeedConfig};

const INTERVAL: Duration = Duration::from_millis(250);

struct Stack {
    _dir: tempfile::TempDir,
    cloud: Cloud,
    queue: Arc<dyn Queue>,
    fleet: Arc<dyn Fleet>,
    config: RunConfig,
}

async fn stack(max: u32) -> Stack {
    stack_running(max, r#"touch "$IRAS_READY_FILE"; exec sleep 120"#).await
}

/// A stack whose stand-in app tier runs `script` (`sh -c`).
async fn stack_running(max: u32, script: &str) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::open_local(dir.path()).await.unwrap();
    let stack_args = StackArgs::default();
    stack_args.ensure(&cloud).await.unwrap();
    let queue = cloud.queue(&stack_args.request_queue).await.unwrap();
    let spec = FleetSpec {
        name_prefix: "app-tier-".into(),
        stack: "test".into(),
        tags: vec![("Type".into(), "apptier".into())],
        local: Some(LocalLaunch {
            program: "/bin/sh".into(),
            // Sleeps a bounded time so a failed test leaks nothing for long.
            args: vec!["-c".into(), script.into()],
            env: vec![],
            grace: Duration::from_secs(5),
        }),
        ec2: None,
    };
    let fleet = cloud.fleet(spec.clone()).await.unwrap();
    let config = RunConfig {
        request_queue: stack_args.request_queue.clone(),
        fleet: spec,
        policy: Policy::Seed(SeedConfig {
            bounds: Bounds { min: 0, max },
            ..SeedConfig::default()
        }),
        interval: INTERVAL,
        metrics_listen: None,
        terminate_on_exit: true,
        ready_grace: iras_scaler::control::DEFAULT_READY_GRACE,
        launch_backoff: iras_scaler::control::DEFAULT_LAUNCH_BACKOFF,
    };
    Stack {
        _dir: dir,
        cloud,
        queue,
        fleet,
        config,
    }
}

async fn send(queue: &dyn Queue, n: usize) {
    let messages: Vec<_> = (0..n)
        .map(|i| OutgoingMessage::new(format!("request {i}")))
        .collect();
    for chunk in messages.chunks(10) {
        for r in queue.send_batch(chunk.to_vec()).await.unwrap() {
            r.unwrap();
        }
    }
}

async fn delete_all(queue: &dyn Queue) {
    loop {
        let got = queue
            .receive(ReceiveOptions {
                max_messages: 10,
                wait: Duration::ZERO,
                visibility_timeout: None,
            })
            .await
            .unwrap();
        if got.is_empty() {
            return;
        }
        let receipts = got.into_iter().map(|m| m.receipt).collect();
        for r in queue.delete_batch(receipts).await.unwrap() {
            r.unwrap();
        }
    }
}

async fn active(fleet: &dyn Fleet) -> usize {
    fleet
        .list()
        .await
        .unwrap()
        .iter()
        .filter(|i| i.state.is_active())
        .count()
}

/// Polls the fleet until `want` instances are active, returning the most seen meanwhile.
async fn wait_for_active(fleet: &dyn Fleet, want: usize, within: Duration) -> usize {
    let mut most = 0;
    let result = tokio::time::timeout(within, async {
        loop {
            let n = active(fleet).await;
            most = most.max(n);
            if n == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "never reached {want} active instances (most seen: {most})"
    );
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_scales_out_to_50_and_back_to_min() {
    let s = stack(60).await;
    send(s.queue.as_ref(), 100).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scaler = tokio::spawn(iras_scaler::control::run(
        s.config.clone(),
        s.cloud.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let most = wait_for_active(s.fleet.as_ref(), 50, Duration::from_secs(20)).await;
    assert!(most <= 50, "{most} instances for a depth of 100");
    // The stand-in reports ready: the fleet moves to running.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !s
            .fleet
            .list()
            .await
            .unwrap()
            .iter()
            .any(|i| i.state == iras_cloud::InstanceState::Running)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // The burst is served: the tracker agrees after K polls and the fleet goes to min.
    delete_all(s.queue.as_ref()).await;
    let most = wait_for_active(s.fleet.as_ref(), 0, Duration::from_secs(20)).await;
    assert!(most <= 50);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), scaler)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_exceeds_max_and_terminates_on_exit() {
    let s = stack(19).await;
    send(s.queue.as_ref(), 100).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scaler = tokio::spawn(iras_scaler::control::run(
        s.config.clone(),
        s.cloud.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    wait_for_active(s.fleet.as_ref(), 19, Duration::from_secs(20)).await;
    // Watch a few scale-in cycles of the seed at a depth nobody drains.
    let deadline = tokio::time::Instant::now() + INTERVAL * 14;
    while tokio::time::Instant::now() < deadline {
        let n = active(s.fleet.as_ref()).await;
        assert!(n <= 19, "{n} active instances with max 19");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), scaler)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // --terminate-on-exit: the whole fleet goes.
    wait_for_active(s.fleet.as_ref(), 0, Duration::from_secs(5)).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while s
            .fleet
            .list()
            .await
            .unwrap()
            .iter()
            .any(|i| i.state != iras_cloud::InstanceState::Terminated)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every stand-in process ended after SIGTERM");
}

#[tokio::test]
async fn metrics_are_served() {
    let s = stack(19).await;
    // Bound here and handed over: no race for a free port.
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = metrics.local_addr().unwrap();
    let config = RunConfig {
        policy: Policy::Seed(SeedConfig {
            out_divisor: NonZeroU64::new(2).unwrap(),
            ..SeedConfig::default()
        }),
        ..s.config.clone()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scaler = tokio::spawn(iras_scaler::control::serve(
        config,
        s.cloud.clone(),
        Some(metrics),
        async {
            let _ = stopped.await;
        },
    ));
    let body = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(port).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut body = String::new();
                stream.read_to_string(&mut body).await.unwrap();
                if body.contains("iras_scaler_instances") {
                    return body;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("iras_scaler_launches_total 0"), "{body}");
    assert!(body.contains("iras_scaler_queue_depth 0"), "{body}");
    stop.send(()).unwrap();
    scaler.await.unwrap().unwrap();
}

/// A stand-in that starts but never reports ready (as an app tier restart-looping on a
/// broken model would): after the grace period the scaler terminates it, counts it, holds
/// launches back for the backoff, then launches a replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_never_becomes_ready_is_replaced() {
    let mut s = stack_running(1, "exec sleep 120").await;
    s.config.ready_grace = Duration::from_secs(1);
    s.config.launch_backoff = Duration::from_secs(1);
    send(s.queue.as_ref(), 4).await;
    let metrics = iras_scaler::control::Metrics::new();
    let mut state = iras_scaler::control::LoopState::new(&s.config);
    let started = tokio::time::Instant::now();
    let mut names_launched = std::collections::BTreeSet::new();
    let mut terminated_ids = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(15) {
        iras_scaler::control::run_once(
            &s.config,
            s.queue.as_ref(),
            s.fleet.as_ref(),
            &mut state,
            &metrics,
            started.elapsed(),
        )
        .await
        .unwrap();
        for i in s.fleet.list().await.unwrap() {
            names_launched.insert(i.id.clone());
            if !i.state.is_active() {
                terminated_ids.insert(i.id);
            }
        }
        if terminated_ids.len() >= 2 {
            break;
        }
        tokio::time::sleep(INTERVAL).await;
    }
    let text = metrics.render();
    assert!(
        terminated_ids.len() >= 2,
        "two never-ready instances replaced in turn: launched {names_launched:?}, \
         ended {terminated_ids:?}\n{text}"
    );
    assert!(
        text.contains("iras_scaler_never_ready_terminations_total 2")
            || text.contains("iras_scaler_never_ready_terminations_total 3"),
        "{text}"
    );
    // Never more than max (1) active at once, even while replacing.
    assert!(active(s.fleet.as_ref()).await <= 1);
    let all: Vec<String> = s
        .fleet
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    s.fleet.terminate(&all).await.unwrap();
}
