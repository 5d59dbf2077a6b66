//! A coordinator pair with real processes: two coordinators with the same config, certificate
//! and CA (each its own data), three agents in three regions (network namespaces), each
//! connected to both, and the real Alertmanager in front of the people it would page. One
//! coordinator is SIGKILLed: the other keeps judging and alerting; a target that goes down
//! meanwhile pages once; the killed one comes back on its data, catches up from the agents'
//! outboxes (its history of the outage holds what it missed), judges the outage as its twin did
//! and raises it under the same dedup key, and Alertmanager still pages once.
//!
//! Targets take all three regions as their quorum: the returning coordinator can then judge the
//! outage only once every agent's backlog has reached it (each resends oldest first), so it dates
//! the outage from the same results as its twin. With a smaller quorum, agents coming back in
//! another order can make it judge from the others first and key the outage differently (the
//! limit the README's "Coordinator pairs" states); Alertmanager's labels page once either way.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use vantage_e2e::Process;
use vantage_e2e::cluster::Cluster;
use vantage_e2e::receiver::{Received, Receiver};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// Alertmanager's `group_interval`: after a group's first notification, it notifies again (for
/// a change in the group) at most this often.
const GROUP_INTERVAL: Duration = Duration::from_secs(1);

/// Starts Alertmanager on loopback (plain HTTP, clustering off), grouping by alert name and
/// target and notifying `webhook` at once, resolves too; repeats only after an hour.
fn alertmanager(dir: &Path, webhook: &str) -> (Process, u16) {
    let config = format!(
        "route:\n  receiver: people\n  group_by: [alertname, target]\n  group_wait: 1s\n  group_interval: {}s\n  \
         repeat_interval: 1h\nreceivers:\n  - name: people\n    webhook_configs:\n      - url: {webhook}\n        \
         send_resolved: true\n",
        GROUP_INTERVAL.as_secs()
    );
    vantage_e2e::alertmanager::start(dir, &config, None)
}

/// An Alertmanager notification to the people (`/people`) about `url`'s `down`, `status`
/// `firing` or `resolved`.
fn pages(r: &Received, url: &str, status: &str) -> bool {
    let n = r.json();
    r.path == "/people"
        && n["status"] == status
        && n["groupLabels"]["alertname"] == "down"
        && n["groupLabels"]["target"] == url
}

/// A webhook alert (`/hook`, from either coordinator) of `kind` about `url`.
fn hooked(r: &Received, kind: &str, url: &str) -> bool {
    let a = r.json();
    r.path == "/hook" && a["kind"] == kind && a["subject"] == url
}

/// `url`'s status on the coordinator at `addr`.
fn status(c: &Cluster, addr: SocketAddr, url: &str) -> Value {
    let all = c.call_at(addr, "ListStatus", &format!("{{\"urls\": [\"{url}\"]}}"));
    all["targets"].as_array().and_then(|t| t.first().cloned()).unwrap_or_default()
}

/// Polls (every 200 ms, up to a minute) until `url`'s status on `addr` satisfies `pred`: a state
/// only a query shows.
fn wait_status(c: &Cluster, addr: SocketAddr, url: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(c, addr, url);
        if pred(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "{what} within a minute: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn millis(rfc3339: &Value) -> i64 {
    // grpcurl prints protobuf timestamps as RFC 3339 with fractional seconds.
    let s = rfc3339.as_str().unwrap_or_default();
    let (secs, frac) = s.trim_end_matches('Z').split_once('.').unwrap_or((s.trim_end_matches('Z'), "0"));
    let t = vantage_shared::report::parse_rfc3339(&format!("{secs}Z")).unwrap_or(0);
    let ms: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().unwrap_or(0);
    t * 1000 + ms
}

/// (region, probe time in ms) of every result of `url` the coordinator at `addr` stored,
/// probed between `from` and `to`.
fn history(c: &Cluster, addr: SocketAddr, url: &str, from: i64, to: i64) -> BTreeSet<(String, i64)> {
    let all = c.call_at(addr, "GetHistory", &format!("{{\"url\": \"{url}\", \"limit\": 1000}}"));
    all["results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| (r["region"].as_str().unwrap_or_default().to_owned(), millis(&r["result"]["checkedAt"])))
                .filter(|(_, at)| (from..to).contains(at))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_pair_keeps_judging_when_one_dies_pages_once_and_the_dead_one_catches_up() {
    let receiver = Receiver::start();
    let mut c = Cluster::new(&REGIONS);
    let shop = c.add_target("shop", false);
    let blog = c.add_target("blog", false);
    let (shop_url, blog_url) = (c.targets[shop].url.clone(), c.targets[blog].url.clone());
    let am_dir = c.data_dir().with_file_name("am");
    std::fs::create_dir_all(&am_dir).unwrap();
    let (_am, am_port) = alertmanager(&am_dir, &receiver.url("/people"));
    // The same config for both: Alertmanager, and a webhook standing in for PagerDuty (a
    // receiver that deduplicates by `dedup_key`).
    c.config_extra = format!(
        "[[channel]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:{am_port}/\"\nresend_delay = \"2s\"\n\n\
         [[channel]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n\n[[route]]\nchannels = [\"am\", \"hook\"]\n",
        receiver.url("/hook")
    );
    c.target_extra = "quorum = 3\n".into();
    c.start_coordinator("1s", "500ms");
    c.start_twin();
    let (first, twin) = (c.coordinator_addr, c.twin_addr);

    // Each agent serves both: one session (and outbox) per coordinator, each assigned the targets.
    let mut agents = Vec::new();
    for i in 0..REGIONS.len() {
        let (cert, key) = c.agent_cert(i);
        let agent = c.spawn_agent(i, &cert, &key, &["--coordinator", &c.twin_url()]);
        let mut assigned = BTreeSet::new();
        while assigned.len() < 2 {
            let line = agent.wait_for_line(|l| l.contains("assignment received"));
            println!("{line}");
            assigned.insert(if line.contains(&twin.to_string()) { "twin" } else { "first" });
        }
        agents.push(agent);
    }
    for addr in [first, twin] {
        for url in [&shop_url, &blog_url] {
            wait_status(&c, addr, url, "UP in every region on both", |s| {
                s["verdict"] == "VERDICT_UP" && s["regions"].as_array().is_some_and(|r| r.len() == 3)
            });
        }
    }

    // The twin dies. The agents keep its results in its outboxes.
    c.kill_twin();
    let killed_at = vantage_e2e::now_ms();
    // The shop's trouble starts in one region (DEGRADED), then everywhere (DOWN).
    c.cut_off(0, shop);
    wait_status(&c, first, &shop_url, "eu-west failing on the survivor", |s| {
        s["failingRegions"].as_array().is_some_and(|r| r.iter().any(|r| r == "eu-west"))
    });
    c.stop_target(shop);

    // The survivor judges alone, its alerts go out: Alertmanager pages the people once.
    let down = wait_status(&c, first, &shop_url, "DOWN on the survivor", |s| s["verdict"] == "VERDICT_DOWN");
    assert!(down["failingRegions"].as_array().unwrap().len() >= 2, "{down}");
    let paged = receiver.wait_for("the page for the shop's DOWN", |r| pages(r, &shop_url, "firing"));
    let first_down = receiver.wait_for("the survivor's DOWN by webhook", |r| hooked(r, "down", &shop_url));
    let key = first_down.json()["dedup_key"].as_str().unwrap().to_owned();
    // Its verdicts stay fresh: the blog's newest result in every region is newer than the kill.
    let blog_status = wait_status(&c, first, &blog_url, "the blog judged on fresh results", |s| {
        s["verdict"] == "VERDICT_UP"
            && s["regions"]
                .as_array()
                .is_some_and(|rs| rs.len() == 3 && rs.iter().all(|r| millis(&r["lastResultTime"]) > killed_at + 2_000))
    });
    println!("the survivor, with its twin dead: {blog_status}");
    let lost = agents[1].wait_for_line(|l| l.contains("session to the coordinator failed"));
    println!("{lost}");

    // The twin comes back on its data and address.
    let restarted_at = vantage_e2e::now_ms();
    c.start_twin();
    // It catches up from the outboxes: every result probed while it was dead, as its twin has
    // them.
    let missed = history(&c, first, &shop_url, killed_at, restarted_at);
    for region in REGIONS {
        assert!(missed.iter().any(|(r, _)| r == region), "{region} probed the shop while the twin was dead");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let caught = history(&c, twin, &shop_url, killed_at, restarted_at);
        if missed.is_subset(&caught) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the twin never caught up: {missed:?} vs {caught:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // It judges the outage as its twin did, and raises it under the same dedup key.
    wait_status(&c, twin, &shop_url, "DOWN on the twin", |s| s["verdict"] == "VERDICT_DOWN");
    let twin_down = receiver.wait_for("the twin's DOWN by webhook", |r| {
        hooked(r, "down", &shop_url) && r.at > first_down.at && r.json()["id"] != first_down.json()["id"]
    });
    assert_eq!(twin_down.json()["dedup_key"], key.as_str(), "one outage, one key on both coordinators");
    c.twin.as_ref().unwrap().wait_for_line(|l| {
        l.contains("alert delivered")
            && l.contains(&shop_url)
            && (l.contains("channel=am") || l.contains("channel=\"am\""))
    });
    // Alertmanager took the twin's DOWN as the same alert: no second page (a bounded wait of
    // three group intervals for something that must not happen).
    std::thread::sleep(GROUP_INTERVAL * 3 + Duration::from_secs(1));
    let firing = receiver.matching(|r| pages(r, &shop_url, "firing"));
    assert_eq!(firing.len(), 1, "paged once: {:?}", firing.iter().map(Received::json).collect::<Vec<_>>());
    assert_eq!(firing[0].json()["alerts"].as_array().map(Vec::len), Some(1), "{}", paged.json());

    // Recovery: both resolve under the same key, and the people hear it once.
    c.restore(0);
    c.start_target(shop);
    for addr in [first, twin] {
        wait_status(&c, addr, &shop_url, "UP again on both", |s| s["verdict"] == "VERDICT_UP");
    }
    receiver.wait_for("the resolved page", |r| pages(r, &shop_url, "resolved"));
    let recovered = |from: &Received| {
        receiver.wait_for("a RECOVERED by webhook", |r| hooked(r, "recovered", &shop_url) && r.at > from.at)
    };
    let resolves: BTreeSet<String> = [recovered(&first_down), recovered(&twin_down)]
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap_or_default().to_owned())
        .collect();
    let all_resolves: BTreeSet<String> = receiver
        .matching(|r| hooked(r, "recovered", &shop_url))
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(resolves, BTreeSet::from([key.clone()]), "the resolve names the same outage");
    assert_eq!(all_resolves, BTreeSet::from([key]), "every resolve, from either coordinator");
    let downs = receiver.matching(|r| hooked(r, "down", &shop_url));
    assert_eq!(
        downs.len(),
        2,
        "one DOWN from each coordinator, one key: {:?}",
        downs.iter().map(Received::json).collect::<Vec<_>>()
    );
}
