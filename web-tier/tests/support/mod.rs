//! Helpers shared by the web tier's integration tests.

pub(crate) mod bomb;
pub(crate) mod web;
