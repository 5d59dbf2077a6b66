//! The store's redb tables, in one place: each name carries a version suffix (`*_v1`), so a
//! change of encoding gets a new table and existing databases keep opening.

use redb::TableDefinition;

pub(super) const TARGETS: TableDefinition<&str, &[u8]> = TableDefinition::new("targets_v1");
pub(super) const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents_v1");
/// Last committed batch sequence per agent name, for dropping redelivered batches.
pub(super) const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("agent_sequences_v1");
/// (url, region) → newest result.
pub(super) const LATEST: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("latest_v1");
/// (url, checked_at ms, region, agent sequence, index in batch) → result.
pub(super) const RESULTS: TableDefinition<(&str, i64, &str, u64, u32), &[u8]> = TableDefinition::new("results_v1");
/// (checked_at ms, url, region, agent sequence, index in batch) of every history row: the
/// results' keys in time order, so pruning finds the oldest rows without a scan. Databases from
/// before it are indexed by housekeeping in steps (see `HISTORY_INDEX_FROM`).
pub(super) const RESULTS_BY_TIME: TableDefinition<(i64, &str, &str, u64, u32), ()> =
    TableDefinition::new("results_by_time_v1");
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
/// In `HOUSEKEEPING` while history rows from before `RESULTS_BY_TIME` are being indexed: the
/// last results key indexed (JSON; empty before the first step).
pub(super) const HISTORY_INDEX_FROM: &str = "history_index_from";
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
