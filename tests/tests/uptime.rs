//! Availability against a real coordinator (under `--http-auth`) and three agent processes in
//! network namespaces: a target whose server is stopped for a known span reports that span as
//! down time, one incident, and the availability it makes, the same through `GetUptime` (real
//! grpcurl), the `uptime` CLI (table and JSON), `/v1/status`, the status page and the CSV export;
//! the figures survive a SIGKILL of the coordinator and a retention prune that removes the raw
//! results, transitions and incidents they came from (README: "Availability").

use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_e2e::cluster::{Cluster, READ_TOKEN};
use vantage_e2e::query_encode;
use vantage_e2e::reload::{curl, wait_for_verdict};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// The target's interval; its timeout is 1 s.
const INTERVAL: Duration = Duration::from_secs(2);
/// The agent's pause before retrying a failed probe, and its longest wait before sending a batch
/// (README, "What the agent does"): a DOWN is judged at most an interval, a retry and a batch
/// after the server stops, an UP at most an interval and a batch after it is back.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
const BATCH_EVERY: Duration = Duration::from_secs(1);
/// How far the measured down time may be from the span the server was stopped: the detection
/// delays above (they shift both ends the same way, so at most one of them shows) and a busy
/// machine.
const TOLERANCE: f64 = (INTERVAL.as_secs() + RETRY_PAUSE.as_secs() + BATCH_EVERY.as_secs() + 1) as f64;
/// How long the server is up before and after its outage, and down.
const UP_SPAN: Duration = Duration::from_secs(45);
const DOWN_SPAN: Duration = Duration::from_secs(30);

fn get(c: &Cluster, path_and_query: &str) -> String {
    let url = format!("http://{}{path_and_query}", c.http_addr.expect("the HTTP port"));
    let (code, body) = curl("GET", &url, Some(READ_TOKEN));
    assert_eq!(code, 200, "GET {path_and_query}: {body}");
    body
}

/// `vantage-coordinator uptime ARGS…` with the admin certificate; its stdout.
fn cli(c: &Cluster, args: &[&str]) -> String {
    let mut all: Vec<String> = vec!["uptime".into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all.extend(c.cli_credentials());
    let out = vantage_e2e::run("vantage-coordinator", &all.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "uptime {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Seconds from a grpcurl (proto3 JSON: zero is left out) or our own JSON field.
fn seconds(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// What every view is checked against.
struct Truth {
    /// How long the server was stopped, as the test measured it.
    down: f64,
    /// The longest the target can have been judged by now (since the coordinator first started).
    judged_at_most: f64,
}

impl Truth {
    /// `down` and `judged` (seconds) and `percent` agree with the outage and each other.
    fn check(&self, view: &str, down: f64, judged: f64, percent: f64, incidents: u64) {
        assert!(
            (down - self.down).abs() <= TOLERANCE,
            "{view}: {down:.1}s down, the server was stopped {:.1}s",
            self.down
        );
        assert!(
            judged > self.judged_at_most - 30.0 && judged <= self.judged_at_most,
            "{view}: judged {judged:.1}s, at most {:.1}s can have been",
            self.judged_at_most
        );
        let expected = (judged - self.down) / judged * 100.0;
        assert!(
            (percent - expected).abs() <= TOLERANCE / judged * 100.0 + 0.01,
            "{view}: {percent:.3}%, the outage makes {expected:.3}%"
        );
        assert_eq!(incidents, 1, "{view}: one outage, one incident");
    }
}

#[test]
fn a_known_outage_shows_as_down_time_everywhere_and_survives_sigkill_and_retention() {
    let mut c = Cluster::new(&REGIONS);
    c.env.push(("VANTAGE_HTTP_AUTH".into(), "true".into()));
    let shop = c.add_target("shop", false);
    let steady = c.add_target("steady", false);
    c.start_coordinator(&format!("{}s", INTERVAL.as_secs()), "1s");
    let started = Instant::now();
    c.start_agents();
    let (url, steady_url) = (c.targets[shop].url.clone(), c.targets[steady].url.clone());
    let watch = c.watch();
    wait_for_verdict(&watch, &url, "UP");

    // The HTTP port's figures follow --http-auth like the rest of it.
    let (code, _) = curl("GET", &format!("http://{}/v1/uptime", c.http_addr.expect("HTTP")), None);
    assert_eq!(code, 401, "/v1/uptime without the token");

    std::thread::sleep(UP_SPAN);
    c.stop_target(shop);
    let stopped = Instant::now();
    wait_for_verdict(&watch, &url, "DOWN");
    std::thread::sleep(DOWN_SPAN.saturating_sub(stopped.elapsed()));
    c.start_target(shop);
    let truth_down = stopped.elapsed().as_secs_f64();
    wait_for_verdict(&watch, &url, "UP");
    std::thread::sleep(UP_SPAN);
    let truth = || Truth { down: truth_down, judged_at_most: started.elapsed().as_secs_f64() };

    // The RPC, through real grpcurl: the target's figures and each region's.
    let body = format!(r#"{{"url": "{url}", "windows": ["24h", "30d"]}}"#);
    let answer = c.call("GetUptime", &body);
    let t = &answer["targets"][0];
    assert_eq!(t["url"], url.as_str());
    let windows = t["windows"].as_array().expect("windows");
    assert_eq!(windows.iter().map(|w| w["window"].as_str().unwrap()).collect::<Vec<_>>(), ["24h", "30d"]);
    for w in windows {
        let judged = seconds(&w["upSeconds"]) + seconds(&w["degradedSeconds"]) + seconds(&w["downSeconds"]);
        let view = format!("GetUptime {}", w["window"]);
        truth().check(
            &view,
            seconds(&w["downSeconds"]),
            judged,
            seconds(&w["percent"]),
            w["incidents"].as_u64().unwrap_or(0),
        );
        assert_eq!(w["worst"], "VERDICT_DOWN", "{view}");
    }
    let regions = t["regions"].as_array().expect("regions");
    assert_eq!(regions.len(), 3, "every region's opinion: {regions:?}");
    for r in regions {
        let w = &r["windows"][0];
        let down = seconds(&w["downSeconds"]);
        assert!((down - truth_down).abs() <= TOLERANCE, "region {}: {down:.1}s down", r["region"]);
        assert_eq!(w["incidents"], 1, "region {}: its opinion turned down once", r["region"]);
    }
    // Every target, the default four windows; the steady one was never down.
    let all = c.call("GetUptime", "{}");
    let steady_row = all["targets"].as_array().unwrap().iter().find(|t| t["url"] == steady_url.as_str()).unwrap();
    let names: Vec<&str> =
        steady_row["windows"].as_array().unwrap().iter().map(|w| w["window"].as_str().unwrap()).collect();
    assert_eq!(names, ["24h", "7d", "30d", "90d"]);
    assert!(steady_row.get("regions").is_none(), "regions only for one target: {steady_row}");
    assert_eq!(steady_row["windows"][0]["percent"].as_f64(), Some(100.0), "{steady_row}");
    assert!(steady_row["windows"][0].get("downSeconds").is_none(), "{steady_row}");
    // A window longer than the roll-ups are kept is refused with the reason.
    let refused = vantage_e2e::grpcurl_output(
        &[
            c.admin_tls().iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["-d", r#"{"windows": ["500d"]}"#, &c.coordinator_addr.to_string(), "vantage.v1.Coordinator/GetUptime"],
        ]
        .concat(),
    );
    assert!(refused.contains("InvalidArgument") && refused.contains("400 days"), "{refused}");

    // The CLI: the table (availability, down time, one incident) and JSON.
    let table = cli(&c, &[&url, "--window", "24h"]);
    let row: Vec<&str> = table.lines().find(|l| l.starts_with(&url)).expect(&table).split_whitespace().collect();
    assert_eq!(row[1], "24h", "{table}");
    let cli_percent: f64 = row[2].trim_end_matches('%').parse().expect(&table);
    assert_eq!(row.last(), Some(&"1"), "one incident: {table}");
    assert_eq!(table.lines().filter(|l| l.trim_start().starts_with("region ")).count(), 3, "{table}");
    let json: Value = serde_json::from_str(&cli(&c, &[&url, "--window", "24h", "--json"])).expect("JSON");
    let w = &json["targets"][0]["windows"][0];
    let judged = seconds(&w["up_seconds"]) + seconds(&w["degraded_seconds"]) + seconds(&w["down_seconds"]);
    truth().check(
        "uptime --json",
        seconds(&w["down_seconds"]),
        judged,
        seconds(&w["percent"]),
        w["incidents"].as_u64().unwrap(),
    );
    assert!(
        (cli_percent - seconds(&w["percent"])).abs() < 0.1,
        "the table's {cli_percent}% and the JSON's {}",
        w["percent"]
    );

    // /v1/status: the four windows beside the status.
    let status: Value = serde_json::from_str(&get(&c, "/v1/status")).expect("JSON");
    let target = status["targets"].as_array().unwrap().iter().find(|t| t["url"] == url.as_str()).expect("target");
    let windows: Vec<&str> =
        target["uptime"].as_array().unwrap().iter().map(|w| w["window"].as_str().unwrap()).collect();
    assert_eq!(windows, ["24h", "7d", "30d", "90d"]);
    let w = &target["uptime"][2];
    let judged = seconds(&w["up_seconds"]) + seconds(&w["degraded_seconds"]) + seconds(&w["down_seconds"]);
    truth().check(
        "/v1/status",
        seconds(&w["down_seconds"]),
        judged,
        seconds(&w["percent"]),
        w["incidents"].as_u64().unwrap(),
    );
    let month = seconds(&w["percent"]);

    // The page: the 30-day column of the table, and the line on the target's page.
    let page = get(&c, "/");
    assert!(page.contains("<th>Uptime 30 d</th>"), "{page}");
    let cell = page
        .split(&format!("data-url=\"{url}\""))
        .nth(1)
        .and_then(|row| row.split("data-label=\"Uptime 30 d\">").nth(1))
        .and_then(|cell| cell.split("</td>").next())
        .expect("the target's uptime cell");
    let shown: f64 = cell.split('>').nth(1).and_then(|t| t.split('%').next()).and_then(|p| p.parse().ok()).expect(cell);
    assert!((shown - month).abs() < 0.1, "the page shows {shown}%, /v1/status {month}%");
    let target_page = get(&c, &format!("/target?url={}", query_encode(&url)));
    assert!(target_page.contains("Availability: <span data-window=\"24h\">24h <b>"), "{target_page}");
    assert!(target_page.contains("down, 1 incident)"), "{target_page}");

    // The CSV for SLA reports: a header, one line per target.
    let csv = get(&c, "/v1/uptime?window=30d&format=csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    assert_eq!(header[..5], ["url", "window", "from", "to", "availability_percent"]);
    let column = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    let row = rows.iter().find(|r| r[0] == url).expect(&csv);
    let number = |name: &str| row[column(name)].parse::<f64>().unwrap_or_else(|_| panic!("{name}: {csv}"));
    truth().check(
        "CSV",
        number("down_seconds"),
        number("judged_seconds"),
        number("availability_percent"),
        number("incidents") as u64,
    );
    let json: Value =
        serde_json::from_str(&get(&c, &format!("/v1/uptime?window=24h&target={}", query_encode(&url)))).unwrap();
    assert_eq!(json["targets"].as_array().unwrap().len(), 1);
    assert_eq!(json["targets"][0]["regions"].as_array().unwrap().len(), 3);
    let down_before = seconds(&json["targets"][0]["windows"][0]["down_seconds"]);

    // SIGKILL: the closed outage is in the roll-ups once, the open span goes on from the verdict
    // record.
    drop(watch);
    c.kill_coordinator();
    c.restart_coordinator();
    let after_kill = c.call("GetUptime", &format!(r#"{{"url": "{url}", "windows": ["24h"]}}"#));
    let w = &after_kill["targets"][0]["windows"][0];
    assert_eq!(seconds(&w["downSeconds"]), down_before, "the same outage, not lost or counted twice");
    let judged = seconds(&w["upSeconds"]) + seconds(&w["degradedSeconds"]) + seconds(&w["downSeconds"]);
    truth().check(
        "GetUptime after SIGKILL",
        seconds(&w["downSeconds"]),
        judged,
        seconds(&w["percent"]),
        w["incidents"].as_u64().unwrap_or(0),
    );

    // A retention of one second: housekeeping at start-up removes the results, transitions and
    // the closed incident; the figures stay.
    c.kill_coordinator();
    c.env.push(("VANTAGE_RETENTION".into(), "1s".into()));
    c.env.push(("VANTAGE_EVENT_RETENTION".into(), "1s".into()));
    c.restart_coordinator();
    let coordinator = c.coordinator.as_ref().expect("running");
    let pruned = |l: &str| l.contains("housekeeping: removed what outlived its retention");
    if !coordinator.printed().iter().any(|l| pruned(l)) {
        coordinator.wait_for_line(pruned);
    }
    let incidents = c.call("ListIncidents", &format!(r#"{{"url": "{url}"}}"#));
    assert!(incidents.get("incidents").is_none(), "the raw incident is pruned: {incidents}");
    let after_prune = c.call("GetUptime", &format!(r#"{{"url": "{url}", "windows": ["24h"]}}"#));
    let w = &after_prune["targets"][0]["windows"][0];
    assert_eq!(seconds(&w["downSeconds"]), down_before, "roll-ups outlive the raw rows");
    let judged = seconds(&w["upSeconds"]) + seconds(&w["degradedSeconds"]) + seconds(&w["downSeconds"]);
    truth().check(
        "GetUptime after the prune",
        seconds(&w["downSeconds"]),
        judged,
        seconds(&w["percent"]),
        w["incidents"].as_u64().unwrap_or(0),
    );
}
