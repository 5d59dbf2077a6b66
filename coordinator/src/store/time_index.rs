//! The time-ordered indexes that let housekeeping find the oldest rows without a scan: of history
//! rows, verdict transitions and closed incidents. Opening brings them up to date for a database
//! written before them; the history's index is built by housekeeping, in steps.

use std::ops::Bound;

use prost::Message;
use redb::{ReadableTable, ReadableTableMetadata};
use vantage_proto::v1::Incident;

use super::db::{StoreError, corrupt};
use super::tables::{
    HISTORY_INDEX_FROM, HOUSEKEEPING, INCIDENTS, INCIDENTS_CLOSED, RESULTS, RESULTS_BY_TIME, TRANSITIONS,
    TRANSITIONS_BY_TIME,
};
use crate::clock::ms;

/// Opens the time-ordered indexes and brings them up to date for a database written before them
/// (or by an older binary since, which wrote rows without them). Transitions and closed
/// incidents (a row per verdict change or outage) are indexed here, at once; the history, which
/// may hold millions of rows, is left to housekeeping to index in steps ([`Store::prune_step`]),
/// so start-up does not wait for it.
pub(super) fn open_time_indexes(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let results = txn.open_table(RESULTS)?;
    let results_by_time = txn.open_table(RESULTS_BY_TIME)?;
    let mut housekeeping = txn.open_table(HOUSEKEEPING)?;
    if results.len()? != results_by_time.len()? && housekeeping.get(HISTORY_INDEX_FROM)?.is_none() {
        tracing::info!(
            rows = results.len()?,
            indexed = results_by_time.len()?,
            "history rows not yet indexed by time (a database from an older version): housekeeping indexes them \
             in steps before pruning them"
        );
        housekeeping.insert(HISTORY_INDEX_FROM, [].as_slice())?;
    }
    let transitions = txn.open_table(TRANSITIONS)?;
    let mut transitions_by_time = txn.open_table(TRANSITIONS_BY_TIME)?;
    if transitions.len()? != transitions_by_time.len()? {
        transitions_by_time.retain(|_, _| false)?;
        for row in transitions.iter()? {
            let (key, _) = row?;
            let (url, at) = key.value();
            transitions_by_time.insert((at, url), ())?;
        }
    }
    let incidents = txn.open_table(INCIDENTS)?;
    let mut closed_index = txn.open_table(INCIDENTS_CLOSED)?;
    let mut closed = Vec::new();
    for row in incidents.iter()? {
        let (key, value) = row?;
        let (url, opened) = key.value();
        if let Some(at) = Incident::decode(value.value()).map_err(corrupt)?.closed {
            closed.push((ms(&at), url.to_owned(), opened));
        }
    }
    if closed.len() as u64 != closed_index.len()? {
        closed_index.retain(|_, _| false)?;
        for (at, url, opened) in &closed {
            closed_index.insert((*at, url.as_str(), *opened), ())?;
        }
    }
    Ok(())
}

/// A history key, owned.
type HistoryKey = (String, i64, String, u64, u32);

/// Indexes up to `max` history rows from before the time index, from where the last step ended;
/// `None` when no such build is under way, else the rows indexed and whether the build is over.
pub(super) fn index_history(txn: &redb::WriteTransaction, max: usize) -> Result<Option<(u64, bool)>, StoreError> {
    let mut housekeeping = txn.open_table(HOUSEKEEPING)?;
    let Some(from) = housekeeping.get(HISTORY_INDEX_FROM)?.map(|v| v.value().to_vec()) else { return Ok(None) };
    let from: Option<HistoryKey> =
        if from.is_empty() { None } else { Some(serde_json::from_slice(&from).map_err(corrupt)?) };
    let results = txn.open_table(RESULTS)?;
    let mut by_time = txn.open_table(RESULTS_BY_TIME)?;
    let rows = match &from {
        Some((url, at, region, sequence, index)) => {
            let after = (url.as_str(), *at, region.as_str(), *sequence, *index);
            results.range::<(&str, i64, &str, u64, u32)>((Bound::Excluded(after), Bound::Unbounded))?
        }
        None => results.iter()?,
    };
    let mut last: Option<HistoryKey> = None;
    let mut count = 0u64;
    for row in rows.take(max) {
        let (key, _) = row?;
        let (url, at, region, sequence, index) = key.value();
        by_time.insert((at, url, region, sequence, index), ())?;
        last = Some((url.to_owned(), at, region.to_owned(), sequence, index));
        count += 1;
    }
    let finished = count < max as u64;
    match last.filter(|_| !finished) {
        Some(last) => {
            housekeeping.insert(HISTORY_INDEX_FROM, serde_json::to_vec(&last).map_err(corrupt)?.as_slice())?
        }
        None => housekeeping.remove(HISTORY_INDEX_FROM)?,
    };
    Ok(Some((count, finished)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use redb::ReadableDatabase;
    use vantage_proto::v1::ProbeStatus;

    use super::*;
    use crate::clock::timestamp;
    use crate::store::db::Store;
    use crate::store::housekeeping::Pruning;
    use crate::store::testing::{assert_indexes_consistent, history_times, record_history, result, temp_dir};
    use crate::store::verdicts::{IncidentChange, VerdictRecord};

    #[test]
    fn a_database_from_before_the_time_indexes_is_indexed_in_steps_then_pruned() {
        let dir = temp_dir("prune-upgrade");
        let urls = ["https://a.example/", "https://b.example/"];
        let u = urls[0];
        let total = {
            let store = Store::open(&dir).unwrap();
            let total = record_history(&store, &urls, &["eu"], 2_900); // 60 rows
            let down = VerdictRecord { verdict: "DOWN".into(), cause: None, since_ms: 1_000, failing_regions: vec![] };
            let incident = Incident { url: u.into(), opened: Some(timestamp(1_000)), ..Default::default() };
            store.record_changes(&[(u.into(), down, IncidentChange::Open(incident))], &[], &[]).unwrap();
            let up = VerdictRecord { verdict: "UP".into(), cause: None, since_ms: 2_000, failing_regions: vec![] };
            store.record_changes(&[(u.into(), up, IncidentChange::Close { at_ms: 2_000 })], &[], &[]).unwrap();
            // As written by a version without the indexes.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(RESULTS_BY_TIME).unwrap();
            txn.delete_table(TRANSITIONS_BY_TIME).unwrap();
            txn.delete_table(INCIDENTS_CLOSED).unwrap();
            txn.delete_table(HOUSEKEEPING).unwrap();
            txn.commit().unwrap();
            total
        };
        let store = Store::open(&dir).unwrap();
        {
            let txn = store.db.begin_read().unwrap();
            assert!(txn.open_table(RESULTS_BY_TIME).unwrap().is_empty().unwrap(), "history waits for housekeeping");
            assert!(txn.open_table(HOUSEKEEPING).unwrap().get(HISTORY_INDEX_FROM).unwrap().is_some());
            assert_eq!(txn.open_table(TRANSITIONS_BY_TIME).unwrap().len().unwrap(), 2, "indexed at open");
            assert_eq!(txn.open_table(INCIDENTS_CLOSED).unwrap().len().unwrap(), 1, "indexed at open");
        }
        let mut pruning = Pruning::new(1_050, 1_500, i64::MIN);
        let mut indexed_per_step = Vec::new();
        loop {
            let before = pruning.done.indexed;
            let over = store.prune_step(&mut pruning, 7, Duration::MAX).unwrap();
            indexed_per_step.push(pruning.done.indexed - before);
            if indexed_per_step.len() == 1 {
                // Ingest goes on while the index is built: its rows are indexed as they are written.
                let batch = [result(u, "eu", 5_000, ProbeStatus::Up)];
                store.record_batch("late", 1, &batch).unwrap();
            }
            if over {
                break;
            }
        }
        assert!(indexed_per_step.iter().all(|n| *n <= 7), "{indexed_per_step:?}");
        assert!(indexed_per_step.len() >= total / 7, "the build went in steps: {indexed_per_step:?}");
        assert!(pruning.done.indexed >= total as u64);
        // 0..=1_000 every 100 ms for two targets.
        assert_eq!((pruning.done.results, pruning.done.transitions, pruning.done.incidents), (22, 1, 0));
        let times = history_times(&store, &urls);
        assert_eq!(times.len(), total + 1 - 22);
        assert!(times.iter().all(|t| *t > 1_000));
        assert_indexes_consistent(&store);
        let txn = store.db.begin_read().unwrap();
        assert!(txn.open_table(HOUSEKEEPING).unwrap().get(HISTORY_INDEX_FROM).unwrap().is_none(), "build over");
        drop(txn);
        drop(store);
        // Once built, opening again starts no new build.
        let store = Store::open(&dir).unwrap();
        let txn = store.db.begin_read().unwrap();
        assert!(txn.open_table(HOUSEKEEPING).unwrap().get(HISTORY_INDEX_FROM).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
