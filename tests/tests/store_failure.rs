//! A coordinator whose disk fills up: redb refuses every write after an I/O error until it is
//! reopened, so the coordinator stops with the error (for its service manager to restart it)
//! instead of judging on without recording. Restarted with space again, it decides what it
//! could not record, from the committed results and what the agents resend.

use std::process::Command;

use vantage_e2e::cluster::{Cluster, sh};

/// Unmounts the small tmpfs under the data directory, even when the test fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_coordinator_with_the_error_and_a_restart_loses_nothing() {
    let mut cluster = Cluster::new(&["eu-west", "us-east"]);
    let site = cluster.add_target("disk", false);
    let data = cluster.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    sh(&["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", data.to_str().unwrap()]);
    let _mounted = Mounted(data.clone());
    cluster.start_coordinator("1s", "800ms");
    cluster.start_agents();
    let url = cluster.targets[site].url.clone();
    let watch = cluster.watch();
    let verdict_is = |verdict: &'static str| {
        move |l: &str| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|s| s["verdict"] == verdict && s["regions"].as_array().is_some_and(|r| r.len() == 2))
        }
    };
    watch.wait_for_line(verdict_is("UP"));

    // Fill the disk, then take the site down: the writes that follow fail.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", data.join("filler").display()))
        .output()
        .expect("dd runs");
    cluster.stop_target(site);
    let coordinator = cluster.coordinator.as_mut().unwrap();
    let status = coordinator.wait_exit();
    let said = coordinator.drain().join("\n");
    assert_eq!(status.code(), Some(1), "the coordinator stops with a failure:\n{said}");
    assert!(said.contains("vantage-coordinator: the store failed ("), "the error names the store:\n{said}");
    assert!(!said.contains("panicked"), "{said}");

    // Space again, and a restart on the same data: the outage is decided and its incident open.
    std::fs::remove_file(data.join("filler")).unwrap();
    cluster.restart_coordinator();
    let watch = cluster.watch();
    watch.wait_for_line(verdict_is("DOWN"));
    let incidents = cluster.call("ListIncidents", &serde_json::json!({ "url": url, "open_only": true }).to_string());
    let open = incidents["incidents"].as_array().map_or(0, Vec::len);
    assert_eq!(open, 1, "one open incident for the outage: {incidents}");
    let history = cluster.call("GetHistory", &serde_json::json!({ "url": url, "limit": 1000 }).to_string());
    let results = history["results"].as_array().cloned().unwrap_or_default();
    for region in ["eu-west", "us-east"] {
        assert!(
            results.iter().any(|r| r["region"] == region && r["result"]["status"] == "PROBE_STATUS_UP"),
            "the {region} results from before the failure are kept: {history}"
        );
    }
}
