//! Helpers shared by the web tier's integration tests.

pub(crate) mod bomb;
#[allow(dead_code)] // not every test file starts an echo worker
pub(crate) mod echo;
pub(crate) mod web;
