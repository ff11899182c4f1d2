//! The `web-tier` binary: parses the command line and hands off to [`iras_web_tier::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = iras_web_tier::WebArgs::parse();
    iras_service::init_tracing("info");
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(iras_web_tier::run(args, iras_service::shutdown_signal())))
        .map(|()| ExitCode::SUCCESS);
    iras_service::exit_code("web-tier", result)
}
