//! Environment variables read by the cloud layer's configuration, in one place so the
//! code and the README cannot drift.

/// `local` or `aws`: which backend every queue, bucket and fleet uses.
pub const IRAS_BACKEND: &str = "IRAS_BACKEND";
/// The local backend's state directory (queues database, buckets, fleet records).
pub const IRAS_STATE_DIR: &str = "IRAS_STATE_DIR";
/// AWS endpoint override for every service (e.g. a moto server). The SDK's own
/// `AWS_ENDPOINT_URL` is honoured too; this one wins.
pub const IRAS_AWS_ENDPOINT_URL: &str = "IRAS_AWS_ENDPOINT_URL";
/// AWS region override; otherwise the SDK's chain (`AWS_REGION`, profile, IMDS) decides.
pub const IRAS_AWS_REGION: &str = "IRAS_AWS_REGION";
/// Set by the local fleet (and the rehearsal's instance emulator) for each app tier it
/// starts: the instance id. On EC2 the app tier asks the instance metadata service instead.
pub const IRAS_INSTANCE_ID: &str = "IRAS_INSTANCE_ID";
/// Set by the local fleet for each app-tier process it starts: the instance name.
pub const IRAS_INSTANCE_NAME: &str = "IRAS_INSTANCE_NAME";
/// Set by the local fleet: a file the process creates once it serves, which moves the
/// instance from pending to running.
pub const IRAS_READY_FILE: &str = "IRAS_READY_FILE";
/// The request queue's name (or URL on AWS).
pub const IRAS_REQUEST_QUEUE: &str = "IRAS_REQUEST_QUEUE";
/// The response queue's name (or URL on AWS).
pub const IRAS_RESPONSE_QUEUE: &str = "IRAS_RESPONSE_QUEUE";
/// The input bucket's name.
pub const IRAS_INPUT_BUCKET: &str = "IRAS_INPUT_BUCKET";
/// The output bucket's name.
pub const IRAS_OUTPUT_BUCKET: &str = "IRAS_OUTPUT_BUCKET";
/// `auto`, `always` or `never`: whether a tier creates the queues and buckets at startup.
pub const IRAS_PROVISION: &str = "IRAS_PROVISION";
/// Receives before a message is dead-lettered, when a tier provisions the queues.
pub const IRAS_MAX_RECEIVE_COUNT: &str = "IRAS_MAX_RECEIVE_COUNT";
