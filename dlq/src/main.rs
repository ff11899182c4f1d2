//! The `dlq` binary: parses the command line and hands off to [`iras_dlq::main`], which
//! looks at, redrives or purges a dead-letter queue through the cloud layer.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = iras_dlq::Cli::parse();
    iras_service::init_tracing("warn");
    iras_service::exit_code("dlq", iras_dlq::main(cli))
}
