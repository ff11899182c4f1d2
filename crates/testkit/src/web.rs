//! The web tier served in-process on a listener bound to port 0 (no race for a port), as
//! its integration tests and the workload generator's tests run it.

use std::net::SocketAddr;
use std::time::Duration;

use iras_web_tier::Cli;
use tokio::task::JoinHandle;

/// A running web tier.
pub struct Web {
    /// `http://ADDR`.
    pub url: String,
    /// The address it serves on.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The serving task: its result is the web tier's.
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Web {
    /// Serves `cli` (and the internal endpoint on `internal`, if given) and waits until
    /// `/healthz` answers (provisioning happens before the socket serves).
    pub async fn serve(cli: Cli, internal: Option<tokio::net::TcpListener>) -> Self {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = http.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(iras_web_tier::serve(cli, http, internal, async {
            let _ = stopped.await;
        }));
        let web = Self {
            url: format!("http://{addr}"),
            addr,
            stop: Some(stop),
            handle,
        };
        let healthz = format!("{}/healthz", web.url);
        crate::eventually(
            "the web tier to answer /healthz",
            Duration::from_secs(30),
            || async {
                assert!(!web.handle.is_finished(), "web tier stopped while starting");
                let answer = reqwest::get(&healthz).await.ok()?;
                answer.status().is_success().then_some(())
            },
        )
        .await;
        web
    }

    /// Asks it to stop and waits (bounded) until it has drained and exited cleanly.
    pub async fn stop(mut self) {
        self.ask_to_stop();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("web tier stops")
            .unwrap()
            .unwrap();
    }

    /// Asks it to stop without waiting.
    pub fn ask_to_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
