//! Hourly latency roll-ups against a real coordinator (under `--http-auth`) and three agent
//! processes in network namespaces: while the hour is under way nothing is rolled up; once it
//! has closed (the coordinator restarted two hours later, its clock moved by libfaketime: the test
//! cannot wait an hour), `GET /v1/latency` gives each region's hour with the same count, failures
//! and percentiles as computed here from the raw results (`GetHistory`, real grpcurl), the CSV
//! says the same, the target page draws the 30-day chart, and the roll-ups survive a SIGKILL and
//! a retention prune that removes the raw results (README: "Latency roll-ups").

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use vantage_e2e::cluster::{Cluster, READ_TOKEN};
use vantage_e2e::libfaketime;
use vantage_e2e::query_encode;
use vantage_e2e::reload::{curl, wait_for_verdict};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

fn get(c: &Cluster, path_and_query: &str) -> String {
    let url = format!("http://{}{path_and_query}", c.http_addr.expect("the HTTP port"));
    let (code, body) = curl("GET", &url, Some(READ_TOKEN));
    assert_eq!(code, 200, "GET {path_and_query}: {body}");
    body
}

/// The value at quantile `q` by nearest rank (README: the smallest value with at least `q` of
/// the values at or below it).
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One region's hour as `GetHistory` has it: the passing probes' total time (µs) and how many
/// did not pass.
#[derive(Debug, Default)]
struct Expected {
    passed: Vec<u64>,
    failed: u64,
}

/// (region, "YYYY-MM-DDTHH") → the raw results of that hour, from `GetHistory`.
fn from_history(c: &Cluster, url: &str) -> BTreeMap<(String, String), Expected> {
    let mut out: BTreeMap<(String, String), Expected> = BTreeMap::new();
    for region in REGIONS {
        let body = serde_json::json!({ "url": url, "region": region, "limit": 1000 }).to_string();
        let history = c.call("GetHistory", &body);
        let results = history["results"].as_array().cloned().unwrap_or_default();
        assert!(!results.is_empty() && results.len() < 1000, "{region}: {} results", results.len());
        for r in results {
            let result = &r["result"];
            let at = result["checkedAt"].as_str().expect("checkedAt");
            let e = out.entry((region.to_owned(), at[..13].to_owned())).or_default();
            if result["status"] == "PROBE_STATUS_UP" {
                let ms = result["timings"]["totalMs"].as_f64().unwrap_or(0.0);
                e.passed.push((ms * 1000.0).round() as u64);
            } else {
                e.failed += 1;
            }
        }
    }
    out
}

fn us(v: &Value) -> u64 {
    (v.as_f64().unwrap_or_else(|| panic!("a figure: {v}")) * 1000.0).round() as u64
}

#[test]
fn closed_hours_roll_up_to_the_percentiles_of_the_raw_results_and_outlive_them() {
    let mut c = Cluster::new(&REGIONS);
    c.env.push(("VANTAGE_HTTP_AUTH".into(), "true".into()));
    let shop = c.add_target("shop", false);
    c.start_coordinator("1s", "800ms");
    c.start_agents();
    let url = c.targets[shop].url.clone();
    let watch = c.watch();
    wait_for_verdict(&watch, &url, "UP");
    // Passing probes, then failing ones (refused), then passing again.
    std::thread::sleep(Duration::from_secs(12));
    c.stop_target(shop);
    wait_for_verdict(&watch, &url, "DOWN");
    c.start_target(shop);
    wait_for_verdict(&watch, &url, "UP");
    std::thread::sleep(Duration::from_secs(5));
    drop(watch);

    // The hour is under way: nothing is rolled up, the API says so and the 30-day chart too.
    let query = format!("/v1/latency?target={}&window=30d", query_encode(&url));
    let open: Value = serde_json::from_str(&get(&c, &query)).expect("JSON");
    assert_eq!(open["regions"], serde_json::json!([]), "an hour under way is not rolled up: {open}");
    let page = get(&c, &format!("/target?url={}&latency=30d", query_encode(&url)));
    assert!(page.contains("No successful probe in the last 30 days rolled up yet"), "{page}");
    // Bad requests say why.
    let http = format!("http://{}", c.http_addr.unwrap());
    let (code, body) = curl("GET", &format!("{http}/v1/latency?window=30d"), Some(READ_TOKEN));
    assert_eq!((code, body.starts_with("target:")), (400, true), "{body}");
    let (code, body) =
        curl("GET", &format!("{http}/v1/latency?target={}&window=2y", query_encode(&url)), Some(READ_TOKEN));
    assert_eq!(code, 400, "{body}");
    let (code, _) = curl("GET", &format!("{http}/v1/latency?target=https%3A%2F%2Fnowhere.test%2F"), Some(READ_TOKEN));
    assert_eq!(code, 404);
    let (code, _) = curl("GET", &format!("{http}{query}"), None);
    assert_eq!(code, 401, "/v1/latency follows --http-auth");

    // No more results: the raw ones are what the hours must hold.
    for i in 0..REGIONS.len() {
        c.kill_agent(i);
    }
    let truth = from_history(&c, &url);
    assert!(truth.values().any(|e| e.failed > 0), "the outage's failures are among the results");

    // Two hours later: the hours those results fall in have closed; housekeeping at start-up
    // rolls them up.
    c.kill_coordinator();
    c.env.extend([
        ("LD_PRELOAD".to_owned(), libfaketime()),
        ("FAKETIME".to_owned(), "+7200s".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
    ]);
    c.restart_coordinator();
    let coordinator = c.coordinator.as_ref().expect("running");
    let rolled = |l: &str| l.contains("housekeeping: closed hours' latency rolled up");
    let line = match coordinator.printed().into_iter().find(|l| rolled(l)) {
        Some(line) => line,
        None => coordinator.wait_for_line(rolled),
    };
    let target_hours: usize = truth.keys().map(|(_, hour)| hour).collect::<std::collections::BTreeSet<_>>().len();
    assert!(line.contains(&format!("target_hours={target_hours}")), "{line}");

    let report: Value = serde_json::from_str(&get(&c, &query)).expect("JSON");
    assert_eq!((report["url"].as_str(), report["window"].as_str()), (Some(url.as_str()), Some("30d")), "{report}");
    let mut seen = 0;
    for r in report["regions"].as_array().expect("regions") {
        let region = r["region"].as_str().expect("region");
        for h in r["hours"].as_array().expect("hours") {
            let hour = h["hour"].as_str().expect("hour");
            assert!(hour.ends_with(":00:00Z"), "{hour}");
            let e = truth.get(&(region.to_owned(), hour[..13].to_owned())).unwrap_or_else(|| panic!("{region} {hour}"));
            let mut passed = e.passed.clone();
            passed.sort();
            let view = format!("{region} {hour}");
            assert_eq!(h["count"].as_u64(), Some(passed.len() as u64), "{view}: passing probes");
            assert_eq!(h["failed"].as_u64(), Some(e.failed), "{view}: failed probes");
            assert!(!passed.is_empty(), "{view}: the target answered in every region");
            assert_eq!(us(&h["min_ms"]), passed[0], "{view} min");
            assert_eq!(us(&h["p50_ms"]), nearest_rank(&passed, 0.50), "{view} p50");
            assert_eq!(us(&h["p95_ms"]), nearest_rank(&passed, 0.95), "{view} p95");
            assert_eq!(us(&h["p99_ms"]), nearest_rank(&passed, 0.99), "{view} p99");
            assert_eq!(us(&h["max_ms"]), *passed.last().unwrap(), "{view} max");
            let mean = passed.iter().sum::<u64>() as f64 / passed.len() as f64;
            assert!((us(&h["mean_ms"]) as f64 - mean).abs() <= 1.0, "{view} mean {} of {mean}", h["mean_ms"]);
            seen += 1;
        }
    }
    assert_eq!(seen, truth.len(), "every (region, hour) with results, and no other: {report}");

    // The CSV: the same figures, a line per region and hour.
    let csv = get(&c, &format!("{query}&format=csv"));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("url,region,hour,count,failed,min_ms,p50_ms,p95_ms,p99_ms,max_ms,mean_ms"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), seen, "{csv}");
    assert!(csv.ends_with("\r\n"), "RFC 4180 line ends");
    let eu = &report["regions"].as_array().unwrap().iter().find(|r| r["region"] == "eu-west").unwrap()["hours"][0];
    let row = rows.iter().find(|r| r[1] == "eu-west" && r[2] == eu["hour"]).expect(&csv);
    assert_eq!(row[0], url);
    assert_eq!(
        (row[3].parse::<u64>().ok(), row[7]),
        (eu["count"].as_u64(), format!("{:.3}", eu["p95_ms"].as_f64().unwrap()).as_str())
    );

    // The target page: the 30-day chart, one per region, each with its hours drawn.
    let page = get(&c, &format!("/target?url={}&latency=30d", query_encode(&url)));
    assert!(page.contains("<h2>Latency, last 30 days</h2>") && page.contains("data-span=\"30d\""), "{page}");
    for region in REGIONS {
        let figure = page.split(&format!("<figure data-region=\"{region}\">")).nth(1).expect(region);
        let p50 = figure.split("class=\"p50\" d=\"").nth(1).and_then(|d| d.split('"').next()).unwrap_or_default();
        assert!(p50.starts_with('M'), "{region}: its hours drawn: {figure}");
    }
    assert!(page.contains("&amp;latency=30d&amp;part=live\">"), "the refresh keeps the span");

    // SIGKILL: the hours are there once, as they were.
    c.kill_coordinator();
    c.restart_coordinator();
    let again: Value = serde_json::from_str(&get(&c, &query)).expect("JSON");
    assert_eq!(again["regions"], report["regions"], "not lost, not counted twice");

    // A retention of one second removes the raw results; the roll-ups stay.
    c.kill_coordinator();
    c.env.push(("VANTAGE_RETENTION".into(), "1s".into()));
    c.restart_coordinator();
    let coordinator = c.coordinator.as_ref().expect("running");
    let pruned = |l: &str| l.contains("housekeeping: removed what outlived its retention");
    if !coordinator.printed().iter().any(|l| pruned(l)) {
        coordinator.wait_for_line(pruned);
    }
    let history = c.call("GetHistory", &serde_json::json!({ "url": url, "limit": 10 }).to_string());
    assert!(history.get("results").is_none(), "the raw results are pruned: {history}");
    let kept: Value = serde_json::from_str(&get(&c, &query)).expect("JSON");
    assert_eq!(kept["regions"], report["regions"], "roll-ups outlive the raw results");
}
