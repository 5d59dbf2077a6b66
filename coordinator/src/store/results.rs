//! Results: each agent batch committed once (its sequence drops redeliveries), as history rows
//! (with their place in the time index) and as the newest result per target and region.

use prost::Message;
use redb::{ReadableDatabase, ReadableTable};
use vantage_proto::v1::HistoryEntry;

use super::db::{Store, StoreError, corrupt};
use super::tables::{LATEST, RESULTS, RESULTS_BY_TIME, SEQUENCES};
use crate::clock::entry_ms;

/// One result as stored: which target, when, and the entry the API returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    pub url: String,
    pub at_ms: i64,
    pub entry: HistoryEntry,
}

/// Whether a batch was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    Committed,
    /// Already committed earlier (a redelivery); nothing was written.
    Duplicate,
}

impl Store {
    /// Commits one agent batch in one write transaction: the history rows, the newest result per
    /// (target, region) where these are newer, and the agent's sequence. A sequence at or below
    /// the last committed one is a redelivery and writes nothing.
    pub fn record_batch(
        &self,
        agent: &str,
        sequence: u64,
        results: &[StoredResult],
    ) -> Result<BatchOutcome, StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut sequences = txn.open_table(SEQUENCES)?;
            if sequences.get(agent)?.is_some_and(|last| last.value() >= sequence) {
                return Ok(BatchOutcome::Duplicate);
            }
            sequences.insert(agent, sequence)?;
            let mut history = txn.open_table(RESULTS)?;
            let mut by_time = txn.open_table(RESULTS_BY_TIME)?;
            let mut latest = txn.open_table(LATEST)?;
            for (index, result) in results.iter().enumerate() {
                let bytes = result.entry.encode_to_vec();
                let region = result.entry.region.as_str();
                history
                    .insert((result.url.as_str(), result.at_ms, region, sequence, index as u32), bytes.as_slice())?;
                by_time.insert((result.at_ms, result.url.as_str(), region, sequence, index as u32), ())?;
                let newer = match latest.get((result.url.as_str(), region))? {
                    Some(current) => {
                        let current = HistoryEntry::decode(current.value()).map_err(corrupt)?;
                        entry_ms(&current) <= result.at_ms
                    }
                    None => true,
                };
                if newer {
                    latest.insert((result.url.as_str(), region), bytes.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(BatchOutcome::Committed)
    }

    /// The newest result of every (target, region).
    pub fn latest(&self) -> Result<Vec<StoredResult>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LATEST)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let entry = HistoryEntry::decode(value.value()).map_err(corrupt)?;
            out.push(StoredResult { url: key.value().0.to_owned(), at_ms: entry_ms(&entry), entry });
        }
        Ok(out)
    }

    /// The newest result of each region for one target.
    pub fn latest_of(&self, url: &str) -> Result<Vec<StoredResult>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LATEST)?;
        let mut out = Vec::new();
        for row in table.range((url, "")..=(url, "\u{10ffff}"))? {
            let (_, value) = row?;
            let entry = HistoryEntry::decode(value.value()).map_err(corrupt)?;
            out.push(StoredResult { url: url.to_owned(), at_ms: entry_ms(&entry), entry });
        }
        Ok(out)
    }

    /// A target's results between two times (Unix ms, inclusive), newest first, optionally
    /// for one region.
    pub fn history(
        &self,
        url: &str,
        region: Option<&str>,
        since_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredResult>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RESULTS)?;
        let mut out = Vec::new();
        let range = table.range((url, since_ms, "", 0u64, 0u32)..=(url, until_ms, "\u{10ffff}", u64::MAX, u32::MAX))?;
        for row in range.rev() {
            let (key, value) = row?;
            let (_, at_ms, row_region, _, _) = key.value();
            if region.is_some_and(|r| r != row_region) {
                continue;
            }
            let entry = HistoryEntry::decode(value.value()).map_err(corrupt)?;
            out.push(StoredResult { url: url.to_owned(), at_ms, entry });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::ProbeStatus;

    use super::*;
    use crate::store::housekeeping::Pruning;
    use crate::store::testing::{prune, result, temp_dir};

    #[test]
    fn batches_commit_once_and_survive_reopening() {
        let dir = temp_dir("batches");
        let u = "https://a.example/";
        {
            let store = Store::open(&dir).unwrap();
            let batch = vec![result(u, "eu", 1_000, ProbeStatus::Up), result(u, "us", 1_500, ProbeStatus::Down)];
            assert_eq!(store.record_batch("agent-1", 7, &batch).unwrap(), BatchOutcome::Committed);
            assert_eq!(store.record_batch("agent-1", 7, &batch).unwrap(), BatchOutcome::Duplicate);
            assert_eq!(store.record_batch("agent-1", 6, &batch).unwrap(), BatchOutcome::Duplicate);
            // An older result redelivered later does not replace the newest.
            let late = vec![result(u, "eu", 500, ProbeStatus::Down)];
            assert_eq!(store.record_batch("agent-1", 8, &late).unwrap(), BatchOutcome::Committed);
        }
        let store = Store::open(&dir).unwrap();
        let history = store.history(u, None, 0, i64::MAX, 10).unwrap();
        assert_eq!(
            history.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            vec![1_500, 1_000, 500],
            "newest first, no duplicates"
        );
        assert_eq!(store.history(u, Some("eu"), 0, i64::MAX, 10).unwrap().len(), 2);
        assert_eq!(store.history(u, None, 600, 1_200, 10).unwrap().len(), 1);
        let mut latest = store.latest().unwrap();
        latest.sort_by_key(|r| r.entry.region.clone());
        assert_eq!(latest.iter().map(|r| r.at_ms).collect::<Vec<_>>(), vec![1_000, 1_500]);
        assert_eq!(prune(&store, Pruning::new(1_200, i64::MIN, i64::MIN), 100).results, 2);
        assert_eq!(store.history(u, None, 0, i64::MAX, 10).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
