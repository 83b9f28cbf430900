//! A function the workers could not find by address (a closure that captures a variable,
//! or a `fn` pointer) does not compile, with one error per call, worded for both. Builds a
//! small program against the library with cargo, in a target folder of its own.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use corepool_tests::{mpi::workspace_root, wait_with_watchdog};

const PROGRAM: &str = r#"
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {
    corepool::init();
    let pool = corepool::Pool::new().unwrap();
    let factor = 3;
    let _ = pool.map(move |x: i64| x * factor, 0..3);
    let pointer: fn(i64) -> i64 = double;
    let _ = pool.map(pointer, 0..3);
}
"#;

#[test]
fn a_capturing_closure_and_a_fn_pointer_each_get_one_error_that_names_them() {
    let root = workspace_root();
    let folder = root.join("target").join("capture-check");
    let package = folder.join("program");
    std::fs::create_dir_all(package.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"capture-check\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\ncorepool = {{ path = {:?} }}\n\n[workspace]\n",
        root.join("coordinator")
    );
    std::fs::write(package.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(package.join("src").join("main.rs"), PROGRAM).unwrap();
    // The workspace's versions of every crate, all in the local cache already.
    std::fs::copy(root.join("Cargo.lock"), package.join("Cargo.lock")).unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let child = Command::new(cargo)
        .current_dir(&package)
        .args(["build", "--offline", "--quiet", "--target-dir"])
        .arg(folder.join("target"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo runs");
    let run = wait_with_watchdog(child, Duration::from_secs(300));
    assert!(!run.status.success(), "a capturing closure and a fn pointer compiled: {run:?}");
    let errors: Vec<&str> = run.stderr.lines().filter(|line| line.starts_with("error[E0080]")).collect();
    let message = "a function sent to workers must be a function item or a closure that captures nothing: \
                   not a capturing closure or a fn pointer";
    assert_eq!(errors.len(), 2, "one error per call:\n{}", run.stderr);
    assert!(errors.iter().all(|line| line.contains(message)), "{}", run.stderr);
}
