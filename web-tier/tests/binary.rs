//! The `web-tier` binary: serves on the configured address, provisions the local stack,
//! and exits 0 on SIGTERM.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use iras_testkit::process::Spawned;

#[tokio::test]
async fn serves_and_exits_cleanly_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    // Port 0: the binary binds a free port itself and logs it (no race for a port).
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_web-tier"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .env("IRAS_STATE_DIR", state.path())
        .env("RUST_LOG", "info");
    let web = Spawned::start(command, "web tier listening", Duration::from_secs(30)).await;
    let r = reqwest::get(format!("http://{}/healthz", web.addr))
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok\n");
    assert!(
        state.path().join("queues.db").exists(),
        "local stack provisioned"
    );
    let status = web.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}
