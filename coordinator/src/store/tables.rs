//! The store's redb tables, in one place: each name carries a version suffix (`*_v1`, `*_v2`), so
//! a change of encoding gets a new table and existing databases keep opening (`migrate` moves
//! what an older encoding wrote).

use redb::TableDefinition;

pub(super) const TARGETS: TableDefinition<&str, &[u8]> = TableDefinition::new("targets_v1");
pub(super) const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents_v1");
/// Last committed batch sequence per agent name, for dropping redelivered batches.
pub(super) const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("agent_sequences_v1");
/// (url, region) → newest result, whole (`HistoryEntry`).
pub(super) const LATEST: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("latest_v1");
/// Results as the first version stored them, whole, keyed (url, checked_at ms, region, agent
/// sequence, index in batch), and their time index: only in a database written before compact
/// results, moved into the tables below by `migrate` at open and then dropped.
pub(super) const RESULTS_V1: TableDefinition<(&str, i64, &str, u64, u32), &[u8]> = TableDefinition::new("results_v1");
pub(super) const RESULTS_BY_TIME_V1: TableDefinition<(i64, &str, &str, u64, u32), ()> =
    TableDefinition::new("results_by_time_v1");
/// url → target id: every URL ever stored gets one, never reused (see `ids`).
pub(super) const TARGET_IDS: TableDefinition<&str, u32> = TableDefinition::new("target_ids_v2");
/// target id → url.
pub(super) const TARGET_URLS: TableDefinition<u32, &str> = TableDefinition::new("target_urls_v2");
/// Interned names (regions, agents): name → id, and id → name.
pub(super) const NAME_IDS: TableDefinition<&str, u32> = TableDefinition::new("name_ids_v2");
pub(super) const NAMES: TableDefinition<u32, &str> = TableDefinition::new("names_v2");
/// (target id, UTC day, hash) → what results of that target that day share beyond their compact
/// row (certificate facts, a failure's text, TLS parameters, backends: `codec::Residual`), once
/// per distinct value; rows refer to it by its hash. Pruned with the day.
pub(super) const FACTS: TableDefinition<(u32, i64, u64), &[u8]> = TableDefinition::new("facts_v2");
/// (target id, checked_at ms, region id, agent sequence, index in batch) → one compact row
/// (`codec`): results not yet sealed into a block.
pub(super) const RECENT: TableDefinition<(u32, i64, u32, u64, u32), &[u8]> = TableDefinition::new("recent_v2");
/// (target id, hour start ms, part) → a sealed block: a closed hour's results of one target, every
/// region, delta-encoded columns (`codec::Block`), cut into parts of at most one page.
pub(super) const BLOCKS: TableDefinition<(u32, i64, u32), &[u8]> = TableDefinition::new("blocks_v2");
pub(super) const VERDICTS: TableDefinition<&str, &[u8]> = TableDefinition::new("verdicts_v1");
/// (url, at ms) → the verdict entered then.
pub(super) const TRANSITIONS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("transitions_v1");
/// (at ms, url) of every transition, for pruning.
pub(super) const TRANSITIONS_BY_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("transitions_by_time_v1");
/// (url, opened ms) → incident.
pub(super) const INCIDENTS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("incidents_v1");
/// (closed ms, url, opened ms) of every closed incident, for pruning.
pub(super) const INCIDENTS_CLOSED: TableDefinition<(i64, &str, i64), ()> = TableDefinition::new("incidents_closed_v1");
/// Housekeeping's own bookkeeping: key → value.
pub(super) const HOUSEKEEPING: TableDefinition<&str, &[u8]> = TableDefinition::new("housekeeping_v1");
/// In `HOUSEKEEPING` in a database written before the compact results while they were being
/// indexed by time (the first version's own upgrade): dropped with the old tables.
pub(super) const HISTORY_INDEX_FROM: &str = "history_index_from";
/// In `HOUSEKEEPING`: how many results are stored (u64, little-endian), kept by ingest, the
/// migration and pruning, so housekeeping can tell a large prune from a routine one.
pub(super) const RESULTS_STORED: &str = "results_stored";
/// Revoked agent certificates: SHA-256 fingerprint (hex) → `Revocation`.
pub(super) const REVOKED: TableDefinition<&str, &[u8]> = TableDefinition::new("revoked_certs_v1");
/// The alert outbox: id → `AlertRecord` (JSON).
pub(super) const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts_v1");
/// (at ms, id) of every alert, for listing newest first.
pub(super) const ALERT_ORDER: TableDefinition<(i64, &str), ()> = TableDefinition::new("alert_order_v1");
/// (subject, at ms, id) of every alert: one target's alerts, newest last, without a scan.
pub(super) const ALERT_BY_SUBJECT: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("alert_by_subject_v1");
/// Ids of alerts with deliveries still pending.
pub(super) const ALERT_PENDING: TableDefinition<&str, ()> = TableDefinition::new("alert_pending_v1");
/// What alerting remembers between events (certificate thresholds crossed, silent regions, …):
/// key → JSON.
pub(super) const ALERT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("alert_state_v1");
/// Silences: id → `Silence` (JSON).
pub(super) const SILENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("silences_v1");
/// The regions agents have connected from: name → `RegionRecord` (JSON).
pub(super) const REGIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("regions_v1");
/// Availability roll-ups: (url, region, UTC day) → `uptime::Day` (its own encoding). Region ""
/// is the target's verdict; the others are that region's opinion. Kept `uptime::ROLLUP_DAYS`,
/// whatever the results' retention.
pub(super) const UPTIME_DAYS: TableDefinition<(&str, &str, i64), &[u8]> = TableDefinition::new("uptime_days_v1");
/// (day, url, region) of every roll-up row, for pruning the oldest days without a scan.
pub(super) const UPTIME_BY_DAY: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("uptime_by_day_v1");
/// (url, region) → the state a region's opinion is in and since when (1 byte state, 8 bytes ms):
/// its open span, not yet rolled up. A target's own open span is its verdict record.
pub(super) const UPTIME_OPEN: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("uptime_open_v1");
/// Hourly latency roll-ups: (url, region, UTC day) → `latency::DayHours` (its own encoding).
/// Kept as long as the availability roll-ups, pruned with them.
pub(super) const LATENCY_DAYS: TableDefinition<(&str, &str, i64), &[u8]> = TableDefinition::new("latency_days_v1");
/// (day, url, region) of every latency roll-up row, for pruning the oldest days without a scan.
pub(super) const LATENCY_BY_DAY: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("latency_by_day_v1");
