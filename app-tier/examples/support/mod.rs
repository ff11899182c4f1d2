//! What the benchmark examples share: starting a tier binary on a local state directory.

use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

/// Starts `program` with `args` on the local backend under `state`, named `name` (its
/// stderr in `<state>/<name>.log`), killed when the handle drops; with `ready`, the file
/// the app tier creates once it serves.
pub(crate) fn spawn(
    program: &Path,
    args: &[String],
    state: &Path,
    name: &str,
    ready: Option<&Path>,
) -> Child {
    let log = std::fs::File::create(state.join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("IRAS_STATE_DIR", state)
        .env("IRAS_INSTANCE_NAME", name)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    if let Some(ready) = ready {
        cmd.env("IRAS_READY_FILE", ready);
    }
    cmd.spawn().unwrap()
}
