//! The command line (clap, every flag also an `IRAS_SCALER_*` environment variable) and
//! its validation into [`RunConfig`], [`Policy`] and [`Scenario`].

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use iras_cli::{CloudArgs, StackArgs};
use iras_cloud::{BackendKind, Ec2Launch, FleetSpec, LocalLaunch};
use iras_protocol::env;

use crate::control::RunConfig;
use crate::policy::{
    Bounds, DEFAULT_IN_DIVISOR, DEFAULT_MAX_INSTANCES, DEFAULT_OUT_DIVISOR,
    DEFAULT_SCALE_IN_SAMPLES, Policy, SeedConfig, TargetConfig,
};
use crate::simulate::{Arrivals, Scenario, Service};

/// Command line of the `scaler` binary.
#[derive(Debug, Parser)]
#[command(
    name = "scaler",
    version = iras_cloud::version_with_backends!(),
    about = "iras scaler: grows and shrinks the app tier"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control loop until SIGTERM or Ctrl-C.
    Run(Box<RunArgs>),
    /// Simulate policies side by side and write a CSV, an SVG and a summary table.
    Simulate(Box<SimulateArgs>),
}

/// Which policy `scaler run` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyKind {
    /// The seed's policy (the default).
    Seed,
    /// Backlog-per-instance target tracking.
    Target,
}

/// Policy parameters, shared by `run` and `simulate`.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Scaling policy: `seed` (the seed's, kept exactly) or `target` (backlog per instance).
    #[arg(long, env = env::IRAS_SCALER_POLICY, value_enum, default_value_t = PolicyKind::Seed)]
    pub policy: PolicyKind,
    /// Never fewer app-tier instances than this.
    #[arg(long, env = env::IRAS_SCALER_MIN_INSTANCES, default_value_t = 0)]
    pub min_instances: u32,
    /// Never more app-tier instances than this (the seed's 20-instance limit minus the
    /// web tier).
    #[arg(long, env = env::IRAS_SCALER_MAX_INSTANCES, default_value_t = DEFAULT_MAX_INSTANCES)]
    pub max_instances: u32,
    /// Seed: scale out to ceil(depth / this).
    #[arg(long, env = env::IRAS_SCALER_OUT_DIVISOR, default_value_t = NonZeroU64::new(DEFAULT_OUT_DIVISOR).unwrap_or(NonZeroU64::MIN))]
    pub out_divisor: NonZeroU64,
    /// Seed: scale in towards ceil(depth / this).
    #[arg(long, env = env::IRAS_SCALER_IN_DIVISOR, default_value_t = NonZeroU64::new(DEFAULT_IN_DIVISOR).unwrap_or(NonZeroU64::MIN))]
    pub in_divisor: NonZeroU64,
    /// Seed: consecutive agreeing samples (K) before a scale-in.
    #[arg(long, env = env::IRAS_SCALER_SCALE_IN_SAMPLES,
          default_value_t = NonZeroUsize::new(DEFAULT_SCALE_IN_SAMPLES).unwrap_or(NonZeroUsize::MIN))]
    pub scale_in_samples: NonZeroUsize,
    /// Target tracking: acceptable queued requests per instance.
    #[arg(long, env = env::IRAS_SCALER_BACKLOG_PER_INSTANCE, default_value_t = NonZeroU64::new(5).unwrap_or(NonZeroU64::MIN))]
    pub backlog_per_instance: NonZeroU64,
    /// Target tracking: seconds after a scale-out before the next scale-out.
    #[arg(long, env = env::IRAS_SCALER_SCALE_OUT_COOLDOWN_SECS, default_value_t = 30)]
    pub scale_out_cooldown_secs: u64,
    /// Target tracking: seconds after any scaling action before a scale-in.
    #[arg(long, env = env::IRAS_SCALER_SCALE_IN_COOLDOWN_SECS, default_value_t = 120)]
    pub scale_in_cooldown_secs: u64,
}

impl Default for PolicyArgs {
    fn default() -> Self {
        // Parsing no arguments yields exactly the declared defaults.
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            policy: PolicyArgs,
        }
        Wrapper::parse_from(["scaler"]).policy
    }
}

impl PolicyArgs {
    fn bounds(&self) -> anyhow::Result<Bounds> {
        Ok(Bounds::new(self.min_instances, self.max_instances)?)
    }

    /// The seed policy with these parameters.
    pub fn seed(&self) -> anyhow::Result<Policy> {
        Ok(Policy::Seed(SeedConfig {
            out_divisor: self.out_divisor,
            in_divisor: self.in_divisor,
            scale_in_samples: self.scale_in_samples.get(),
            bounds: self.bounds()?,
        }))
    }

    /// Target tracking with these parameters.
    pub fn target(&self) -> anyhow::Result<Policy> {
        Ok(Policy::Target(TargetConfig {
            backlog_per_instance: self.backlog_per_instance,
            scale_out_cooldown: Duration::from_secs(self.scale_out_cooldown_secs),
            scale_in_cooldown: Duration::from_secs(self.scale_in_cooldown_secs),
            bounds: self.bounds()?,
        }))
    }

    /// The policy `--policy` selects.
    pub fn selected(&self) -> anyhow::Result<Policy> {
        match self.policy {
            PolicyKind::Seed => self.seed(),
            PolicyKind::Target => self.target(),
        }
    }

    /// A `--compare` spec: `seed`, or `target[:BACKLOG[:OUT_COOLDOWN_S[:IN_COOLDOWN_S]]]`
    /// (missing parts come from the flags).
    pub fn parse_spec(&self, spec: &str) -> anyhow::Result<Policy> {
        let mut parts = spec.split(':');
        match parts.next() {
            Some("seed") if parts.next().is_none() => self.seed(),
            Some("target") => {
                let mut args = self.clone();
                if let Some(b) = parts.next() {
                    args.backlog_per_instance =
                        b.parse().with_context(|| format!("backlog in {spec:?}"))?;
                }
                if let Some(s) = parts.next() {
                    args.scale_out_cooldown_secs = s
                        .parse()
                        .with_context(|| format!("scale-out cooldown in {spec:?}"))?;
                }
                if let Some(s) = parts.next() {
                    args.scale_in_cooldown_secs = s
                        .parse()
                        .with_context(|| format!("scale-in cooldown in {spec:?}"))?;
                }
                anyhow::ensure!(parts.next().is_none(), "too many parts in {spec:?}");
                args.target()
            }
            _ => anyhow::bail!("unknown policy {spec:?}: use seed or target[:B[:OUT_S[:IN_S]]]"),
        }
    }
}

/// Options of `scaler run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Backend.
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Queue and bucket names (the app tier gets the same ones).
    #[command(flatten)]
    pub stack: StackArgs,
    /// Policy.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Fleet.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Seconds between polls (the seed polled every ~10 s).
    #[arg(long, env = env::IRAS_SCALER_INTERVAL_SECS, default_value_t = 10.0)]
    pub interval_secs: f64,
    /// Serve Prometheus metrics on `http://ADDR/metrics` (e.g. 127.0.0.1:9102).
    #[arg(long, env = env::IRAS_SCALER_METRICS_LISTEN)]
    pub metrics_listen: Option<SocketAddr>,
    /// On shutdown, terminate every instance of the fleet (default: leave them serving).
    #[arg(long, env = env::IRAS_SCALER_TERMINATE_ON_EXIT)]
    pub terminate_on_exit: bool,
    /// Seconds an instance may stay pending (launched, its app tier not yet reporting
    /// ready after loading the model and a self-test) before it is taken for broken,
    /// terminated and replaced.
    #[arg(long, env = env::IRAS_SCALER_READY_GRACE_SECS, default_value_t = crate::control::DEFAULT_READY_GRACE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ready_grace_secs: u64,
    /// Seconds launches pause after one stopped short (quota, no capacity, a never-ready
    /// instance, any EC2 refusal); doubles on each further shortfall, up to 600 s.
    #[arg(long, env = env::IRAS_SCALER_LAUNCH_BACKOFF_SECS, default_value_t = crate::control::DEFAULT_LAUNCH_BACKOFF.as_secs())]
    pub launch_backoff_secs: u64,
}

/// How instances are named, tagged and started.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Which fleet: the stack and the instance name prefix.
    #[command(flatten)]
    pub naming: iras_cli::FleetNaming,
    /// Extra tag for every instance, `KEY=VALUE`; repeatable (the seed used `Type=apptier`).
    #[arg(long = "tag", env = env::IRAS_SCALER_TAGS, value_delimiter = ',', value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Local fleet: the app-tier binary. Default: `app-tier` next to this executable.
    #[arg(long, env = env::IRAS_SCALER_APP_TIER_BIN)]
    pub app_tier_bin: Option<PathBuf>,
    /// Local fleet: seconds a terminated app tier may drain after SIGTERM before SIGKILL.
    #[arg(long, env = env::IRAS_SCALER_GRACE_SECS, default_value_t = 60)]
    pub grace_secs: u64,
    /// EC2: the app-tier AMI (required with `--backend aws`).
    #[arg(long, env = env::IRAS_SCALER_AMI)]
    pub ami: Option<String>,
    /// EC2: instance type; repeatable or comma-separated, preferred first (the next is
    /// tried when EC2 has no capacity for one).
    #[arg(long, env = env::IRAS_SCALER_INSTANCE_TYPE, value_delimiter = ',', default_value = "t3.micro")]
    pub instance_type: Vec<String>,
    /// EC2: security group id; repeatable.
    #[arg(long = "security-group", env = env::IRAS_SCALER_SECURITY_GROUPS, value_delimiter = ',')]
    pub security_groups: Vec<String>,
    /// EC2: subnet id; repeatable or comma-separated, preferred first (one per zone
    /// spreads the fleet and gives a launch somewhere to go when a zone is full).
    /// Default: the default VPC's default subnet.
    #[arg(long, env = env::IRAS_SCALER_SUBNET, value_delimiter = ',')]
    pub subnet: Vec<String>,
    /// EC2: instance profile name or ARN giving the app tier its queue and bucket rights.
    #[arg(long, env = env::IRAS_SCALER_INSTANCE_PROFILE)]
    pub instance_profile: Option<String>,
    /// EC2: key pair name, for debugging.
    #[arg(long, env = env::IRAS_SCALER_KEY_NAME)]
    pub key_name: Option<String>,
    /// EC2: cloud-init user-data file.
    #[arg(long, env = env::IRAS_SCALER_USER_DATA_FILE)]
    pub user_data_file: Option<PathBuf>,
    /// EC2: device name of the AMI's root volume (e.g. `/dev/sda1` on Ubuntu, `/dev/xvda` on
    /// Amazon Linux). Every instance gets an encrypted gp3 root volume on this device, so it
    /// must be the AMI's own. Default: asked from EC2 (`DescribeImages`) on the first
    /// launch; set it when the scaler's role may not describe images.
    #[arg(long, env = env::IRAS_SCALER_ROOT_DEVICE_NAME)]
    pub root_device_name: Option<String>,
    /// EC2: size of each instance's root volume in GiB (1 to 16384, at least the AMI's
    /// snapshot size). Default: the AMI's snapshot size.
    #[arg(long, env = env::IRAS_SCALER_ROOT_VOLUME_GIB,
          value_parser = clap::value_parser!(i32).range(1..=i64::from(iras_cloud::spec::MAX_GP3_VOLUME_GIB)))]
    pub root_volume_gib: Option<i32>,
    /// Local fleet: arguments passed to `app-tier serve` after `--`.
    #[arg(last = true)]
    pub app_tier_args: Vec<String>,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// The entries of a list flag that say something: an env list such as `a,` (a template
/// parameter left empty) means just `a`.
fn non_empty(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn secs(value: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{what} must be >= 0 seconds"))
}

impl RunArgs {
    /// Validates the arguments into the loop's configuration.
    pub fn config(&self) -> anyhow::Result<RunConfig> {
        let interval = secs(self.interval_secs, "--interval-secs")?;
        anyhow::ensure!(!interval.is_zero(), "--interval-secs must be above 0");
        let policy = self.policy.selected()?;
        let f = &self.fleet;
        let local = if self.cloud.backend == BackendKind::Local {
            let program = match &f.app_tier_bin {
                Some(p) => p.clone(),
                None => std::env::current_exe()
                    .context("locating the scaler's executable")?
                    .with_file_name("app-tier"),
            };
            let state_dir = std::path::absolute(&self.cloud.state_dir)
                .context("resolving the state directory")?;
            let mut args = vec!["serve".to_owned()];
            args.extend(f.app_tier_args.iter().cloned());
            // The app tier must see the scaler's stack whether it came from flags or env.
            let env = [
                (env::IRAS_BACKEND, "local".to_owned()),
                (env::IRAS_STATE_DIR, state_dir.display().to_string()),
                (env::IRAS_REQUEST_QUEUE, self.stack.request_queue.clone()),
                (env::IRAS_RESPONSE_QUEUE, self.stack.response_queue.clone()),
                (env::IRAS_INPUT_BUCKET, self.stack.input_bucket.clone()),
                (env::IRAS_OUTPUT_BUCKET, self.stack.output_bucket.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            Some(LocalLaunch {
                program,
                args,
                env,
                grace: Duration::from_secs(f.grace_secs),
            })
        } else {
            None
        };
        let ec2 = match &f.ami {
            Some(ami) => Some(Ec2Launch {
                image_id: ami.clone(),
                instance_types: non_empty(&f.instance_type),
                security_group_ids: non_empty(&f.security_groups),
                subnet_ids: non_empty(&f.subnet),
                instance_profile: f.instance_profile.clone(),
                key_name: f.key_name.clone(),
                user_data: match &f.user_data_file {
                    Some(p) => Some(
                        std::fs::read_to_string(p)
                            .with_context(|| format!("reading user data {}", p.display()))?,
                    ),
                    None => None,
                },
                root_device_name: f.root_device_name.clone(),
                root_volume_gib: f.root_volume_gib,
            }),
            None => {
                anyhow::ensure!(
                    self.cloud.backend != BackendKind::Aws,
                    "--ami is required with --backend aws"
                );
                None
            }
        };
        Ok(RunConfig {
            request_queue: self.stack.request_queue.clone(),
            fleet: FleetSpec {
                name_prefix: f.naming.name_prefix.clone(),
                stack: f.naming.stack.clone(),
                tags: f.tags.clone(),
                local,
                ec2,
            },
            policy,
            interval,
            metrics_listen: self.metrics_listen,
            terminate_on_exit: self.terminate_on_exit,
            ready_grace: Duration::from_secs(self.ready_grace_secs),
            launch_backoff: Duration::from_secs(self.launch_backoff_secs),
        })
    }
}

/// Options of `scaler simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Arrivals: `burst:N`, `poisson:RATE_PER_S:SECS`, `ramp:FROM_PER_S:TO_PER_S:SECS` or
    /// `trace:PATH` (one arrival time in seconds per line).
    #[arg(long, default_value = "burst:100")]
    pub arrivals: Arrivals,
    /// Service time per image: `fixed:SECS` or `exp:MEAN_SECS`.
    #[arg(long, default_value = "fixed:1")]
    pub service: Service,
    /// Seconds from launch until an instance serves (~40 on EC2, under 1 locally).
    #[arg(long, default_value_t = 40.0)]
    pub boot_secs: f64,
    /// Seconds between polls.
    #[arg(long, default_value_t = 10.0)]
    pub interval_secs: f64,
    /// Instances running at t = 0.
    #[arg(long, default_value_t = 0)]
    pub initial_instances: u32,
    /// Stop the simulation here even if the queue has not drained.
    #[arg(long, default_value_t = 86_400.0)]
    pub max_secs: f64,
    /// Random seed: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Policy to compare: `seed` or `target[:BACKLOG[:OUT_S[:IN_S]]]`; repeatable.
    #[arg(long = "compare", default_values = ["seed", "target"])]
    pub compare: Vec<String>,
    /// Where to write the CSV time series.
    #[arg(long, default_value = "scaler-sim.csv")]
    pub csv: PathBuf,
    /// Where to write the SVG plot.
    #[arg(long, default_value = "scaler-sim.svg")]
    pub svg: PathBuf,
    /// Policy parameters (bounds, divisors, backlog, cooldowns).
    #[command(flatten)]
    pub policy: PolicyArgs,
}

impl SimulateArgs {
    /// The scenario and the policies to compare.
    pub fn scenario(&self) -> anyhow::Result<(Scenario, Vec<Policy>)> {
        let interval = secs(self.interval_secs, "--interval-secs")?;
        anyhow::ensure!(!interval.is_zero(), "--interval-secs must be above 0");
        let policies = self
            .compare
            .iter()
            .map(|s| self.policy.parse_spec(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((
            Scenario {
                arrivals: self.arrivals.clone(),
                service: self.service,
                boot: secs(self.boot_secs, "--boot-secs")?,
                interval,
                initial_instances: self.initial_instances,
                max_time: secs(self.max_secs, "--max-secs")?,
                seed: self.seed,
            },
            policies,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_seed() {
        let cli = Cli::parse_from(["scaler", "run", "--app-tier-bin", "/bin/true"]);
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let config = args.config().unwrap();
        assert_eq!(config.policy, Policy::default());
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.fleet.name_prefix, "app-tier-");
        assert_eq!(config.fleet.stack, "iras");
        let local = config.fleet.local.unwrap();
        assert_eq!(local.args, ["serve"]);
        assert_eq!(local.grace, Duration::from_secs(60));
    }

    #[test]
    fn tags_passthrough_and_compare_specs() {
        let cli = Cli::parse_from([
            "scaler",
            "run",
            "--tag",
            "Type=apptier",
            "--tag",
            "team=x",
            "--",
            "--workers",
            "2",
        ]);
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            args.fleet.tags,
            [
                ("Type".into(), "apptier".into()),
                ("team".into(), "x".into())
            ]
        );
        let config = args.config().unwrap();
        assert_eq!(
            config.fleet.local.unwrap().args,
            ["serve", "--workers", "2"]
        );

        let p = PolicyArgs::default();
        assert_eq!(p.parse_spec("seed").unwrap(), Policy::default());
        let Policy::Target(t) = p.parse_spec("target:7:0:60").unwrap() else {
            panic!("not target")
        };
        assert_eq!(t.backlog_per_instance.get(), 7);
        assert_eq!(t.scale_in_cooldown, Duration::from_secs(60));
        assert!(p.parse_spec("bogus").is_err());
        assert!(Cli::try_parse_from(["scaler", "run", "--tag", "novalue"]).is_err());
    }

    #[test]
    fn root_volume_flags_reach_the_launch_spec() {
        let run = |extra: &[&str]| {
            let mut argv = vec!["scaler", "run", "--backend", "aws", "--ami", "ami-1"];
            argv.extend_from_slice(extra);
            let Command::Run(args) = Cli::try_parse_from(argv)?.command else {
                panic!("not run")
            };
            Ok::<_, clap::Error>(args.config().unwrap().fleet.ec2.unwrap())
        };
        // Unset: the fleet takes both from the AMI.
        let ec2 = run(&[]).unwrap();
        assert_eq!(ec2.root_device_name, None);
        assert_eq!(ec2.root_volume_gib, None);
        assert_eq!(ec2.instance_types, ["t3.micro"]);
        assert!(ec2.subnet_ids.is_empty());
        // Lists, preferred first; the empty entries a template leaves are dropped.
        let ec2 = run(&[
            "--instance-type",
            "t3.micro,",
            "--instance-type",
            "t3a.micro",
            "--subnet",
            "subnet-a,,subnet-b",
        ])
        .unwrap();
        assert_eq!(ec2.instance_types, ["t3.micro", "t3a.micro"]);
        assert_eq!(ec2.subnet_ids, ["subnet-a", "subnet-b"]);
        let ec2 = run(&["--root-device-name", "/dev/xvda", "--root-volume-gib", "16"]).unwrap();
        assert_eq!(ec2.root_device_name.as_deref(), Some("/dev/xvda"));
        assert_eq!(ec2.root_volume_gib, Some(16));
        assert!(run(&["--root-volume-gib", "0"]).is_err());
        assert!(run(&["--root-volume-gib", "16385"]).is_err());
    }
}
