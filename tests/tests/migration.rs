//! Upgrading in place, with the real binary: the data directory of the version that stored results
//! whole (`coordinator/tests/fixtures/store-v1.redb.gz`, README "Storage and retention") is served
//! by `vantage-coordinator serve`, which moves its results to the compact encoding at start-up
//! (logging it), and the real grpcurl reads back every result, the incident and the alerts.

use std::path::Path;

use vantage_e2e::grpcurl;

#[test]
fn the_real_coordinator_migrates_a_previous_versions_database_and_serves_everything_in_it() {
    let dir = std::env::temp_dir().join(format!("vantage-migration-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let packed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../coordinator/tests/fixtures/store-v1.redb.gz");
    let out = std::process::Command::new("gzip").arg("-dc").arg(&packed).output().expect("gzip runs");
    assert!(out.status.success(), "gzip -dc {}", packed.display());
    std::fs::write(data.join("vantage.redb"), out.stdout).unwrap();

    // The fixture's results are from 2025-11-20: kept whatever day the test runs.
    let coordinator = vantage_e2e::serve_on_loopback(&data, &["--retention", "36500d", "--event-retention", "36500d"]);
    let moved = coordinator.wait_for_line(|l| l.contains("results moved to the compact encoding"));
    assert!(moved.contains("moved=480"), "{moved}");
    let (addr, _) = vantage_e2e::listening(&coordinator);
    let call = |method: &str, body: &str| -> serde_json::Value {
        let out = grpcurl(&["-plaintext", "-d", body, &addr, &format!("vantage.v1.Coordinator/{method}")]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: {e}: {out}"))
    };
    let history = |url: &str| -> Vec<serde_json::Value> {
        let body = format!(
            r#"{{"url": "{url}", "since": "2025-11-19T00:00:00Z", "until": "2025-11-21T00:00:00Z", "limit": 1000}}"#
        );
        call("GetHistory", &body)["results"].as_array().cloned().unwrap_or_default()
    };
    let api = history("https://api.example/");
    assert_eq!(api.len(), 240, "two hours from two regions");
    let failing: Vec<&serde_json::Value> = api.iter().filter(|e| e["result"]["failure"].is_object()).collect();
    assert_eq!(failing.len(), 40, "twenty minutes down from two regions");
    assert_eq!(failing[0]["result"]["failure"]["code"], "http_status");
    assert_eq!(failing[0]["result"]["failure"]["message"], "the server answered HTTP 503");
    assert_eq!(failing[0]["result"]["httpStatus"], 503);
    let newest = &api[0];
    assert_eq!(newest["result"]["checkedAt"], "2025-11-20T01:59:18Z", "newest first: {newest}");
    assert_eq!(newest["region"], "us-east");
    assert_eq!(newest["agent"], "agent-us-east");
    assert_eq!(newest["result"]["cert"]["subject"], "CN=api.example");
    assert_eq!(newest["result"]["cert"]["daysRemaining"], "60");
    assert_eq!(newest["result"]["cert"]["chain"][0]["issuer"], "CN=Example Root");
    assert_eq!(newest["result"]["tlsVersion"], "TLSv1.3");
    assert!(newest["result"]["timings"]["totalMs"].as_f64().is_some_and(|t| t >= 62.0), "{newest}");
    assert_eq!(history("https://shop.example/").len(), 240);

    let incidents = call("ListIncidents", r#"{"url": "https://api.example/"}"#);
    let incidents = incidents["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["opened"], "2025-11-20T00:41:00Z");
    assert_eq!(incidents[0]["closed"], "2025-11-20T01:01:00Z");
    let alerts = call("ListAlerts", r#"{"subject": "https://api.example/"}"#);
    let kinds: Vec<&str> = alerts["alerts"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 2, "{alerts}");
    drop(coordinator);

    // Started again: nothing left to move, everything still there.
    let coordinator = vantage_e2e::serve_on_loopback(&data, &["--retention", "36500d", "--event-retention", "36500d"]);
    let (addr2, _) = vantage_e2e::listening(&coordinator);
    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"url": "https://api.example/", "since": "2025-11-19T00:00:00Z", "limit": 1000}"#,
        &addr2,
        "vantage.v1.Coordinator/GetHistory",
    ]);
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["results"].as_array().unwrap().len(), 240);
    drop(coordinator);
    let _ = std::fs::remove_dir_all(&dir);
}
