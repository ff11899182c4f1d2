//! The `rehearsal` binary: parses the command line and hands off to
//! [`iras_rehearsal::cli::main`] (the rehearsal and the emulator live in the library).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = iras_rehearsal::cli::Cli::parse();
    iras_service::init_tracing("info");
    iras_service::exit_code("rehearsal", iras_rehearsal::cli::main(cli))
}
