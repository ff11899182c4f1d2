//! S3 buckets.
//!
//! A bucket handle is made after a `HeadBucket` health check, so a missing bucket (404)
//! is a [`CloudError::BucketNotFound`] at startup and a bucket we may not use (403, which
//! S3 also answers for a bucket owned by another account) a clear error, rather than a
//! failure at the first request. Keys and names are validated before any call, with the
//! same rules the local backend enforces.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};

use super::Failure;
use crate::bucket::{Bucket, validate_bucket_name, validate_key};
use crate::error::{CloudError, Result};
use crate::spec::StackSpec;

const SERVICE: &str = "s3";

/// The one region where `CreateBucket` must not carry a `LocationConstraint`.
const DEFAULT_REGION: &str = "us-east-1";

/// Maps a failed S3 call on `bucket`: a missing bucket or key get their own variants.
fn s3_error(bucket: &str, key: Option<&str>, operation: &'static str, f: Failure) -> CloudError {
    // HeadBucket answers without a body, so only its status tells "missing" apart.
    let head_missing = operation == "HeadBucket" && f.status == Some(404);
    if head_missing || f.has_code(&["NoSuchBucket"]) {
        return CloudError::BucketNotFound {
            bucket: bucket.to_owned(),
        };
    }
    if let Some(key) = key
        && f.has_code(&["NoSuchKey"])
    {
        return CloudError::ObjectNotFound {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
    }
    if operation == "HeadBucket" && f.status == Some(403) {
        return CloudError::Aws {
            service: SERVICE,
            operation,
            message: format!(
                "access to bucket {bucket} denied (403): it belongs to another account, or \
                 these credentials lack s3:ListBucket on it"
            ),
            retryable: false,
        };
    }
    f.into_error(SERVICE, operation)
}

/// An S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    client: Client,
    name: String,
}

impl S3Bucket {
    pub(super) async fn open(client: Client, name: &str) -> Result<Self> {
        validate_bucket_name(name)?;
        client
            .head_bucket()
            .bucket(name)
            .send()
            .await
            .map_err(|e| s3_error(name, None, "HeadBucket", Failure::of(&e)))?;
        Ok(Self {
            client,
            name: name.to_owned(),
        })
    }
}

#[async_trait]
impl Bucket for S3Bucket {
    fn name(&self) -> &str {
        &self.name
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        validate_key(key)?;
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error(&self.name, Some(key), "PutObject", Failure::of(&e)))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        let output = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(&self.name, Some(key), "GetObject", Failure::of(&e)))?;
        let body = output.body.collect().await.map_err(|e| CloudError::Aws {
            service: SERVICE,
            operation: "GetObject",
            message: format!("reading the body of {key}: {e}"),
            // The connection broke mid-body: asking again may well work.
            retryable: true,
        })?;
        Ok(body.into_bytes().to_vec())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| s3_error(&self.name, None, "ListObjectsV2", Failure::of(&e)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(str::to_owned),
            );
        }
        // S3 lists in UTF-8 binary order already; sorting keeps the contract explicit.
        keys.sort();
        Ok(keys)
    }
}

/// The `CreateBucket` configuration for `region`: none in us-east-1 (S3 rejects an
/// explicit `us-east-1` constraint), the region's constraint elsewhere.
fn bucket_configuration(region: &str) -> Option<CreateBucketConfiguration> {
    (region != DEFAULT_REGION).then(|| {
        CreateBucketConfiguration::builder()
            .location_constraint(BucketLocationConstraint::from(region))
            .build()
    })
}

/// Creates the stack's buckets; one we already own counts as created.
pub(super) async fn provision(client: &Client, region: &str, stack: &StackSpec) -> Result<()> {
    let buckets = [&stack.input_bucket, &stack.output_bucket];
    for bucket in buckets {
        validate_bucket_name(bucket)?;
    }
    for bucket in buckets {
        let created = client
            .create_bucket()
            .bucket(bucket.as_str())
            .set_create_bucket_configuration(bucket_configuration(region))
            .send()
            .await;
        if let Err(e) = created {
            let failure = Failure::of(&e);
            if !failure.has_code(&["BucketAlreadyOwnedByYou"]) {
                return Err(s3_error(bucket, None, "CreateBucket", failure));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::FailureKind;

    fn failure(code: Option<&str>, status: u16) -> Failure {
        Failure {
            kind: FailureKind::Service,
            code: code.map(str::to_owned),
            status: Some(status),
            message: "m".into(),
        }
    }

    #[test]
    fn errors_map_to_the_contract_variants() {
        assert!(matches!(
            s3_error("b", None, "HeadBucket", failure(Some("NotFound"), 404)),
            CloudError::BucketNotFound { .. }
        ));
        assert!(matches!(
            s3_error(
                "b",
                Some("k"),
                "PutObject",
                failure(Some("NoSuchBucket"), 404)
            ),
            CloudError::BucketNotFound { .. }
        ));
        assert!(matches!(
            s3_error("b", Some("k"), "GetObject", failure(Some("NoSuchKey"), 404)),
            CloudError::ObjectNotFound { .. }
        ));
        let denied = s3_error("b", None, "HeadBucket", failure(None, 403));
        assert!(
            matches!(
                denied,
                CloudError::Aws {
                    retryable: false,
                    ..
                }
            ),
            "{denied}"
        );
        assert!(denied.to_string().contains("another account"));
        assert!(s3_error("b", None, "PutObject", failure(Some("SlowDown"), 503)).is_retryable());
    }

    #[test]
    fn location_constraint_only_outside_us_east_1() {
        assert!(bucket_configuration("us-east-1").is_none());
        let eu = bucket_configuration("eu-west-1").unwrap();
        assert_eq!(
            eu.location_constraint(),
            Some(&BucketLocationConstraint::EuWest1)
        );
    }
}
