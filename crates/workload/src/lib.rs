//! The iras workload generator: the course's client, better. It uploads a folder of
//! images to the web tier, as the course's multithreaded generator did, and counts what
//! came back: answers, failures by kind, throughput, latency percentiles and, given the
//! expected labels, accuracy.
//!
//! - [`drive`] / [`drive_with`]: the load engine (closed loop or open-loop rate, bounded
//!   concurrency, safe retries), returning a [`Summary`] of [`Record`]s.
//! - [`drive_batch`]: the `--async` mode: the images as one batch, collected from its
//!   event stream, summarised the same way.
//! - [`Summary`]: counts, failures by [`FailureClass`], latency, [`Accuracy`]; a table
//!   ([`Summary::table`]) and JSON (`Serialize`).
//! - [`report`]: the self-contained HTML report with SVG charts.
//! - [`load_folder`], [`Expected`]: the images and the answer key.
//! - [`cli`]: the `workload` command line ([`Cli`]) and [`run`], the binary's entry point.
//!
//! The decision a reader may question: a failed request is data, not an error. [`drive`]
//! only returns `Err` when the run cannot start; every request that fails — refused,
//! reset, timed out, 4xx, 5xx, interrupted — becomes a [`RequestFailure`] in the summary,
//! counted by kind and listed one by one, because the course's generator silently
//! dropped exceptions and a load test that loses its failures measures nothing.
//!
//! # Usage
//!
//! ```text
//! # The course's invocation, with the course's output (per-image lines on stdout):
//! workload --num_request 100 --url http://127.0.0.1:8000/ \
//!     --image_folder dataset/face_images_100 --course-output
//!
//! # The same burst with a summary, scored against an answer key, and an HTML report:
//! workload --url http://127.0.0.1:8000/ --image-folder dataset/face_images_100 \
//!     --expected dataset/labels.csv --report burst.html
//!
//! # Sustained open-loop load: 20 requests/s for 60 s, images cycled, JSON summary:
//! workload --url http://127.0.0.1:8000/ --image-folder imgs \
//!     --rate 20 --duration-secs 60 --timeout-secs 30 --json > load.json
//! ```
//!
//! | flag | default | meaning |
//! |---|---|---|
//! | `--url` | — | the web tier's upload URL (`POST`, multipart field `myfile`) |
//! | `--image-folder`, `--image_folder` | — | every non-hidden file, in name order |
//! | `--num-request`, `--num_request` | one per file | closed loop: this many requests (the first N files; more than the folder holds cycle) |
//! | `--concurrency` | 100 | most requests in flight |
//! | `--rate`, `--duration-secs` | — | open loop: requests/s for this long; latency counts from when each was due |
//! | `--timeout-secs` | 300 | limit on each attempt (0: none) |
//! | `--retries` | 0 | retries of connection-refused, 503 and 429 only |
//! | `--expected` | — | `name,label` CSV (name with or without extension) to score answers |
//! | `--course-output` | off | the course's lines on stdout: `NAME uploaded!` + `Classification result: LABEL`, or `sendErr: URL` |
//! | `--json` | off | the JSON summary on stdout |
//! | `--report` | — | write the HTML report (latency histogram, completions over time, every failure and wrong answer) |
//! | `--no-progress` | off | no progress bar (it is only drawn when stderr is a terminal anyway) |
//! | `--async` | off | the images as one batch (`POST /batches`), collected from `GET /batches/{id}/events`; latency is from the batch's submission to each result; `--timeout-secs` bounds the whole; refused or unclassifiable images count as `rejected` |
//!
//! Each flag except `--course-output`, `--json`, `--report` and `--no-progress` also reads an `IRAS_WORKLOAD_*` variable (see
//! `iras_protocol::env`). The summary table goes to stdout, or to stderr with `--json` or
//! `--course-output`, so stdout always carries exactly one format. Course output is
//! opt-in rather than switched on when stdout is not a terminal: a script capturing the
//! summary should get the same format as the person who tried the command first.
//!
//! **Exit status**: 0 when every request was answered, 1 when any request failed or the
//! run was interrupted (Ctrl-C) before all were sent, 2 when it could not start. Wrong
//! labels are reported, not failed: accuracy is a measurement.

mod batch;
mod error;
mod input;
mod run;
mod summary;

pub mod cli;
pub mod report;

pub use batch::drive_batch;
pub use cli::{Cli, run};
pub use error::WorkloadError;
pub use input::{Expected, Image, load_folder};
pub use run::{
    Config, DEFAULT_CONCURRENCY, FILE_FIELD, FailureClass, Load, MAX_RETRY_PAUSE, Observer, Quiet,
    Record, RequestFailure, drive, drive_with,
};
pub use summary::{Accuracy, FailedRequest, Latency, Summary, TABLE_LIST_LIMIT, WrongAnswer};
