//! The benchmarks of the whole stack, as examples of this package (run by
//! `scripts/bench-stack`, `scripts/bench-recovery` and `scripts/bench-faults`), and what
//! they share: starting a tier binary on a local state directory.
//!
//! The decision a reader may question: a package for benchmarks. They drive the built
//! binaries of several tiers with the workload generator; kept in the app tier they made
//! it depend on the workload generator and the web tier, so they live beside them instead.

use std::path::Path;
use std::process::Stdio;

use iras_protocol::env;
use tokio::process::{Child, Command};

/// Starts `program` with `args` on the local backend under `state`, named `name` (its
/// stderr in `<state>/<name>.log`), killed when the handle drops; with `ready`, the file
/// the app tier creates once it serves.
pub fn spawn(
    program: &Path,
    args: &[String],
    state: &Path,
    name: &str,
    ready: Option<&Path>,
) -> Child {
    let log = std::fs::File::create(state.join(format!("{name}.log")))
        .expect("creating the tier's log file in the state directory");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(env::IRAS_STATE_DIR, state)
        .env(env::IRAS_INSTANCE_NAME, name)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    if let Some(ready) = ready {
        cmd.env(env::IRAS_READY_FILE, ready);
    }
    cmd.spawn().expect("starting the tier binary")
}
