//! The `scaler` binary: parses the command line and hands off to [`iras_scaler::main`]
//! (the control loop and the simulator live in the library).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = iras_scaler::Cli::parse();
    iras_service::init_tracing("info");
    iras_service::exit_code("scaler", iras_scaler::main(cli))
}
