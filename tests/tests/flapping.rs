//! Flap damping and hold-down with real processes: a coordinator and three agents (one per
//! region) on loopback, TLS sites made at test time, and an HTTP receiver standing in for a
//! webhook endpoint. A site answering 500 to 60 % of requests at random pages `flapping` once
//! instead of a `down`/`recovered` pair every few seconds, shows as flapping in every status, and
//! sends `flapping_cleared` once it is stable; `alert_after` swallows a short outage and
//! `recover_after` a short recovery.
//!
//! Time is scaled: targets are probed every second, so two minutes of a target probed every few
//! seconds are watched here as one minute, three flap windows of 20 intervals.

use std::process::Command;
use std::time::{Duration, Instant};

use vantage_e2e::alert_world::{World, kind};
use vantage_e2e::receiver::{Received, Receiver};
use vantage_shared::lab::server::{Dice, Reply};

/// How long the flapping target is watched for notifications.
const WATCH: Duration = Duration::from_secs(60);

fn about(r: &Received, url: &str) -> bool {
    r.path == "/hook" && r.json()["subject"] == url
}

fn of_kind(r: &Received, url: &str, k: &str) -> bool {
    about(r, url) && kind(r) == k
}

/// The kinds of notification `url` got so far, in order.
fn kinds(receiver: &Receiver, url: &str) -> Vec<String> {
    receiver.matching(|r| about(r, url)).iter().map(kind).collect()
}

fn curl(url: &str) -> String {
    let out = Command::new("curl").args(["-s", "--max-time", "10", url]).output().expect("curl runs");
    assert!(out.status.success(), "curl {url}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(w: &World, receiver: &Receiver, alerts: &str, targets: &[(usize, &str)]) -> String {
    let mut text = format!(
        "[alerts]\nstatus_url = \"http://vantage.alerts.test/\"\n{alerts}\n\n[[channel]]\nname = \"hook\"\n\
         type = \"webhook\"\nurl = \"{}\"\n\n[[route]]\nchannels = [\"hook\"]\n\n",
        receiver.url("/hook")
    );
    for (site, extra) in targets {
        text.push_str(&format!(
            "[[target]]\nurl = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n{extra}\n\n",
            w.sites[*site].url
        ));
    }
    text
}

fn start(w: &mut World, config: &str) {
    let path = w.write("vantage.toml", config);
    w.start_coordinator(&path);
    for i in 0..3 {
        w.start_agent(i);
    }
}

#[test]
fn a_target_failing_60_percent_of_requests_pages_flapping_once_and_clears_once_stable() {
    let receiver = Receiver::start();
    let mut w = World::new("flapping");
    // One with `recover_after` (the page stays open across the bounces before the flap threshold
    // is reached), one with every default.
    let held = w.add_site_answering("held", 90, Reply::Flaky(Dice::new(60, 7)));
    let plain = w.add_site_answering("plain", 90, Reply::Flaky(Dice::new(60, 11)));
    let text = config(&w, &receiver, "", &[(held, "recover_after = \"10s\""), (plain, "")]);
    start(&mut w, &text);
    let started = Instant::now();
    let (held_url, plain_url) = (w.sites[held].url.clone(), w.sites[plain].url.clone());

    let flapping = receiver.wait_for("flapping", |r| of_kind(r, &held_url, "flapping")).json();
    let f = &flapping;
    assert_eq!(f["cause"]["code"], "flapping", "{f}");
    let message = f["cause"]["message"].as_str().unwrap();
    assert!(message.contains("% of the last 20 probe intervals (flapping from 50%)"), "names the rate: {message}");
    assert!(message.contains("held back until fewer than 25%"), "{message}");
    assert!(f["detail"].as_str().unwrap().ends_with("causes seen: http_5xx"), "names the causes: {f}");
    assert!(f["summary"].as_str().unwrap().starts_with(&format!("FLAPPING {held_url}: flapping (changed in ")), "{f}");
    receiver.wait_for("flapping (defaults)", |r| of_kind(r, &plain_url, "flapping"));
    println!("flapping after {:.1}s: {}", started.elapsed().as_secs_f64(), f["summary"]);
    println!(
        "the webhook's body: {}",
        String::from_utf8_lossy(&receiver.matching(|r| of_kind(r, &held_url, "flapping"))[0].body)
    );

    // Every status says so: the API, the CLI, the JSON and the metrics.
    let listed = w.call("ListStatus", &format!("{{\"urls\": [\"{held_url}\"]}}"));
    let status = &listed["targets"][0];
    assert!(status["flapping"]["ratePercent"].as_u64().unwrap() >= 50, "{status}");
    assert_eq!(status["flapping"]["causes"], serde_json::json!(["http_5xx"]), "{status}");
    let addr = format!("http://{}", w.addr.unwrap());
    let cli = vantage_e2e::run("vantage-coordinator", &["status", "--addr", &addr]);
    let cli = String::from_utf8_lossy(&cli.stdout).into_owned();
    println!("$ vantage-coordinator status\n{cli}");
    assert!(cli.contains(&format!("flapping: {held_url} since ")), "{cli}");
    assert!(cli.contains("down/recovered notifications held back"), "{cli}");
    let http = w.http.clone().unwrap();
    let json: serde_json::Value = serde_json::from_str(&curl(&format!("{http}/v1/status"))).unwrap();
    let targets = json["targets"].as_array().expect("a list of targets");
    let held_json = targets.iter().find(|t| t["url"] == held_url.as_str()).unwrap();
    assert!(held_json["flapping"]["since"].is_string(), "{held_json}");
    let metrics = curl(&format!("{http}/metrics"));
    assert!(metrics.contains(&format!("vantage_target_flapping{{target=\"{held_url}\"}} 1")), "{metrics}");

    // Watched for the whole span: one `flapping`, and at most one `down` before it; no
    // `recovered` and no second `down`, however often the verdict changes.
    std::thread::sleep(WATCH.saturating_sub(started.elapsed()));
    let changes =
        w.coordinator().printed().iter().filter(|l| l.contains("verdict changed") && l.contains(&held_url)).count();
    let (held_kinds, plain_kinds) = (kinds(&receiver, &held_url), kinds(&receiver, &plain_url));
    println!(
        "in {}s: {changes} verdict changes of {held_url}; notifications {held_kinds:?}; defaults: {plain_kinds:?}",
        WATCH.as_secs()
    );
    assert!(changes >= 20, "the target did flap: {changes} verdict changes");
    assert!(held_kinds.len() <= 2, "{held_kinds:?}");
    assert_eq!(held_kinds.iter().filter(|k| *k == "flapping").count(), 1, "{held_kinds:?}");
    assert!(held_kinds.iter().all(|k| k == "flapping" || k == "down"), "{held_kinds:?}");
    // With every default, what came before the threshold (a brief outage looks like any other
    // then), and nothing but the one `flapping` after it.
    let first = plain_kinds.iter().position(|k| k == "flapping").unwrap();
    assert_eq!(first, plain_kinds.len() - 1, "nothing after `flapping`: {plain_kinds:?}");

    // Stable again: `flapping_cleared` with the verdict now, then each `down` page resolved.
    w.serve_reply(held, Reply::Page { status: 200, body: "ok" });
    w.serve_reply(plain, Reply::Page { status: 200, body: "ok" });
    let stable = Instant::now();
    for url in [&held_url, &plain_url] {
        let cleared = receiver.wait_for("flapping_cleared", |r| of_kind(r, url, "flapping_cleared")).json();
        assert_eq!(cleared["detail"], "now UP", "{cleared}");
        println!(
            "{:.1}s after the site was stable: {}",
            stable.elapsed().as_secs_f64(),
            cleared["text"].as_str().unwrap()
        );
        let trigger = receiver.matching(|r| of_kind(r, url, "flapping"))[0].json();
        assert_eq!(cleared["dedup_key"], trigger["dedup_key"], "it resolves the flapping alert: {cleared}");
        assert!(cleared["summary"].as_str().unwrap().starts_with("NO LONGER FLAPPING"), "{cleared}");
        if let Some(down) = receiver.matching(|r| of_kind(r, url, "down")).last() {
            let key = down.json()["dedup_key"].clone();
            let recovered =
                receiver.wait_for("recovered", |r| of_kind(r, url, "recovered") && r.json()["dedup_key"] == key);
            assert!(recovered.at >= receiver.matching(|r| of_kind(r, url, "flapping_cleared"))[0].at);
        }
    }
    println!("settled: {held_url}: {:?}; {plain_url}: {:?}", kinds(&receiver, &held_url), kinds(&receiver, &plain_url));
    let listed = w.call("ListStatus", &format!("{{\"urls\": [\"{held_url}\"]}}"));
    assert!(listed["targets"][0].get("flapping").is_none(), "{listed}");
}

#[test]
fn hold_down_swallows_a_short_outage_and_a_short_recovery_and_pages_a_long_outage_once() {
    let receiver = Receiver::start();
    let mut w = World::new("holddown");
    let shop = w.add_site("shop", 90);
    // Flap damping off: the outages below come close together, and this is about hold-down.
    let alerts = "alert_after = \"10s\"\nrecover_after = \"10s\"\nflap_window = 0";
    let text = config(&w, &receiver, alerts, &[(shop, "")]);
    start(&mut w, &text);
    let url = w.sites[shop].url.clone();
    let verdict = |v: &str| {
        let (url, v) = (url.clone(), format!("verdict=\"{v}\""));
        move |l: &str| l.contains("verdict changed") && l.contains(url.as_str()) && l.contains(&v)
    };

    // A DOWN shorter than alert_after: recorded (an incident), but nobody is paged.
    w.stop_site(shop);
    w.coordinator().wait_for_line(verdict("DOWN"));
    let down_at = Instant::now();
    w.start_site(shop);
    w.coordinator().wait_for_line(verdict("UP"));
    println!("a short outage: UP again {:.1}s after DOWN", down_at.elapsed().as_secs_f64());
    let incidents = w.call("ListIncidents", &format!("{{\"url\": \"{url}\"}}"));
    assert!(incidents["incidents"][0].get("closed").is_some(), "the incident is recorded at once: {incidents}");
    // Past the moment its `down` would have been due.
    std::thread::sleep(Duration::from_secs(12));
    assert!(kinds(&receiver, &url).is_empty(), "nothing sent: {:?}", kinds(&receiver, &url));

    // A longer one: one `down`, once the incident has lasted alert_after.
    w.stop_site(shop);
    let down = receiver.wait_for("down", |r| of_kind(r, &url, "down"));
    let d = down.json();
    let since =
        time::OffsetDateTime::parse(d["since"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap();
    let held_for = time::OffsetDateTime::from(down.at) - since;
    println!("down sent {held_for} after the incident began");
    assert!(held_for >= time::Duration::seconds(9), "held back for alert_after (10s, since rounded down): {held_for}");

    // A recovery shorter than recover_after: no `recovered`, the page stays open.
    w.start_site(shop);
    w.coordinator().wait_for_line(verdict("UP"));
    w.stop_site(shop);
    w.coordinator().wait_for_line(verdict("DOWN"));
    w.start_site(shop);
    w.coordinator().wait_for_line(verdict("UP"));
    let up_at = Instant::now();
    assert_eq!(kinds(&receiver, &url), ["down"], "no recovered for the short recovery, no second down");

    // Up for good: one `recovered` for the first `down`, recover_after later.
    let recovered = receiver.wait_for("recovered", |r| of_kind(r, &url, "recovered")).json();
    let waited = up_at.elapsed();
    println!("recovered {:.1}s after UP: {}", waited.as_secs_f64(), recovered["summary"]);
    assert!(waited >= Duration::from_secs(8), "held back for recover_after: {waited:?}");
    assert_eq!(recovered["dedup_key"], d["dedup_key"], "it resolves the one page: {recovered}");
    assert_eq!(kinds(&receiver, &url), ["down", "recovered"]);
    let incidents = w.call("ListIncidents", &format!("{{\"url\": \"{url}\"}}"));
    assert_eq!(incidents["incidents"].as_array().unwrap().len(), 3, "each incident recorded: {incidents}");
}
