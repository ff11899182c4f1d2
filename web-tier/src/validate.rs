//! Validation of an upload under the process's decode budget.
//!
//! The header is read first ([`iras_classifier::probe_image`]): format, dimensions, colour type
//! and the memory a decode needs, against the limits the app tier applies too. Then, with
//! `--validate structure` (the default), the file's framing is walked
//! ([`iras_classifier::check_structure`]: PNG chunks and their CRCs, JPEG segments to the
//! end-of-image marker, GIF blocks, WebP chunks, a BMP's pixel array), in the same trip to the
//! blocking pool; a file it proves whole is queued without decoding its pixels, which the app
//! tier does anyway. What it cannot prove whole (a TIFF, a file cut short), and every upload
//! with `--validate full`, is decoded in full, so a truncated or corrupt file gets its 4xx here
//! with the decoder's reason instead of costing a worker a receive; but only once the
//! decode's estimate fits in the shared [`DecodeBudget`](iras_classifier::DecodeBudget), and on
//! the blocking pool. Many bombs at once therefore cost headers, and many large images at once
//! wait their turn (or get a 503 after the bounded wait) instead of adding up.

use axum::body::Bytes;
use iras_classifier::{BudgetError, Probe, Structure};

use crate::AppState;
use crate::config::Validation;
use crate::error::AppError;

/// Checks `bytes` against the limits, then proves them whole from their framing or decodes
/// them within the budget. Returns the bytes and the image's format (`png`, `jpeg`, ...).
pub(crate) async fn validate(
    state: &AppState,
    bytes: Bytes,
) -> Result<(Bytes, &'static str), AppError> {
    let limits = state.config.limits;
    let walk = state.config.validation == Validation::Structure;
    // Even the header is parsed off the async threads: TIFF and EXIF parsing is not free.
    let (bytes, probe, structure) = blocking(move || {
        let probe = iras_classifier::probe_image(&bytes, &limits);
        let structure = match &probe {
            Ok(probe) if walk => iras_classifier::check_structure(&bytes, probe.format),
            _ => Structure::Unsure,
        };
        (bytes, probe, structure)
    })
    .await?;
    let Probe {
        format,
        memory_bytes,
        ..
    } = probe?;
    if structure == Structure::Whole {
        return Ok((bytes, format));
    }
    let permit = state
        .config
        .decode_budget
        .acquire(memory_bytes)
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
    Ok((bytes, info?.format))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(e.into()))
}
