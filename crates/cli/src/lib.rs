//! The command-line flag groups several iras binaries share, each with its `IRAS_*`
//! variable and its one default, and each turning into the plain type of the library it
//! configures.
//!
//! - [`CloudArgs`] (`--backend`, `--state-dir`, `--aws-*`) → [`CloudArgs::connect`] a
//!   [`iras_cloud::Cloud`]: every binary that touches a queue.
//! - [`StackArgs`] (queue and bucket names, `--provision`) → an [`iras_cloud::StackSpec`],
//!   provisioned at start when [`Provision`] says so: every tier.
//! - [`ListenerPolling`] (`--listener-*`) → the receive options of the response loop: the
//!   web tier's embedded listener and the standalone `listener`.
//! - [`FleetNaming`] (`--stack-name`, `--name-prefix`) → which fleet: the scaler manages
//!   it, the web tier's live view watches it.
//! - [`LimitArgs`] and [`DecodeArgs`] (`--max-image-*`, `--decode-*`) → the input limits
//!   and the decode budget: the web tier and the app tier, which must refuse alike.
//!
//! The decision a reader may question: a crate for flags alone. The libraries (`iras-cloud`,
//! `iras-classifier`) stay free of any command line, each binary keeps its own flags in
//! its own `config` module, and what two binaries share is written once, here.

mod cloud;
mod fleet;
mod limits;
mod polling;

pub use cloud::{CloudArgs, Provision, StackArgs};
pub use fleet::FleetNaming;
pub use limits::{DecodeArgs, LimitArgs};
pub use polling::ListenerPolling;
