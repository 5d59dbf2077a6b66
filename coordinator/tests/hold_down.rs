//! Hold-down through the real hub and store: a `down` held back by `alert_after` is raised by the
//! coordinator's tick once the incident has lasted that long, with no new result to trigger a
//! judgement; the incident itself is recorded at once.

use std::time::{Duration, Instant};

use vantage_coordinator::clock::now_ms;
use vantage_coordinator::serve::{self, ServeOptions};
use vantage_proto::v1::{Failure, HistoryEntry, ProbeResult, ProbeStatus, TargetSpec};

const URL: &str = "https://shop.hold-down.test/";

fn refused() -> (String, HistoryEntry) {
    let result = ProbeResult {
        url: URL.into(),
        status: ProbeStatus::Down as i32,
        failure: Some(Failure { code: "tcp_refused".into(), ..Default::default() }),
        checked_at: Some(vantage_coordinator::clock::timestamp(now_ms())),
        ..Default::default()
    };
    (URL.into(), HistoryEntry { result: Some(result), ..Default::default() })
}

#[tokio::test]
async fn a_held_down_is_raised_by_the_tick_without_a_new_result() {
    let dir = std::env::temp_dir().join(format!("vantage-hold-down-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let running = serve::start(ServeOptions::local("127.0.0.1:0".parse().unwrap(), dir.clone())).await.unwrap();
    let hub = running.hub.clone();
    // Probed every minute: no result comes again while the test runs.
    let spec = TargetSpec {
        url: URL.into(),
        regions: vec!["eu-west".into()],
        interval: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        alert_after: Some(prost_types::Duration { seconds: 3, nanos: 0 }),
        ..Default::default()
    };
    hub.upsert_target(spec).await.unwrap();
    let sent = Instant::now();
    hub.ingest("agent-1", "eu-west", 1, vec![refused()]).await.unwrap();

    let incidents = hub.incidents(URL, true, 10).await.unwrap();
    assert_eq!(incidents.len(), 1, "the incident opens at once");
    let kinds = |alerts: &[vantage_coordinator::alert::AlertRecord]| -> Vec<String> {
        alerts.iter().map(|r| r.alert.kind.as_str().to_owned()).collect()
    };
    assert!(kinds(&hub.alerts(URL, 10).await.unwrap()).is_empty(), "the down waits for alert_after");
    let down = loop {
        let alerts = hub.alerts(URL, 10).await.unwrap();
        if !alerts.is_empty() {
            break alerts;
        }
        assert!(sent.elapsed() < Duration::from_secs(10), "no down within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let waited = sent.elapsed();
    assert_eq!(kinds(&down), ["down"]);
    assert!(waited >= Duration::from_millis(2_900), "held for alert_after: {waited:?}");
    // Raised once: the next ticks add nothing.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(kinds(&hub.alerts(URL, 10).await.unwrap()), ["down"]);
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
