//! The `dlq` commands as an operator runs them, on both backends (`local::…` on a fresh
//! state directory, `aws::…` on the moto server named in `IRAS_TEST_AWS_ENDPOINT`; the aws
//! variants fail, never skip, without it).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use iras_cloud::{BackendKind, Cloud, OutgoingMessage, StackSpec};
use iras_dlq::Cli;
use iras_protocol::{FileName, ImagePayload, KeyScheme, RequestId, RequestMessage};
use iras_testkit::TestStack;

struct Env {
    argv: Vec<String>,
    cloud: Cloud,
    stack: StackSpec,
    _stack: TestStack,
}

impl Env {
    async fn new(aws: bool) -> Self {
        let backend = if aws {
            BackendKind::Aws
        } else {
            BackendKind::Local
        };
        // Unique names on either backend, and a receive limit of 2.
        let id = format!("d{}", &uuid_simple()[..12]);
        let test_stack = TestStack::on_with(backend, |spec| {
            *spec = StackSpec {
                request_queue: format!("{id}-req"),
                response_queue: format!("{id}-resp"),
                input_bucket: format!("{id}-in"),
                output_bucket: format!("{id}-out"),
                max_receive_count: 2,
                visibility_timeout: Duration::from_secs(30),
            };
        })
        .await;
        let mut argv = vec!["dlq".to_owned()];
        argv.extend(test_stack.backend_flags());
        argv.extend(["--queue".into(), test_stack.spec.request_queue.clone()]);
        Self {
            argv,
            cloud: test_stack.cloud.clone(),
            stack: test_stack.spec.clone(),
            _stack: test_stack,
        }
    }

    /// Runs `dlq … <args>`; its exit code and what it printed.
    async fn run(&self, args: &[&str]) -> anyhow::Result<(ExitCode, String)> {
        let mut argv = self.argv.clone();
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        let cli = Cli::try_parse_from(argv)?;
        let mut out = Vec::new();
        let code = iras_dlq::run_to(cli, &mut out).await?;
        Ok((code, String::from_utf8(out).unwrap()))
    }
}

fn uuid_simple() -> String {
    RequestId::new().to_string().replace('-', "")
}

fn request(name: &str) -> RequestMessage {
    RequestMessage {
        version: iras_protocol::PROTOCOL_VERSION,
        id: RequestId::new(),
        file_name: FileName::parse(name).unwrap(),
        image: ImagePayload::inline(b"not really an image"),
        reply_to: "iras-responses".into(),
        submitted_at_ms: 0,
        top_k: 1,
        key_scheme: KeyScheme::FileName,
    }
}

async fn list_show_redrive_purge(aws: bool) {
    let env = Env::new(aws).await;
    let dlq = env
        .cloud
        .queue(&StackSpec::dead_letter_queue(&env.stack.request_queue))
        .await
        .unwrap();
    let source = env.cloud.queue(&env.stack.request_queue).await.unwrap();
    let req = request("test_0.JPEG");
    let req_msg = dlq
        .send(OutgoingMessage::new(req.encode().unwrap()))
        .await
        .unwrap();
    let junk_msg = dlq
        .send(OutgoingMessage::new("this is not a request"))
        .await
        .unwrap();

    let (code, out) = env.run(&["list"]).await.unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(out.contains(": 2 message(s)"), "{out}");
    assert!(out.contains(&req_msg) && out.contains(&junk_msg), "{out}");
    assert!(
        out.contains(&format!("request {} test_0.JPEG (inline", req.id)),
        "{out}"
    );
    assert!(
        out.contains("unreadable: \"this is not a request\""),
        "{out}"
    );
    let (_, json) = env.run(&["list", "--json", "--limit", "1"]).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["depth"]["visible"], 2, "{json}");
    assert_eq!(json["messages"].as_array().unwrap().len(), 1);

    let (_, shown) = env.run(&["show", &req_msg]).await.unwrap();
    assert!(
        shown.contains(&format!("message id:    {req_msg}")),
        "{shown}"
    );
    assert!(shown.contains("base64 chars; --raw shows them"), "{shown}");
    let err = env.run(&["show", "no-such-id"]).await.unwrap_err();
    assert!(err.to_string().contains("no message no-such-id"), "{err}");

    // Purge needs --yes, and a selection.
    let err = env.run(&["purge", "--all"]).await.unwrap_err();
    assert!(err.to_string().contains("--yes"), "{err}");
    assert!(env.run(&["purge", "--yes"]).await.is_err());

    // Redrive the request, purge the junk; an unknown id makes the exit code 1.
    let (code, out) = env.run(&["redrive", &req_msg, "gone"]).await.unwrap();
    assert_eq!(code, ExitCode::from(1), "{out}");
    assert!(
        out.contains("redrove to") && out.contains("not found: gone"),
        "{out}"
    );
    let back = source
        .receive(iras_cloud::ReceiveOptions {
            max_messages: 10,
            wait: Duration::from_secs(2),
            visibility_timeout: Some(Duration::from_secs(30)),
        })
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(RequestMessage::decode(&back[0].body).unwrap(), req);
    let (code, out) = env.run(&["purge", "--all", "--yes"]).await.unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(
        out.contains("deleted from") && out.contains(&junk_msg),
        "{out}"
    );
    let (_, out) = env.run(&["list"]).await.unwrap();
    assert!(out.contains(": 0 message(s)"), "{out}");
}

mod local {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_show_redrive_purge() {
        super::list_show_redrive_purge(false).await;
    }
}

mod aws {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_show_redrive_purge() {
        super::list_show_redrive_purge(true).await;
    }
}
