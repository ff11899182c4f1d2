//! The `dlq` binary: [`iras_service::main`] parses [`iras_dlq::Cli`] and runs
//! [`iras_dlq::run`], which looks at, redrives or purges a dead-letter queue.

fn main() -> std::process::ExitCode {
    iras_service::main("warn", iras_dlq::run)
}
