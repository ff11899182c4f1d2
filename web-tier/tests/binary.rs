//! The `web-tier` binary: serves on the configured address, provisions the local stack,
//! and exits 0 on SIGTERM.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

#[tokio::test]
async fn serves_and_exits_cleanly_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    // A free port: bind, read, release (the binary binds it a moment later).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_web-tier"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("IRAS_STATE_DIR", state.path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
            assert_eq!(r.text().await.unwrap(), "ok\n");
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "web tier did not come up");
    assert!(
        state.path().join("queues.db").exists(),
        "local stack provisioned"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
