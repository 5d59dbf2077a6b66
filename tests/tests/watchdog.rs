//! The dead man's switch with real processes: a coordinator with `[watchdog]` (period 1s) pings a
//! real HTTP receiver every period while it is healthy, sends its `fail_url` instead while no
//! agent is connected, stops when its store fails (a full disk: the coordinator then stops, by
//! design) and resumes once it is restarted with space; and in the real Alertmanager its
//! always-firing `Watchdog` alert is active while the coordinator is healthy and expires once
//! the posts stop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use vantage_e2e::Process;
use vantage_e2e::alert_world::World;
use vantage_e2e::receiver::{Received, Receiver};

/// The watchdog's period in these tests.
const PERIOD: Duration = Duration::from_secs(1);

/// `/metrics` of the coordinator, as Prometheus scrapes it.
fn metrics(w: &World) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", &format!("{}/metrics", w.http.as_ref().unwrap())])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A metric's value (the first line of it).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok())
}

fn ping(r: &Received) -> bool {
    r.path == "/ping"
}

fn fail(r: &Received) -> bool {
    r.path == "/ping/fail"
}

fn body(r: &Received) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A config with one site and an http watchdog to `receiver`.
fn http_config(w: &World, receiver: &Receiver, method: &str) -> PathBuf {
    let config = format!(
        "[watchdog]\ntype = \"http\"\nurl = \"{}\"\nfail_url = \"{}\"\nmethod = \"{method}\"\nperiod = \"{}s\"\n\n{}",
        receiver.url("/ping"),
        receiver.url("/ping/fail"),
        PERIOD.as_secs(),
        w.targets_toml(&[]),
    );
    w.write("vantage.toml", &config)
}

#[test]
fn pings_arrive_every_period_while_healthy_and_stop_while_no_agent_is_connected() {
    let receiver = Receiver::start();
    let mut w = World::new("watchdog-agents");
    w.add_site("shop", 90);
    let config = http_config(&w, &receiver, "POST");
    w.start_coordinator(&config);

    // No agent yet: unhealthy, so the fail URL is pinged and the ping URL is not.
    let failed = receiver.wait_for("a fail ping before any agent connects", fail);
    assert_eq!(body(&failed), "vantage-coordinator unhealthy: no agent is connected");
    assert!(receiver.matching(ping).is_empty(), "no heartbeat without an agent");
    w.coordinator().wait_for_line(|l| l.contains("watchdog: unhealthy") && l.contains("no agent is connected"));

    // An agent connects: heartbeats every period, each POST carrying the health summary.
    w.start_agent(0);
    let first = receiver.wait_for("a heartbeat once an agent is connected", ping);
    assert_eq!(first.method, "POST");
    assert_eq!(first.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(body(&first), "vantage-coordinator healthy: store writable, ticking, 1 agent connected");
    let mut last_at = first.at;
    for _ in 0..3 {
        last_at = receiver.wait_for("the next heartbeat", |r| ping(r) && r.at > last_at).at;
    }
    let pings: Vec<SystemTime> = receiver.matching(ping).iter().map(|r| r.at).collect();
    for pair in pings.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
        assert!(gap >= PERIOD / 2, "one heartbeat a period, not a burst: {gap:?} between two");
    }
    let text = metrics(&w);
    assert_eq!(metric(&text, "vantage_watchdog_healthy"), Some(1.0), "{text}");
    let last = metric(&text, "vantage_watchdog_last_ping_success_timestamp_seconds").unwrap_or_default();
    let first_at = first.at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(last >= first_at - 1.0, "the last accepted ping is on /metrics: {last} vs {first_at}");

    // The only agent is killed: the heartbeats stop, the fail URL says why.
    w.agents[0] = None;
    let killed = SystemTime::now();
    let failed = receiver.wait_for("a fail ping once the agent is gone", |r| fail(r) && r.at > killed);
    assert_eq!(body(&failed), "vantage-coordinator unhealthy: no agent is connected");
    let quiet_from = failed.at;
    std::thread::sleep(PERIOD * 3);
    let late: Vec<Received> = receiver.matching(|r| ping(r) && r.at > quiet_from);
    assert!(late.is_empty(), "no heartbeat for three periods without an agent: {late:?}");
    assert_eq!(metric(&metrics(&w), "vantage_watchdog_healthy"), Some(0.0));

    // It comes back: so do the heartbeats.
    let back = SystemTime::now();
    w.start_agent(1);
    receiver.wait_for("a heartbeat once an agent reconnects", |r| ping(r) && r.at > back);
    w.coordinator().wait_for_line(|l| l.contains("watchdog: healthy, sending heartbeats"));
    let text = metrics(&w);
    // For the README: what the coordinator said, and its series.
    for line in w.coordinator().printed().iter().filter(|l| l.contains("watchdog")) {
        println!("{line}");
    }
    for line in text.lines().filter(|l| l.starts_with("vantage_watchdog")) {
        println!("{line}");
    }

    // A reload moves the heartbeats to another URL, as GETs; one without [watchdog] stops them.
    let moved_config = format!(
        "[watchdog]\ntype = \"http\"\nurl = \"{}\"\nperiod = \"1s\"\n\n{}",
        receiver.url("/moved"),
        w.targets_toml(&[])
    );
    w.write("vantage.toml", &moved_config);
    let answer = reload(&w);
    assert!(answer.ends_with(", watchdog http every 1s"), "{answer}");
    let moved = receiver.wait_for("a heartbeat to the reloaded URL", |r| r.path == "/moved");
    assert_eq!((moved.method.as_str(), moved.body.len()), ("GET", 0));
    w.write("vantage.toml", &w.targets_toml(&[]));
    reload(&w);
    let off = SystemTime::now();
    std::thread::sleep(PERIOD * 3);
    // A look already under way when the reload landed may still finish.
    let late = receiver.all(|r| r.path.starts_with("/moved") && r.at > off + PERIOD);
    assert!(late.is_empty(), "no heartbeat once [watchdog] is gone: {late:?}");
    let text = metrics(&w);
    assert!(!text.contains("vantage_watchdog"), "no watchdog series without [watchdog]: {text}");
}

/// `POST /-/reload`: its answer, which must be a success.
fn reload(w: &World) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "30", "-X", "POST"])
        .arg(format!("{}/-/reload", w.http.as_ref().unwrap()))
        .output()
        .expect("curl runs");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "reload: {answer} {}", String::from_utf8_lossy(&out.stderr));
    answer
}

/// Unmounts the small tmpfs under the data directory, even when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn the_heartbeats_stop_when_the_store_fails_and_resume_after_a_restart_with_space() {
    let receiver = Receiver::start();
    let mut w = World::new("watchdog-store");
    let shop = w.add_site("shop", 90);
    let data = w.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"]).arg(&data).status().unwrap();
    assert!(status.success(), "mount a small tmpfs (root is needed)");
    let _mounted = Mounted(data.clone());
    let config = http_config(&w, &receiver, "GET");
    w.start_coordinator(&config);
    w.start_agent(0);
    w.start_agent(1);
    let first = receiver.wait_for("a heartbeat while healthy", ping);
    assert_eq!((first.method.as_str(), first.body.len()), ("GET", 0), "a bare GET");

    // Fill the disk, then take the site down: the writes that follow fail.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", data.join("filler").display()))
        .output()
        .expect("dd runs");
    w.stop_site(shop);
    let coordinator = w.coordinator.as_mut().unwrap();
    coordinator.wait_for_line(|l| l.contains("the store failed"));
    let failed = SystemTime::now();
    let exit = coordinator.wait_exit();
    assert_eq!(exit.code(), Some(1), "the coordinator stops on a storage failure");
    // A look already past its probe write may still land; none after that.
    std::thread::sleep(PERIOD * 3);
    let late: Vec<Received> = receiver.all(|r| ping(r) && r.at > failed + PERIOD);
    assert!(late.is_empty(), "no heartbeat after the store failed: {late:?}");

    // Space again, a restart on the same data: the agents come back, so do the heartbeats.
    std::fs::remove_file(data.join("filler")).unwrap();
    let restarted = SystemTime::now();
    w.start_coordinator(&config);
    let again = receiver.wait_for("a heartbeat after the restart", |r| ping(r) && r.at > restarted);
    assert_eq!(again.method, "GET");
    assert_eq!(metric(&metrics(&w), "vantage_watchdog_healthy"), Some(1.0));
}

/// Starts the real Alertmanager on a free port (plain http, clustering off).
fn alertmanager(dir: &Path) -> (Process, u16) {
    vantage_e2e::alertmanager::start(dir, "route:\n  receiver: none\nreceivers:\n  - name: none\n", None)
}

/// The Watchdog alert Alertmanager holds as active, if any (as an operator sees it with curl).
fn watchdog_alert(port: u16) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", &format!("http://127.0.0.1:{port}/api/v2/alerts?active=true")])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alerts: Value = serde_json::from_slice(&out.stdout).unwrap();
    alerts
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == "Watchdog" && a["status"]["state"] == "active")
        .cloned()
}

/// Polls `f` (every 200 ms, up to a minute) until it holds: for a state only a query shows.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within a minute");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_watchdog_alert_is_active_in_alertmanager_while_healthy_and_expires_when_the_posts_stop() {
    let mut w = World::new("watchdog-alertmanager");
    let (_am, port) = alertmanager(&w.dir);
    w.add_site("shop", 90);
    let config = format!(
        "[alerts]\nstatus_url = \"http://vantage.watchdog.test/\"\n\n[watchdog]\ntype = \"alertmanager\"\n\
         url = \"http://127.0.0.1:{port}\"\nperiod = \"{}s\"\nlabels = {{ coordinator = \"vantage-1\" }}\n\n{}",
        PERIOD.as_secs(),
        w.targets_toml(&[]),
    );
    let config = w.write("vantage.toml", &config);
    w.start_coordinator(&config);
    w.start_agent(0);

    eventually("the Watchdog alert active in Alertmanager", || watchdog_alert(port).is_some());
    let alert = watchdog_alert(port).unwrap();
    assert_eq!(
        alert["labels"],
        serde_json::json!({ "alertname": "Watchdog", "severity": "none", "coordinator": "vantage-1" }),
        "{alert}"
    );
    assert_eq!(alert["generatorURL"], "http://vantage.watchdog.test/", "{alert}");
    assert!(alert["annotations"]["description"].as_str().unwrap().contains("dead man's switch"), "{alert}");
    println!("GET /api/v2/alerts?active=true\n{}", serde_json::to_string_pretty(&alert).unwrap());

    // Without an agent the coordinator stops posting, and Alertmanager lets the alert expire
    // (it was valid for four periods).
    w.agents[0] = None;
    eventually("the Watchdog alert expired", || watchdog_alert(port).is_none());

    // An agent again: the alert fires again.
    w.start_agent(2);
    eventually("the Watchdog alert active again", || watchdog_alert(port).is_some());
}
