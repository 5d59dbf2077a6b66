//! Writes a small data directory through the store's public API: three targets, two hours of
//! results from two regions (one target failing for twenty minutes), the verdict changes, the
//! incident and the alerts of that outage, and the regions' opinions availability rolls up.
//!
//! It made `coordinator/tests/fixtures/store-v1.redb`, the database the migration test opens:
//! built and run on the version before compact results (commit 6ed4cec), which stored results
//! whole (`results_v1`):
//!
//! ```text
//! cargo run -p vantage-coordinator --no-default-features --example store_fixture -- DIR
//! ```
//!
//! It uses only what both versions have, so it runs on either (on this one it writes compact
//! results, for comparing).

use vantage_coordinator::alert::{Alert, AlertKind, AlertRecord, Delivery, DeliveryState};
use vantage_coordinator::clock::timestamp;
use vantage_coordinator::store::{IncidentChange, OpinionChange, Store, StoredResult, VerdictRecord};
use vantage_coordinator::uptime::State;
use vantage_proto::v1::{
    Certificate, ChainCertificate, Failure, HistoryEntry, Incident, ProbeResult, ProbeStatus, TargetSpec, Timings,
};

/// 2025-11-20T00:00:00Z.
const BASE: i64 = 1_763_596_800_000;
const MINUTE: i64 = 60_000;
pub const TARGETS: [&str; 3] = ["https://shop.example/", "https://api.example/", "https://idle.example/"];
const REGIONS: [&str; 2] = ["eu-west", "us-east"];
/// `api` is down from this minute to `UP_AT`.
const DOWN_AT: i64 = 40;
const UP_AT: i64 = 60;

fn result(url: &str, region: &str, minute: i64, offset_ms: i64) -> StoredResult {
    let at_ms = BASE + minute * MINUTE + offset_ms;
    let failing = url == TARGETS[1] && (DOWN_AT..UP_AT).contains(&minute);
    let jitter = (minute * 37 + offset_ms) % 11;
    let entry = HistoryEntry {
        region: region.into(),
        agent: format!("agent-{region}"),
        result: Some(ProbeResult {
            url: url.into(),
            status: if failing { ProbeStatus::Down } else { ProbeStatus::Up } as i32,
            failure: failing.then(|| Failure {
                stage: 5,
                code: "http_status".into(),
                message: "the server answered HTTP 503".into(),
                hint: "Look at the server's own logs for why it refused".into(),
                detail: "503 Service Unavailable".into(),
            }),
            cert: Some(Certificate {
                subject: format!("CN={}", &url[8..url.len() - 1]),
                issuer: "CN=Example CA".into(),
                sans: vec![url[8..url.len() - 1].into()],
                not_before: Some(timestamp(BASE - 30 * 86_400_000)),
                not_after: Some(timestamp(BASE + 60 * 86_400_000)),
                days_remaining: 60,
                health: 1,
                sha256: format!("{:064x}", url.len()),
                earliest_expiry: Some(timestamp(BASE + 60 * 86_400_000)),
                key: "EC P-256".into(),
                signature_algorithm: "ecdsa-with-SHA256".into(),
                chain: vec![ChainCertificate {
                    subject: "CN=Example CA".into(),
                    issuer: "CN=Example Root".into(),
                    not_after: Some(timestamp(BASE + 900 * 86_400_000)),
                    sha256: format!("{:064x}", 7),
                }],
            }),
            tls_version: "TLSv1.3".into(),
            tls_cipher: "TLS13_AES_128_GCM_SHA256".into(),
            alpn: "h2".into(),
            http_status: if failing { 503 } else { 200 },
            timings: Some(Timings {
                dns_ms: Some(1.5 + jitter as f64 / 10.0),
                connect_ms: Some(10.25),
                tls_ms: Some(20.125),
                ttfb_ms: Some(30.0 + jitter as f64),
                total_ms: 62.0 + jitter as f64,
            }),
            backends: vec![],
            checked_at: Some(timestamp(at_ms)),
        }),
        ..Default::default()
    };
    StoredResult { url: url.into(), at_ms, entry }
}

fn alert(kind: AlertKind, at_ms: i64) -> AlertRecord {
    let mut alert = Alert::new(kind, TARGETS[1], at_ms, format!("{}|{kind:?}", TARGETS[1]));
    alert.since_ms = BASE + DOWN_AT * MINUTE;
    alert.regions = REGIONS.iter().map(|r| r.to_string()).collect();
    alert.of_regions = 2;
    AlertRecord {
        alert,
        deliveries: vec![Delivery {
            channel: "hook".into(),
            state: DeliveryState::Delivered,
            attempts: 1,
            last_error: String::new(),
            next_attempt_ms: at_ms,
            delivered_ms: at_ms + 150,
        }],
        silenced_by: None,
    }
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: store_fixture DIR");
    write(std::path::Path::new(&dir));
    println!("wrote {dir}/vantage.redb: 3 targets, 480 results, 1 incident, 2 alerts");
}

/// Writes the fixture's records into a store in `dir`.
pub fn write(dir: &std::path::Path) {
    let store = Store::open(dir).expect("open the store");
    let specs: Vec<TargetSpec> = TARGETS
        .iter()
        .map(|u| TargetSpec { url: (*u).into(), quorum: 1, source: "api".into(), ..Default::default() })
        .collect();
    store.upsert_targets(&specs).unwrap();
    for minute in 0..120 {
        for (r, region) in REGIONS.iter().enumerate() {
            let batch: Vec<StoredResult> =
                TARGETS[..2].iter().map(|u| result(u, region, minute, 1_000 + r as i64 * 17_000)).collect();
            store.record_batch(&format!("agent-{region}"), minute as u64 + 1, &batch).unwrap();
        }
    }
    let (down_ms, up_ms) = (BASE + (DOWN_AT + 1) * MINUTE, BASE + (UP_AT + 1) * MINUTE);
    let verdict = |v: &str, at: i64, failing: Vec<String>| VerdictRecord {
        verdict: v.into(),
        cause: (v == "DOWN").then(|| "http_status".into()),
        since_ms: at,
        failing_regions: failing,
    };
    let opinions = |state: State, at_ms: i64| -> Vec<OpinionChange> {
        REGIONS
            .iter()
            .map(|r| OpinionChange { url: TARGETS[1].into(), region: (*r).into(), state: Some(state), at_ms })
            .collect()
    };
    let up = |url: &str| (url.to_owned(), verdict("UP", BASE, vec![]), IncidentChange::None);
    store
        .record_event_with_opinions(&[], &[up(TARGETS[0]), up(TARGETS[1])], &[], &[], &[], &opinions(State::Up, BASE))
        .unwrap();
    let incident = Incident {
        url: TARGETS[1].into(),
        opened: Some(timestamp(down_ms)),
        regions: REGIONS.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    let failing = REGIONS.iter().map(|r| r.to_string()).collect();
    store
        .record_event_with_opinions(
            &[],
            &[(TARGETS[1].into(), verdict("DOWN", down_ms, failing), IncidentChange::Open(incident))],
            &[],
            &[alert(AlertKind::Down, down_ms)],
            &[],
            &opinions(State::Down, down_ms),
        )
        .unwrap();
    store
        .record_event_with_opinions(
            &[],
            &[(TARGETS[1].into(), verdict("UP", up_ms, vec![]), IncidentChange::Close { at_ms: up_ms })],
            &[],
            &[alert(AlertKind::Recovered, up_ms)],
            &[],
            &opinions(State::Up, up_ms),
        )
        .unwrap();
}
