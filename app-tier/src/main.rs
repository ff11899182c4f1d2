//! The `app-tier` binary: parses the command line and hands off to
//! [`iras_app_tier::run`] (classification logic lives in the library).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = iras_app_tier::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match iras_app_tier::run(cli) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            #[allow(clippy::print_stderr)] // the one place errors reach the user
            {
                eprintln!("app-tier: error: {err:#}");
            }
            ExitCode::from(2)
        }
    }
}
