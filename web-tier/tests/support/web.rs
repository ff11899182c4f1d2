//! A web tier serving in-process on an ephemeral loopback port, shared by the integration
//! tests: each test file adds its own `Web::start` that builds the arguments.

use std::net::SocketAddr;
use std::time::Duration;

use iras_web_tier::Cli;
use tokio::task::JoinHandle;

/// A running web tier.
#[allow(dead_code)] // not every test file reads every field
pub(crate) struct Web {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) handle: JoinHandle<anyhow::Result<()>>,
}

impl Web {
    /// Serves `args` (and the internal endpoint on `internal`, if given) and waits until
    /// `/healthz` answers (provisioning happens before the socket serves).
    pub(crate) async fn serve(args: Cli, internal: Option<tokio::net::TcpListener>) -> Self {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = http.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(iras_web_tier::serve(args, http, internal, async {
            let _ = stopped.await;
        }));
        let web = Self {
            url: format!("http://{addr}"),
            addr,
            stop: Some(stop),
            handle,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("{}/healthz", web.url)).await
                && r.status().is_success()
            {
                return web;
            }
            assert!(!web.handle.is_finished(), "web tier stopped while starting");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("web tier did not come up");
    }

    /// Asks it to stop and waits (bounded) until it has drained and exited cleanly.
    #[allow(dead_code)] // a test file may stop it its own way
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("web tier stops")
            .unwrap()
            .unwrap();
    }

    /// Asks it to stop without waiting.
    #[allow(dead_code)]
    pub(crate) fn ask_to_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
