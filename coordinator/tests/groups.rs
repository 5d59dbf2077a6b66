//! Incident groups through the real hub, store and tick: a target whose address another target
//! shares is held for the correlation window (two intervals by default) while it is the only one
//! DOWN, then paged as itself, under its own key, exactly once; the window's end releases it and
//! nothing holds it again.

use std::time::{Duration, Instant};

use vantage_coordinator::clock::now_ms;
use vantage_coordinator::serve::{self, ServeOptions};
use vantage_proto::v1::{Backend, Failure, HistoryEntry, ProbeResult, ProbeStatus, TargetSpec};

const ADDRESS: &str = "203.0.113.7:443";
const LONE: &str = "https://lone.groups.test/";
const NEIGHBOUR: &str = "https://neighbour.groups.test/";

fn result(url: &str, up: bool) -> (String, HistoryEntry) {
    let failure = (!up).then(|| Failure {
        code: "tcp_refused".into(),
        detail: format!("{ADDRESS} refused the connection"),
        ..Default::default()
    });
    let status = if up { ProbeStatus::Up } else { ProbeStatus::Down } as i32;
    let result = ProbeResult {
        url: url.into(),
        status,
        failure: failure.clone(),
        backends: vec![Backend { address: ADDRESS.into(), status, failure, ..Default::default() }],
        checked_at: Some(vantage_coordinator::clock::timestamp(now_ms())),
        ..Default::default()
    };
    (url.into(), HistoryEntry { result: Some(result), ..Default::default() })
}

#[tokio::test]
async fn a_lone_member_is_paged_as_itself_once_when_the_window_ends() {
    let dir = std::env::temp_dir().join(format!("vantage-groups-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let running = serve::start(ServeOptions::local("127.0.0.1:0".parse().unwrap(), dir.clone())).await.unwrap();
    let hub = running.hub.clone();
    for url in [LONE, NEIGHBOUR] {
        let spec = TargetSpec {
            url: url.into(),
            regions: vec!["eu-west".into()],
            interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            ..Default::default()
        };
        hub.upsert_target(spec).await.unwrap();
    }
    hub.ingest("agent-1", "eu-west", 1, vec![result(LONE, true), result(NEIGHBOUR, true)]).await.unwrap();
    let down_at = Instant::now();
    hub.ingest("agent-1", "eu-west", 2, vec![result(LONE, false), result(NEIGHBOUR, true)]).await.unwrap();
    let downs = || async {
        let alerts = hub.alerts(LONE, 100).await.unwrap();
        alerts.into_iter().filter(|r| r.alert.kind.as_str() == "down").collect::<Vec<_>>()
    };
    assert!(downs().await.is_empty(), "held: its neighbour shares its address");
    let incidents = hub.incidents(LONE, true, 10).await.unwrap();
    assert_eq!(incidents.len(), 1, "the incident is recorded at once; only the page waits");
    // The coordinator's own tick releases it once the window (two intervals: 2 s) ends.
    let paged = loop {
        let found = downs().await;
        if !found.is_empty() {
            break found;
        }
        assert!(down_at.elapsed() < Duration::from_secs(20), "never paged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(down_at.elapsed() >= Duration::from_secs(2), "not before the window ended: {:?}", down_at.elapsed());
    assert_eq!(paged.len(), 1);
    assert!(paged[0].alert.group.is_none(), "alone: its own down");
    assert!(paged[0].alert.dedup_key.starts_with(&format!("vantage/target/{LONE}#")), "{}", paged[0].alert.dedup_key);
    // Never held again, never sent twice: watched over two more windows.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(downs().await.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
