//! The `workload` binary: parses the command line and hands off to [`iras_workload::main`]
//! (the load engine, summary and report live in the library).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = iras_workload::Cli::parse();
    iras_service::init_tracing("warn");
    iras_service::exit_code("workload", iras_workload::main(cli))
}
