#![forbid(unsafe_code)]
//! Support for Vantage's end-to-end tests: the real binaries, built once per test run, started as
//! processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The directory holding this profile's binaries (`target/debug` or `target/release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test binary>
    exe.parent().and_then(Path::parent).expect("test binaries live in target/<profile>/deps").to_path_buf()
}

/// Builds every workspace binary once (cargo builds only tests for this package, not the other
/// packages' binaries), with the same profile as the running tests.
fn build_binaries() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = profile_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--workspace", "--bins", "--locked"]);
        build.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
        dir
    })
}

/// The path of a Vantage binary (`vantage-agent`, `vantage-coordinator`), freshly built.
pub fn binary(name: &str) -> PathBuf {
    let path = build_binaries().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Runs a binary to completion.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name)).args(args).env("NO_COLOR", "1").output().expect("the binary starts")
}
