//! The one error type of the library: everything that stops a run before or after it
//! happens. A request that fails *during* a run is not an error here; it is a
//! [`crate::RequestFailure`] in the summary, because a load test must count failures, not abort
//! on the first one.

use std::path::PathBuf;

/// Why a workload could not be prepared, run or reported.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A setting is out of range (zero rate, unparsable URL, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The image folder could not be listed.
    #[error("cannot read the image folder {}", path.display())]
    ReadFolder {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be read.
    #[error("cannot read the image {}", path.display())]
    ReadImage {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The image folder holds no (non-hidden) files.
    #[error("the image folder {} has no files", path.display())]
    NoImages {
        /// The folder.
        path: PathBuf,
    },
    /// The expected-labels CSV could not be read.
    #[error("cannot read the expected labels {}", path.display())]
    ReadExpected {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the expected-labels CSV is malformed.
    #[error("{}:{line}: {reason}", path.display())]
    ParseExpected {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// A chart of the report could not be drawn.
    #[error("cannot draw the {chart} chart: {message}")]
    Plot {
        /// Which chart.
        chart: &'static str,
        /// The plotting error.
        message: String,
    },
    /// The report file could not be written.
    #[error("cannot write the report {}", path.display())]
    WriteReport {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
