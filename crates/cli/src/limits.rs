//! The input limits and the decode budget: the web tier and the app tier read the same
//! flags, so the web tier refuses with a 4xx exactly what the app tier would refuse.

use std::num::NonZeroUsize;
use std::time::Duration;

use iras_classifier::budget::{DEFAULT_DECODE_MEMORY_BYTES, DEFAULT_DECODE_WAIT_SECS};
use iras_classifier::decode::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE,
};
use iras_classifier::{BudgetError, DecodeBudget, Limits};
use iras_protocol::env;

/// The input limits as command-line flags (with `IRAS_…` environment variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct LimitArgs {
    /// Largest accepted image file, in bytes.
    #[arg(long, env = env::IRAS_MAX_IMAGE_BYTES, default_value_t = DEFAULT_MAX_BYTES)]
    pub max_image_bytes: usize,
    /// Largest accepted image, in pixels (width × height, from the header).
    #[arg(long, env = env::IRAS_MAX_IMAGE_PIXELS, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_image_pixels: u64,
    /// Largest accepted width or height, in pixels.
    #[arg(long, env = env::IRAS_MAX_IMAGE_SIDE, default_value_t = DEFAULT_MAX_SIDE)]
    pub max_image_side: u32,
    /// Most memory decoding one image may take, in bytes, estimated from its header (8 bytes a
    /// pixel for 16-bit RGBA, plus the RGB copy). Larger images are refused (413).
    #[arg(long, env = env::IRAS_MAX_DECODED_BYTES, default_value_t = DEFAULT_MAX_DECODED_BYTES)]
    pub max_decoded_bytes: u64,
}

impl Default for LimitArgs {
    fn default() -> Self {
        let l = Limits::default();
        LimitArgs {
            max_image_bytes: l.max_bytes,
            max_image_pixels: l.max_pixels,
            max_image_side: l.max_side,
            max_decoded_bytes: l.max_decoded_bytes,
        }
    }
}

impl LimitArgs {
    /// The limits these flags describe.
    pub fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_image_bytes,
            max_pixels: self.max_image_pixels,
            max_side: self.max_image_side,
            max_decoded_bytes: self.max_decoded_bytes,
        }
    }
}

/// The decode budget as command-line flags (with `IRAS_…` environment variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct DecodeArgs {
    /// Memory all concurrent decodes of this process may take together, in bytes (each decode
    /// counts its estimate from the image header). Must be at least `--max-decoded-bytes`.
    #[arg(long, env = env::IRAS_DECODE_MEMORY_BYTES, default_value_t = DEFAULT_DECODE_MEMORY_BYTES)]
    pub decode_memory_bytes: u64,
    /// Most decodes running at once. Default: the number of CPUs.
    #[arg(long, env = env::IRAS_MAX_DECODES)]
    pub max_decodes: Option<NonZeroUsize>,
    /// Longest wait for room in the budget, in seconds, before the image is turned away (503
    /// at the web tier; redelivery at the app tier).
    #[arg(long, env = env::IRAS_DECODE_WAIT_SECS, default_value_t = DEFAULT_DECODE_WAIT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub decode_wait_secs: u64,
}

impl Default for DecodeArgs {
    fn default() -> Self {
        DecodeArgs {
            decode_memory_bytes: DEFAULT_DECODE_MEMORY_BYTES,
            max_decodes: None,
            decode_wait_secs: DEFAULT_DECODE_WAIT_SECS,
        }
    }
}

impl DecodeArgs {
    /// Builds the budget; fails if it cannot hold one image of `max_decoded_bytes`.
    pub fn budget(&self, max_decoded_bytes: u64) -> Result<DecodeBudget, BudgetError> {
        DecodeBudget::configured(
            self.decode_memory_bytes,
            self.max_decodes,
            Duration::from_secs(self.decode_wait_secs),
            max_decoded_bytes,
        )
    }
}
