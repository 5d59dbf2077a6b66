//! Files and commands for the tests of the deployment files: paths under deploy/, a temporary
//! directory removed when dropped, and commands run to their end.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A file or folder under deploy/.
pub fn deploy(path: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy")).join(path)
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vantage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, path: &str) -> PathBuf {
        self.0.join(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command to its end: whether it succeeded, and what it said on stdout and stderr.
pub fn output(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?} starts: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Runs a command that must succeed, and returns what it said.
pub fn succeeds(command: &mut Command) -> String {
    let (ok, said) = output(command);
    assert!(ok, "{command:?} failed: {said}");
    said
}
