//! Housekeeping removes what aged out a bounded step at a time ([`Store::prune_step`]): each step
//! is one short write transaction that walks results by target id (`seal`) or a time-ordered
//! index from its oldest end, so it never scans a whole table and an ingest commit waits at most
//! one step behind it. Results of closed hours are sealed into blocks in the same pass.

use std::ops::Bound;
use std::time::{Duration, Instant};

use redb::ReadableTable;

use super::db::{Store, StoreError, corrupt};
use super::tables::{
    ALERT_BY_SUBJECT, ALERT_ORDER, ALERT_PENDING, ALERTS, INCIDENTS, INCIDENTS_CLOSED, LATENCY_BY_DAY, LATENCY_DAYS,
    SILENCES, TRANSITIONS, TRANSITIONS_BY_TIME, UPTIME_BY_DAY, UPTIME_DAYS,
};
use crate::alert::{AlertRecord, Silence};

/// Most rows one housekeeping step removes (or seals; a target visited counts as one), so the
/// write transaction it holds stays short: an ingest commit waits behind at most one step. The
/// hub sizes steps below this by the time they take (`hub::PRUNE_STEP_TARGET`).
/// Measured with `cargo bench -p vantage-coordinator --bench prune` (README, "Benchmarks").
pub const PRUNE_STEP_ROWS: usize = 10_000;
/// Most time one step spends removing or sealing results before it commits what it has (a loaded
/// machine slows a step down however few its rows).
pub const PRUNE_STEP_TIME: Duration = Duration::from_millis(10);

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
    /// Availability roll-ups of UTC days before this day (`uptime::day_of`); by default
    /// `uptime::ROLLUP_DAYS` before the results' cutoff, whatever the retention.
    pub rollups_before_day: i64,
    /// Hourly latency roll-ups to compute in this pass (none unless set: `Hub::prune` sets it).
    pub latency: Option<super::latency::LatencyPass>,
    /// Results from before this hour boundary are sealed into blocks; by default the last hour
    /// that ended `SEAL_AFTER` ago.
    pub seal_before: i64,
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
            rollups_before_day: crate::uptime::day_of(crate::clock::now_ms()) - crate::uptime::ROLLUP_DAYS,
            latency: None,
            seal_before: super::seal::seal_before(crate::clock::now_ms()),
            stage: PruneStage::Latency,
            done: Pruned::default(),
            last_step: Duration::ZERO,
        }
    }
}

/// What a pass of housekeeping did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub results: u64,
    /// Results sealed into blocks.
    pub sealed: u64,
    pub transitions: u64,
    pub incidents: u64,
    pub alerts: u64,
    pub silences: u64,
    /// Availability and latency roll-up rows (target or region, day) removed.
    pub rollups: u64,
    /// (target, hour) latency roll-ups computed from the raw results.
    pub latency_hours: u64,
    /// Write transactions it took.
    pub steps: u64,
}

/// Where a pass of housekeeping is, in the order it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PruneStage {
    /// Rolling closed hours' latency up, before their raw results can be pruned.
    Latency,
    /// Removing results, from this target id on.
    Results(u32),
    /// Sealing results of closed hours, from this target id on.
    Seal(u32),
    Transitions,
    Incidents,
    /// Settled alerts, walking the (at, id) order after this key: pending ones are stepped over.
    Alerts(Option<(i64, String)>),
    Silences,
    Rollups,
    LatencyRollups,
    Done,
}

impl PruneStage {
    fn next(&self) -> PruneStage {
        match self {
            PruneStage::Latency => PruneStage::Results(0),
            PruneStage::Results(_) => PruneStage::Seal(0),
            PruneStage::Seal(_) => PruneStage::Transitions,
            PruneStage::Transitions => PruneStage::Incidents,
            PruneStage::Incidents => PruneStage::Alerts(None),
            PruneStage::Alerts(_) => PruneStage::Silences,
            PruneStage::Silences => PruneStage::Rollups,
            PruneStage::Rollups => PruneStage::LatencyRollups,
            PruneStage::LatencyRollups | PruneStage::Done => PruneStage::Done,
        }
    }
}

impl Store {
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
        // The roll-up reads the raw results before taking the write lock.
        let latency = match (&pruning.stage, pruning.latency.as_mut()) {
            (PruneStage::Latency, Some(pass)) => Some(self.latency_compute(pass, max, max_time)?),
            _ => None,
        };
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        let began = Instant::now();
        let done = &mut pruning.done;
        // (rows written, whether the stage is over)
        let (rows, finished) = match &pruning.stage {
            PruneStage::Latency => match (latency, pruning.latency.as_mut()) {
                (Some(step), Some(pass)) => {
                    let (finished, hours) = (step.finished, step.hours);
                    done.latency_hours += hours;
                    (super::latency::latency_write(&txn, pass, step)?, finished)
                }
                _ => (0, true),
            },
            PruneStage::Results(from) => {
                let walked = super::seal::prune(&txn, pruning.results_before, *from, max as u64, max_time)?;
                super::compact::count_stored(&txn, -(walked.rows as i64))?;
                done.results += walked.rows;
                if let Some(next) = walked.next {
                    pruning.stage = PruneStage::Results(next);
                }
                (walked.rows, walked.next.is_none())
            }
            PruneStage::Seal(from) => {
                let walked = super::seal::seal(&txn, pruning.seal_before, *from, max as u64, max_time)?;
                done.sealed += walked.rows;
                if let Some(next) = walked.next {
                    pruning.stage = PruneStage::Seal(next);
                }
                (walked.rows, walked.next.is_none())
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
            PruneStage::Rollups => {
                let (rows, finished) = prune_days(&txn, UPTIME_DAYS, UPTIME_BY_DAY, pruning.rollups_before_day, max)?;
                done.rollups += rows;
                (rows, finished)
            }
            PruneStage::LatencyRollups => {
                let (rows, finished) = prune_days(&txn, LATENCY_DAYS, LATENCY_BY_DAY, pruning.rollups_before_day, max)?;
                done.rollups += rows;
                (rows, finished)
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

/// A roll-up table: rows by (target, region, day), and its index by day.
type DayRows = redb::TableDefinition<'static, (&'static str, &'static str, i64), &'static [u8]>;
type DayIndex = redb::TableDefinition<'static, (i64, &'static str, &'static str), ()>;

/// Removes up to `max` rows of a roll-up table (availability or latency) of days before
/// `before_day`, oldest first. Returns the rows removed and whether none older is left.
fn prune_days(
    txn: &redb::WriteTransaction,
    rows: DayRows,
    by_day: DayIndex,
    before_day: i64,
    max: usize,
) -> Result<(u64, bool), StoreError> {
    let mut index = txn.open_table(by_day)?;
    let mut days = txn.open_table(rows)?;
    let old: Vec<(i64, String, String)> = index
        .range((i64::MIN, "", "")..(before_day, "", ""))?
        .take(max + 1)
        .map(|row| {
            let (k, _) = row?;
            let (d, u, r) = k.value();
            Ok((d, u.to_owned(), r.to_owned()))
        })
        .collect::<Result<_, StoreError>>()?;
    let finished = old.len() <= max;
    let mut removed = 0;
    for (day, url, region) in old.into_iter().take(max) {
        index.remove((day, url.as_str(), region.as_str()))?;
        days.remove((url.as_str(), region.as_str(), day))?;
        removed += 1;
    }
    Ok((removed, finished))
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::Incident;

    use super::*;
    use crate::clock::{ms, timestamp};
    use crate::store::testing::{assert_indexes_consistent, history_times, prune, record_every, temp_dir};
    use crate::store::verdicts::{IncidentChange, VerdictRecord};

    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn results_older_than_the_cutoff_go_in_bounded_steps_closed_hours_are_sealed_newer_stay() {
        let dir = temp_dir("prune-history");
        let store = Store::open(&dir).unwrap();
        let urls = ["https://a.example/", "https://b.example/", "https://c.example/"];
        // Every 10 minutes from 0 to 5 h: 31 times × 3 targets × 2 regions.
        let total = record_every(&store, &urls, &["eu", "us"], 5 * HOUR, 10 * MIN);
        assert_eq!(total, 186);
        let everything: Vec<_> =
            urls.iter().map(|u| store.history(u, None, i64::MIN, i64::MAX, 1_000).unwrap()).collect();
        let latest_before = store.latest().unwrap();
        // Unsealed rows up to 2 h go exactly (13 times × 6); hours 2 and 3 are sealed, 4 and 5 stay
        // rows.
        let mut pruning = Pruning::new(2 * HOUR + 5 * MIN, i64::MIN, i64::MIN);
        pruning.seal_before = 4 * HOUR;
        let mut per_step = Vec::new();
        loop {
            let before = pruning.done.results + pruning.done.sealed;
            let over = store.prune_step(&mut pruning, 10, Duration::MAX).unwrap();
            per_step.push(pruning.done.results + pruning.done.sealed - before);
            if over {
                break;
            }
        }
        assert!(per_step.iter().all(|n| *n <= 10), "no step goes past its bound: {per_step:?}");
        assert_eq!((pruning.done.results, pruning.done.sealed), (78, 66));
        let times = history_times(&store, &urls);
        assert_eq!(times.len(), 186 - 78);
        assert_eq!(times[0], 2 * HOUR + 10 * MIN, "every row older than the cutoff is gone, every newer one kept");
        for (url, before) in urls.iter().zip(&everything) {
            let kept: Vec<_> = before.iter().filter(|r| r.at_ms > 2 * HOUR + 5 * MIN).cloned().collect();
            assert_eq!(store.history(url, None, i64::MIN, i64::MAX, 1_000).unwrap(), kept, "read back as written");
        }
        assert_eq!(store.latest().unwrap(), latest_before, "the newest result per target and region stays");
        // A sealed block goes once its whole hour is older than the cutoff: hour 2's rows
        // (2:10..2:50) go; hour 3 stays whole, its 3:00 rows too.
        let mut pruning = Pruning::new(3 * HOUR + 5 * MIN, i64::MIN, i64::MIN);
        pruning.seal_before = 4 * HOUR;
        let done = prune(&store, pruning, 10);
        assert_eq!((done.results, done.sealed), (30, 0));
        assert_eq!(history_times(&store, &urls)[0], 3 * HOUR);
        // Nothing left to remove or seal: no write at all.
        let mut again = Pruning::new(3 * HOUR + 5 * MIN, i64::MIN, i64::MIN);
        again.seal_before = 4 * HOUR;
        assert_eq!(prune(&store, again, 10), Pruned::default());
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
}
