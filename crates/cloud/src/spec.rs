//! What to create and launch: the stack's queues and buckets, and the fleet's launch spec.
//!
//! These are plain data, shared by both backends; each backend reads the parts that apply
//! to it (the local fleet its program and arguments, the EC2 fleet its AMI and network).

use std::path::PathBuf;
use std::time::Duration;

/// Suffix of the dead-letter queue that `provision` creates beside each queue.
pub const DEAD_LETTER_SUFFIX: &str = "-dlq";

/// The queues and buckets of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpec {
    /// Where the web tier puts requests and the app tier takes them.
    pub request_queue: String,
    /// Where the app tier puts results and the listener takes them.
    pub response_queue: String,
    /// Holds every uploaded image.
    pub input_bucket: String,
    /// Holds every result as `(stem, label)`.
    pub output_bucket: String,
    /// How many receives a message gets before it moves to the dead-letter queue.
    pub max_receive_count: u32,
    /// The queues' default visibility timeout.
    pub visibility_timeout: Duration,
}

impl StackSpec {
    /// Checks what both backends must refuse alike: SQS's 1..=1000 receives before
    /// dead-lettering and its 12-hour visibility limit. Names are checked when created.
    pub fn validate(&self) -> crate::Result<()> {
        if !(1..=1000).contains(&self.max_receive_count) {
            return Err(crate::CloudError::InvalidArgument(format!(
                "max_receive_count must be 1..=1000, got {}",
                self.max_receive_count
            )));
        }
        crate::queue::validate_visibility(self.visibility_timeout)
    }

    /// The dead-letter queue paired with `queue`.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}{DEAD_LETTER_SUFFIX}")
    }
}

/// How to name, tag and start app-tier instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSpec {
    /// Instance names are this prefix plus an ordinal (`app-tier-` → `app-tier-1`).
    pub name_prefix: String,
    /// The stack the instances belong to: EC2 tag `iras:stack`, and the local fleet's
    /// record directory. Only instances of this stack are listed or terminated.
    pub stack: String,
    /// Extra tags for every instance (the seed tagged `Type=apptier`).
    pub tags: Vec<(String, String)>,
    /// How to start a local app-tier process.
    pub local: Option<LocalLaunch>,
    /// How to start an EC2 app-tier instance.
    pub ec2: Option<Ec2Launch>,
}

/// Starting an app tier as a local child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLaunch {
    /// The program (the `app-tier` binary).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables (on top of the scaler's own environment).
    pub env: Vec<(String, String)>,
    /// How long a terminated process may drain after SIGTERM before it gets SIGKILL.
    pub grace: Duration,
}

/// Starting an app tier as an EC2 instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Launch {
    /// The app-tier AMI.
    pub image_id: String,
    /// Instance types, preferred first (e.g. `t3.micro`, then `t3a.micro`): when EC2 has
    /// no capacity for one, the next is tried. At least one.
    pub instance_types: Vec<String>,
    /// Security groups for the instance (the app tier needs no inbound rule).
    pub security_group_ids: Vec<String>,
    /// Subnets to launch into, preferred first (one per availability zone spreads the
    /// fleet and gives a launch somewhere else to go when a zone is out of capacity).
    /// Empty: EC2's default subnet of the default VPC.
    pub subnet_ids: Vec<String>,
    /// Instance profile name or ARN giving the app tier its queue and bucket rights.
    pub instance_profile: Option<String>,
    /// SSH key pair name, for debugging only.
    pub key_name: Option<String>,
    /// cloud-init user data (plain text; the backend base64-encodes it).
    pub user_data: Option<String>,
    /// Device name of the AMI's root volume (`/dev/sda1` on Ubuntu, `/dev/xvda` on Amazon
    /// Linux). The launch maps this device to an encrypted gp3 volume, so it must be the
    /// AMI's own root device: a different name would add a second volume and leave the
    /// root as the AMI has it. When unset, the backend asks EC2 (`DescribeImages`) once.
    pub root_device_name: Option<String>,
    /// Size of the root volume in GiB (when unset: the size of the AMI's snapshot).
    pub root_volume_gib: Option<i32>,
}

/// Largest gp3 volume EC2 creates, in GiB.
pub const MAX_GP3_VOLUME_GIB: i32 = 16_384;

/// Default request queue name.
pub const DEFAULT_REQUEST_QUEUE: &str = "iras-requests";
/// Default response queue name.
pub const DEFAULT_RESPONSE_QUEUE: &str = "iras-responses";
/// Default input bucket name.
pub const DEFAULT_INPUT_BUCKET: &str = "iras-input";
/// Default output bucket name.
pub const DEFAULT_OUTPUT_BUCKET: &str = "iras-output";
/// Default of [`StackSpec::max_receive_count`]: a message that crashed five workers is poison.
pub const DEFAULT_MAX_RECEIVE_COUNT: u32 = 5;
/// The queues' default visibility timeout when provisioned by a tier.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for StackSpec {
    /// The names every tier uses unless told otherwise, and the default limits.
    fn default() -> Self {
        Self {
            request_queue: DEFAULT_REQUEST_QUEUE.into(),
            response_queue: DEFAULT_RESPONSE_QUEUE.into(),
            input_bucket: DEFAULT_INPUT_BUCKET.into(),
            output_bucket: DEFAULT_OUTPUT_BUCKET.into(),
            max_receive_count: DEFAULT_MAX_RECEIVE_COUNT,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
        }
    }
}
