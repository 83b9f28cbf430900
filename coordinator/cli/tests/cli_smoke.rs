//! A smoke test of the `corepool` binary from its own package.
//!
//! Having an integration test here is also what makes `cargo test --workspace` build the
//! `corepool` binary, which the end-to-end tests in `tests/` start.

use std::process::Command;

#[test]
fn version_and_cpus_work() {
    let exe = env!("CARGO_BIN_EXE_corepool");
    let version = Command::new(exe).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("corepool {}", env!("CARGO_PKG_VERSION")));
    let cpus = Command::new(exe).arg("cpus").output().unwrap();
    assert!(String::from_utf8_lossy(&cpus.stdout).starts_with("Number of processors: "));
}
