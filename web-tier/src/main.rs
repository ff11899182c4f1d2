//! The `web-tier` binary: [`iras_service::main`] parses [`iras_web_tier::Cli`] and runs
//! [`iras_web_tier::run`] until Ctrl-C or SIGTERM (then drains).

fn main() -> std::process::ExitCode {
    iras_service::main("info", iras_web_tier::run)
}
