//! The moto server `scripts/test` starts on loopback: where it is, and a cloud on it.

use iras_cloud::Cloud;

/// The region every test stack on moto lives in.
pub const REGION: &str = "us-east-1";

/// The moto server's URL, from `IRAS_TEST_AWS_ENDPOINT` (set by `scripts/test`).
pub fn endpoint() -> String {
    std::env::var("IRAS_TEST_AWS_ENDPOINT").expect(
        "IRAS_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test, which starts a \
         moto server on loopback (or start one with scripts/moto-server start and export it)",
    )
}

/// The AWS backend on the moto server. Checks that credentials are set: moto accepts any,
/// and `scripts/test` exports dummy ones so no real identity ever signs a test request.
/// (This crate does not switch the cloud layer's `aws` feature on, so a benchmark built
/// local-only stays small; the test suite's build has it through the tiers' defaults.)
pub async fn connect() -> Cloud {
    assert!(
        std::env::var_os("AWS_ACCESS_KEY_ID").is_some(),
        "AWS_ACCESS_KEY_ID is not set: run the aws tests through scripts/test (dummy credentials)"
    );
    Cloud::connect_aws(Some(&endpoint()), Some(REGION))
        .await
        .expect("the aws backend on the moto server")
}
