//! The `listener` binary: parses the command line and hands off to
//! [`iras_listener::run_standalone`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = iras_listener::ListenerArgs::parse();
    iras_service::init_tracing("info");
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(iras_listener::run_standalone(
                args,
                iras_service::shutdown_signal(),
            ))
        })
        .map(|()| ExitCode::SUCCESS);
    iras_service::exit_code("listener", result)
}
