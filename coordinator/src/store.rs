//! The coordinator's durable state in one redb file, behind domain words: targets, agents,
//! results (history and the newest per target and region), verdicts with their transitions,
//! incidents, and alerting's records. No redb type leaves this module. Calls block: run them off
//! the async threads.
//!
//! One file per concern, each an `impl Store` block beside its records: `targets`, `results`
//! (batches, history, newest), `agents` (agents, sequences, revocations, regions), `verdicts`
//! (verdicts, transitions, incidents), `alerts` (outbox, deliveries, alert memory, silences),
//! `uptime` (availability roll-ups per day), `latency` (latency roll-ups per hour),
//! `housekeeping` (pruning in bounded steps), `seal`
//! (its work on results, a target at a time), `time_index` (the indexes it walks) and `compact`
//! (giving freed space back). The tables are declared once in `tables`; the handle and its
//! errors are in `db`; `migrate` brings an older version's database up to date at open.
//!
//! Results are stored compact (README, "Storage and retention"): a target's URL and the names of
//! regions and agents are interned into numeric ids (`ids`); each result is a row of what
//! changes from probe to probe (`codec`: time, region, agent, status, HTTP status, stage timings,
//! the certificate's days left and health) and a reference to what it shares with the target's
//! other results that day (certificate facts and chain, TLS parameters, backends, a failure's
//! text: `FACTS`, once per distinct value). Rows of the open hour are stored one by one
//! (`RECENT`); housekeeping seals a closed hour's rows of a target into one delta-encoded block
//! (`BLOCKS`, about 15 bytes a healthy result). The newest result per target and region is kept
//! whole (`LATEST`).

mod agents;
mod alerts;
mod codec;
mod compact;
mod db;
mod housekeeping;
mod ids;
mod latency;
mod migrate;
mod results;
mod seal;
mod tables;
mod targets;
#[cfg(test)]
mod testing;
mod time_index;
mod uptime;
mod verdicts;

use std::path::Path;

use redb::Database;

pub use agents::{AgentRecord, RegionRecord, Revocation};
pub use compact::{COMPACT_AFTER_RESULTS, Compacted};
pub use db::{Store, StoreError};
pub use housekeeping::{PRUNE_STEP_ROWS, PRUNE_STEP_TIME, Pruned, Pruning};
pub use latency::{LATENCY_PASS_TIME, LatencyHours, LatencyPass};
pub use migrate::MIGRATE_STEP_ROWS;
pub use results::{BatchOutcome, StoredResult};
pub use seal::SEAL_AFTER;
pub use uptime::{OpinionChange, Rolled, TargetRollups};
pub use verdicts::{CLOSED_RECOVERED, CLOSED_REMOVED, IncidentChange, IncidentGroup, VerdictRecord};

/// The page cache's default size (`serve --cache-size`): redb keeps the pages it reads and writes
/// up to this much, and the coordinator's memory grows by as much once the store is busy.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl Store {
    /// Opens (or creates) `vantage.redb` in `dir` with the default page cache.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) `vantage.redb` in `dir` with a page cache of `cache_bytes`, creating
    /// missing tables and bringing indexes and records from older versions up to date.
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::DataDir { path: dir.display().to_string(), source })?;
        let path = dir.join("vantage.redb");
        let db = Database::builder().set_cache_size(cache_bytes).create(&path)?;
        let store = Store::new(db, path);
        let txn = store.db.begin_write()?;
        txn.open_table(tables::TARGETS)?;
        txn.open_table(tables::LATEST)?;
        txn.open_table(tables::VERDICTS)?;
        txn.open_table(tables::TARGET_IDS)?;
        txn.open_table(tables::TARGET_URLS)?;
        txn.open_table(tables::NAME_IDS)?;
        txn.open_table(tables::NAMES)?;
        txn.open_table(tables::FACTS)?;
        txn.open_table(tables::RECENT)?;
        txn.open_table(tables::BLOCKS)?;
        txn.open_table(tables::HOUSEKEEPING)?;
        agents::open_tables(&txn)?;
        time_index::open_time_indexes(&txn)?;
        alerts::open_tables(&txn)?;
        uptime::open_tables(&txn)?;
        latency::open_tables(&txn)?;
        txn.commit()?;
        if migrate::migrate_results(&store.db)? > 0 {
            // The old tables' pages are free: give them back before serving.
            store.compact()?;
        }
        Ok(store)
    }
}
