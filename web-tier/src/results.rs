//! Results by request id from the output bucket: `results/<id>.json`, the whole response
//! the app tier wrote before it answered (see [`iras_protocol::result_key`]).
//!
//! This is what makes `GET /results/{id}` right under both key schemes and after a web
//! tier restart, and what lets a retried upload with a known `Idempotency-Key` be
//! answered without being classified again. Results written before the id-keyed objects
//! existed are still found under the request-id scheme's `<id>` key ([`legacy_label`]).

use iras_cloud::{Bucket, CloudError};
use iras_protocol::{RequestId, ResponseMessage};

/// The stored result of `id`, if the app tier has written one.
pub async fn stored(bucket: &dyn Bucket, id: RequestId) -> anyhow::Result<Option<ResponseMessage>> {
    let key = iras_protocol::result_key(id);
    let bytes = match bucket.get(&key).await {
        Ok(bytes) => bytes,
        Err(CloudError::ObjectNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let body = std::str::from_utf8(&bytes)
        .map_err(|e| anyhow::anyhow!("output object {key} is not UTF-8: {e}"))?;
    let response =
        ResponseMessage::decode(body).map_err(|e| anyhow::anyhow!("output object {key}: {e}"))?;
    anyhow::ensure!(
        response.id == id,
        "output object {key} holds the result of {}",
        response.id
    );
    Ok(Some(response))
}

/// The label of `id` under the request-id scheme's `(stem, label)` object, for results
/// older than the id-keyed objects.
pub async fn legacy_label(bucket: &dyn Bucket, id: RequestId) -> anyhow::Result<Option<String>> {
    let key = id.to_string();
    match bucket.get(&key).await {
        Ok(value) => {
            let value = String::from_utf8_lossy(&value);
            let parsed = iras_protocol::parse_output_value(&value)
                .map_err(|e| anyhow::anyhow!("output object {key}: {e}"))?;
            Ok(Some(parsed.label))
        }
        Err(CloudError::ObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
