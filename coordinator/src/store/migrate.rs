//! Bringing a database written by an older version up to date at open. Results stored whole
//! (`results_v1`, with its time index) are moved into the compact tables a bounded transaction
//! at a time: each step takes the oldest rows out of the old table and writes them as rows not yet
//! sealed, so a stop in between resumes where it was. When the old table is empty it is dropped
//! with its index; the first housekeeping pass then seals the moved rows into blocks. Every other
//! table (targets, newest results, verdicts, transitions, incidents, alerts, roll-ups) keeps its
//! encoding and is kept as it is.

use std::time::{Duration, Instant};

use prost::Message;
use redb::{ReadableTableMetadata, TableHandle};
use vantage_proto::v1::HistoryEntry;

use super::db::{Gate, StoreError, corrupt};
use super::results::{StoredResult, Writer};
use super::tables::{HISTORY_INDEX_FROM, HOUSEKEEPING, RESULTS_BY_TIME_V1, RESULTS_V1};

/// Rows one migration step moves (one write transaction).
pub const MIGRATE_STEP_ROWS: usize = 20_000;
/// How often the migration logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Whether an older version's tables are there.
fn has_table(db: &Gate, name: &str) -> Result<bool, StoreError> {
    let txn = db.begin_read()?;
    Ok(txn.list_tables()?.any(|t| t.name() == name))
}

/// Moves results stored whole into the compact tables, if there are any; returns how many.
pub(super) fn migrate_results(db: &Gate) -> Result<u64, StoreError> {
    if !has_table(db, RESULTS_V1.name())? {
        return Ok(0);
    }
    let started = Instant::now();
    let total = db.begin_read()?.open_table(RESULTS_V1)?.len()?;
    tracing::info!(
        rows = total,
        "results stored whole by an older version: moving them to the compact encoding, {MIGRATE_STEP_ROWS} a \
         transaction"
    );
    let (mut moved, mut logged) = (0u64, Instant::now());
    loop {
        let txn = db.begin_write()?;
        let step = {
            let mut old = txn.open_table(RESULTS_V1)?;
            let mut rows = Vec::with_capacity(MIGRATE_STEP_ROWS);
            for row in old.extract_if(|_, _| true)?.take(MIGRATE_STEP_ROWS) {
                let (key, value) = row?;
                let (url, at_ms, _, sequence, index) = key.value();
                let entry = HistoryEntry::decode(value.value()).map_err(corrupt)?;
                rows.push((StoredResult { url: url.to_owned(), at_ms, entry }, sequence, index));
            }
            let mut writer = Writer::open(&txn)?;
            for (result, sequence, index) in &rows {
                // The newest result per target and region is already in its own table.
                writer.insert(result, *sequence, *index, false)?;
            }
            rows.len()
        };
        super::compact::count_stored(&txn, step as i64)?;
        txn.commit()?;
        moved += step as u64;
        if step < MIGRATE_STEP_ROWS {
            break;
        }
        if logged.elapsed() >= PROGRESS_EVERY {
            tracing::info!(moved, rows = total, "moving results to the compact encoding");
            logged = Instant::now();
        }
    }
    let txn = db.begin_write()?;
    txn.delete_table(RESULTS_V1)?;
    txn.delete_table(RESULTS_BY_TIME_V1)?;
    txn.open_table(HOUSEKEEPING)?.remove(HISTORY_INDEX_FROM)?;
    txn.commit()?;
    tracing::info!(
        moved,
        took_ms = started.elapsed().as_millis() as u64,
        "results moved to the compact encoding; the old tables are dropped (housekeeping seals the rows into blocks)"
    );
    Ok(moved)
}
