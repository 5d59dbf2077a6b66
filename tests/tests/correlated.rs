//! Correlated incidents with real processes: ten targets (ten host names) served by one TLS server
//! on one address, a coordinator and three agents (one per region), a webhook receiver. The
//! server stops: exactly one grouped `down` naming all ten reaches the webhook, and no `down` of
//! any one of them; the server comes back: exactly one grouped `recovered`. The real Alertmanager,
//! a second channel, holds one alert for the group (its `group` label, the ten members annotated)
//! and resolves it. `ListIncidents` and `vantage-coordinator incidents` show every member's
//! incident in the group.

use std::collections::HashSet;
use std::time::Duration;

use vantage_e2e::alert_world::{Site, World, kind};
use vantage_e2e::receiver::{Received, Receiver};
use vantage_shared::lab::pki::LeafSpec;
use vantage_shared::lab::server;

const MEMBERS: usize = 10;

/// How long a "never" is watched for: several intervals (1 s) and retries.
const QUIET: Duration = Duration::from_secs(5);

/// The alerts Alertmanager holds as active, as an operator would list them with curl.
fn active(port: u16) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", &format!("http://127.0.0.1:{port}/api/v2/alerts?active=true")])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().cloned().unwrap_or_default()
}

/// Polls Alertmanager (every 200 ms, up to a minute) until `done` holds of its active alerts: a
/// state only its API shows.
fn alertmanager_holds(port: u16, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = active(port);
        if done(&alerts) {
            return alerts;
        }
        assert!(std::time::Instant::now() < deadline, "Alertmanager: {what} not within a minute: {alerts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn on_hook(r: &Received) -> bool {
    r.path == "/hook" && r.accepted()
}

/// Ten sites `site0.shop.test` … `site9.shop.test` on one TLS server (one certificate naming them
/// all): stopping site 0 stops them all.
fn shared_server(w: &mut World) {
    let hosts: Vec<String> = (0..MEMBERS).map(|i| format!("site{i}.shop.test")).collect();
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let listener = w.runtime.block_on(server::bind("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    for host in &hosts {
        let identity = w.ca.identity(&LeafSpec::new(&names).valid(-10, 90), &[]).unwrap();
        w.sites.push(Site { url: format!("https://{host}:{port}/"), host: host.clone(), port, identity, task: None });
    }
    w.serve(0, listener);
}

#[test]
fn ten_targets_behind_one_address_page_once_as_a_group_and_resolve_once() {
    let receiver = Receiver::start();
    let mut w = World::new("correlated");
    shared_server(&mut w);
    let urls: Vec<String> = w.sites.iter().map(|s| s.url.clone()).collect();
    let address = format!("127.0.0.1:{}", w.sites[0].port);
    let (_alertmanager, am_port) =
        vantage_e2e::alertmanager::start(&w.dir, "route:\n  receiver: none\nreceivers:\n  - name: none\n", None);
    // The hold ends as soon as all ten are DOWN; the window only bounds it for a busy machine.
    let config = format!(
        "[alerts]\ncorrelation_window = \"20s\"\n\n[[channel]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n\n\
         [[channel]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:{am_port}/\"\n\n\
         [[route]]\nchannels = [\"hook\", \"am\"]\n\n{}",
        receiver.url("/hook"),
        w.targets_toml(&[]),
    );
    let config = w.write("vantage.toml", &config);
    w.start_coordinator(&config);
    for i in 0..3 {
        w.start_agent(i);
    }
    let mut up = HashSet::new();
    w.coordinator().wait_for_line(|l| {
        if l.contains("verdict changed") && l.contains("\"UP\"") {
            up.extend(urls.iter().filter(|u| l.contains(&format!("target={u} "))).cloned());
        }
        up.len() == MEMBERS
    });

    w.stop_site(0);
    let down = receiver.wait_for("the grouped DOWN", |r| on_hook(r) && kind(r) == "down");
    let body = down.json();
    println!("the grouped DOWN:\n{}", serde_json::to_string_pretty(&body).unwrap());
    let group = &body["group"];
    let members: Vec<&str> = group["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let mut expected: Vec<&str> = urls.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(members, expected, "the first DOWN names all ten");
    assert_eq!(group["shared_cause"], format!("behind {address}"));
    assert_eq!(body["subject"], format!("backend:{address}:tcp_refused"));
    let dedup = body["dedup_key"].as_str().unwrap().to_owned();
    assert!(dedup.starts_with(&format!("vantage/group/backend:{address}:tcp_refused#")), "{dedup}");
    assert!(
        body["summary"].as_str().unwrap().starts_with(&format!("DOWN 10 targets behind {address}: tcp_refused in ")),
        "{body}"
    );
    // Nothing else: no DOWN of any one member, no second page.
    std::thread::sleep(QUIET);
    let downs: Vec<Received> = receiver.all(|r| on_hook(r) && kind(r) == "down");
    assert_eq!(downs.len(), 1, "exactly one DOWN: {:?}", downs.iter().map(Received::json).collect::<Vec<_>>());

    // Alertmanager holds one alert for the group, whatever it held before (nothing was down).
    let key = format!("backend:{address}:tcp_refused");
    let held =
        alertmanager_holds(am_port, "the group's alert", |a| a.iter().any(|a| a["labels"]["group"] == key.as_str()));
    println!("Alertmanager holds:\n{}", serde_json::to_string_pretty(&held).unwrap());
    assert_eq!(held.len(), 1, "one alert, not one per target: {held:?}");
    assert_eq!(held[0]["labels"]["alertname"], "down");
    assert!(held[0]["labels"].get("target").is_none(), "{held:?}");
    let annotated: Vec<&str> = held[0]["annotations"]["members"].as_str().unwrap().lines().collect();
    assert_eq!(annotated, expected, "the members, annotated");
    assert_eq!(held[0]["annotations"]["shared_cause"], format!("behind {address}"));

    // Every member's incident is in the group.
    let incidents = w.call("ListIncidents", "{\"openOnly\": true}");
    let open = incidents["incidents"].as_array().unwrap();
    assert_eq!(open.len(), MEMBERS, "{incidents}");
    for incident in open {
        assert_eq!(incident["group"], dedup.as_str(), "{incident}");
        assert_eq!(incident["members"].as_array().unwrap().len(), MEMBERS, "{incident}");
        assert_eq!(incident["sharedCause"], format!("behind {address}"), "{incident}");
    }
    let listing = vantage_e2e::run(
        "vantage-coordinator",
        &["incidents", "--open", "--coordinator", &format!("http://{}", w.addr.unwrap())],
    );
    let printed = String::from_utf8_lossy(&listing.stdout).into_owned();
    println!("$ vantage-coordinator incidents --open\n{printed}");
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
    assert!(printed.contains(&format!("GROUP {dedup}: 10 targets behind {address}")), "{printed}");
    assert!(urls.iter().all(|u| printed.contains(u.as_str())), "{printed}");

    w.start_site(0);
    let resolve = receiver.wait_for("the grouped RECOVERED", |r| on_hook(r) && kind(r) == "recovered");
    let body = resolve.json();
    println!("the grouped RECOVERED:\n{}", serde_json::to_string_pretty(&body).unwrap());
    assert_eq!(body["dedup_key"], dedup.as_str(), "the group's one resolve, under its key");
    assert_eq!(body["group"]["members"].as_array().unwrap().len(), MEMBERS);
    std::thread::sleep(QUIET);
    let hook: Vec<String> = receiver.all(on_hook).iter().map(kind).collect();
    assert_eq!(hook, ["down", "recovered"], "one page and one resolve in all");
    alertmanager_holds(am_port, "the group's alert resolved", |a| a.is_empty());
    let closed = w.call("ListIncidents", "{}");
    let closed = closed["incidents"].as_array().unwrap();
    assert_eq!(closed.len(), MEMBERS);
    assert!(closed.iter().all(|i| i["closedReason"] == "recovered" && i["group"] == dedup.as_str()));
}
