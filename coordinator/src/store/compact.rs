//! Giving freed space back: after housekeeping removed a lot, redb's `compact` moves the pages in
//! use to the front of the file and truncates it. It needs the database to itself, so it takes the
//! gate (`db::Gate`) exclusively: transactions wait to begin until it is over, those under way
//! end first. Ingest waits meanwhile (agents keep their results and resend; nothing is lost); the
//! pause is logged and measured by `cargo bench -p vantage-coordinator --bench storage`.

use std::time::{Duration, Instant};

use redb::ReadableTable;

use super::db::{Store, StoreError};
use super::tables::{HOUSEKEEPING, RESULTS_STORED};

/// A housekeeping pass compacts the file after it when it removed at least this many results and
/// at least half as many as are left (a third of what there was): a lowered retention, many
/// targets removed. Steady state removes a sliver (an hour of a week) and writes as much again
/// into the pages it freed, so it does not compact. (The migration from results stored whole
/// compacts once it is over, before the coordinator serves.)
pub const COMPACT_AFTER_RESULTS: u64 = 100_000;
/// Longest compaction waits for transactions under way to end before it gives up (and the next
/// large pass tries again).
const COMPACT_WAIT: Duration = Duration::from_secs(5);

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// How long transactions could not begin.
    pub paused: Duration,
}

impl Store {
    /// The database file's size in bytes.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// How many results are stored.
    pub fn results_stored(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HOUSEKEEPING)?;
        let stored = table.get(RESULTS_STORED)?.and_then(|v| v.value().try_into().ok()).map(u64::from_le_bytes);
        Ok(stored.unwrap_or(0))
    }

    /// Compacts the file if a housekeeping pass that removed `removed` results was a large prune
    /// (see [`COMPACT_AFTER_RESULTS`]).
    pub fn compact_after(&self, removed: u64) -> Result<Option<Compacted>, StoreError> {
        if removed < COMPACT_AFTER_RESULTS || removed < self.results_stored()? / 2 {
            return Ok(None);
        }
        self.compact()
    }

    /// Compacts the file; `None` when transactions under way did not end within `COMPACT_WAIT`.
    pub fn compact(&self) -> Result<Option<Compacted>, StoreError> {
        let bytes_before = self.file_bytes();
        let started = Instant::now();
        let mut db = self.db.exclusive();
        loop {
            match db.compact() {
                Ok(_) => break,
                Err(redb::CompactionError::TransactionInProgress) if started.elapsed() < COMPACT_WAIT => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(redb::CompactionError::TransactionInProgress) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        drop(db);
        let compacted = Compacted { bytes_before, bytes_after: self.file_bytes(), paused: started.elapsed() };
        tracing::info!(
            bytes_before = compacted.bytes_before,
            bytes_after = compacted.bytes_after,
            paused_ms = compacted.paused.as_millis() as u64,
            "store compacted: freed space given back to the file system"
        );
        Ok(Some(compacted))
    }
}

/// Adds `delta` to the count of stored results, in `txn`.
pub(super) fn count_stored(txn: &redb::WriteTransaction, delta: i64) -> Result<(), StoreError> {
    if delta == 0 {
        return Ok(());
    }
    let mut table = txn.open_table(HOUSEKEEPING)?;
    let stored = table.get(RESULTS_STORED)?.and_then(|v| v.value().try_into().ok()).map_or(0, u64::from_le_bytes);
    let stored = stored.saturating_add_signed(delta);
    table.insert(RESULTS_STORED, stored.to_le_bytes().as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::ProbeStatus;

    use super::*;
    use crate::store::housekeeping::Pruning;
    use crate::store::testing::{prune, record_every, result, temp_dir};

    #[test]
    fn compaction_gives_freed_space_back_and_writers_wait_for_it_then_go_on() {
        let dir = temp_dir("compact");
        let store = std::sync::Arc::new(Store::open(&dir).unwrap());
        let urls: Vec<String> = (0..20).map(|i| format!("https://t{i}.example/")).collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        record_every(&store, &urls, &["eu", "us", "ap"], 6 * 3_600_000, 60_000);
        let mut pruning = Pruning::new(i64::MAX, i64::MIN, i64::MIN);
        pruning.seal_before = i64::MIN;
        assert_eq!(store.results_stored().unwrap(), 20 * 3 * 361);
        assert_eq!(store.compact_after(20 * 3 * 361).unwrap(), None, "nothing removed yet: no compaction");
        assert_eq!(prune(&store, pruning, 10_000).results, 20 * 3 * 361);
        assert_eq!(store.results_stored().unwrap(), 0);
        let full = store.file_bytes();
        // A writer arriving during compaction waits for it, then commits.
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1));
                let batch = [result("https://late.example/", "eu", 1, ProbeStatus::Up)];
                store.record_batch("late", 1, &batch).unwrap()
            })
        };
        let compacted = store.compact().unwrap().expect("nothing holds a transaction for long");
        writer.join().unwrap();
        assert_eq!(compacted.bytes_before, full);
        assert!(compacted.bytes_after < full / 2, "{compacted:?}");
        assert_eq!(store.history("https://late.example/", None, i64::MIN, i64::MAX, 10).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
