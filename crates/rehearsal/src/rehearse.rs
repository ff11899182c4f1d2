//! The rehearsal: the AWS deployment run whole on this machine.
//!
//! [`Rehearsal::start`] does what a user's first `scripts/deploy-aws` does, against a moto
//! server instead of an account:
//!
//! 1. a moto server on loopback (`scripts/moto-server`, or one given);
//! 2. the "AMI": an image registered in moto's EC2 (tagged with the stack, as Packer's
//!    is) that stands for a directory staged like `ami/install.sh` lays out the real one
//!    ([`crate::image`]), with drop-ins for what must differ on one machine (loopback
//!    ports; see [`Rehearsal::start`]);
//! 3. `scripts/deploy-aws --ami …` itself, so the real template is deployed by the real
//!    script: queues with dead-letter queues, buckets, roles, security groups and the web
//!    instance;
//! 4. the instance emulator ([`crate::emulator`]), which boots the web instance from the
//!    user data CloudFormation rendered (its `/etc/iras/iras.env` and the app-tier user
//!    data for the scaler), so the web tier and the scaler run as their units would, and
//!    then boots every app-tier instance the scaler launches from the user data the scaler
//!    passed.
//!
//! [`Rehearsal::stop`] terminates the stack's instances through EC2 (so every tier gets
//! SIGTERM and drains, as on AWS), waits for the emulator and stops the moto server it
//! started.

use iras_protocol::env;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Filter, Tag, VolumeType};
use tokio_util::sync::CancellationToken;

use crate::emulator::{Emulator, EmulatorConfig, InstanceStatus, Phase, ROLE_TAG, STACK_TAG};
use crate::image::{self, ImageSource, InstanceRoot};
use crate::unit::parse_env_file;

/// The region every rehearsal uses (moto's default).
pub const REGION: &str = "us-east-1";
/// The dummy credentials every rehearsal process uses: moto accepts any.
const CREDENTIALS: (&str, &str) = ("test", "test");
/// The role tag value of app-tier instances (set by the scaler through the template).
pub const APP_ROLE: &str = "app-tier";
/// The role tag value of the web instance.
pub const WEB_ROLE: &str = "web";

/// How to rehearse.
#[derive(Debug, Clone)]
pub struct RehearsalOptions {
    /// The repository (for `scripts/` and `ami/systemd/`).
    pub repo: PathBuf,
    /// Where the image, the instances' roots, the journals and the logs go.
    pub state_dir: PathBuf,
    /// A moto server to use; `None` starts one (and stops it in [`Rehearsal::stop`]).
    pub endpoint: Option<String>,
    /// Stack name (also the `iras:stack` tag).
    pub stack: String,
    /// The web tier's loopback port; the split listener's endpoint is `port + 1`, the
    /// scaler's metrics `port + 2`.
    pub port: u16,
    /// The image's binaries, model pack and ONNX Runtime library.
    pub image: ImageSource,
    /// From RunInstances to an instance's units starting.
    pub boot_delay: Duration,
    /// `MaxAppInstances` of the template.
    pub max_app_instances: u32,
    /// Run the standalone listener beside the web tier (the seed's split deployment).
    pub split_listener: bool,
    /// More overrides: (unit, KEY, VALUE), as an operator's drop-ins would set them.
    pub overrides: Vec<(String, String, String)>,
}

/// The stack's queues and buckets, as the web instance's `/etc/iras/iras.env` names them.
#[derive(Debug, Clone)]
pub struct StackNames {
    /// Request queue URL.
    pub request_queue: String,
    /// Response queue URL.
    pub response_queue: String,
    /// Input bucket.
    pub input_bucket: String,
    /// Output bucket.
    pub output_bucket: String,
}

/// A running rehearsal.
#[derive(Debug)]
pub struct Rehearsal {
    /// The web tier's URL (loopback).
    pub url: String,
    /// The moto server.
    pub endpoint: String,
    /// The stack.
    pub stack: String,
    /// The registered image id.
    pub image_id: String,
    /// What the stack created.
    pub names: StackNames,
    /// The emulator (statuses, kills).
    pub emulator: Emulator,
    ec2: aws_sdk_ec2::Client,
    sqs: aws_sdk_sqs::Client,
    stop_emulator: CancellationToken,
    emulator_task: tokio::task::JoinHandle<anyhow::Result<()>>,
    moto_started: bool,
    repo: PathBuf,
    state_dir: PathBuf,
}

/// The SDK configuration for talking to the moto server.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            CREDENTIALS.0,
            CREDENTIALS.1,
            None,
            None,
            "iras-rehearsal",
        ))
        .load()
        .await
}

/// The environment every process of the rehearsal that talks to AWS gets: the moto
/// endpoint, dummy credentials, and no instance metadata service.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", CREDENTIALS.0),
        ("AWS_SECRET_ACCESS_KEY", CREDENTIALS.1),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Runs a repository script with `env`, its output appended to `log`.
async fn script(
    repo: &Path,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let out = tokio::process::Command::new(repo.join(args[0]))
        .args(&args[1..])
        .current_dir(repo)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(std::process::Stdio::null())
        .stderr(file)
        .output()
        .await
        .with_context(|| format!("running {}", args[0]))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    anyhow::ensure!(
        out.status.success(),
        "{} failed ({}); see {}",
        args.join(" "),
        out.status,
        log.display()
    );
    Ok(stdout)
}

impl Rehearsal {
    /// Deploys the stack to moto and boots the web instance; returns once the web tier
    /// answers `/healthz`.
    pub async fn start(options: RehearsalOptions) -> anyhow::Result<Self> {
        let o = &options;
        let state = std::path::absolute(&o.state_dir)?;
        let logs = state.join("logs");
        std::fs::create_dir_all(&logs)?;
        let (endpoint, moto_started) = match &o.endpoint {
            Some(e) => (e.clone(), false),
            None => {
                let env = vec![(
                    "IRAS_MOTO_RUN_DIR".to_owned(),
                    state.join("moto").display().to_string(),
                )];
                let url = script(
                    &o.repo,
                    &["scripts/moto-server", "start"],
                    &env,
                    &logs.join("moto-server.log"),
                )
                .await?;
                (url, true)
            }
        };
        let sdk = sdk_config(&endpoint).await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);

        // The "AMI": what Packer would register, tagged like deploy-aws's build.
        let image_id = ec2
            .register_image()
            .name(format!("iras-{}-rehearsal", o.stack))
            .root_device_name("/dev/sda1")
            .architecture("x86_64".into())
            .virtualization_type("hvm")
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/sda1")
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(8)
                            .volume_type(VolumeType::Gp3)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .context("RegisterImage")?
            .image_id()
            .context("RegisterImage returned no id")?
            .to_owned();
        ec2.create_tags()
            .resources(&image_id)
            .tags(Tag::builder().key(STACK_TAG).value(&o.stack).build())
            .send()
            .await
            .context("tagging the image")?;

        let image_dir = image::stage(&o.image, &state.join("image"))?;
        let drop_ins = Self::drop_ins(o);
        for (unit, vars) in &drop_ins {
            image::add_env_drop_in(
                &image_dir,
                unit,
                "rehearsal",
                "scripts/run-local --backend aws: what differs on one machine (loopback ports, \
                 rehearsal overrides)",
                vars,
            )?;
        }

        let deploy_venv = script(
            &o.repo,
            &["scripts/deploy-venv"],
            &[],
            &logs.join("deploy-venv.log"),
        )
        .await?;
        let mut env = aws_env(&endpoint);
        env.push(("AWS_REGION".into(), REGION.into()));
        env.push(("AWS_DEFAULT_REGION".into(), REGION.into()));
        env.push((
            "PATH".into(),
            format!(
                "{deploy_venv}:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        ));
        let (port, max) = (o.port.to_string(), o.max_app_instances.to_string());
        script(
            &o.repo,
            &[
                "scripts/deploy-aws",
                "--stack",
                &o.stack,
                "--region",
                REGION,
                "--ami",
                &image_id,
                "--http-cidr",
                "127.0.0.1/32",
                "--port",
                &port,
                "--max-app-instances",
                &max,
                "--no-wait",
            ],
            &env,
            &logs.join("deploy-aws.log"),
        )
        .await?;

        let emulator = Emulator::new(
            ec2.clone(),
            EmulatorConfig {
                stack: o.stack.clone(),
                image_id: image_id.clone(),
                image_dir,
                state_dir: state.clone(),
                boot_delay: o.boot_delay,
                poll_interval: Duration::from_millis(500),
                instance_env: aws_env(&endpoint),
                extra_units: if o.split_listener {
                    vec![(WEB_ROLE.into(), "iras-listener.service".into())]
                } else {
                    Vec::new()
                },
            },
        );
        let stop_emulator = CancellationToken::new();
        let emulator_task = tokio::spawn(
            emulator
                .clone()
                .run(stop_emulator.clone().cancelled_owned()),
        );
        let url = format!("http://127.0.0.1:{}/", o.port);
        let mut rehearsal = Self {
            url,
            endpoint,
            stack: o.stack.clone(),
            image_id,
            names: StackNames {
                request_queue: String::new(),
                response_queue: String::new(),
                input_bucket: String::new(),
                output_bucket: String::new(),
            },
            emulator,
            ec2,
            sqs,
            stop_emulator,
            emulator_task,
            moto_started,
            repo: o.repo.clone(),
            state_dir: state,
        };
        if let Err(e) = rehearsal.wait_for_web(o.boot_delay).await {
            let journal = rehearsal.journal_tail(WEB_ROLE, "iras-web-tier.service", 20);
            rehearsal.stop().await.ok();
            return Err(e.context(format!("the web tier's journal ends:\n{journal}")));
        }
        Ok(rehearsal)
    }

    /// The drop-ins that make the template's units fit one machine.
    fn drop_ins(o: &RehearsalOptions) -> Vec<(String, Vec<(String, String)>)> {
        let var = |k: &str, v: String| (k.to_owned(), v);
        // The template opens the web tier on 0.0.0.0; here only loopback.
        let mut web = vec![var(env::IRAS_LISTEN, format!("127.0.0.1:{}", o.port))];
        // The template's fixed metrics port would clash between two rehearsals.
        let scaler = vec![var(
            env::IRAS_SCALER_METRICS_LISTEN,
            format!("127.0.0.1:{}", o.port.saturating_add(2)),
        )];
        let mut listener = Vec::new();
        if o.split_listener {
            // What deploy/README.md tells an operator to add for the split deployment.
            let token = format!(
                "{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            );
            let internal = format!("127.0.0.1:{}", o.port.saturating_add(1));
            web.push(var(env::IRAS_LISTENER, "external".into()));
            web.push(var(env::IRAS_INTERNAL_LISTEN, internal.clone()));
            web.push(var(env::IRAS_LISTENER_TOKEN, token.clone()));
            listener.push(var(env::IRAS_LISTENER_TOKEN, token));
            listener.push(var(
                env::IRAS_LISTENER_DELIVER_TO,
                format!("http://{internal}"),
            ));
        }
        let mut all = vec![
            ("iras-web-tier.service".to_owned(), web),
            ("iras-scaler.service".to_owned(), scaler),
        ];
        if !listener.is_empty() {
            all.push(("iras-listener.service".to_owned(), listener));
        }
        for (unit, k, v) in &o.overrides {
            match all.iter_mut().find(|(u, _)| u == unit) {
                Some((_, vars)) => vars.push(var(k, v.clone())),
                None => all.push((unit.clone(), vec![var(k, v.clone())])),
            }
        }
        all
    }

    async fn wait_for_web(&mut self, boot_delay: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + boot_delay + Duration::from_secs(90);
        loop {
            if let Some(web) = self.web_instance() {
                if let Phase::Failed(reason) = &web.phase {
                    anyhow::bail!("the web instance did not boot: {reason}");
                }
                if web.phase == Phase::Up && self.names.request_queue.is_empty() {
                    self.names = read_names(&web)?;
                }
            }
            let ok = client
                .get(format!("{}healthz", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok && !self.names.request_queue.is_empty() {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the web tier did not answer {}healthz (journals under {})",
                self.url,
                self.state_dir.join("instances").display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The web instance, once the emulator has seen it.
    pub fn web_instance(&self) -> Option<InstanceStatus> {
        self.emulator
            .instances()
            .into_iter()
            .find(|i| i.role == WEB_ROLE)
    }

    /// The app-tier instances the emulator has seen (all of them, terminated included).
    pub fn app_instances(&self) -> Vec<InstanceStatus> {
        self.emulator
            .instances()
            .into_iter()
            .filter(|i| i.role == APP_ROLE)
            .collect()
    }

    /// App-tier instances EC2 counts as pending or running right now.
    pub async fn active_app_instances(&self) -> anyhow::Result<Vec<aws_sdk_ec2::types::Instance>> {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{STACK_TAG}"))
                    .values(&self.stack)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name(format!("tag:{ROLE_TAG}"))
                    .values(APP_ROLE)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .context("DescribeInstances")?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect())
    }

    /// The EC2 client (for tests that read back what was launched).
    pub fn ec2(&self) -> &aws_sdk_ec2::Client {
        &self.ec2
    }

    /// Every queue of the stack (requests, responses and both dead-letter queues) with the
    /// messages it holds (visible + in flight + delayed).
    pub async fn queue_depths(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let listed = self
            .sqs
            .list_queues()
            .queue_name_prefix(format!("{}-", self.stack))
            .send()
            .await
            .context("ListQueues")?;
        let mut out = Vec::new();
        for url in listed.queue_urls() {
            let attrs = self
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await
                .context("GetQueueAttributes")?;
            let get = |name: aws_sdk_sqs::types::QueueAttributeName| {
                attrs
                    .attributes()
                    .and_then(|a| a.get(&name))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            use aws_sdk_sqs::types::QueueAttributeName as A;
            let depth = get(A::ApproximateNumberOfMessages)
                + get(A::ApproximateNumberOfMessagesNotVisible)
                + get(A::ApproximateNumberOfMessagesDelayed);
            let name = url.rsplit('/').next().unwrap_or(url).to_owned();
            out.push((name, depth));
        }
        out.sort();
        anyhow::ensure!(
            out.len() >= 4,
            "expected the stack's four queues, found {out:?}"
        );
        Ok(out)
    }

    /// The last `lines` lines of a unit's journal on the first instance of `role`.
    pub fn journal_tail(&self, role: &str, unit: &str, lines: usize) -> String {
        let Some(i) = self
            .emulator
            .instances()
            .into_iter()
            .find(|i| i.role == role)
        else {
            return String::new();
        };
        let fs = InstanceRoot {
            root: i.root.clone(),
            image: PathBuf::new(),
        };
        let text = std::fs::read_to_string(fs.journal(unit)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Terminates every instance of the stack through EC2, waits until the emulator has
    /// stopped them all (each tier drains on SIGTERM), and stops the moto server if this
    /// rehearsal started it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let ids: Vec<String> = self
            .emulator
            .instances()
            .into_iter()
            .filter(|i| !matches!(i.phase, Phase::Stopped))
            .map(|i| i.id)
            .collect();
        if !ids.is_empty() {
            tracing::info!(?ids, "terminating the stack's instances");
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(ids))
                .send()
                .await
                .context("TerminateInstances")?;
        }
        // Let the emulator see the terminations, so the units get their KillSignal.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while self
            .emulator
            .instances()
            .iter()
            .any(|i| matches!(i.phase, Phase::Up | Phase::Stopping | Phase::Booting))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.stop_emulator.cancel();
        self.emulator_task.await.context("emulator task")??;
        if self.moto_started {
            let env = vec![(
                "IRAS_MOTO_RUN_DIR".to_owned(),
                self.state_dir.join("moto").display().to_string(),
            )];
            script(
                &self.repo,
                &["scripts/moto-server", "stop"],
                &env,
                &self.state_dir.join("logs/moto-server.log"),
            )
            .await?;
        }
        Ok(())
    }
}

/// The queue and bucket names the web instance's `/etc/iras/iras.env` holds.
fn read_names(web: &InstanceStatus) -> anyhow::Result<StackNames> {
    let path = web.root.join("etc/iras/iras.env");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let env = parse_env_file(&text);
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("{} has no {k}", path.display()))
    };
    Ok(StackNames {
        request_queue: get(env::IRAS_REQUEST_QUEUE)?,
        response_queue: get(env::IRAS_RESPONSE_QUEUE)?,
        input_bucket: get(env::IRAS_INPUT_BUCKET)?,
        output_bucket: get(env::IRAS_OUTPUT_BUCKET)?,
    })
}
