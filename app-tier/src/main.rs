//! The `app-tier` binary: parses the command line and hands off to
//! [`iras_app_tier::run`] (classification logic lives in the library).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = iras_app_tier::Cli::parse();
    iras_service::init_tracing("warn");
    iras_service::exit_code("app-tier", iras_app_tier::run(cli))
}
