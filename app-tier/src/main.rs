//! The `app-tier` binary: [`iras_service::main`] parses [`iras_app_tier::Cli`] and runs
//! [`iras_app_tier::run`] (`serve` until Ctrl-C or SIGTERM, or `classify`).

fn main() -> std::process::ExitCode {
    iras_service::main("warn", iras_app_tier::run)
}
