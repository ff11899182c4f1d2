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
/// Set by the local fleet for each app-tier process it starts: the instance id.
pub const IRAS_INSTANCE_ID: &str = "IRAS_INSTANCE_ID";
/// Set by the local fleet for each app-tier process it starts: the instance name.
pub const IRAS_INSTANCE_NAME: &str = "IRAS_INSTANCE_NAME";
/// Set by the local fleet: a file the process creates once it serves, which moves the
/// instance from pending to running.
pub const IRAS_READY_FILE: &str = "IRAS_READY_FILE";
