//! A tier binary started on port 0 that reports the address it bound.
//!
//! Picking a "free" port by binding it, reading it and releasing it races every other
//! process that binds port 0 in between. Here the binary binds port 0 itself and says in
//! its log which address it got: it runs with `IRAS_LOG_FORMAT=json`, and [`Spawned::start`]
//! reads its stderr until the log event that names the address. The rest of the log is
//! passed through to the test's stderr, so a failing test still shows it.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running binary and the address it bound.
pub struct Spawned {
    /// The process (killed when dropped).
    pub child: Child,
    /// The address its log reported.
    pub addr: SocketAddr,
}

impl Spawned {
    /// Starts `command` with JSON logs and waits (at most `within`) for the log event whose
    /// message is `message` and whose `addr` field is the bound address, e.g. the web
    /// tier's `"web tier listening"`. Panics if the process exits or says nothing in time.
    pub async fn start(mut command: Command, message: &str, within: Duration) -> Self {
        command
            .env(iras_protocol::env::IRAS_LOG_FORMAT, "json")
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("starting the binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let found = tokio::time::timeout(within, async {
            while let Some(line) = lines.next_line().await.expect("reading the log") {
                eprintln!("{line}");
                if let Some(addr) = bound_addr(&line, message) {
                    return Some(addr);
                }
            }
            None
        })
        .await;
        let addr = match found {
            Ok(Some(addr)) => addr,
            Ok(None) => panic!("the binary exited before logging {message:?}"),
            Err(_) => panic!("the binary did not log {message:?} within {within:?}"),
        };
        // Keep draining: a full pipe would block the child's logging.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
            }
        });
        Self { child, addr }
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit.
    pub async fn terminate(mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().expect("the process still runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits in i32")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("sending SIGTERM");
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the process exits after SIGTERM")
            .expect("waiting for the process")
    }
}

/// The `addr` field of a JSON log line whose message is `message`.
fn bound_addr(line: &str, message: &str) -> Option<SocketAddr> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = event.get("fields")?;
    if fields.get("message")?.as_str()? != message {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_matching_event_only() {
        let line = r#"{"timestamp":"t","level":"INFO","fields":{"message":"web tier listening","addr":"127.0.0.1:41234"},"target":"iras_web_tier"}"#;
        assert_eq!(
            bound_addr(line, "web tier listening"),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(bound_addr(line, "scaler metrics listening"), None);
        assert_eq!(bound_addr("plain text", "web tier listening"), None);
    }
}
