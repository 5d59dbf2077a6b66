//! The coordinator's durable state in one redb file, behind domain words: targets, agents,
//! results (history and the newest per target and region), verdicts with their transitions, and
//! incidents. No redb type leaves this module. Calls block: run them off the async threads.
//!
//! Housekeeping removes what aged out a bounded step at a time ([`Store::prune_step`]): each step
//! is one short write transaction that walks a time-ordered index from its oldest end, so it
//! never scans a whole table and an ingest commit waits at most one step behind it.

use std::ops::Bound;
use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use vantage_proto::v1::{HistoryEntry, Incident, TargetSpec};

use crate::alert::{AlertRecord, Delivery, Silence};

// Table names carry a version suffix; a change of encoding gets a new table.
const TARGETS: TableDefinition<&str, &[u8]> = TableDefinition::new("targets_v1");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents_v1");
/// Last committed batch sequence per agent name, for dropping redelivered batches.
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("agent_sequences_v1");
/// (url, region) → newest result.
const LATEST: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("latest_v1");
/// (url, checked_at ms, region, agent sequence, index in batch) → result.
const RESULTS: TableDefinition<(&str, i64, &str, u64, u32), &[u8]> = TableDefinition::new("results_v1");
/// (checked_at ms, url, region, agent sequence, index in batch) of every history row: the
/// results' keys in time order, so pruning finds the oldest rows without a scan. Databases from
/// before it are indexed by housekeeping in steps (see `HISTORY_INDEX_FROM`).
const RESULTS_BY_TIME: TableDefinition<(i64, &str, &str, u64, u32), ()> = TableDefinition::new("results_by_time_v1");
const VERDICTS: TableDefinition<&str, &[u8]> = TableDefinition::new("verdicts_v1");
/// (url, at ms) → the verdict entered then.
const TRANSITIONS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("transitions_v1");
/// (at ms, url) of every transition, for pruning.
const TRANSITIONS_BY_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("transitions_by_time_v1");
/// (url, opened ms) → incident.
const INCIDENTS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("incidents_v1");
/// (closed ms, url, opened ms) of every closed incident, for pruning.
const INCIDENTS_CLOSED: TableDefinition<(i64, &str, i64), ()> = TableDefinition::new("incidents_closed_v1");
/// Housekeeping's own bookkeeping: key → value.
const HOUSEKEEPING: TableDefinition<&str, &[u8]> = TableDefinition::new("housekeeping_v1");
/// In `HOUSEKEEPING` while history rows from before `RESULTS_BY_TIME` are being indexed: the
/// last results key indexed (JSON; empty before the first step).
const HISTORY_INDEX_FROM: &str = "history_index_from";

/// Most rows one housekeeping step removes (or indexes), so the write transaction it holds stays
/// short: an ingest commit waits behind at most one step. Each removed history row dirties a page
/// of its own (history is kept in target order, pruned in time order), which the next synced
/// commit writes out; the hub sizes steps below this by the time they take
/// (`hub::PRUNE_STEP_TARGET`).
/// Measured with `cargo bench -p vantage-coordinator --bench prune` (README, "Benchmarks").
pub const PRUNE_STEP_ROWS: usize = 10_000;
/// Most time one step spends removing history rows before it commits what it has (a loaded
/// machine slows a step down however few its rows).
pub const PRUNE_STEP_TIME: Duration = Duration::from_millis(10);
/// Revoked agent certificates: SHA-256 fingerprint (hex) → `Revocation`.
const REVOKED: TableDefinition<&str, &[u8]> = TableDefinition::new("revoked_certs_v1");
/// The alert outbox: id → `AlertRecord` (JSON).
const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts_v1");
/// (at ms, id) of every alert, for listing newest first.
const ALERT_ORDER: TableDefinition<(i64, &str), ()> = TableDefinition::new("alert_order_v1");
/// (subject, at ms, id) of every alert: one target's alerts, newest last, without a scan.
const ALERT_BY_SUBJECT: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("alert_by_subject_v1");
/// Ids of alerts with deliveries still pending.
const ALERT_PENDING: TableDefinition<&str, ()> = TableDefinition::new("alert_pending_v1");
/// What alerting remembers between events (certificate thresholds crossed, silent regions, …):
/// key → JSON.
const ALERT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("alert_state_v1");
/// Silences: id → `Silence` (JSON).
const SILENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("silences_v1");
/// The regions agents have connected from: name → `RegionRecord` (JSON).
const REGIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("regions_v1");

// redb's errors are carried as text beside their kind (not as sources), so each is told once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(redb::DatabaseError),
    #[error("storage: {0}")]
    Storage(redb::StorageError),
    #[error("transaction: {0}")]
    Transaction(redb::TransactionError),
    #[error("table: {0}")]
    Table(redb::TableError),
    #[error("commit: {0}")]
    Commit(redb::CommitError),
    #[error("durability: {0}")]
    Durability(redb::SetDurabilityError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
}

/// What the store remembers about an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    pub region: String,
    pub version: String,
    pub last_seen_ms: i64,
    /// The client certificate of its latest session (empty and 0 without mTLS).
    #[serde(default)]
    pub cert_sha256: String,
    #[serde(default)]
    pub cert_not_after_ms: i64,
}

/// What the store remembers about a region: when an agent of it was last connected, and whether
/// it has left the default region set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRecord {
    pub name: String,
    /// When an agent of it was last connected (written at connects, disconnects, and now and
    /// then while one is).
    pub last_seen_ms: i64,
    /// When it left the default region set; `None` while it is in it.
    #[serde(default)]
    pub forgotten_ms: Option<i64>,
}

/// A revoked agent certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The identity it carried, when known.
    pub identity: String,
    pub revoked_at_ms: i64,
}

/// A target's current verdict, as last decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictRecord {
    /// `UP`, `DEGRADED`, `DOWN` or `UNKNOWN`.
    pub verdict: String,
    pub cause: Option<String>,
    pub since_ms: i64,
    pub failing_regions: Vec<String>,
}

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

/// One pass of housekeeping: what goes (everything from before each cutoff, Unix ms), how far
/// the pass has got, and what it did so far. [`Store::prune_step`] applies it one bounded write
/// transaction at a time.
#[derive(Debug, Clone)]
pub struct Pruning {
    /// Results checked before this.
    pub results_before: i64,
    /// Verdict transitions entered before this, and incidents closed before it.
    pub events_before: i64,
    /// Alerts raised before this whose deliveries are all settled, and silences that ended
    /// before it.
    pub alerts_before: i64,
    stage: PruneStage,
    pub done: Pruned,
    /// How long the last step held the write lock (from the transaction's start to its commit).
    pub last_step: Duration,
}

impl Pruning {
    pub fn new(results_before: i64, events_before: i64, alerts_before: i64) -> Pruning {
        Pruning {
            results_before,
            events_before,
            alerts_before,
            stage: PruneStage::IndexHistory,
            done: Pruned::default(),
            last_step: Duration::ZERO,
        }
    }
}

/// What a pass of housekeeping did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// History rows from before the time index, indexed.
    pub indexed: u64,
    pub results: u64,
    pub transitions: u64,
    pub incidents: u64,
    pub alerts: u64,
    pub silences: u64,
    /// Write transactions it took.
    pub steps: u64,
}

/// Where a pass of housekeeping is, in the order it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PruneStage {
    /// Indexing history rows from before the time index (only after an upgrade).
    IndexHistory,
    Results,
    Transitions,
    Incidents,
    /// Settled alerts, walking the (at, id) order after this key: pending ones are stepped over.
    Alerts(Option<(i64, String)>),
    Silences,
    Done,
}

impl PruneStage {
    fn next(&self) -> PruneStage {
        match self {
            PruneStage::IndexHistory => PruneStage::Results,
            PruneStage::Results => PruneStage::Transitions,
            PruneStage::Transitions => PruneStage::Incidents,
            PruneStage::Incidents => PruneStage::Alerts(None),
            PruneStage::Alerts(_) => PruneStage::Silences,
            PruneStage::Silences | PruneStage::Done => PruneStage::Done,
        }
    }
}

/// What a verdict change does to incidents.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentChange {
    None,
    Open(Incident),
    /// Close the target's open incident at this time.
    Close {
        at_ms: i64,
    },
}

pub struct Store {
    db: Database,
    /// The first storage failure (an I/O error, a failed commit). redb refuses every later
    /// operation until the database is reopened, so the coordinator stops on it (see
    /// `Running::wait`) and its service manager starts it afresh.
    failed: std::sync::OnceLock<String>,
    failure: tokio::sync::Notify,
}

macro_rules! from_redb {
    ($($source:ty => $variant:ident),*) => {
        $(impl From<$source> for StoreError {
            fn from(e: $source) -> Self {
                StoreError::$variant(e)
            }
        })*
    };
}

from_redb!(
    redb::DatabaseError => Database,
    redb::StorageError => Storage,
    redb::TransactionError => Transaction,
    redb::TableError => Table,
    redb::CommitError => Commit,
    redb::SetDurabilityError => Durability
);

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Store {
    /// Opens (or creates) `vantage.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::DataDir { path: dir.display().to_string(), source })?;
        let db = Database::create(dir.join("vantage.redb"))?;
        let txn = db.begin_write()?;
        {
            txn.open_table(TARGETS)?;
            txn.open_table(AGENTS)?;
            txn.open_table(SEQUENCES)?;
            txn.open_table(LATEST)?;
            txn.open_table(VERDICTS)?;
            open_time_indexes(&txn)?;
            txn.open_table(REVOKED)?;
            txn.open_table(ALERTS)?;
            txn.open_table(ALERT_ORDER)?;
            let mut by_subject = txn.open_table(ALERT_BY_SUBJECT)?;
            // Databases from before the index (or written by a binary from before it since): build it
            // again whenever it does not hold every alert.
            let alerts = txn.open_table(ALERTS)?;
            if by_subject.len()? != alerts.len()? {
                by_subject.retain(|_, _| false)?;
                for row in alerts.iter()? {
                    let (id, value) = row?;
                    let record: AlertRecord = serde_json::from_slice(value.value()).map_err(corrupt)?;
                    by_subject.insert((record.alert.subject.as_str(), record.alert.at_ms, id.value()), ())?;
                }
            }
            txn.open_table(ALERT_PENDING)?;
            txn.open_table(ALERT_STATE)?;
            txn.open_table(SILENCES)?;
            let mut regions = txn.open_table(REGIONS)?;
            // Databases from before region records: each region its agents came from, last seen
            // when its agents last were.
            if regions.is_empty()? {
                let mut seen: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
                for row in txn.open_table(AGENTS)?.iter()? {
                    let agent: AgentRecord = serde_json::from_slice(row?.1.value()).map_err(corrupt)?;
                    let last = seen.entry(agent.region).or_insert(agent.last_seen_ms);
                    *last = (*last).max(agent.last_seen_ms);
                }
                for (name, last_seen_ms) in seen {
                    let record = RegionRecord { name, last_seen_ms, forgotten_ms: None };
                    regions.insert(record.name.as_str(), serde_json::to_vec(&record).map_err(corrupt)?.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(Store { db, failed: std::sync::OnceLock::new(), failure: tokio::sync::Notify::new() })
    }

    /// Remembers `error` if it means the storage failed (not a refusal or a corrupt record), and
    /// wakes whoever waits in [`Store::failed`].
    pub fn note(&self, error: &StoreError) {
        if matches!(error, StoreError::Storage(_) | StoreError::Commit(_) | StoreError::Transaction(_))
            && self.failed.set(error.to_string()).is_ok()
        {
            tracing::error!(%error, "the store failed");
            self.failure.notify_waiters();
        }
    }

    /// The storage failure, if there was one.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// Waits until the storage fails, and says how.
    pub async fn failed(&self) -> String {
        loop {
            let notified = self.failure.notified();
            if let Some(error) = self.failure() {
                return error.to_owned();
            }
            notified.await;
        }
    }

    /// Inserts or replaces a target; true when it is new.
    pub fn upsert_target(&self, spec: &TargetSpec) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let created = txn.open_table(TARGETS)?.insert(spec.url.as_str(), spec.encode_to_vec().as_slice())?.is_none();
        txn.commit()?;
        Ok(created)
    }

    /// Inserts or replaces many targets in one transaction (a config file's).
    pub fn upsert_targets(&self, specs: &[TargetSpec]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(TARGETS)?;
            for spec in specs {
                table.insert(spec.url.as_str(), spec.encode_to_vec().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes a target and its current verdict and newest results (history stays until it
    /// ages out); true when it existed.
    pub fn delete_target(&self, url: &str) -> Result<bool, StoreError> {
        self.remove_target(url, &[], &[])
    }

    /// `delete_target`, with the alerts its removal sends and alerting's memory changes, in one
    /// transaction: the resolves are queued exactly when the target is gone. Its open incident
    /// is closed as `removed`.
    pub fn remove_target(
        &self,
        url: &str,
        alerts: &[AlertRecord],
        state: &[(String, Option<Vec<u8>>)],
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(TARGETS)?.remove(url)?.is_some();
        txn.open_table(VERDICTS)?.remove(url)?;
        txn.open_table(LATEST)?.retain_in((url, "")..(url, "\u{10ffff}"), |_, _| false)?;
        // An open incident of a target that is gone is over.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        close_incidents(&txn, url, now, CLOSED_REMOVED)?;
        Self::write_alerts(&txn, alerts, state)?;
        txn.commit()?;
        Ok(existed)
    }

    pub fn targets(&self) -> Result<Vec<TargetSpec>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TARGETS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            out.push(TargetSpec::decode(value.value()).map_err(corrupt)?);
        }
        Ok(out)
    }

    pub fn record_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        let bytes = serde_json::to_vec(agent).map_err(corrupt)?;
        txn.open_table(AGENTS)?.insert(agent.name.as_str(), bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Writes region records (one transaction).
    pub fn put_regions(&self, records: &[RegionRecord]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(REGIONS)?;
            for record in records {
                table.insert(record.name.as_str(), serde_json::to_vec(record).map_err(corrupt)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn regions(&self) -> Result<Vec<RegionRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REGIONS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(serde_json::from_slice(row?.1.value()).map_err(corrupt)?);
        }
        Ok(out)
    }

    /// Records a revoked certificate; false when it already was.
    pub fn revoke(&self, sha256: &str, revocation: &Revocation) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let created = {
            let mut table = txn.open_table(REVOKED)?;
            let known = table.get(sha256)?.is_some();
            if !known {
                table.insert(sha256, serde_json::to_vec(revocation).map_err(corrupt)?.as_slice())?;
            }
            !known
        };
        txn.commit()?;
        Ok(created)
    }

    /// Fingerprints of every revoked certificate.
    pub fn revoked(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REVOKED)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(row?.0.value().to_owned());
        }
        Ok(out)
    }

    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AGENTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            out.push(serde_json::from_slice(value.value()).map_err(corrupt)?);
        }
        Ok(out)
    }

    /// The newest batch sequence committed for `agent` (0 for none).
    pub fn last_sequence(&self, agent: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(SEQUENCES)?.get(agent)?.map_or(0, |s| s.value()))
    }

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

    /// Makes every commit so far durable (one empty synced commit): ends a housekeeping pass,
    /// whose steps do not sync, so its work is on disk even if no ingest commit follows.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.begin_write()?.commit()?;
        Ok(())
    }

    /// One step of `pruning`: one write transaction that indexes or removes at most `max_rows`
    /// rows of one kind, oldest first (history rows for at most `max_time`, then it commits).
    /// Returns true once the pass is over. Between steps other writers (ingest) get the
    /// database, so none waits longer than one step.
    ///
    /// A step commits without syncing the file (redb's `Durability::None`): the next ingest
    /// commit, which syncs, makes it durable with its own, so a step holds the write lock only
    /// for its work, not for a disk flush. A crash in between loses only removals that the next
    /// pass does again.
    pub fn prune_step(&self, pruning: &mut Pruning, max_rows: usize, max_time: Duration) -> Result<bool, StoreError> {
        let max = max_rows.max(1);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        let began = Instant::now();
        let done = &mut pruning.done;
        // (rows written, whether the stage is over)
        let (rows, finished) = match &pruning.stage {
            PruneStage::IndexHistory => match index_history(&txn, max)? {
                Some((rows, finished)) => {
                    done.indexed += rows;
                    // The position moved (or the build ended): always written.
                    (rows.max(1), finished)
                }
                None => (0, true),
            },
            PruneStage::Results => {
                let (rows, finished) = prune_results(&txn, pruning.results_before, max, max_time)?;
                done.results += rows;
                (rows, finished)
            }
            PruneStage::Transitions => {
                let rows = prune_transitions(&txn, pruning.events_before, max)?;
                done.transitions += rows;
                (rows, rows < max as u64)
            }
            PruneStage::Incidents => {
                let rows = prune_incidents(&txn, pruning.events_before, max)?;
                done.incidents += rows;
                (rows, rows < max as u64)
            }
            PruneStage::Alerts(after) => {
                let (rows, next) = prune_alerts(&txn, pruning.alerts_before, after.as_ref(), max)?;
                done.alerts += rows;
                let finished = next.is_none();
                pruning.stage = PruneStage::Alerts(next);
                (rows, finished)
            }
            PruneStage::Silences => {
                let before = pruning.alerts_before;
                let mut silences = txn.open_table(SILENCES)?;
                let mut rows = 0;
                // Few rows (silences are made by hand or in the config): one step.
                silences.retain(|_, value| {
                    let keep = serde_json::from_slice::<Silence>(value).map_or(true, |s| s.end_ms >= before);
                    rows += u64::from(!keep);
                    keep
                })?;
                done.silences += rows;
                (rows, true)
            }
            PruneStage::Done => (0, true),
        };
        if rows > 0 {
            txn.commit()?;
            done.steps += 1;
        } else {
            txn.abort()?;
        }
        pruning.last_step = began.elapsed();
        if finished {
            pruning.stage = pruning.stage.next();
        }
        Ok(pruning.stage == PruneStage::Done)
    }

    /// Refreshes the stored last-seen time of the agents `seen` now (so that after a restart a
    /// long-lived connection does not look old), and forgets the `gone` agents (their record and
    /// batch sequence) whose stored last-seen time is before `before_ms`; one that connected again
    /// meanwhile is kept. Returns the names forgotten. Agents are few: one transaction.
    pub fn sweep_agents(
        &self,
        seen: &[AgentRecord],
        gone: &[String],
        before_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut forgotten = Vec::new();
        {
            let mut agents = txn.open_table(AGENTS)?;
            let mut sequences = txn.open_table(SEQUENCES)?;
            for agent in seen {
                agents.insert(agent.name.as_str(), serde_json::to_vec(agent).map_err(corrupt)?.as_slice())?;
            }
            for name in gone {
                let stored: Option<AgentRecord> = match agents.get(name.as_str())? {
                    Some(value) => Some(serde_json::from_slice(value.value()).map_err(corrupt)?),
                    None => None,
                };
                if stored.is_some_and(|a| a.last_seen_ms < before_ms) {
                    agents.remove(name.as_str())?;
                    sequences.remove(name.as_str())?;
                    forgotten.push(name.clone());
                }
            }
        }
        txn.commit()?;
        Ok(forgotten)
    }

    /// Verdict changes (each with its transition and incident change), the alerts they cause and
    /// alerting's state changes (`None` deletes the key), all in one transaction: an alert is
    /// queued exactly when its cause is recorded.
    pub fn record_changes(
        &self,
        verdicts: &[(String, VerdictRecord, IncidentChange)],
        alerts: &[AlertRecord],
        state: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        for (url, record, incident) in verdicts {
            Self::write_verdict(&txn, url, record, incident)?;
        }
        Self::write_alerts(&txn, alerts, state)?;
        txn.commit()?;
        Ok(())
    }

    fn write_alerts(
        txn: &redb::WriteTransaction,
        alerts: &[AlertRecord],
        state: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), StoreError> {
        {
            let mut table = txn.open_table(ALERTS)?;
            let mut order = txn.open_table(ALERT_ORDER)?;
            let mut by_subject = txn.open_table(ALERT_BY_SUBJECT)?;
            let mut pending = txn.open_table(ALERT_PENDING)?;
            for record in alerts {
                let id = record.alert.id.as_str();
                table.insert(id, serde_json::to_vec(record).map_err(corrupt)?.as_slice())?;
                order.insert((record.alert.at_ms, id), ())?;
                by_subject.insert((record.alert.subject.as_str(), record.alert.at_ms, id), ())?;
                if record.pending() {
                    pending.insert(id, ())?;
                }
            }
            let mut kv = txn.open_table(ALERT_STATE)?;
            for (key, value) in state {
                match value {
                    Some(bytes) => kv.insert(key.as_str(), bytes.as_slice())?,
                    None => kv.remove(key.as_str())?,
                };
            }
        }
        Ok(())
    }

    /// Writes back delivery attempts, each into its alert's record (by alert id and channel), so
    /// what other channels' attempts of the same alert wrote meanwhile is kept.
    pub fn record_deliveries(&self, deliveries: &[(String, Delivery)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ALERTS)?;
            let mut pending = txn.open_table(ALERT_PENDING)?;
            for (id, delivery) in deliveries {
                let Some(value) = table.get(id.as_str())? else { continue }; // pruned meanwhile
                let mut record: AlertRecord = serde_json::from_slice(value.value()).map_err(corrupt)?;
                drop(value);
                for slot in record.deliveries.iter_mut().filter(|d| d.channel == delivery.channel) {
                    *slot = delivery.clone();
                }
                table.insert(id.as_str(), serde_json::to_vec(&record).map_err(corrupt)?.as_slice())?;
                if record.pending() {
                    pending.insert(id.as_str(), ())?;
                } else {
                    pending.remove(id.as_str())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Alerts with deliveries still to make.
    pub fn pending_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let pending = txn.open_table(ALERT_PENDING)?;
        let table = txn.open_table(ALERTS)?;
        let mut out = Vec::new();
        for row in pending.iter()? {
            let (id, _) = row?;
            if let Some(value) = table.get(id.value())? {
                out.push(serde_json::from_slice(value.value()).map_err(corrupt)?);
            }
        }
        Ok(out)
    }

    /// The newest `limit` alerts (of one subject, when `subject` is not empty).
    pub fn alerts(&self, subject: &str, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ALERTS)?;
        let ids: Vec<String> = if subject.is_empty() {
            let order = txn.open_table(ALERT_ORDER)?;
            order
                .iter()?
                .rev()
                .take(limit)
                .map(|row| Ok(row?.0.value().1.to_owned()))
                .collect::<Result<_, StoreError>>()?
        } else {
            let by_subject = txn.open_table(ALERT_BY_SUBJECT)?;
            let rows = by_subject.range((subject, i64::MIN, "")..(subject, i64::MAX, ""))?;
            rows.rev().take(limit).map(|row| Ok(row?.0.value().2.to_owned())).collect::<Result<_, StoreError>>()?
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(value) = table.get(id.as_str())? {
                out.push(serde_json::from_slice(value.value()).map_err(corrupt)?);
            }
        }
        Ok(out)
    }

    /// Alerting's remembered state.
    pub fn alert_state(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ALERT_STATE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            out.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }

    pub fn put_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(SILENCES)?
            .insert(silence.id.as_str(), serde_json::to_vec(silence).map_err(corrupt)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Replaces every silence that came from the config file.
    pub fn replace_config_silences(&self, silences: &[Silence]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SILENCES)?;
            let old: Vec<String> = table
                .iter()?
                .filter_map(Result::ok)
                .filter_map(|(k, v)| {
                    let s: Silence = serde_json::from_slice(v.value()).ok()?;
                    (s.source == "config").then(|| k.value().to_owned())
                })
                .collect();
            for id in old {
                table.remove(id.as_str())?;
            }
            for silence in silences {
                table.insert(silence.id.as_str(), serde_json::to_vec(silence).map_err(corrupt)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn delete_silence(&self, id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let deleted = txn.open_table(SILENCES)?.remove(id)?.is_some();
        txn.commit()?;
        Ok(deleted)
    }

    pub fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SILENCES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(serde_json::from_slice(row?.1.value()).map_err(corrupt)?);
        }
        Ok(out)
    }

    fn write_verdict(
        txn: &redb::WriteTransaction,
        url: &str,
        record: &VerdictRecord,
        incident: &IncidentChange,
    ) -> Result<(), StoreError> {
        {
            let bytes = serde_json::to_vec(record).map_err(corrupt)?;
            txn.open_table(VERDICTS)?.insert(url, bytes.as_slice())?;
            txn.open_table(TRANSITIONS)?.insert((url, record.since_ms), bytes.as_slice())?;
            txn.open_table(TRANSITIONS_BY_TIME)?.insert((record.since_ms, url), ())?;
            match incident {
                IncidentChange::None => {}
                IncidentChange::Open(new) => {
                    let opened = new.opened.as_ref().map_or(record.since_ms, ms);
                    txn.open_table(INCIDENTS)?.insert((url, opened), new.encode_to_vec().as_slice())?;
                }
                IncidentChange::Close { at_ms } => close_incidents(txn, url, *at_ms, CLOSED_RECOVERED)?,
            }
        }
        Ok(())
    }

    pub fn verdicts(&self) -> Result<Vec<(String, VerdictRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(VERDICTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            out.push((key.value().to_owned(), serde_json::from_slice(value.value()).map_err(corrupt)?));
        }
        Ok(out)
    }

    /// A target's verdict transitions, oldest first.
    pub fn transitions(&self, url: &str) -> Result<Vec<VerdictRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TRANSITIONS)?;
        let mut out = Vec::new();
        for row in table.range((url, i64::MIN)..=(url, i64::MAX))? {
            let (_, value) = row?;
            out.push(serde_json::from_slice(value.value()).map_err(corrupt)?);
        }
        Ok(out)
    }

    /// The newest `limit` incidents: of one target, or of all when `url` is empty.
    pub fn incidents(&self, url: &str, open_only: bool, limit: usize) -> Result<Vec<Incident>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INCIDENTS)?;
        let mut out = Vec::new();
        // Keyed by (url, opened): one target's incidents are one range, newest last.
        let (rows, one_target) = if url.is_empty() {
            (table.iter()?, false)
        } else {
            (table.range((url, i64::MIN)..=(url, i64::MAX))?, true)
        };
        for row in rows.rev() {
            let (_, value) = row?;
            let incident = Incident::decode(value.value()).map_err(corrupt)?;
            if !open_only || incident.closed.is_none() {
                out.push(incident);
                if one_target && out.len() >= limit {
                    break;
                }
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.opened.map(|t| (t.seconds, t.nanos))));
        out.truncate(limit);
        Ok(out)
    }
}

/// `Incident.closed_reason` of an incident closed by the target's `UP`.
pub const CLOSED_RECOVERED: &str = "recovered";
/// … and of one closed because its target was removed.
pub const CLOSED_REMOVED: &str = "removed";

/// Closes every open incident of `url` at `at_ms`, for `reason`.
fn close_incidents(txn: &redb::WriteTransaction, url: &str, at_ms: i64, reason: &str) -> Result<(), StoreError> {
    let mut incidents = txn.open_table(INCIDENTS)?;
    let mut closed = txn.open_table(INCIDENTS_CLOSED)?;
    let open: Vec<(i64, Incident)> = incidents
        .range((url, i64::MIN)..=(url, i64::MAX))?
        .filter_map(Result::ok)
        .filter_map(|(k, v)| Some((k.value().1, Incident::decode(v.value()).ok()?)))
        .filter(|(_, i)| i.closed.is_none())
        .collect();
    for (opened, mut incident) in open {
        incident.closed = Some(timestamp(at_ms));
        incident.closed_reason = reason.to_owned();
        incidents.insert((url, opened), incident.encode_to_vec().as_slice())?;
        closed.insert((at_ms, url, opened), ())?;
    }
    Ok(())
}

/// Opens the time-ordered indexes and brings them up to date for a database written before them
/// (or by an older binary since, which wrote rows without them). Transitions and closed
/// incidents (a row per verdict change or outage) are indexed here, at once; the history, which
/// may hold millions of rows, is left to housekeeping to index in steps ([`Store::prune_step`]),
/// so start-up does not wait for it.
fn open_time_indexes(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
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
fn index_history(txn: &redb::WriteTransaction, max: usize) -> Result<Option<(u64, bool)>, StoreError> {
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

/// Removes up to `max` of the oldest history rows checked before `before_ms`, for at most
/// `max_time`; returns how many, and whether none older is left.
fn prune_results(
    txn: &redb::WriteTransaction,
    before_ms: i64,
    max: usize,
    max_time: Duration,
) -> Result<(u64, bool), StoreError> {
    let started = Instant::now();
    let mut by_time = txn.open_table(RESULTS_BY_TIME)?;
    let mut results = txn.open_table(RESULTS)?;
    let old: Vec<(i64, String, String, u64, u32)> = by_time
        .range(..(before_ms, "", "", 0u64, 0u32))?
        .take(max)
        .map(|row| {
            let (key, _) = row?;
            let (at, url, region, sequence, index) = key.value();
            Ok((at, url.to_owned(), region.to_owned(), sequence, index))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut removed = 0;
    for (at, url, region, sequence, index) in &old {
        results.remove((url.as_str(), *at, region.as_str(), *sequence, *index))?;
        removed += 1;
        if started.elapsed() >= max_time {
            break;
        }
    }
    // Oldest first, so the index loses a prefix: one sweep.
    if let Some((at, url, region, sequence, index)) = old.get(removed.max(1) - 1) {
        by_time.retain_in(..=(*at, url.as_str(), region.as_str(), *sequence, *index), |_, _| false)?;
    }
    Ok((removed as u64, old.len() < max && removed == old.len()))
}

/// Removes up to `max` of the oldest verdict transitions entered before `before_ms`.
fn prune_transitions(txn: &redb::WriteTransaction, before_ms: i64, max: usize) -> Result<u64, StoreError> {
    let mut by_time = txn.open_table(TRANSITIONS_BY_TIME)?;
    let mut transitions = txn.open_table(TRANSITIONS)?;
    let old: Vec<(i64, String)> = by_time
        .range(..(before_ms, ""))?
        .take(max)
        .map(|row| {
            let (key, _) = row?;
            let (at, url) = key.value();
            Ok((at, url.to_owned()))
        })
        .collect::<Result<_, StoreError>>()?;
    for (at, url) in &old {
        transitions.remove((url.as_str(), *at))?;
        by_time.remove((*at, url.as_str()))?;
    }
    Ok(old.len() as u64)
}

/// Removes up to `max` of the incidents closed longest before `before_ms` (open ones stay).
fn prune_incidents(txn: &redb::WriteTransaction, before_ms: i64, max: usize) -> Result<u64, StoreError> {
    let mut closed = txn.open_table(INCIDENTS_CLOSED)?;
    let mut incidents = txn.open_table(INCIDENTS)?;
    let old: Vec<(i64, String, i64)> = closed
        .range(..(before_ms, "", i64::MIN))?
        .take(max)
        .map(|row| {
            let (key, _) = row?;
            let (at, url, opened) = key.value();
            Ok((at, url.to_owned(), opened))
        })
        .collect::<Result<_, StoreError>>()?;
    for (at, url, opened) in &old {
        incidents.remove((url.as_str(), *opened))?;
        closed.remove((*at, url.as_str(), *opened))?;
    }
    Ok(old.len() as u64)
}

/// Looks at up to `max` alerts raised before `before_ms`, after `after` in time order, and
/// removes those whose deliveries are all settled (with their place in both indexes); returns
/// how many went and where to go on (`None`: no more).
fn prune_alerts(
    txn: &redb::WriteTransaction,
    before_ms: i64,
    after: Option<&(i64, String)>,
    max: usize,
) -> Result<(u64, Option<(i64, String)>), StoreError> {
    let pending = txn.open_table(ALERT_PENDING)?;
    let mut order = txn.open_table(ALERT_ORDER)?;
    let mut by_subject = txn.open_table(ALERT_BY_SUBJECT)?;
    let mut alerts = txn.open_table(ALERTS)?;
    let start = match after {
        Some((at, id)) => Bound::Excluded((*at, id.as_str())),
        None => Bound::Unbounded,
    };
    let seen: Vec<(i64, String)> = order
        .range::<(i64, &str)>((start, Bound::Excluded((before_ms, ""))))?
        .take(max)
        .map(|row| {
            let (key, _) = row?;
            let (at, id) = key.value();
            Ok((at, id.to_owned()))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut removed = 0;
    for (at, id) in &seen {
        if pending.get(id.as_str())?.is_some() {
            continue;
        }
        order.remove((*at, id.as_str()))?;
        if let Some(value) = alerts.remove(id.as_str())? {
            let record: AlertRecord = serde_json::from_slice(value.value()).map_err(corrupt)?;
            by_subject.remove((record.alert.subject.as_str(), *at, id.as_str()))?;
        }
        removed += 1;
    }
    let next = if seen.len() < max { None } else { seen.last().cloned() };
    Ok((removed, next))
}

use crate::clock::{entry_ms, ms, timestamp};

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::v1::{ProbeResult, ProbeStatus};

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vantage-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Runs a whole pass of `pruning`, `max_rows` per step; returns what it did.
    fn prune(store: &Store, mut pruning: Pruning, max_rows: usize) -> Pruned {
        while !store.prune_step(&mut pruning, max_rows, Duration::MAX).unwrap() {}
        pruning.done
    }

    /// Every history row in the time index and nothing else, and the same for transitions and
    /// closed incidents.
    fn assert_indexes_consistent(store: &Store) {
        let txn = store.db.begin_read().unwrap();
        let results: Vec<(i64, String, String, u64, u32)> = txn
            .open_table(RESULTS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|row| {
                let (key, _) = row.unwrap();
                let (url, at, region, sequence, index) = key.value();
                (at, url.to_owned(), region.to_owned(), sequence, index)
            })
            .collect();
        let mut results = results;
        results.sort();
        let by_time: Vec<(i64, String, String, u64, u32)> = txn
            .open_table(RESULTS_BY_TIME)
            .unwrap()
            .iter()
            .unwrap()
            .map(|row| {
                let (key, _) = row.unwrap();
                let (at, url, region, sequence, index) = key.value();
                (at, url.to_owned(), region.to_owned(), sequence, index)
            })
            .collect();
        assert_eq!(results, by_time, "the history's time index holds exactly its rows");
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

    fn result(url: &str, region: &str, at_ms: i64, status: ProbeStatus) -> StoredResult {
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

    /// Batches of `result`s: `urls` × `regions` every 100 ms from 0 to `until_ms`, one batch (of
    /// agent `agent`) per time.
    fn record_history(store: &Store, urls: &[&str], regions: &[&str], until_ms: i64) -> usize {
        let mut rows = 0;
        for (sequence, at) in (0..=until_ms).step_by(100).enumerate() {
            let batch: Vec<StoredResult> =
                urls.iter().flat_map(|u| regions.iter().map(move |r| result(u, r, at, ProbeStatus::Up))).collect();
            rows += batch.len();
            store.record_batch("agent", sequence as u64 + 1, &batch).unwrap();
        }
        rows
    }

    fn history_times(store: &Store, urls: &[&str]) -> Vec<i64> {
        let mut times: Vec<i64> = urls
            .iter()
            .flat_map(|u| store.history(u, None, i64::MIN, i64::MAX, usize::MAX).unwrap())
            .map(|r| r.at_ms)
            .collect();
        times.sort();
        times
    }

    #[test]
    fn history_older_than_the_cutoff_goes_oldest_first_in_bounded_steps_newer_stays() {
        let dir = temp_dir("prune-history");
        let store = Store::open(&dir).unwrap();
        let urls = ["https://a.example/", "https://b.example/", "https://c.example/"];
        let total = record_history(&store, &urls, &["eu", "us"], 3_900);
        assert_eq!(total, 240);
        let latest_before = store.latest().unwrap();
        // Rows at 0, 100, …, 2_000: 21 times × 6.
        let mut pruning = Pruning::new(2_050, i64::MIN, i64::MIN);
        let mut removed_per_step = Vec::new();
        loop {
            let before = pruning.done.results;
            let over = store.prune_step(&mut pruning, 10, Duration::MAX).unwrap();
            removed_per_step.push(pruning.done.results - before);
            if removed_per_step.iter().sum::<u64>() == 20 {
                // Two full steps: the 20 oldest rows (0, 100 and 200 everywhere, 2 of 300) went.
                let times = history_times(&store, &urls);
                assert_eq!((times[0], times.iter().filter(|t| **t == 300).count()), (300, 4), "oldest first");
            }
            if over {
                break;
            }
        }
        assert!(removed_per_step.iter().all(|n| *n <= 10), "no step removes more than its bound: {removed_per_step:?}");
        assert_eq!(pruning.done.results, 126);
        assert_eq!(pruning.done.steps, 13, "12 full steps and one of 6");
        let times = history_times(&store, &urls);
        assert_eq!(times.len(), 240 - 126);
        assert!(times.iter().all(|t| *t >= 2_050), "every row older than the cutoff is gone");
        assert_eq!(times[0], 2_100, "and every newer row is kept");
        assert_eq!(store.latest().unwrap(), latest_before, "the newest result per target and region stays");
        assert_indexes_consistent(&store);
        // Nothing left to remove: no write at all.
        assert_eq!(prune(&store, Pruning::new(2_050, i64::MIN, i64::MIN), 10), Pruned::default());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn old_transitions_and_closed_incidents_are_pruned_open_incidents_kept() {
        let dir = temp_dir("prune-events");
        let store = Store::open(&dir).unwrap();
        let (a, b) = ("https://a.example/", "https://b.example/");
        let verdict =
            |v: &str, at: i64| VerdictRecord { verdict: v.into(), cause: None, since_ms: at, failing_regions: vec![] };
        let open = |url: &str, at: i64| {
            IncidentChange::Open(Incident { url: url.into(), opened: Some(timestamp(at)), ..Default::default() })
        };
        let changes = [
            (a.to_owned(), verdict("DOWN", 1_000), open(a, 1_000)),
            (b.to_owned(), verdict("DOWN", 1_500), open(b, 1_500)),
            (a.to_owned(), verdict("UP", 2_000), IncidentChange::Close { at_ms: 2_000 }),
            (a.to_owned(), verdict("DOWN", 5_000), open(a, 5_000)),
        ];
        for change in changes {
            store.record_changes(&[change], &[], &[]).unwrap();
        }
        assert_indexes_consistent(&store);
        let done = prune(&store, Pruning::new(i64::MIN, 3_000, i64::MIN), 1);
        assert_eq!((done.transitions, done.incidents), (3, 1));
        assert_eq!(store.transitions(a).unwrap(), [verdict("DOWN", 5_000)]);
        assert!(store.transitions(b).unwrap().is_empty());
        let opened: Vec<i64> =
            store.incidents("", false, 10).unwrap().iter().map(|i| ms(i.opened.as_ref().unwrap())).collect();
        assert_eq!(opened, [5_000, 1_500], "open incidents stay, however old");
        assert_indexes_consistent(&store);
        // An incident closed by deleting its target is pruned like any other.
        store.delete_target(b).unwrap();
        assert_indexes_consistent(&store);
        assert_eq!(prune(&store, Pruning::new(i64::MIN, i64::MAX, i64::MIN), 100).incidents, 1);
        assert_eq!(store.incidents(b, false, 10).unwrap(), []);
        let _ = std::fs::remove_dir_all(&dir);
    }

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

    #[test]
    fn agents_gone_too_long_are_forgotten_with_their_sequence_seen_ones_refreshed() {
        let dir = temp_dir("sweep-agents");
        let store = Store::open(&dir).unwrap();
        let agent = |name: &str, last_seen_ms: i64| AgentRecord {
            name: name.into(),
            region: "eu".into(),
            version: "1".into(),
            last_seen_ms,
            cert_sha256: String::new(),
            cert_not_after_ms: 0,
        };
        for (name, seen) in [("gone", 1_000), ("connected", 1_000), ("back", 9_000)] {
            store.record_agent(&agent(name, seen)).unwrap();
            store.record_batch(name, 5, &[]).unwrap();
        }
        // "back" looked gone to the caller but connected again (a newer record) meanwhile.
        let forgotten =
            store.sweep_agents(&[agent("connected", 10_000)], &["gone".into(), "back".into()], 5_000).unwrap();
        assert_eq!(forgotten, ["gone"]);
        let mut left: Vec<(String, i64)> =
            store.agents().unwrap().into_iter().map(|a| (a.name, a.last_seen_ms)).collect();
        left.sort();
        assert_eq!(left, [("back".to_owned(), 9_000), ("connected".to_owned(), 10_000)]);
        assert_eq!(store.last_sequence("gone").unwrap(), 0, "its batch sequence went with it");
        assert_eq!(store.last_sequence("back").unwrap(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn region_records_survive_reopening_and_older_databases_get_them_from_their_agents() {
        let dir = temp_dir("regions");
        let agent = |name: &str, region: &str, last_seen_ms: i64| AgentRecord {
            name: name.into(),
            region: region.into(),
            version: "1".into(),
            last_seen_ms,
            cert_sha256: String::new(),
            cert_not_after_ms: 0,
        };
        {
            let store = Store::open(&dir).unwrap();
            store.record_agent(&agent("a1", "eu", 1_000)).unwrap();
            store.record_agent(&agent("a2", "eu", 3_000)).unwrap();
            store.record_agent(&agent("a3", "us", 2_000)).unwrap();
            // As a database from before region records: none.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(REGIONS).unwrap();
            txn.commit().unwrap();
        }
        {
            let store = Store::open(&dir).unwrap();
            let regions = store.regions().unwrap();
            assert_eq!(
                regions,
                [
                    RegionRecord { name: "eu".into(), last_seen_ms: 3_000, forgotten_ms: None },
                    RegionRecord { name: "us".into(), last_seen_ms: 2_000, forgotten_ms: None },
                ]
            );
            store
                .put_regions(&[RegionRecord { name: "us".into(), last_seen_ms: 2_000, forgotten_ms: Some(9_000) }])
                .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.regions().unwrap()[1].forgotten_ms, Some(9_000), "a forgotten region stays forgotten");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn verdicts_transitions_and_incidents() {
        let dir = temp_dir("verdicts");
        let store = Store::open(&dir).unwrap();
        let u = "https://a.example/";
        let down = VerdictRecord {
            verdict: "DOWN".into(),
            cause: Some("cert_expired".into()),
            since_ms: 10_000,
            failing_regions: vec!["eu".into()],
        };
        let incident = Incident { url: u.into(), opened: Some(timestamp(10_000)), ..Default::default() };
        let change = |record: &VerdictRecord, incident| vec![(u.to_owned(), record.clone(), incident)];
        store.record_changes(&change(&down, IncidentChange::Open(incident)), &[], &[]).unwrap();
        assert_eq!(store.incidents(u, true, 100).unwrap().len(), 1);
        let up = VerdictRecord { verdict: "UP".into(), cause: None, since_ms: 20_000, failing_regions: vec![] };
        store.record_changes(&change(&up, IncidentChange::Close { at_ms: 20_000 }), &[], &[]).unwrap();
        assert!(store.incidents(u, true, 100).unwrap().is_empty());
        let all = store.incidents("", false, 100).unwrap();
        assert_eq!(all[0].closed, Some(timestamp(20_000)));
        assert_eq!(all[0].closed_reason, "recovered");
        assert_eq!(store.verdicts().unwrap(), vec![(u.to_owned(), up)]);
        assert_eq!(store.transitions(u).unwrap().len(), 2);
        // Deleting a target ends its open incident.
        let again = Incident { url: u.into(), opened: Some(timestamp(30_000)), ..Default::default() };
        store.record_changes(&change(&down, IncidentChange::Open(again)), &[], &[]).unwrap();
        assert_eq!(store.incidents(u, true, 100).unwrap().len(), 1);
        store.delete_target(u).unwrap();
        assert!(store.incidents(u, true, 100).unwrap().is_empty());
        assert_eq!(store.incidents(u, false, 1).unwrap()[0].closed_reason, "removed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_delivery_is_written_into_its_alert_without_undoing_the_others() {
        use crate::alert::{Alert, AlertKind, Delivery, DeliveryState};
        let dir = temp_dir("record-deliveries");
        let store = Store::open(&dir).unwrap();
        let delivery = |channel: &str, state| Delivery {
            channel: channel.into(),
            state,
            attempts: 0,
            last_error: String::new(),
            next_attempt_ms: 0,
            delivered_ms: 0,
        };
        let record = AlertRecord {
            alert: Alert::new(AlertKind::Down, "https://a.example/", 1_000, "k".into()),
            deliveries: vec![delivery("good", DeliveryState::Pending), delivery("bad", DeliveryState::Pending)],
            silenced_by: None,
        };
        let id = record.alert.id.clone();
        store.record_changes(&[], std::slice::from_ref(&record), &[]).unwrap();
        // Two sends of one alert finish apart, each written from its own copy.
        store.record_deliveries(&[(id.clone(), delivery("good", DeliveryState::Delivered))]).unwrap();
        let mut bad = delivery("bad", DeliveryState::Pending);
        bad.last_error = "HTTP 401".into();
        store.record_deliveries(&[(id.clone(), bad)]).unwrap();
        let stored = store.pending_alerts().unwrap();
        assert_eq!(stored.len(), 1);
        let states: Vec<_> = stored[0].deliveries.iter().map(|d| (d.state, d.last_error.as_str())).collect();
        assert_eq!(states, [(DeliveryState::Delivered, ""), (DeliveryState::Pending, "HTTP 401")]);
        store.record_deliveries(&[(id, delivery("bad", DeliveryState::Failed))]).unwrap();
        assert!(store.pending_alerts().unwrap().is_empty(), "settled: out of the pending index");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn old_settled_alerts_and_ended_silences_are_pruned_pending_ones_kept() {
        use crate::alert::{Alert, AlertKind, Delivery, DeliveryState};
        let dir = temp_dir("prune-alerts");
        let store = Store::open(&dir).unwrap();
        let record = |at: i64, state: DeliveryState| AlertRecord {
            alert: Alert::new(AlertKind::Down, "https://a.example/", at, "k".into()),
            deliveries: vec![Delivery {
                channel: "hook".into(),
                state,
                attempts: 1,
                last_error: String::new(),
                next_attempt_ms: at,
                delivered_ms: at,
            }],
            silenced_by: None,
        };
        let (old, stuck, new) = (
            record(1_000, DeliveryState::Delivered),
            record(2_000, DeliveryState::Pending),
            record(9_000, DeliveryState::Delivered),
        );
        store.record_changes(&[], &[old, stuck.clone(), new.clone()], &[]).unwrap();
        let silence = |id: &str, end_ms: i64| Silence {
            id: id.into(),
            target: "https://a.example/".into(),
            labels: Default::default(),
            start_ms: 0,
            end_ms,
            comment: String::new(),
            source: "api".into(),
        };
        store.put_silence(&silence("ended", 3_000)).unwrap();
        store.put_silence(&silence("running", 8_000)).unwrap();
        // One alert looked at per step: the pending one is stepped over, not stuck on.
        let done = prune(&store, Pruning::new(i64::MIN, i64::MIN, 5_000), 1);
        assert_eq!((done.alerts, done.silences), (1, 1));
        let left: Vec<String> = store.alerts("", 10).unwrap().into_iter().map(|r| r.alert.id).collect();
        assert_eq!(left, [new.alert.id.clone(), stuck.alert.id.clone()]);
        assert_eq!(store.silences().unwrap().iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["running"]);
        let of_a: Vec<String> =
            store.alerts("https://a.example/", 10).unwrap().into_iter().map(|r| r.alert.id).collect();
        assert_eq!(of_a, [new.alert.id, stuck.alert.id], "the pruned alert left the subject index too");
    }

    #[test]
    fn alerts_by_subject_come_from_the_index_newest_first_also_after_an_upgrade() {
        use crate::alert::{Alert, AlertKind};
        let dir = temp_dir("alerts-by-subject");
        let record = |subject: &str, at: i64| AlertRecord {
            alert: Alert::new(AlertKind::Down, subject, at, format!("{subject}{at}")),
            deliveries: Vec::new(),
            silenced_by: None,
        };
        let (a, b) = ("https://a.example/", "https://b.example/");
        let ids = |records: Vec<AlertRecord>| records.into_iter().map(|r| r.alert.at_ms).collect::<Vec<_>>();
        {
            let store = Store::open(&dir).unwrap();
            let records: Vec<AlertRecord> =
                (1..=6).map(|i| record(if i % 2 == 0 { a } else { b }, i * 1_000)).collect();
            store.record_changes(&[], &records, &[]).unwrap();
            assert_eq!(ids(store.alerts(a, 10).unwrap()), [6_000, 4_000, 2_000]);
            assert_eq!(ids(store.alerts(b, 2).unwrap()), [5_000, 3_000]);
            assert_eq!(ids(store.alerts("", 3).unwrap()), [6_000, 5_000, 4_000]);
            assert!(store.alerts("https://a.example", 10).unwrap().is_empty(), "a prefix is not the subject");
            // A database from before the index: it is empty.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(ALERT_BY_SUBJECT).unwrap();
            txn.commit().unwrap();
        }
        {
            let store = Store::open(&dir).unwrap();
            assert_eq!(ids(store.alerts(a, 10).unwrap()), [6_000, 4_000, 2_000], "the index is rebuilt on open");
            // An alert written by a binary from before the index, after an upgrade.
            let txn = store.db.begin_write().unwrap();
            txn.open_table(ALERT_BY_SUBJECT).unwrap().retain(|(s, at, _), _| (s, at) != (a, 6_000)).unwrap();
            txn.commit().unwrap();
            assert_eq!(ids(store.alerts(a, 10).unwrap()), [4_000, 2_000]);
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(ids(store.alerts(a, 10).unwrap()), [6_000, 4_000, 2_000], "a partial index is rebuilt");
    }
}
