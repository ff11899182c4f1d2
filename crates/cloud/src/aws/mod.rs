//! The AWS backend: SQS queues, S3 buckets and an EC2 fleet.
//!
//! (Being written: the types and signatures are final, the bodies are not.)

use crate::error::{CloudError, Result};
use crate::spec::{FleetSpec, StackSpec};

/// SDK clients for one region (and optional endpoint override).
#[derive(Debug, Clone)]
pub struct AwsCloud {}

/// An SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {}

/// An S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Bucket {}

/// The EC2 app-tier fleet.
#[derive(Debug, Clone)]
pub struct Ec2Fleet {}

fn not_built() -> CloudError {
    CloudError::Config("the aws backend is not built yet".into())
}

impl AwsCloud {
    /// Builds the SDK clients from the default chain, with the overrides.
    pub async fn connect(_endpoint_url: Option<&str>, _region: Option<&str>) -> Result<Self> {
        Err(not_built())
    }
    /// Creates queues, dead-letter queues and buckets idempotently.
    pub async fn provision(&self, _stack: &StackSpec) -> Result<()> {
        Err(not_built())
    }
    /// The queue with this name or URL.
    pub async fn queue(&self, _name_or_url: &str) -> Result<SqsQueue> {
        Err(not_built())
    }
    /// The bucket with this name.
    pub async fn bucket(&self, _name: &str) -> Result<S3Bucket> {
        Err(not_built())
    }
    /// The EC2 fleet.
    pub fn fleet(&self, _spec: FleetSpec) -> Result<Ec2Fleet> {
        Err(not_built())
    }
}

use std::time::Duration;

use async_trait::async_trait;

use crate::bucket::Bucket;
use crate::fleet::{Fleet, Instance};
use crate::queue::{
    EntryResult, OutgoingMessage, Queue, QueueDepth, ReceiptHandle, ReceiveOptions, ReceivedMessage,
};

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        ""
    }
    async fn send(&self, _m: OutgoingMessage) -> Result<String> {
        Err(not_built())
    }
    async fn send_batch(&self, _m: Vec<OutgoingMessage>) -> Result<Vec<EntryResult<String>>> {
        Err(not_built())
    }
    async fn receive(&self, _o: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        Err(not_built())
    }
    async fn delete(&self, _r: &ReceiptHandle) -> Result<()> {
        Err(not_built())
    }
    async fn delete_batch(&self, _r: Vec<ReceiptHandle>) -> Result<Vec<EntryResult<()>>> {
        Err(not_built())
    }
    async fn change_visibility(&self, _r: &ReceiptHandle, _t: Duration) -> Result<()> {
        Err(not_built())
    }
    async fn depth(&self) -> Result<QueueDepth> {
        Err(not_built())
    }
}

#[async_trait]
impl Bucket for S3Bucket {
    fn name(&self) -> &str {
        ""
    }
    async fn put(&self, _k: &str, _b: Vec<u8>) -> Result<()> {
        Err(not_built())
    }
    async fn get(&self, _k: &str) -> Result<Vec<u8>> {
        Err(not_built())
    }
    async fn list(&self, _p: &str) -> Result<Vec<String>> {
        Err(not_built())
    }
}

#[async_trait]
impl Fleet for Ec2Fleet {
    async fn list(&self) -> Result<Vec<Instance>> {
        Err(not_built())
    }
    async fn launch(&self, _n: usize) -> Result<Vec<Instance>> {
        Err(not_built())
    }
    async fn terminate(&self, _ids: &[String]) -> Result<()> {
        Err(not_built())
    }
}
