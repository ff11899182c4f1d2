//! `app-tier classify` on the golden photos (needs `scripts/fetch-model --with-test-assets`).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;
use std::process::Command;

fn golden(stem: &str) -> PathBuf {
    let path = iras_classifier::paths::cache_dir()
        .join("golden")
        .join(format!("{stem}.png"));
    assert!(
        path.exists(),
        "{} missing: run `scripts/fetch-model --with-test-assets` first",
        path.display()
    );
    path
}

fn app_tier(args: &[&str]) -> (String, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_app-tier"))
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code(),
    )
}

#[test]
fn classifies_golden_photos_like_the_course_output() {
    let (chelsea, coffee) = (golden("chelsea"), golden("coffee"));
    let (stdout, stderr, code) = app_tier(&[
        "classify",
        chelsea.to_str().unwrap(),
        coffee.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "chelsea,tiger cat\ncoffee,espresso\n");

    let (stdout, _, code) = app_tier(&[
        "classify",
        "--json",
        "--top-k",
        "3",
        coffee.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["file"], "coffee");
    assert_eq!(v["index"], 967);
    assert_eq!(v["top_k"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_files_fail_alone_and_missing_pack_says_what_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.jpg");
    std::fs::write(&junk, b"not a jpeg").unwrap();
    let coffee = golden("coffee");
    let (stdout, stderr, code) =
        app_tier(&["classify", junk.to_str().unwrap(), coffee.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(stdout, "coffee,espresso\n");
    assert!(stderr.contains("not an image"), "{stderr}");

    let (_, stderr, code) = app_tier(&[
        "classify",
        "--model",
        tmp.path().to_str().unwrap(),
        coffee.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("scripts/fetch-model"), "{stderr}");
}
