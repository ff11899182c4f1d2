//! A provisioned stack on either backend, and the flags a tier needs to join it.

use std::path::Path;

use iras_cloud::{BackendKind, Cloud, StackSpec};

/// Names no other stack on the shared moto server has.
fn unique_names() -> StackSpec {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
    StackSpec {
        request_queue: format!("t{id}-req"),
        response_queue: format!("t{id}-resp"),
        input_bucket: format!("t{id}-in"),
        output_bucket: format!("t{id}-out"),
        ..StackSpec::default()
    }
}

/// A stack under test: its cloud, its names, and (local) the state directory it lives in,
/// removed when the stack is dropped.
pub struct TestStack {
    /// The backend, connected.
    pub cloud: Cloud,
    /// Its queue and bucket names.
    pub spec: StackSpec,
    state: Option<tempfile::TempDir>,
}

impl TestStack {
    /// The local backend in a fresh temporary state directory, with every tier's default
    /// names, provisioned.
    pub async fn local() -> Self {
        Self::on(BackendKind::Local).await
    }

    /// The AWS backend on the moto server, with names unique to this stack (tests share the
    /// server), provisioned.
    pub async fn aws() -> Self {
        Self::on(BackendKind::Aws).await
    }

    /// [`local`](Self::local) or [`aws`](Self::aws).
    pub async fn on(backend: BackendKind) -> Self {
        Self::on_with(backend, |_| {}).await
    }

    /// [`on`](Self::on), with the spec changed by `edit` before it is provisioned (a lower
    /// receive limit, other names).
    pub async fn on_with(backend: BackendKind, edit: impl FnOnce(&mut StackSpec)) -> Self {
        let mut stack = match backend {
            BackendKind::Local => {
                let state = tempfile::tempdir().unwrap();
                let cloud = Cloud::open_local(state.path()).await.unwrap();
                Self {
                    cloud,
                    spec: StackSpec::default(),
                    state: Some(state),
                }
            }
            BackendKind::Aws => Self {
                cloud: crate::moto::connect().await,
                spec: unique_names(),
                state: None,
            },
        };
        edit(&mut stack.spec);
        stack.cloud.provision(&stack.spec).await.unwrap();
        stack
    }

    /// Which backend.
    pub fn backend(&self) -> BackendKind {
        self.cloud.kind()
    }

    /// The local backend's state directory (`None` on AWS).
    pub fn state_dir(&self) -> Option<&Path> {
        self.state.as_ref().map(tempfile::TempDir::path)
    }

    /// The flags that make a tier join this stack: [`backend_flags`](Self::backend_flags)
    /// and the four names. The stack is provisioned already, so AWS tiers are told not to
    /// provision.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = self.backend_flags();
        let spec = &self.spec;
        for (flag, name) in [
            ("--request-queue", &spec.request_queue),
            ("--response-queue", &spec.response_queue),
            ("--input-bucket", &spec.input_bucket),
            ("--output-bucket", &spec.output_bucket),
        ] {
            flags.extend([flag.to_owned(), name.clone()]);
        }
        if self.state.is_none() {
            flags.extend(["--provision".to_owned(), "never".to_owned()]);
        }
        flags
    }

    /// The backend and where it is (`--state-dir`, or the moto endpoint and region).
    pub fn backend_flags(&self) -> Vec<String> {
        match self.state_dir() {
            Some(state) => vec!["--state-dir".into(), state.display().to_string()],
            None => vec![
                "--backend".into(),
                "aws".into(),
                "--aws-endpoint-url".into(),
                crate::moto::endpoint(),
                "--aws-region".into(),
                crate::moto::REGION.into(),
            ],
        }
    }
}

/// Declares each named test twice, as `local::NAME` and `aws::NAME`, each calling
/// `super::NAME(stack)` with a fresh [`TestStack`] of that backend on a two-thread runtime.
/// The aws variants fail, never skip, without the moto server.
#[macro_export]
macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::TestStack::local().await).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::TestStack::aws().await).await;
                }
            )*
        }
    };
}
