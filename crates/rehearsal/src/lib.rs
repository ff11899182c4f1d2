//! Rehearsal tooling: the AWS deployment run end to end on one machine. **Test and
//! rehearsal tooling only** — nothing in this crate runs in a deployment.
//!
//! Nothing here can boot an EC2 instance, so the rehearsal puts the one stand-in where the
//! boot would be and keeps everything else real: a moto server plays SQS, S3, EC2, IAM and
//! CloudFormation; `scripts/deploy-aws` deploys the real template to it; and an instance
//! emulator boots each instance EC2 lists for the stack from its real user data, running
//! the tiers' real binaries as their systemd units would.
//!
//! - [`rehearse`]: [`Rehearsal::start`] / [`Rehearsal::stop`], the whole deployment.
//! - [`emulator`]: the instance emulator (boot delay, cloud-init, systemd supervision,
//!   SIGTERM then SIGKILL on termination, SIGKILL on request).
//! - [`cloud_config`], [`unit`]: the parts of cloud-init user data and systemd units the
//!   emulator performs; anything else is refused so a boot never silently differs.
//! - [`image`]: the emulated AMI (staged like `ami/install.sh` lays out the real one) and
//!   each instance's file system.
//! - [`burst`]: the course's 100-image burst against a rehearsal and its report.
//! - [`cli`]: the `rehearsal` command (`scripts/run-local --backend aws`).
//!
//! The decision a reader may question: booting from what EC2 holds rather than from what
//! the scaler was configured with. Reading each instance's `UserData` back from EC2 means
//! the rehearsal checks what the template rendered and what the scaler really sent; an
//! emulator that re-derived the environment would pass even when they are wrong.

pub mod burst;
pub mod cli;
pub mod cloud_config;
pub mod control;
pub mod emulator;
pub mod image;
pub mod rehearse;
pub mod unit;

pub use emulator::{Emulator, EmulatorConfig, InstanceStatus, Phase};
pub use rehearse::{Rehearsal, RehearsalOptions, StackNames};
