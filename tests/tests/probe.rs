//! `/probe?target=URL` and `/metrics` against a real coordinator (under `--http-auth`) and three
//! agent processes in network namespaces, probing real TLS servers: /probe gives each region's
//! newest result in blackbox_exporter's names, labelled by region; /metrics keeps one verdict line
//! per target and no per-region detail; `promtool check metrics` passes on both; and a real
//! Prometheus, run with `deploy/prometheus/vantage-scrape.yml`, finds the targets at
//! /probe/targets, scrapes /probe per target with blackbox's relabeling and stores series
//! labelled by target and region.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vantage_e2e::cluster::{Cluster, READ_TOKEN};
use vantage_e2e::files::{TempDir, deploy};
use vantage_e2e::prometheus::Prometheus;
use vantage_e2e::query_encode;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// GET with the read token (or none): the status code and the body.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]);
    if let Some(token) = token {
        curl.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = curl.arg(url).output().expect("curl runs");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("curl wrote the status");
    (code.parse().expect("a status code"), body.to_owned())
}

/// `promtool check metrics` on an exposition: no error and no lint complaint.
fn promtool_check_metrics(what: &str, text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (.ci/setup installs Debian's prometheus)");
    promtool.stdin.take().expect("piped").write_all(text.as_bytes()).expect("promtool reads");
    let out = promtool.wait_with_output().expect("promtool ends");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics on {what}: {said}\n{text}");
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn value(text: &str, prefix: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no value in {line}"))
}

/// When the certificate served at `host:port` expires, in Unix seconds, as openssl reads it.
fn served_not_after(ip: &str, port: u16, host: &str) -> i64 {
    let script = format!(
        "openssl s_client -connect {ip}:{port} -servername {host} </dev/null 2>/dev/null \
         | openssl x509 -noout -enddate | cut -d= -f2 | xargs -I{{}} date -u -d {{}} +%s"
    );
    let out = Command::new("sh").args(["-c", &script]).output().expect("sh runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("openssl read no date: {out:?}"))
}

/// Polls `url` until `done` holds for its body (the agents' results arrive on their schedule).
fn until(url: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, body) = get(url, Some(READ_TOKEN));
        if code == 200 && done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what} never happened; {url} said {code}:\n{body}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn probe_shows_every_regions_newest_result_and_metrics_only_the_verdicts() {
    let mut cluster = Cluster::new(&REGIONS);
    cluster.env.push(("VANTAGE_HTTP_AUTH".into(), "true".into()));
    let shop = cluster.add_target("shop", false);
    let expired = cluster.add_target("expired", true);
    cluster.start_coordinator("2s", "1s");
    cluster.start_agents();
    let base = format!("http://{}", cluster.http_addr.expect("the HTTP port"));
    let (shop_url, expired_url) = (cluster.targets[shop].url.clone(), cluster.targets[expired].url.clone());
    let probe = |url: &str| format!("{base}/probe?module=http_2xx&target={}", query_encode(url));

    // Same gate as /metrics: the read token, or a 401.
    let (code, body) = get(&probe(&shop_url), None);
    assert_eq!(code, 401, "{body}");

    let all_regions = |body: &str| body.lines().filter(|l| l.starts_with("probe_success{")).count() == 3;
    let text = until(&probe(&shop_url), "three regions' results for the shop", all_regions);
    promtool_check_metrics("/probe", &text);
    assert!(!text.contains("target="), "the target label comes from Prometheus's relabeling:\n{text}");
    let not_after = served_not_after(&cluster.bridge_ip.to_string(), cluster.targets[shop].port, "shop.e2e.test");
    // The agents are given the lab's addresses (`--resolve`): no DNS lookup, so no lookup time.
    assert!(!text.contains("probe_dns_lookup_time_seconds{"), "{text}");
    for region in REGIONS {
        let r = format!("{{region=\"{region}\"");
        assert_eq!(value(&text, &format!("probe_success{r}")), 1.0, "{region}:\n{text}");
        assert_eq!(value(&text, &format!("probe_http_status_code{r}")), 200.0, "{region}");
        assert_eq!(value(&text, &format!("probe_http_ssl{r}")), 1.0, "{region}");
        let expiry = value(&text, &format!("probe_ssl_earliest_cert_expiry{r}")) as i64;
        assert!((expiry - not_after).abs() <= 1, "{region}: {expiry}, openssl says {not_after}");
        assert!(value(&text, &format!("probe_duration_seconds{r}")) > 0.0, "{region}");
        assert!(value(&text, &format!("probe_http_duration_seconds{r},phase=\"tls\"")) > 0.0, "{region}");
        assert_eq!(value(&text, &format!("probe_tls_version_info{r},version=\"TLS 1.3\"")), 1.0, "{region}");
        assert_eq!(value(&text, &format!("probe_ssl_last_chain_info{r},fingerprint_sha256=")), 1.0, "{region}");
        let age = vantage_e2e::now_ms() as f64 / 1000.0 - value(&text, &format!("vantage_probe_timestamp_seconds{r}"));
        assert!((0.0..60.0).contains(&age), "{region}'s result is {age}s old");
    }

    // A broken target: every region says so, with the failure code and its opinion.
    let down = |body: &str| {
        body.lines().filter(|l| l.starts_with("vantage_region_opinion{") && l.contains("\"down\"")).count() == 3
    };
    let text =
        until(&probe(&expired_url), "three regions finding the expired certificate", |b| all_regions(b) && down(b));
    promtool_check_metrics("/probe of a broken target", &text);
    for region in REGIONS {
        let r = format!("{{region=\"{region}\"");
        assert_eq!(value(&text, &format!("probe_success{r}")), 0.0, "{region}:\n{text}");
        assert_eq!(value(&text, &format!("vantage_probe_failure_info{r},code=\"cert_expired\"")), 1.0, "{region}");
        assert_eq!(value(&text, &format!("vantage_region_opinion{r},opinion=\"down\"")), 1.0, "{region}");
    }

    // The URL is normalised as the API does; a target not watched is a 404, a bad request a 400.
    let (code, text) = get(&probe(&shop_url.to_uppercase().replace("HTTPS://", "https://")), Some(READ_TOKEN));
    assert!(code == 200 && text.contains("probe_success{region=\"eu-west\"} 1"), "{code}: {text}");
    let (code, text) = get(&probe("https://not-watched.example/"), Some(READ_TOKEN));
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("does not watch https://not-watched.example/"), "{text}");
    let (code, text) = get(&format!("{base}/probe"), Some(READ_TOKEN));
    assert!(code == 400 && text.contains("/probe?target="), "{code}: {text}");
    let (code, text) = get(&probe(&format!("https://a.example/{}", "x".repeat(3000))), Some(READ_TOKEN));
    assert!(code == 400 && text.contains("at most 2048"), "{code}: {text}");
    let (code, text) = get(&probe("not a url"), Some(READ_TOKEN));
    assert!(code == 400 && text.contains("not a valid URL"), "{code}: {text}");

    // /metrics: the verdicts, one line per target, and no per-region probe series.
    let verdict = |url: &str, v: &str| format!("vantage_target_verdict{{target=\"{url}\",verdict=\"{v}\"}} 1");
    let metrics = until(&format!("{base}/metrics"), "the expired site judged DOWN", |m| {
        m.contains(&verdict(&expired_url, "DOWN")) && m.contains(&verdict(&shop_url, "UP"))
    });
    promtool_check_metrics("/metrics", &metrics);
    assert_eq!(metrics.lines().filter(|l| l.starts_with("vantage_target_verdict{")).count(), 2, "{metrics}");
    for family in ["probe_", "vantage_region_opinion", "vantage_target_silenced{"] {
        assert!(!metrics.lines().any(|l| l.starts_with(family)), "{family} on /metrics:\n{metrics}");
    }
    assert!(metrics.contains("vantage_agents_connected{region=\"eu-west\"} 1"), "{metrics}");
    assert!(metrics.contains("vantage_failures_total{code=\"cert_expired\"}"), "{metrics}");

    // A real Prometheus with the shipped scrape config (addresses and interval made local).
    // Its /probe job finds the targets at /probe/targets (Prometheus's HTTP discovery).
    let (code, body) = get(&format!("{base}/probe/targets"), None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = get(&format!("{base}/probe/targets"), Some(READ_TOKEN));
    let mut urls = vec![shop_url.clone(), expired_url.clone()];
    urls.sort();
    assert_eq!(
        (code, serde_json::from_str::<serde_json::Value>(&body).unwrap()),
        (200, serde_json::json!([{"targets": urls, "labels": {}}]))
    );
    let prometheus = prometheus(&base);
    let series = prometheus.query_until("probe_success", |r| r.len() == 6);
    for s in &series {
        let labels = &s["metric"];
        assert_eq!(labels["job"], "vantage-probe", "{s}");
        assert_eq!(labels["instance"], labels["target"], "{s}");
        let expected = if labels["target"] == shop_url.as_str() { "1" } else { "0" };
        assert_eq!(s["value"][1], expected, "{s}");
    }
    let opinions = prometheus.query_until("vantage_region_opinion{opinion=\"down\"}", |r| r.len() == 3);
    assert!(opinions.iter().all(|s| s["metric"]["target"] == expired_url.as_str()), "{opinions:?}");
    let down = prometheus.query_until("vantage_target_verdict{job=\"vantage\",verdict=\"DOWN\"}", |r| r.len() == 1);
    assert_eq!(down[0]["metric"]["target"], expired_url.as_str(), "{down:?}");
}

/// A real Prometheus server scraping the coordinator with `deploy/prometheus/vantage-scrape.yml`.
fn prometheus(base: &str) -> Prometheus {
    let shipped = std::fs::read_to_string(deploy("prometheus/vantage-scrape.yml")).expect("the shipped scrape config");
    let coordinator = base.trim_start_matches("http://");
    let config =
        shipped.replace("vantage-coordinator:7701", coordinator).replace("scrape_interval: 60s", "scrape_interval: 1s");
    let dir = TempDir::new("probe-prometheus");
    std::fs::write(dir.join("prometheus.yml"), config).expect("config");
    std::fs::copy(deploy("prometheus/vantage-rules.yml"), dir.join("vantage-rules.yml")).expect("rules");
    std::fs::write(dir.join("vantage-read.token"), READ_TOKEN).expect("token");
    Prometheus::start(dir)
}
