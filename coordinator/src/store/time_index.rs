//! The time-ordered indexes that let housekeeping find the oldest rows without a scan: of verdict
//! transitions and closed incidents. Opening brings them up to date for a database written before
//! them. (Results need none: housekeeping walks them by target id, see `seal`.)

use prost::Message;
use redb::{ReadableTable, ReadableTableMetadata};
use vantage_proto::v1::Incident;

use super::db::{StoreError, corrupt};
use super::tables::{INCIDENTS, INCIDENTS_CLOSED, TRANSITIONS, TRANSITIONS_BY_TIME};
use crate::clock::ms;

/// Opens the time-ordered indexes and brings them up to date for a database written before them
/// (or by an older binary since, which wrote rows without them): transitions and closed incidents
/// (a row per verdict change or outage) are indexed here, at once.
pub(super) fn open_time_indexes(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::timestamp;
    use crate::store::db::Store;
    use crate::store::housekeeping::Pruning;
    use crate::store::testing::{assert_indexes_consistent, prune, temp_dir};
    use crate::store::verdicts::{IncidentChange, VerdictRecord};

    #[test]
    fn a_database_from_before_the_time_indexes_is_indexed_at_open_then_pruned() {
        let dir = temp_dir("prune-upgrade");
        let u = "https://a.example/";
        {
            let store = Store::open(&dir).unwrap();
            let down = VerdictRecord { verdict: "DOWN".into(), cause: None, since_ms: 1_000, failing_regions: vec![] };
            let incident = Incident { url: u.into(), opened: Some(timestamp(1_000)), ..Default::default() };
            store.record_changes(&[(u.into(), down, IncidentChange::Open(incident))], &[], &[]).unwrap();
            let up = VerdictRecord { verdict: "UP".into(), cause: None, since_ms: 2_000, failing_regions: vec![] };
            store.record_changes(&[(u.into(), up, IncidentChange::Close { at_ms: 2_000 })], &[], &[]).unwrap();
            // As written by a version without the indexes.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(TRANSITIONS_BY_TIME).unwrap();
            txn.delete_table(INCIDENTS_CLOSED).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(&dir).unwrap();
        {
            let txn = store.db.begin_read().unwrap();
            assert_eq!(txn.open_table(TRANSITIONS_BY_TIME).unwrap().len().unwrap(), 2, "indexed at open");
            assert_eq!(txn.open_table(INCIDENTS_CLOSED).unwrap().len().unwrap(), 1, "indexed at open");
        }
        assert_indexes_consistent(&store);
        let done = prune(&store, Pruning::new(i64::MIN, 1_500, i64::MIN), 7);
        assert_eq!((done.transitions, done.incidents), (1, 0));
        assert_indexes_consistent(&store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
