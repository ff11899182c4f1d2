//! Validation of an upload under the process's decode budget.
//!
//! The header is read first ([`iras_classifier::probe_image`]): format, dimensions, colour type
//! and the memory a decode needs, against the limits the app tier applies too. What passes is
//! then decoded in full, so a truncated or corrupt file gets its 4xx here instead of costing a
//! worker a receive, but only once the decode's estimate fits in the shared
//! [`DecodeBudget`](iras_classifier::DecodeBudget), and on the blocking pool. Many bombs at
//! once therefore cost headers, and many large images at once wait their turn (or get a 503
//! after the bounded wait) instead of adding up.

use axum::body::Bytes;
use iras_classifier::{BudgetError, ImageInfo};

use crate::AppState;
use crate::error::AppError;

/// Checks `bytes` against the limits and decodes them within the budget.
pub(crate) async fn validate(
    state: &AppState,
    bytes: Bytes,
) -> Result<(Bytes, ImageInfo), AppError> {
    let limits = state.config.limits;
    // Even the header is parsed off the async threads: TIFF and EXIF parsing is not free.
    let (bytes, probe) = blocking(move || {
        let probe = iras_classifier::probe_image(&bytes, &limits);
        (bytes, probe)
    })
    .await?;
    let probe = probe?;
    let permit = state
        .config
        .decode_budget
        .acquire(probe.memory_bytes)
        .await
        .map_err(|e| match e {
            BudgetError::Busy { .. } => AppError::DecodeBusy(e),
            other => AppError::Internal(other.into()),
        })?;
    let (bytes, info) = blocking(move || {
        let info = iras_classifier::validate_image(&bytes, &limits);
        drop(permit);
        (bytes, info)
    })
    .await?;
    Ok((bytes, info?))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(e.into()))
}
