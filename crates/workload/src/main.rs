//! The `workload` binary: [`iras_service::main`] parses [`iras_workload::Cli`] and runs
//! [`iras_workload::run`] until every request completed (or Ctrl-C stops sending).

fn main() -> std::process::ExitCode {
    iras_service::main("warn", iras_workload::run)
}
