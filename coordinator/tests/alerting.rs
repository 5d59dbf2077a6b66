//! Certificate alerts through the real hub and store: a warning once per certificate however
//! often it is seen, critical once when it crosses that threshold too, a renewed certificate
//! starting afresh (and announced as changed), and the alerts surviving in the outbox.

use vantage_coordinator::clock::now_ms;
use vantage_coordinator::serve::{self, ServeOptions};
use vantage_proto::v1::{CertHealth, Certificate, HistoryEntry, ProbeResult, ProbeStatus, TargetSpec};

const URL: &str = "https://shop.alerting.test/";

fn seen(fingerprint: &str, days: i64, health: CertHealth) -> (String, HistoryEntry) {
    let result = ProbeResult {
        url: URL.into(),
        status: ProbeStatus::Up as i32,
        cert: Some(Certificate {
            sha256: fingerprint.into(),
            days_remaining: days,
            health: health as i32,
            subject: "CN=shop.alerting.test".into(),
            ..Default::default()
        }),
        checked_at: Some(vantage_coordinator::clock::timestamp(now_ms())),
        ..Default::default()
    };
    (URL.into(), HistoryEntry { result: Some(result), ..Default::default() })
}

#[tokio::test]
async fn certificate_thresholds_alert_once_per_certificate() {
    let dir = std::env::temp_dir().join(format!("vantage-alerting-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let running = serve::start(ServeOptions::local("127.0.0.1:0".parse().unwrap(), dir.clone())).await.unwrap();
    let hub = running.hub.clone();
    let spec = TargetSpec { url: URL.into(), regions: vec!["eu-west".into()], ..Default::default() };
    hub.upsert_target(spec).await.unwrap();

    let (old, new) = ("aa".repeat(32), "bb".repeat(32));
    let sightings = [
        (&old, 40, CertHealth::Ok),
        (&old, 29, CertHealth::Warning),
        (&old, 28, CertHealth::Warning),
        (&old, 20, CertHealth::Warning),
        (&old, 6, CertHealth::Critical),
        (&old, 5, CertHealth::Critical),
        (&new, 89, CertHealth::Ok),
        (&old, 5, CertHealth::Critical), // a backend still serving the old one: no repeat
        (&new, 25, CertHealth::Warning),
    ];
    for (sequence, (fingerprint, days, health)) in sightings.into_iter().enumerate() {
        let batch = vec![seen(fingerprint, days, health)];
        hub.ingest("agent-1", "eu-west", sequence as u64 + 1, batch).await.unwrap();
    }
    let mut alerts = hub.alerts(URL, 100).await.unwrap();
    alerts.reverse(); // oldest first
    let kinds: Vec<(&str, Option<&str>)> =
        alerts.iter().map(|r| (r.alert.kind.as_str(), r.alert.fingerprint.as_deref())).collect();
    assert_eq!(
        kinds,
        [
            ("cert_warning", Some(old.as_str())),
            ("cert_critical", Some(old.as_str())),
            ("cert_changed", Some(new.as_str())),
            ("cert_warning", Some(new.as_str())),
        ]
    );
    assert_eq!(alerts[2].alert.previous_fingerprint.as_deref(), Some(old.as_str()));
    // Warning and critical of one certificate share a dedup key, which its change resolves.
    assert_eq!(alerts[0].alert.dedup_key, alerts[1].alert.dedup_key);
    assert_eq!(alerts[1].alert.dedup_key, alerts[2].alert.dedup_key);
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
