//! Helpers the store's tests share: a fresh directory, results and history to write, a whole
//! housekeeping pass, and a check that the time indexes hold exactly their tables' rows.

use std::time::Duration;

use prost::Message;
use redb::ReadableTable;
use vantage_proto::v1::{HistoryEntry, Incident, ProbeResult, ProbeStatus};

use super::db::Store;
use super::housekeeping::{Pruned, Pruning};
use super::results::StoredResult;
use super::tables::{INCIDENTS, INCIDENTS_CLOSED, TRANSITIONS, TRANSITIONS_BY_TIME};
use crate::clock::{ms, timestamp};

pub(super) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs a whole pass of `pruning`, `max_rows` per step; returns what it did.
pub(super) fn prune(store: &Store, mut pruning: Pruning, max_rows: usize) -> Pruned {
    while !store.prune_step(&mut pruning, max_rows, Duration::MAX).unwrap() {}
    pruning.done
}

/// Every transition in its time index and nothing else, and the same for closed incidents.
pub(super) fn assert_indexes_consistent(store: &Store) {
    let txn = store.db.begin_read().unwrap();
    let mut transitions: Vec<(i64, String)> = txn
        .open_table(TRANSITIONS)
        .unwrap()
        .iter()
        .unwrap()
        .map(|row| {
            let (key, _) = row.unwrap();
            let (url, at) = key.value();
            (at, url.to_owned())
        })
        .collect();
    transitions.sort();
    let by_time: Vec<(i64, String)> = txn
        .open_table(TRANSITIONS_BY_TIME)
        .unwrap()
        .iter()
        .unwrap()
        .map(|row| {
            let (key, _) = row.unwrap();
            let (at, url) = key.value();
            (at, url.to_owned())
        })
        .collect();
    assert_eq!(transitions, by_time, "the transitions' time index holds exactly them");
    let mut closed: Vec<(i64, String, i64)> = txn
        .open_table(INCIDENTS)
        .unwrap()
        .iter()
        .unwrap()
        .filter_map(|row| {
            let (key, value) = row.unwrap();
            let (url, opened) = key.value();
            let closed = Incident::decode(value.value()).unwrap().closed?;
            Some((ms(&closed), url.to_owned(), opened))
        })
        .collect();
    closed.sort();
    let index: Vec<(i64, String, i64)> = txn
        .open_table(INCIDENTS_CLOSED)
        .unwrap()
        .iter()
        .unwrap()
        .map(|row| {
            let (key, _) = row.unwrap();
            let (at, url, opened) = key.value();
            (at, url.to_owned(), opened)
        })
        .collect();
    assert_eq!(closed, index, "the closed incidents' index holds exactly them");
}

pub(super) fn result(url: &str, region: &str, at_ms: i64, status: ProbeStatus) -> StoredResult {
    let entry = HistoryEntry {
        region: region.into(),
        agent: format!("agent-{region}"),
        result: Some(ProbeResult {
            url: url.into(),
            status: status as i32,
            checked_at: Some(timestamp(at_ms)),
            ..Default::default()
        }),
        ..Default::default()
    };
    StoredResult { url: url.into(), at_ms, entry }
}

/// A result with what a user reads set: certificate, chain, TLS, timings (to the µs) and, when
/// not up, a failure.
pub(super) fn rich_result(url: &str, region: &str, at_ms: i64, status: ProbeStatus) -> StoredResult {
    use vantage_proto::v1::{Certificate, ChainCertificate, Failure, Timings};
    let mut stored = result(url, region, at_ms, status);
    let r = stored.entry.result.as_mut().unwrap();
    r.cert = Some(Certificate {
        subject: "CN=a.example".into(),
        sans: vec!["a.example".into()],
        not_after: Some(timestamp(9_000_000_000_000)),
        days_remaining: 90 - at_ms / 86_400_000,
        health: 1,
        sha256: "ab".repeat(32),
        chain: vec![ChainCertificate { subject: "CN=CA".into(), sha256: "cd".repeat(32), ..Default::default() }],
        ..Default::default()
    });
    r.tls_version = "TLSv1.3".into();
    r.http_status = if status == ProbeStatus::Up { 200 } else { 503 };
    r.timings = Some(Timings {
        dns_ms: Some(1.001),
        connect_ms: None,
        tls_ms: Some(5.5),
        ttfb_ms: Some((at_ms % 97) as f64 / 8.0),
        total_ms: 20.0 + (at_ms % 13) as f64,
    });
    if status != ProbeStatus::Up {
        r.failure =
            Some(Failure { stage: 5, code: "http_status".into(), message: "HTTP 503".into(), ..Default::default() });
    }
    stored
}

/// Batches of `result`s: `urls` × `regions` every `every_ms` from 0 to `until_ms`, one batch (of
/// agent `agent`) per time.
pub(super) fn record_every(store: &Store, urls: &[&str], regions: &[&str], until_ms: i64, every_ms: i64) -> usize {
    let mut rows = 0;
    for (sequence, at) in (0..=until_ms).step_by(every_ms as usize).enumerate() {
        let batch: Vec<StoredResult> =
            urls.iter().flat_map(|u| regions.iter().map(move |r| result(u, r, at, ProbeStatus::Up))).collect();
        rows += batch.len();
        store.record_batch("agent", sequence as u64 + 1, &batch).unwrap();
    }
    rows
}

pub(super) fn history_times(store: &Store, urls: &[&str]) -> Vec<i64> {
    let mut times: Vec<i64> = urls
        .iter()
        .flat_map(|u| store.history(u, None, i64::MIN, i64::MAX, usize::MAX).unwrap())
        .map(|r| r.at_ms)
        .collect();
    times.sort();
    times
}
