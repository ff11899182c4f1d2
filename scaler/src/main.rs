//! The `scaler` binary: [`iras_service::main`] parses [`iras_scaler::Cli`] and runs
//! [`iras_scaler::run`] (`scaler run` until Ctrl-C or SIGTERM, or `scaler simulate`).

fn main() -> std::process::ExitCode {
    iras_service::main("info", iras_scaler::run)
}
