//! Housekeeping through the real hub and store: one pass removes the history older than the
//! results retention and forgets agents gone longer than the agent retention (from `ListAgents`
//! and with their batch sequence), while connected and recently seen agents stay.

use std::sync::Arc;
use std::time::Duration;

use vantage_coordinator::clock::now_ms;
use vantage_coordinator::hub::{Hub, HubOptions, Retention};
use vantage_coordinator::store::{AgentRecord, Store, StoredResult};
use vantage_proto::v1::{HistoryEntry, ProbeResult, ProbeStatus};

const DAY_MS: i64 = 86_400_000;
const URL: &str = "https://shop.housekeeping.test/";

fn agent(name: &str, region: &str, last_seen_ms: i64) -> AgentRecord {
    AgentRecord {
        name: name.into(),
        region: region.into(),
        version: "1".into(),
        last_seen_ms,
        cert_sha256: String::new(),
        cert_not_after_ms: 0,
    }
}

fn result(at_ms: i64) -> StoredResult {
    let entry = HistoryEntry {
        region: "r1".into(),
        agent: "agent-r1".into(),
        result: Some(ProbeResult {
            url: URL.into(),
            status: ProbeStatus::Up as i32,
            checked_at: Some(vantage_coordinator::clock::timestamp(at_ms)),
            ..Default::default()
        }),
        ..Default::default()
    };
    StoredResult { url: URL.into(), at_ms, entry }
}

#[tokio::test]
async fn a_pass_removes_old_history_and_forgets_agents_gone_too_long() {
    let dir = std::env::temp_dir().join(format!("vantage-housekeeping-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::open(&dir).unwrap());
    let now = now_ms();
    // A decommissioned agent, last seen 40 days ago; one seen yesterday; one about to connect.
    store.record_agent(&agent("agent-r4", "r4", now - 40 * DAY_MS)).unwrap();
    store.record_agent(&agent("agent-r2", "r2", now - DAY_MS)).unwrap();
    store.record_agent(&agent("agent-r1", "r1", now - 40 * DAY_MS)).unwrap();
    store.record_batch("agent-r4", 9, &[]).unwrap();
    // A result every day for 10 days.
    let days: Vec<StoredResult> = (0..10).map(|d| result(now - d * DAY_MS - 1_000)).collect();
    store.record_batch("agent-r1", 1, &days).unwrap();

    let hub = Hub::open(store.clone(), Vec::new(), HubOptions::default()).await.unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    hub.connect_agent("agent-r1", "r1", "1", None, 0, tx).await.unwrap();
    let names = |hub: &Hub| {
        let mut names: Vec<String> = hub.agents().into_iter().map(|a| a.name).collect();
        names.sort();
        names
    };
    assert_eq!(names(&hub), ["agent-r1", "agent-r2", "agent-r4"]);

    let retention = Retention {
        results: Duration::from_secs(7 * 86_400),
        agents: Duration::from_secs(30 * 86_400),
        ..Retention::default()
    };
    let done = hub.prune(&retention).await.unwrap();
    assert_eq!(done.results, 3, "the results of 7, 8 and 9 days ago");
    let history = hub.history(URL, None, i64::MIN, i64::MAX, 100).await.unwrap();
    assert_eq!(history.len(), 7);
    assert_eq!(names(&hub), ["agent-r1", "agent-r2"], "the agent gone 40 days is forgotten");
    let mut stored: Vec<String> = store.agents().unwrap().into_iter().map(|a| a.name).collect();
    stored.sort();
    assert_eq!(stored, ["agent-r1", "agent-r2"]);
    assert_eq!(store.last_sequence("agent-r4").unwrap(), 0, "with its batch sequence");

    // A second pass has nothing to do.
    assert_eq!(hub.prune(&retention).await.unwrap(), Default::default());
    let _ = std::fs::remove_dir_all(&dir);
}
