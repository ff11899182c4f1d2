//! The `rehearsal` binary: [`iras_service::main`] parses [`iras_rehearsal::cli::Cli`] and
//! runs [`iras_rehearsal::cli::run`] until Ctrl-C or SIGTERM (or the end of its burst).

fn main() -> std::process::ExitCode {
    iras_service::main("info", iras_rehearsal::cli::run)
}
