//! `app-tier classify FILE…`: classify files on disk.
//!
//! Output: one `file,label` line per file (the course classifier's format, `file` being the
//! name without its directory and extension), or with `--top-k N` the N best as
//! `file,label,score` lines, or `--json` for one JSON object per line. Files that cannot be
//! classified are reported on stderr and make the exit code 1; the rest are still printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use iras_classifier::{Classification, Classifier};
use serde::Serialize;

use crate::ModelArgs;

/// Arguments of `classify`.
#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// Image files (JPEG, PNG, GIF, WebP, BMP, TIFF).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the best N classes with scores instead of the bare top-1 label.
    #[arg(long, value_name = "N")]
    pub top_k: Option<usize>,
    /// Print one JSON object per file (label, index, score, top_k, timings).
    #[arg(long)]
    pub json: bool,
    /// The model to use.
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    file: &'a str,
    #[serde(flatten)]
    result: &'a Classification,
}

/// Name printed for a file: its stem, as the course's output used (`test_0.JPEG` → `test_0`).
fn display_name(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Classifies every file and writes the results to `out`.
pub fn run(args: &ClassifyArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut classifier = args.model.build_classifier()?;
    classify_files(&mut classifier, args, out)
}

/// Like [`run`] with a classifier the caller built (tests reuse one).
pub fn classify_files(
    classifier: &mut Classifier,
    args: &ClassifyArgs,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let mut failed = 0usize;
    let k = args.top_k.unwrap_or(1).max(1);
    for path in &args.files {
        let name = display_name(path);
        let result = std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|bytes| Ok(classifier.classify(&bytes, k)?));
        match result {
            Ok(c) if args.json => {
                serde_json::to_writer(
                    &mut *out,
                    &JsonLine {
                        file: &name,
                        result: &c,
                    },
                )?;
                writeln!(out)?;
            }
            Ok(c) if args.top_k.is_some() => {
                for p in &c.top_k {
                    writeln!(out, "{name},{},{:.4}", p.label, p.score)?;
                }
            }
            Ok(c) => writeln!(out, "{name},{}", c.label)?,
            Err(err) => {
                failed += 1;
                tracing::error!(file = %path.display(), "cannot classify: {err:#}");
                #[allow(clippy::print_stderr)] // per-file failures are part of the CLI's output
                {
                    eprintln!("{}: {err:#}", path.display());
                }
            }
        }
    }
    out.flush()?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
