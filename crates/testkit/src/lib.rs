//! What the iras test suites share, so each test file says only what it tests. Dev-only:
//! no binary depends on it; test targets and benchmark examples do.
//!
//! - [`stack`]: a provisioned stack on either backend ([`TestStack::local`],
//!   [`TestStack::aws`] on the moto server `scripts/test` starts, see [`moto`]), with the
//!   flags a tier needs to join it.
//! - [`process`]: a tier binary started on port 0 that reports the address it bound, so no
//!   test picks a "free" port and races another for it.
//! - [`ports`]: blocks of ports below the kernel's ephemeral range, for deployments whose
//!   ports are fixed before their processes start.
//! - [`wait`]: [`eventually`], waiting on a condition with a deadline instead of sleeping.
//! - [`client`]: an upload as the course client sends it (field `myfile`).
//! - [`echo`]: a stand-in app tier answering `label-of-<stem>`, for tests of everything
//!   but the model.
//! - [`fleet`]: a stand-in instance in a local fleet that turns ready when the test says,
//!   for tests of what watches the fleet.
//! - `web` (feature `web`): the web tier served in-process on a listener bound to port 0.
//! - [`photos`]: the golden photos and their expected labels (the model tests' assets).
//! - [`bomb`]: a decompression bomb, for the hostile-input tests and the fault benchmark.
//!
//! The decision a reader may question: helpers panic instead of returning errors. A test
//! helper's failure is the test's failure, and a panic with a message that says what to
//! run (`scripts/test`, `scripts/fetch-model --with-test-assets`) is the clearest report.

#![allow(clippy::unwrap_used)] // test support: a panic is the report
#![allow(clippy::print_stderr)] // a spawned binary's log is passed through to the test output

pub mod bomb;
pub mod client;
pub mod echo;
pub mod fleet;
pub mod moto;
pub mod photos;
pub mod ports;
pub mod process;
pub mod stack;
pub mod wait;
#[cfg(feature = "web")]
pub mod web;

pub use stack::TestStack;
pub use wait::eventually;
