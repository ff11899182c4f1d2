//! Every environment variable an iras binary reads, once.
//!
//! Environment variables cross process boundaries: the systemd units and the user data set
//! them for the tiers, the local fleet and the rehearsal's instance emulator set them for
//! the processes they start, and the tiers' flags read them. One list, whose constants are
//! named exactly as the variables, keeps all of those and the README from drifting apart
//! (a test of the workspace checks that the README names every one).
//!
//! The defaults live with the flags that read the variables (each binary's `config`
//! module, or the shared flag groups of `iras-cli`), not here.

/// Declares each variable as a constant whose value is its own name, and [`ALL`].
macro_rules! variables {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $( $(#[$doc])* pub const $name: &str = stringify!($name); )*
        /// Every variable above, in the order of this file.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

variables! {
    // Every tier: the backend and the stack.
    /// `local` or `aws`: which backend every queue, bucket and fleet uses.
    IRAS_BACKEND,
    /// The local backend's state directory (queue database, buckets, fleet records).
    IRAS_STATE_DIR,
    /// AWS endpoint override for every service (a moto server); beats `AWS_ENDPOINT_URL`.
    IRAS_AWS_ENDPOINT_URL,
    /// AWS region override; otherwise the SDK's chain (`AWS_REGION`, profile, IMDS) decides.
    IRAS_AWS_REGION,
    /// The request queue's name (or URL on AWS).
    IRAS_REQUEST_QUEUE,
    /// The response queue's name (or URL on AWS).
    IRAS_RESPONSE_QUEUE,
    /// The input bucket's name.
    IRAS_INPUT_BUCKET,
    /// The output bucket's name.
    IRAS_OUTPUT_BUCKET,
    /// `auto`, `always` or `never`: whether a tier creates the queues and buckets at start.
    IRAS_PROVISION,
    /// Receives before a message is dead-lettered, when a tier provisions the queues.
    IRAS_MAX_RECEIVE_COUNT,
    /// `text` or `json`: the log format of every binary.
    IRAS_LOG_FORMAT,

    // Set by the fleet for the app tiers it starts.
    /// The instance id (the local fleet and the instance emulator set it; on EC2 the app
    /// tier asks the instance metadata service).
    IRAS_INSTANCE_ID,
    /// The instance name.
    IRAS_INSTANCE_NAME,
    /// A file the app tier creates once it serves, which moves its instance to running.
    IRAS_READY_FILE,

    // Input limits and the decode budget (web tier and app tier alike).
    /// Largest accepted image file, in bytes.
    IRAS_MAX_IMAGE_BYTES,
    /// Largest accepted image, in pixels.
    IRAS_MAX_IMAGE_PIXELS,
    /// Largest accepted width or height.
    IRAS_MAX_IMAGE_SIDE,
    /// Most memory decoding one image may take, in bytes.
    IRAS_MAX_DECODED_BYTES,
    /// Memory all concurrent decodes of a process may take together, in bytes.
    IRAS_DECODE_MEMORY_BYTES,
    /// Most decodes running at once.
    IRAS_MAX_DECODES,
    /// Longest wait for room in the decode budget, in seconds.
    IRAS_DECODE_WAIT_SECS,

    // The response listener, embedded in the web tier or standalone.
    /// Responses taken per receive.
    IRAS_LISTENER_BATCH_SIZE,
    /// Long-poll wait per receive, in seconds.
    IRAS_LISTENER_WAIT_SECS,
    /// How long a received response stays hidden, in seconds.
    IRAS_LISTENER_VISIBILITY_TIMEOUT_SECS,
    /// The shared secret between the web tier and the standalone listener.
    IRAS_LISTENER_TOKEN,
    /// The standalone listener: the web tier's internal endpoint.
    IRAS_LISTENER_DELIVER_TO,
    /// The standalone listener: polling loops side by side.
    IRAS_LISTENER_LOOPS,

    // The web tier.
    /// Address and port the web tier serves on.
    IRAS_LISTEN,
    /// How long a request waits for its result, in seconds.
    IRAS_REQUEST_TIMEOUT_SECS,
    /// Most requests waiting for a result at once.
    IRAS_MAX_WAITING,
    /// How long a client may take to send a request's headers, in seconds.
    IRAS_HEADER_TIMEOUT_SECS,
    /// How long a client may take to send an upload's body, in seconds.
    IRAS_BODY_TIMEOUT_SECS,
    /// Most client connections open at once.
    IRAS_MAX_CONNECTIONS,
    /// `structure` or `full`: how far an upload is checked before it is queued.
    IRAS_VALIDATE,
    /// Predictions per result in JSON answers.
    IRAS_TOP_K,
    /// `file-name` or `request-id`: the buckets' key layout.
    IRAS_KEY_SCHEME,
    /// Finished results kept in memory for `GET /results/{id}`.
    IRAS_RESULTS_KEPT,
    /// Seconds between the live view's looks at the queues and the fleet.
    IRAS_LIVE_INTERVAL_SECS,
    /// Longest `GET /results/{id}?wait=` long-poll, in seconds.
    IRAS_RESULT_WAIT_MAX_SECS,
    /// Most images in one batch upload (`POST /batches`).
    IRAS_BATCH_MAX_IMAGES,
    /// Most bytes in one batch upload: its body, and its images once unpacked.
    IRAS_BATCH_MAX_BYTES,
    /// Days images, results and job records stay in the buckets (0: forever).
    IRAS_RETENTION_DAYS,
    /// `embedded` or `external`: where the web tier's listener runs.
    IRAS_LISTENER,
    /// With an external listener: the loopback address it delivers to.
    IRAS_INTERNAL_LISTEN,
    /// `own` or `shared`: the queue results come back on.
    IRAS_REPLY_QUEUE,
    /// The `<id>` in the name of the web tier's own reply queue.
    IRAS_WEB_ID,

    // The app tier.
    /// Worker loops, each with its own ONNX session.
    IRAS_WORKERS,
    /// Requests taken per receive.
    IRAS_BATCH_SIZE,
    /// How long a received request stays hidden, in seconds.
    IRAS_VISIBILITY_TIMEOUT_SECS,
    /// Longest a request may be worked on, in seconds.
    IRAS_MAX_PROCESSING_SECS,
    /// Long-poll wait per receive, in seconds.
    IRAS_WAIT_SECS,
    /// The model pack directory.
    IRAS_MODEL_DIR,
    /// The cache root (model packs, ONNX Runtime), default `~/.cache/iras`.
    IRAS_CACHE_DIR,

    // The dead-letter tool.
    /// Which queue's dead letters: `requests`, `responses`, or a queue name.
    IRAS_DLQ_QUEUE,
    /// The dead-letter queue itself, when it is not `<queue>-dlq`.
    IRAS_DEAD_LETTER_QUEUE,

    // The scaler.
    /// `seed` or `target`.
    IRAS_SCALER_POLICY,
    /// Lower instance bound.
    IRAS_SCALER_MIN_INSTANCES,
    /// Upper instance bound.
    IRAS_SCALER_MAX_INSTANCES,
    /// Seed policy: scale-out divisor.
    IRAS_SCALER_OUT_DIVISOR,
    /// Seed policy: scale-in divisor.
    IRAS_SCALER_IN_DIVISOR,
    /// Seed policy: polls the scale-in target must hold.
    IRAS_SCALER_SCALE_IN_SAMPLES,
    /// Target tracking: acceptable backlog per instance.
    IRAS_SCALER_BACKLOG_PER_INSTANCE,
    /// Target tracking: scale-out cooldown, in seconds.
    IRAS_SCALER_SCALE_OUT_COOLDOWN_SECS,
    /// Target tracking: scale-in cooldown, in seconds.
    IRAS_SCALER_SCALE_IN_COOLDOWN_SECS,
    /// Poll interval, in seconds.
    IRAS_SCALER_INTERVAL_SECS,
    /// The scaler's metrics address.
    IRAS_SCALER_METRICS_LISTEN,
    /// Terminate the fleet when the scaler exits.
    IRAS_SCALER_TERMINATE_ON_EXIT,
    /// Name prefix of the fleet's instances (the scaler names them so; the web tier's live
    /// view lists them by it).
    IRAS_SCALER_NAME_PREFIX,
    /// The stack whose instances the scaler counts and the web tier's live view shows.
    IRAS_SCALER_STACK,
    /// Extra tags of new instances, comma-separated `K=V`.
    IRAS_SCALER_TAGS,
    /// Local fleet: the app-tier binary.
    IRAS_SCALER_APP_TIER_BIN,
    /// Local fleet: SIGTERM-to-SIGKILL grace, in seconds.
    IRAS_SCALER_GRACE_SECS,
    /// EC2: the AMI id.
    IRAS_SCALER_AMI,
    /// EC2: instance types, comma-separated, preferred first.
    IRAS_SCALER_INSTANCE_TYPE,
    /// EC2: security groups, comma-separated.
    IRAS_SCALER_SECURITY_GROUPS,
    /// EC2: subnets, comma-separated, preferred first.
    IRAS_SCALER_SUBNET,
    /// EC2: the instance profile.
    IRAS_SCALER_INSTANCE_PROFILE,
    /// EC2: the key pair.
    IRAS_SCALER_KEY_NAME,
    /// EC2: the user-data file.
    IRAS_SCALER_USER_DATA_FILE,
    /// EC2: the AMI's root device name.
    IRAS_SCALER_ROOT_DEVICE_NAME,
    /// EC2: the root volume's size, in GiB.
    IRAS_SCALER_ROOT_VOLUME_GIB,
    /// Seconds an instance may stay pending before it is replaced.
    IRAS_SCALER_READY_GRACE_SECS,
    /// First pause of launches after a launch stopped short, in seconds.
    IRAS_SCALER_LAUNCH_BACKOFF_SECS,

    // The workload generator.
    /// `--url`.
    IRAS_WORKLOAD_URL,
    /// `--image-folder`.
    IRAS_WORKLOAD_IMAGE_FOLDER,
    /// `--num-request`.
    IRAS_WORKLOAD_NUM_REQUEST,
    /// `--concurrency`.
    IRAS_WORKLOAD_CONCURRENCY,
    /// `--rate`.
    IRAS_WORKLOAD_RATE,
    /// `--duration-secs`.
    IRAS_WORKLOAD_DURATION_SECS,
    /// `--timeout-secs`.
    IRAS_WORKLOAD_TIMEOUT_SECS,
    /// `--retries`.
    IRAS_WORKLOAD_RETRIES,
    /// `--expected`.
    IRAS_WORKLOAD_EXPECTED,
    /// `true`: the workload generator sends the folder as one batch and collects it.
    IRAS_WORKLOAD_ASYNC,
}

/// The ONNX Runtime library: the variable the `ort` crate itself reads, so not `IRAS_`.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_names_every_variable() {
        let readme = include_str!("../../../README.md");
        let missing: Vec<_> = ALL.iter().filter(|name| !readme.contains(*name)).collect();
        assert!(
            missing.is_empty(),
            "README.md does not document {missing:?}"
        );
    }

    #[test]
    fn every_name_is_an_iras_variable_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL {
            assert!(name.starts_with("IRAS_"), "{name}");
            assert!(seen.insert(name), "{name} twice");
        }
        assert_eq!(IRAS_LISTEN, "IRAS_LISTEN");
    }
}
