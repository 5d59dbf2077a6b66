//! What the reload and discovery tests share: HTTP calls made with the real curl (the way an
//! operator or `systemctl reload` would), a `/metrics` sample read, a status stream, and the
//! targets a coordinator holds.

use std::process::Command;

use crate::Process;
use crate::alert_world::World;

/// `curl -X METHOD url` with an optional bearer token; returns the HTTP status and the body.
pub fn curl(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "-w", "\n%{http_code}", "-X", method]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = command.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A response read with its headers: status code, lower-cased header names and values, body.
pub struct Got {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Got {
    /// The value of header `name` (lower case), or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }
}

/// GET `url` with real curl, sending `headers` (`Name: value`), and read the response whole.
pub fn curl_get(url: &str, headers: &[&str]) -> Got {
    let mut command = Command::new("curl");
    command.args(["-s", "-i"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let code = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Got { code, headers, body: body.to_owned() }
}

/// One unlabelled sample of `/metrics` at `http` (`http://host:port`).
pub fn metric(http: &str, name: &str, token: Option<&str>) -> Option<f64> {
    let (status, text) = curl("GET", &format!("{http}/metrics"), token);
    assert_eq!(status, 200, "{text}");
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `status --watch --json` against a plaintext coordinator: one JSON line per status change.
pub fn watch(addr: &str) -> Process {
    Process::start("vantage-coordinator", &["status", "--watch", "--json", "--addr", &format!("http://{addr}")])
}

/// Waits on `watch` until the target `url` shows `verdict`; returns that status.
pub fn wait_for_verdict(watch: &Process, url: &str, verdict: &str) -> serde_json::Value {
    let line = watch.wait_for_line(|l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|s| s["url"] == url && s["verdict"] == verdict)
    });
    serde_json::from_str(&line).expect("JSON")
}

/// The `[Service] ExecReload=` command of the coordinator's systemd unit, run as systemd would
/// for the process `pid` (`$MAINPID`).
pub fn systemctl_reload(pid: u32) {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/systemd/vantage-coordinator.service"))
            .expect("the unit");
    let command = unit.lines().find_map(|l| l.strip_prefix("ExecReload=")).expect("the unit has ExecReload=");
    let command = command.replace("$MAINPID", &pid.to_string());
    let mut words = command.split_whitespace();
    let status = Command::new(words.next().expect("a program")).args(words).status().expect("ExecReload runs");
    assert!(status.success(), "{command}");
}

/// The targets the coordinator holds: (url, source), sorted.
pub fn targets(w: &World) -> Vec<(String, String)> {
    let list = w.call("ListTargets", "{}");
    let mut all: Vec<(String, String)> = list["targets"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| {
                    (t["url"].as_str().unwrap_or_default().into(), t["source"].as_str().unwrap_or_default().into())
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all
}
