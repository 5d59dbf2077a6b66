//! Shared helpers for the agent's integration tests: one scenario lab per test binary, and a
//! runner for the real `vantage-agent` binary that reports its exit code, output and peak memory.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use vantage_shared::lab::Lab;

/// The lab, started once for all tests of this binary.
pub fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    // Under target/tmp: a static is never dropped, so its files stay behind for the next run.
    LAB.get_or_init(|| {
        Lab::start_in(std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("the scenario lab starts")
    })
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory of the process, in KiB.
    pub peak_rss_kib: i64,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// Runs `vantage-agent` with `args` (under `prefix`, e.g. `ip netns exec NAME`, when given).
pub fn agent_under(prefix: &[&str], args: &[String]) -> Run {
    let bin = env!("CARGO_BIN_EXE_vantage-agent");
    let mut command = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = command
        .args(args)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vantage-agent starts");
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads so a chatty child never blocks on a full pipe.
    let mut child = child;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let (code, peak_rss_kib) = wait_with_rusage(pid);
    std::mem::forget(child); // already reaped by wait4
    Run { code, stdout: out_thread.join().unwrap(), stderr: err_thread.join().unwrap(), peak_rss_kib }
}

pub fn agent(args: &[String]) -> Run {
    agent_under(&[], args)
}

/// `vantage-agent check <args…>`.
pub fn check(args: &[String]) -> Run {
    let mut all = vec!["check".to_owned()];
    all.extend(args.iter().cloned());
    agent(&all)
}

/// Waits for `pid` with wait4, returning its exit code and peak RSS in KiB.
fn wait_with_rusage(pid: libc::pid_t) -> (i32, i64) {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data that wait4 fills in; pid is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 failed: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    (code, usage.ru_maxrss)
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// What a run may take beyond its `--timeout`: starting the process, a busy machine. Generous for
/// a loaded CI machine, and well under `check`'s 10 s default, so a probe that ignored
/// `--timeout` and waited for the default fails.
pub const TIMEOUT_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The `--timeout` a run is given (the last one wins), or `check`'s default.
pub fn timeout_of(args: &[String]) -> std::time::Duration {
    let given = args.windows(2).rev().find(|w| w[0] == "--timeout").map(|w| w[1].as_str());
    vantage_shared::duration::parse_duration(given.unwrap_or("10s")).expect("scenario timeouts parse")
}

/// A run that ended in a timeout failure waited for its `--timeout`, and not much longer.
pub fn assert_ended_at_the_timeout(took: std::time::Duration, timeout: std::time::Duration, context: &str) {
    assert!(took >= timeout, "ended after {took:?}, before its {timeout:?} timeout; {context}");
    assert!(took < timeout + TIMEOUT_MARGIN, "took {took:?} against a {timeout:?} timeout; {context}");
}
