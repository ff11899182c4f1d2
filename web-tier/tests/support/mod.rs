//! Helpers only the web tier's hostile-input tests need (the rest is `iras-testkit`).

pub(crate) mod bomb;
