//! What the benchmark reads from `/proc` and from the coordinator.

use std::io::{Read, Write};
use std::time::Duration;

/// A process's CPU time so far, every thread, user and system.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks = |i: usize| fields[i - 3].parse::<u64>().expect("a number of ticks");
    // SAFETY: sysconf reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros((ticks(14) + ticks(15)) * 1_000_000 / per_second)
}

/// A process's resident size now and at its peak, in KiB.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A plain HTTP/1.1 GET of `path` on `addr`: the body.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").expect("the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the response");
    assert!(response.starts_with("HTTP/1.1 200"), "GET {path}: {}", response.lines().next().unwrap_or(""));
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// Results the coordinator at `http` has committed from agents so far.
pub fn committed(http: &str) -> u64 {
    let metrics = http_get(http, "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("vantage_ingested_results_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("vantage_ingested_results_total in /metrics") as u64
}
