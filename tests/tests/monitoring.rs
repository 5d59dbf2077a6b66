//! The monitoring files, checked by their real validators and against a running coordinator: the
//! Prometheus alerting rules by `promtool check rules` and `promtool test rules`, the scrape
//! configs (one coordinator, and shards) by `promtool check config`, and the Grafana dashboard's
//! queries by `promtool check rules`, each metric they name found on a running demo's `/metrics`
//! or `/probe`.

use std::process::Command;

use vantage_e2e::Process;
use vantage_e2e::files::{TempDir, deploy, output, succeeds};

fn promtool(args: &[&str]) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (.ci/setup installs Debian's prometheus)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn the_alerting_rules_are_valid_and_their_tests_pass() {
    let checked = promtool(&["check", "rules", "vantage-rules.yml"]);
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "vantage-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_grafana_dashboard_queries_parse_and_use_only_metrics_the_coordinator_exposes() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/vantage-dashboard.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 15, "{exprs:?}");

    // promtool parses each query, as a recording rule (Grafana's interval variable made concrete).
    let tmp = TempDir::new("grafana");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m");
        rules +=
            &format!("      - record: dashboard:panel_{n}\n        expr: {}\n", serde_json::to_string(&expr).unwrap());
    }
    std::fs::write(tmp.join("rules.yml"), rules).unwrap();
    let checked = succeeds(Command::new("promtool").args(["check", "rules"]).arg(tmp.join("rules.yml")));
    assert!(checked.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{checked}");

    // Every metric it names is on a running demo's /metrics, and it covers what operators watch.
    let names: std::collections::BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map(str::to_owned).collect::<Vec<_>>()
        })
        .filter(|w| w.starts_with("probe_") || w.starts_with("vantage_"))
        .collect();
    for wanted in [
        "vantage_target_verdict",
        "vantage_region_opinion",
        "probe_success",
        "probe_http_duration_seconds",
        "probe_ssl_earliest_cert_expiry",
        "vantage_failures_total",
        "vantage_agents_connected",
        "vantage_ingested_results_total",
    ] {
        assert!(names.contains(wanted), "the dashboard has no panel over {wanted}");
    }
    let demo =
        Process::start("vantage-coordinator", &["demo", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
    let banner = demo.wait_for_line(|l| l.contains("a coordinator on"));
    let http = banner.split("(HTTP ").nth(1).and_then(|r| r.split(')').next()).unwrap().to_owned();
    let get =
        |path: &str| output(Command::new("curl").args(["-sS", "--max-time", "10", &format!("http://{http}{path}")])).1;
    let status: serde_json::Value = serde_json::from_str(&get("/v1/status")).unwrap();
    let targets: Vec<String> =
        status["targets"].as_array().unwrap().iter().map(|t| t["url"].as_str().unwrap().to_owned()).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    // The coordinator's /metrics and each target's /probe, as the shipped scrape config collects them.
    let exposed = loop {
        let mut exposed = get("/metrics");
        for url in &targets {
            let target: String = url
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect();
            exposed += &get(&format!("/probe?target={target}"));
        }
        // Failures and phases appear once the regions have probed.
        if exposed.contains("vantage_failures_total{") && exposed.contains("probe_http_duration_seconds{") {
            break exposed;
        }
        assert!(std::time::Instant::now() < deadline, "the demo's /metrics and /probe never filled: {exposed}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    for name in &names {
        assert!(exposed.contains(&format!("# TYPE {name} ")), "{name} is on neither /metrics nor /probe");
    }
}

#[test]
fn the_scrape_config_passes_promtool_check_config() {
    // Beside it, as in /etc/prometheus: the rules it loads and the read token it sends.
    let tmp = TempDir::new("scrape");
    for file in ["vantage-scrape.yml", "vantage-rules.yml"] {
        std::fs::copy(deploy(&format!("prometheus/{file}")), tmp.join(file)).unwrap();
    }
    std::fs::write(tmp.join("vantage-read.token"), "a-read-token-0123456789").unwrap();
    let checked = succeeds(Command::new("promtool").args(["check", "config"]).arg(tmp.join("vantage-scrape.yml")));
    assert!(checked.contains("is valid prometheus config file syntax"), "{checked}");
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    let config = std::fs::read_to_string(deploy("prometheus/vantage-scrape.yml")).unwrap();
    for blackbox in ["metrics_path: /probe", "target_label: __param_target", "target_label: instance"] {
        assert!(config.contains(blackbox), "{blackbox} is not in the scrape config");
    }
}

#[test]
fn the_shards_scrape_config_passes_promtool_check_config() {
    let tmp = TempDir::new("scrape-shards");
    for file in ["vantage-scrape-shards.yml", "vantage-rules.yml"] {
        std::fs::copy(deploy(&format!("prometheus/{file}")), tmp.join(file)).unwrap();
    }
    std::fs::write(tmp.join("vantage-read.token"), "a-read-token-0123456789").unwrap();
    let checked =
        succeeds(Command::new("promtool").args(["check", "config"]).arg(tmp.join("vantage-scrape-shards.yml")));
    assert!(checked.contains("is valid prometheus config file syntax"), "{checked}");
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    let config = std::fs::read_to_string(deploy("prometheus/vantage-scrape-shards.yml")).unwrap();
    for shard in ["http://vantage-shard-0:7701/probe/targets", "http://vantage-shard-1:7701/probe/targets"] {
        assert!(config.contains(shard), "{shard} is not discovered");
    }
    assert!(config.contains("source_labels: [__meta_url]"), "a target is not scraped at the shard that listed it");
}
