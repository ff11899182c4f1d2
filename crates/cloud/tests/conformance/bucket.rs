//! Bucket behaviour both backends must share.

use iras_cloud::CloudError;

use crate::harness::TestEnv;

pub(crate) async fn put_get_overwrite(env: &TestEnv) {
    let stack = env.stack().await;
    let b = env
        .cloud
        .bucket(&stack.output_bucket)
        .await
        .expect("bucket");
    b.put("test_0", b"(test_0, bathtub)".to_vec())
        .await
        .expect("put");
    assert_eq!(b.get("test_0").await.expect("get"), b"(test_0, bathtub)");
    b.put("test_0", b"(test_0, tile roof)".to_vec())
        .await
        .expect("overwrite");
    assert_eq!(b.get("test_0").await.expect("get"), b"(test_0, tile roof)");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    b.put("nested/dir/big.bin", big.clone())
        .await
        .expect("put big");
    assert_eq!(b.get("nested/dir/big.bin").await.expect("get big"), big);
}

pub(crate) async fn list_by_prefix(env: &TestEnv) {
    let stack = env.stack().await;
    let b = env.cloud.bucket(&stack.input_bucket).await.expect("bucket");
    for key in [
        "test_1.JPEG",
        "test_0.JPEG",
        "other.png",
        "ids/abc/test_0.JPEG",
    ] {
        b.put(key, key.as_bytes().to_vec()).await.expect("put");
    }
    assert_eq!(
        b.list("test_").await.expect("list"),
        vec!["test_0.JPEG", "test_1.JPEG"]
    );
    assert_eq!(
        b.list("ids/").await.expect("list"),
        vec!["ids/abc/test_0.JPEG"]
    );
    assert_eq!(
        b.list("id").await.expect("list"),
        vec!["ids/abc/test_0.JPEG"]
    );
    assert_eq!(
        b.list("").await.expect("list"),
        vec![
            "ids/abc/test_0.JPEG",
            "other.png",
            "test_0.JPEG",
            "test_1.JPEG"
        ]
    );
    assert!(b.list("zzz").await.expect("list").is_empty());
}

pub(crate) async fn missing_key_is_a_typed_error(env: &TestEnv) {
    let stack = env.stack().await;
    let b = env
        .cloud
        .bucket(&stack.output_bucket)
        .await
        .expect("bucket");
    let err = b.get("nope").await.expect_err("missing");
    assert!(matches!(err, CloudError::ObjectNotFound { .. }), "{err}");
}

pub(crate) async fn rejected_keys_never_reach_the_store(env: &TestEnv) {
    let stack = env.stack().await;
    let b = env
        .cloud
        .bucket(&stack.output_bucket)
        .await
        .expect("bucket");
    for key in ["", "../escape", "a//b", "/abs", "a/./b", "bad\u{7}bell"] {
        let err = b.put(key, b"x".to_vec()).await.expect_err(key);
        assert!(
            matches!(err, CloudError::InvalidKey { .. }),
            "{key:?}: {err}"
        );
        let err = b.get(key).await.expect_err(key);
        assert!(
            matches!(err, CloudError::InvalidKey { .. }),
            "{key:?}: {err}"
        );
    }
    assert!(b.list("").await.expect("list").is_empty());
}

pub(crate) async fn missing_bucket_is_a_typed_error(env: &TestEnv) {
    let err = env
        .cloud
        .bucket(&format!("{}-nope", env.prefix))
        .await
        .expect_err("missing");
    assert!(matches!(err, CloudError::BucketNotFound { .. }), "{err}");
    let err = env.cloud.bucket("Bad_Name").await.expect_err("invalid");
    assert!(matches!(err, CloudError::InvalidBucketName { .. }), "{err}");
}
