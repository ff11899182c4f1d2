//! The `listener` binary: [`iras_service::main`] parses [`iras_listener::Cli`] and runs
//! [`iras_listener::run`] until Ctrl-C or SIGTERM.

fn main() -> std::process::ExitCode {
    iras_service::main("info", iras_listener::run)
}
