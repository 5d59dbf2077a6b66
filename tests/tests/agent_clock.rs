//! An agent restarted with its clock stepped back (as an NTP correction at boot does): its batch
//! sequences start from the clock, below what the coordinator already committed for it. The
//! coordinator's first assignment says what it committed, and the agent numbers new batches above
//! it, so they are stored, not dropped as duplicates. The clock is moved with libfaketime (Debian's
//! faketime), on the real agent binary. The coordinator also measures the agent's clock at its
//! hello, warns about it, and shows it in `ListAgents`.

use vantage_e2e::cluster::Cluster;
use vantage_e2e::libfaketime;

fn stored(cluster: &Cluster, url: &str) -> usize {
    let body = serde_json::json!({ "url": url, "region": "eu-west", "limit": 1000 }).to_string();
    cluster.call("GetHistory", &body)["results"].as_array().map_or(0, Vec::len)
}

#[test]
fn an_agent_restarted_with_its_clock_behind_still_has_its_results_stored() {
    let mut cluster = Cluster::new(&["eu-west"]);
    let site = cluster.add_target("clock", false);
    cluster.start_coordinator("1s", "800ms");
    cluster.start_agents();
    let url = cluster.targets[site].url.clone();
    let watch = cluster.watch();
    watch.wait_for_line(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|s| s["verdict"] == "UP"));
    cluster.kill_agent(0);
    let before = stored(&cluster, &url);
    assert!(before > 0, "results from the first run");

    // The same agent again, two minutes in the past.
    cluster.env = vec![
        ("LD_PRELOAD".into(), libfaketime()),
        ("FAKETIME".into(), "-120s".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    let (cert, key) = cluster.agent_cert(0);
    let agent = cluster.spawn_agent(0, &cert, &key, &[]);
    agent.wait_for_line(|l| l.contains("batch sequences restart above the coordinator's newest"));
    agent.wait_for_line(|l| l.contains("assignment received"));
    // The coordinator measured the clock at the hello, warns, and shows it.
    let warning = cluster
        .coordinator
        .as_ref()
        .unwrap()
        .wait_for_line(|l| l.contains("the agent's clock is") && l.contains("behind the coordinator's"));
    assert!(warning.contains("agent=\"agent-eu-west\""), "{warning}");
    let agents = cluster.call("ListAgents", "{}");
    let offset: i64 = agents["agents"][0]["clockOffsetMs"].as_str().and_then(|o| o.parse().ok()).unwrap_or(0);
    assert!((-125_000..=-115_000).contains(&offset), "ListAgents shows the agent 120 s behind: {agents}");
    // Its results are stored (polling the API: the store's growth is what is asserted).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stored(&cluster, &url) < before + 3 {
        assert!(std::time::Instant::now() < deadline, "the restarted agent's results were dropped");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
