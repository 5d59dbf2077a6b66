//! Impaired regions (README: "Impaired regions"), with real processes: three regions as network
//! namespaces, each with its agent, six TLS targets on the bridge, the real coordinator with a
//! webhook channel that hears every event (`degraded` included), and nftables in one region's
//! namespace dropping every target's traffic (not the coordinator's). The region is impaired
//! once, its targets stay UP, nobody is paged per target; and a site down everywhere is still
//! DOWN and pages meanwhile.

use std::time::{Duration, Instant};

use vantage_e2e::cluster::Cluster;
use vantage_e2e::receiver::{Received, Receiver};
use vantage_e2e::watch::Watch;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// The region whose network breaks.
const BROKEN: usize = 2;
const TARGETS: usize = 6;
/// Every target's interval and timeout: a failing run (1 s, the 1 s pause, 1 s) outlasts the
/// interval, so one region's results for a failing target come 4 s apart (the run period).
const INTERVAL: &str = "2s";
const TIMEOUT: &str = "1s";
const RUN_PERIOD: Duration = Duration::from_secs(4);
/// A `degraded` alert waits one run period and 3 s for the region to be found impaired.
const DEGRADED_WAIT: Duration = Duration::from_secs(7);

fn opinion_of(status: &serde_json::Value, region: &str) -> String {
    status["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["region"] == region))
        .and_then(|r| r["opinion"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn all_up(status: &serde_json::Value) -> bool {
    status["verdict"] == "UP" && REGIONS.iter().all(|r| opinion_of(status, r) == "up")
}

/// UP, with the broken region shown down but not counted.
fn up_without_the_broken_region(status: &serde_json::Value) -> bool {
    status["verdict"] == "UP"
        && status["discounted_regions"] == serde_json::json!([REGIONS[BROKEN]])
        && opinion_of(status, REGIONS[BROKEN]) == "down"
}

fn kind(r: &Received) -> String {
    r.json()["kind"].as_str().unwrap_or_default().to_owned()
}

/// `vantage-coordinator ARGS… <admin credentials>`, which must succeed; its stdout.
fn cli(c: &Cluster, args: &[&str]) -> String {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(c.cli_credentials());
    let out = vantage_e2e::run("vantage-coordinator", &all.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn region_info(c: &Cluster, region: &str) -> serde_json::Value {
    let regions = c.call("ListRegions", "{}");
    regions["regions"].as_array().and_then(|rs| rs.iter().find(|r| r["region"] == region).cloned()).unwrap_or_default()
}

fn metrics(c: &Cluster) -> String {
    let url = format!("http://{}/metrics", c.http_addr.expect("the coordinator's HTTP port"));
    let out = std::process::Command::new("curl").args(["-sS", "--max-time", "10", &url]).output().expect("curl runs");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three regions, six targets, every target UP in every region; a webhook that hears every
/// event, `degraded` included (routes leave it out unless they list it).
fn healthy_cluster(receiver: &Receiver) -> (Cluster, Watch) {
    let mut c = Cluster::new(&REGIONS);
    for i in 0..TARGETS {
        c.add_target(&format!("site{i}"), false);
    }
    c.config_extra = format!(
        "[[channel]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n\n[[route]]\nchannels = [\"hook\"]\n\
         events = [\"down\", \"recovered\", \"degraded\", \"degraded_cleared\", \"region_impaired\", \
         \"region_recovered\", \"unknown\"]\n",
        receiver.url("/hook")
    );
    c.start_coordinator(INTERVAL, TIMEOUT);
    c.start_agents();
    let watch = Watch::new(&c);
    for t in &c.targets {
        watch.wait_for(&t.url, all_up);
    }
    (c, watch)
}

/// The broken region's namespace drops every packet to every target (the coordinator, on another
/// port of the same address, stays reachable: its agent keeps reporting).
fn break_region(c: &Cluster) {
    for t in 0..TARGETS {
        c.cut_off(BROKEN, t);
    }
}

#[test]
fn a_region_that_drops_every_targets_traffic_is_impaired_once_and_its_targets_stay_up() {
    let receiver = Receiver::start();
    let (c, watch) = healthy_cluster(&receiver);
    let broken = REGIONS[BROKEN];
    break_region(&c);
    let cut = Instant::now();

    let impaired = receiver.wait_for("region_impaired", |r| kind(r) == "region_impaired");
    println!("latency: cut off to region_impaired: {:.2}s", cut.elapsed().as_secs_f64());
    let alert = impaired.json();
    println!("region_impaired, as the webhook received it:\n{alert}");
    assert_eq!(alert["subject"], broken, "{alert}");
    assert_eq!(alert["cause"]["code"], "region_impaired", "{alert}");
    assert_eq!(alert["dedup_key"], format!("vantage/region/{broken}/impaired"), "{alert}");
    // Impaired as soon as five of six fail there alone (the sixth's result may come a moment later).
    let detail = alert["detail"].as_str().unwrap_or_default();
    assert!(["5 of 6 targets", "6 of 6 targets"].iter().any(|d| detail.starts_with(d)), "{alert}");

    // Every target is UP, the broken region's opinion shown (down) but not counted, and why.
    for t in &c.targets {
        let status = watch.wait_for(&t.url, up_without_the_broken_region);
        assert_eq!(status["failing_regions"], serde_json::json!([]), "{status}");
        assert_eq!(status["quorum"], 2, "the majority of the two regions that count: {status}");
        let why = status["discounted_reason"].as_str().unwrap_or_default();
        assert!(why.starts_with(&format!("{broken} is impaired")), "{status}");
    }
    println!("status --json, one target:\n{}", watch.wait_for(&c.targets[0].url, up_without_the_broken_region));
    let info = region_info(&c, broken);
    println!("ListRegions, the impaired region:\n{info:#}");
    assert_eq!(info["impaired"], true, "{info}");
    assert_eq!((info["targetsJudged"].as_u64(), info["targetsFailingAlone"].as_u64()), (Some(6), Some(6)), "{info}");
    assert!(info["impairedSince"].is_string(), "{info}");
    let listed = cli(&c, &["regions", "ls"]);
    println!("$ vantage-coordinator regions ls\n{listed}");
    let row = listed.lines().find(|l| l.starts_with(broken)).unwrap_or_default();
    assert!(row.contains("IMPAIRED since") && row.contains("fails 6 of its 6 targets alone, not counted"), "{listed}");
    let status = cli(&c, &["status"]);
    println!("$ vantage-coordinator status\n{status}");
    assert_eq!(status.matches(&format!("UP        0/3 ({broken} impaired)")).count(), TARGETS, "{status}");
    let exported = metrics(&c);
    for line in exported.lines().filter(|l| l.starts_with("vantage_region_")) {
        println!("metrics: {line}");
    }
    assert!(exported.contains(&format!("vantage_region_impaired{{region=\"{broken}\"}} 1")), "{exported}");
    assert!(exported.contains("vantage_region_impaired{region=\"eu-west\"} 0"), "{exported}");

    // Never a page per target: over the whole spell and two of the region's failing runs more
    // (each target's degraded alert would have come within DEGRADED_WAIT of its DEGRADED).
    let shown = watch.all_during(2 * RUN_PERIOD + DEGRADED_WAIT);
    assert!(shown.iter().all(|s| s["verdict"] != "DOWN"), "one region's network makes nothing DOWN: {shown:?}");
    let pages: Vec<String> = receiver.all(|_| true).iter().map(kind).collect();
    assert_eq!(pages, ["region_impaired"], "one page for the region, none per target");

    // The network is back: region_recovered under the same key, and the region counts again.
    c.restore(BROKEN);
    let recovered = receiver.wait_for("region_recovered", |r| kind(r) == "region_recovered");
    let alert = recovered.json();
    assert_eq!(alert["subject"], broken, "{alert}");
    assert_eq!(alert["dedup_key"], format!("vantage/region/{broken}/impaired"), "the same problem's resolve");
    assert_eq!(alert["cause"]["code"], "region_impaired_ended", "{alert}");
    for t in &c.targets {
        let status = watch.wait_for(&t.url, |s| all_up(s) && s["discounted_regions"] == serde_json::json!([]));
        assert!(status.get("discounted_reason").is_none_or(|r| r.is_null()), "{status}");
    }
    assert_eq!(region_info(&c, broken).get("impaired"), None, "proto3 JSON omits false");
    let pages: Vec<String> = receiver.all(|_| true).iter().map(kind).collect();
    assert_eq!(pages, ["region_impaired", "region_recovered"]);
    println!("region_recovered:\n{alert}");
    let log = c.coordinator.as_ref().expect("the coordinator").printed();
    for line in log.iter().filter(|l| l.contains("impaired")) {
        println!("coordinator log: {line}");
    }
}

#[test]
fn a_target_down_everywhere_is_still_down_and_pages_while_a_region_is_impaired() {
    let receiver = Receiver::start();
    let (mut c, watch) = healthy_cluster(&receiver);
    let broken = REGIONS[BROKEN];
    break_region(&c);
    receiver.wait_for("region_impaired", |r| kind(r) == "region_impaired" && r.json()["subject"] == broken);
    let url = c.targets[0].url.clone();
    watch.wait_for(&url, up_without_the_broken_region);

    // The site itself stops: refused in the two regions that count, a timeout in the broken one.
    c.stop_target(0);
    let down = watch.wait_for(&url, |s| s["verdict"] == "DOWN");
    assert_eq!(down["failing_regions"], serde_json::json!(["eu-west", "us-east"]), "{down}");
    assert_eq!(down["discounted_regions"], serde_json::json!([broken]), "{down}");
    assert_eq!(down["quorum"], 2, "{down}");
    assert_eq!(down["cause"]["code"], "tcp_refused", "the cause of the regions that count: {down}");
    let page = receiver.wait_for("down", |r| kind(r) == "down");
    let alert = page.json();
    assert_eq!(alert["subject"], url.as_str(), "{alert}");
    assert_eq!(alert["cause"]["code"], "tcp_refused", "{alert}");
    assert_eq!(alert["regions"], serde_json::json!(["eu-west", "us-east"]), "{alert}");
    // Five of six targets still fail there alone: the region stays impaired.
    let info = region_info(&c, broken);
    assert_eq!(info["impaired"], true, "{info}");
    assert_eq!(info["targetsFailingAlone"], 5, "{info}");
    println!("$ vantage-coordinator status\n{}", cli(&c, &["status"]));
    let incidents = c.call("ListIncidents", &format!("{{\"url\": \"{url}\", \"open_only\": true}}"));
    assert_eq!(incidents["incidents"].as_array().map(Vec::len), Some(1), "{incidents}");

    c.start_target(0);
    receiver.wait_for("recovered", |r| kind(r) == "recovered" && r.json()["subject"] == url.as_str());
    watch.wait_for(&url, up_without_the_broken_region);
    let pages: Vec<String> = receiver.all(|_| true).iter().map(kind).collect();
    assert_eq!(pages, ["region_impaired", "down", "recovered"], "no degraded page, no second region page");
}
