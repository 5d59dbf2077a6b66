//! Hourly latency roll-ups (README: "Latency roll-ups"): housekeeping rolls each closed UTC hour
//! up from the raw results, per target and region, into one row per (target, region, UTC day)
//! (`crate::latency::DayHours`), a bounded step at a time. Where it got to is kept in the
//! `HOUSEKEEPING` table in the same transaction as the rows it wrote, so a restart, even after
//! SIGKILL, resumes where it stopped; an hour rolled up again is overwritten, never added to.
//! The raw results are read only through [`Store::history`].

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use vantage_proto::v1::ProbeStatus;

use super::db::{Store, StoreError, corrupt};
use super::tables::{HOUSEKEEPING, LATENCY_BY_DAY, LATENCY_DAYS, TARGETS};
use crate::latency::{DayHours, HOUR_MS, Summary, day_of_hour, hour_of, micros};

/// In `HOUSEKEEPING`: how far the roll-ups have got (JSON, [`Progress`]).
const LATENCY_PROGRESS: &str = "latency_rollup";

/// Most time one housekeeping pass spends reading raw results for roll-ups: hours left over
/// (after an upgrade, the days of raw results already kept) are done by the next passes, so the
/// pruning stages after it are not held up.
pub const LATENCY_PASS_TIME: Duration = Duration::from_secs(60);

/// Results read at a time while rolling one (target, hour) up.
const PAGE: usize = 1_000;

/// How far the roll-ups have got: every hour before `done_before` is rolled up for every target;
/// while a range of hours is under way, the target it is at and how far down it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Progress {
    done_before: Option<i64>,
    range: Option<Range>,
}

/// Hours `from..to` being rolled up, target by target in URL order, each target's hours newest
/// first: `url`'s hours after `until` (Unix ms) are done, and every target before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Range {
    from: i64,
    to: i64,
    url: String,
    until: i64,
}

/// One pass's roll-up stage: hours before `closed_before` are closed; none before `first_hour`
/// is rolled up (their raw results are being pruned).
#[derive(Debug, Clone)]
pub struct LatencyPass {
    pub closed_before: i64,
    pub first_hour: i64,
    /// Reading time this pass may spend ([`LATENCY_PASS_TIME`]), and has spent.
    pub budget: Duration,
    spent: Duration,
    progress: Option<Progress>,
}

impl LatencyPass {
    /// Hours older than the roll-ups are kept are not rolled up, whatever the raw results'
    /// retention (which bounds the hours looked at, too).
    pub fn new(closed_before: i64, first_hour: i64) -> LatencyPass {
        let first_hour = first_hour.max(closed_before - crate::latency::KEPT_DAYS * 24);
        LatencyPass { closed_before, first_hour, budget: LATENCY_PASS_TIME, spent: Duration::ZERO, progress: None }
    }
}

/// What one step computed, to be written in one transaction.
pub(super) struct Step {
    rows: Vec<(String, String, i64, Summary)>,
    progress: Progress,
    /// The progress moved: it is written even without rows.
    moved: bool,
    pub(super) finished: bool,
    pub(super) hours: u64,
}

pub(super) fn open_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(LATENCY_DAYS)?;
    txn.open_table(LATENCY_BY_DAY)?;
    Ok(())
}

/// The first target after `after` (from the first with `None`).
fn next_target(store: &Store, after: Option<&str>) -> Result<Option<String>, StoreError> {
    let txn = store.db.begin_read()?;
    let targets = txn.open_table(TARGETS)?;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let next = targets.range::<&str>((start, Bound::Unbounded))?.next().transpose()?.map(|(k, _)| k.value().to_owned());
    Ok(next)
}

/// Each region's summary of `url`'s results in `hour`, read a page at a time.
fn roll_hour(store: &Store, url: &str, hour: i64) -> Result<Vec<(String, Summary)>, StoreError> {
    let (from, mut until) = (hour * HOUR_MS, hour * HOUR_MS + HOUR_MS - 1);
    let mut regions: BTreeMap<String, (Vec<u32>, u32)> = BTreeMap::new();
    loop {
        let page = store.history(url, None, from, until, PAGE)?;
        let (newest, oldest) = match (page.first(), page.last()) {
            (Some(a), Some(b)) => (a.at_ms, b.at_ms),
            _ => break,
        };
        // A full page may have cut the results of its oldest millisecond: those are read with
        // the next page (unless the whole page is one millisecond).
        let more = page.len() == PAGE;
        let cut = more && newest != oldest;
        for r in &page {
            if cut && r.at_ms == oldest {
                continue;
            }
            let Some(result) = &r.entry.result else { continue };
            let (times, failed) = regions.entry(r.entry.region.clone()).or_default();
            match (result.status == ProbeStatus::Up as i32, &result.timings) {
                (true, Some(t)) => times.push(micros(t.total_ms)),
                (true, None) => {}
                (false, _) => *failed += 1,
            }
        }
        if !more {
            break;
        }
        until = if cut { oldest } else { oldest - 1 };
    }
    Ok(regions.into_iter().map(|(region, (mut times, failed))| (region, Summary::of(&mut times, failed))).collect())
}

impl Store {
    fn read_progress(&self) -> Result<Progress, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HOUSEKEEPING)?;
        // A record this version cannot read starts the roll-ups afresh from the raw results
        // still kept (rolling an hour up again replaces it), rather than stopping housekeeping.
        Ok(table.get(LATENCY_PROGRESS)?.map_or_else(Progress::default, |v| {
            serde_json::from_slice(v.value()).unwrap_or_else(|error| {
                tracing::warn!(%error, "latency roll-ups: unreadable progress record; starting afresh");
                Progress::default()
            })
        }))
    }

    /// Computes the next step of `pass` from the raw results, without the write lock: closed
    /// hours of one target after another, each target's newest first (an empty stretch costs
    /// one read), until `max_rows` rows or `max_time` spent.
    pub(super) fn latency_compute(
        &self,
        pass: &mut LatencyPass,
        max_rows: usize,
        max_time: Duration,
    ) -> Result<Step, StoreError> {
        let started = Instant::now();
        let mut progress = match pass.progress.take() {
            Some(p) => p,
            None => self.read_progress()?,
        };
        let mut step =
            Step { rows: Vec::new(), progress: Progress::default(), moved: false, finished: false, hours: 0 };
        let (spent, budget) = (pass.spent, pass.budget);
        let over_budget = |started: Instant| spent + started.elapsed() >= budget;
        loop {
            if step.rows.len() >= max_rows || started.elapsed() >= max_time || over_budget(started) {
                break;
            }
            let Some(range) = progress.range.as_mut() else {
                // The next range: the hours closed since the last one (a range interrupted by a
                // restart was finished first, to the end it had then).
                let from = progress.done_before.unwrap_or(i64::MIN).max(pass.first_hour);
                if from >= pass.closed_before {
                    break;
                }
                let (to, until) = (pass.closed_before, pass.closed_before * HOUR_MS - 1);
                progress.range = next_target(self, None)?.map(|url| Range { from, to, url, until });
                if progress.range.is_none() {
                    progress.done_before = Some(to);
                }
                step.moved = true;
                continue;
            };
            step.moved = true;
            let since = range.from * HOUR_MS;
            let newest =
                if range.until >= since { self.history(&range.url, None, since, range.until, 1)?.pop() } else { None };
            match newest {
                Some(r) => {
                    let hour = hour_of(r.at_ms);
                    for (region, summary) in roll_hour(self, &range.url, hour)? {
                        step.rows.push((range.url.clone(), region, hour, summary));
                    }
                    step.hours += 1;
                    range.until = hour * HOUR_MS - 1;
                }
                None => match next_target(self, Some(&range.url))? {
                    Some(url) => {
                        range.until = range.to * HOUR_MS - 1;
                        range.url = url;
                    }
                    None => progress = Progress { done_before: Some(range.to), range: None },
                },
            }
        }
        step.finished = over_budget(started)
            || progress.range.is_none()
                && progress.done_before.unwrap_or(i64::MIN).max(pass.first_hour) >= pass.closed_before;
        pass.spent += started.elapsed();
        step.progress = progress;
        Ok(step)
    }
}

/// Writes what `step` computed and where it got to; returns the rows written (at least one when
/// only the position moved, so the step is committed).
pub(super) fn latency_write(
    txn: &redb::WriteTransaction,
    pass: &mut LatencyPass,
    step: Step,
) -> Result<u64, StoreError> {
    let mut days = txn.open_table(LATENCY_DAYS)?;
    let mut index = txn.open_table(LATENCY_BY_DAY)?;
    for (url, region, hour, summary) in &step.rows {
        let day = day_of_hour(*hour);
        let key = (url.as_str(), region.as_str(), day);
        // A row this version cannot read loses its other hours rather than stopping housekeeping.
        let mut record = match days.get(key)?.map(|v| DayHours::decode(v.value())) {
            Some(Ok(record)) => record,
            Some(Err(error)) => {
                tracing::warn!(%error, url, region, day, "latency roll-ups: unreadable row replaced");
                DayHours::default()
            }
            None => DayHours::default(),
        };
        record.set(*hour, *summary);
        days.insert(key, record.encode().as_slice())?;
        index.insert((day, url.as_str(), region.as_str()), ())?;
    }
    if step.moved {
        let json = serde_json::to_vec(&step.progress).map_err(corrupt)?;
        txn.open_table(HOUSEKEEPING)?.insert(LATENCY_PROGRESS, json.as_slice())?;
    }
    let rows = step.rows.len() as u64;
    pass.progress = Some(step.progress);
    Ok(if step.moved { rows.max(1) } else { rows })
}

/// Each region's rolled-up hours of one target, oldest first.
pub type LatencyHours = BTreeMap<String, Vec<(i64, Summary)>>;

impl Store {
    /// `url`'s rolled-up hours `from_hour..=to_hour`, per region: one range read per region.
    pub fn latency_hours(&self, url: &str, from_hour: i64, to_hour: i64) -> Result<LatencyHours, StoreError> {
        let txn = self.db.begin_read()?;
        let days = txn.open_table(LATENCY_DAYS)?;
        let (first, last) = (day_of_hour(from_hour), day_of_hour(to_hour));
        let mut out = LatencyHours::new();
        let mut after: Option<String> = None;
        loop {
            // The next region of the target: the first key past the previous region's days.
            let start = match &after {
                Some(r) => Bound::Excluded((url, r.as_str(), i64::MAX)),
                None => Bound::Included((url, "", i64::MIN)),
            };
            let next = days
                .range::<(&str, &str, i64)>((start, Bound::Included((url, "\u{10ffff}", i64::MAX))))?
                .next()
                .transpose()?
                .map(|(k, _)| k.value().1.to_owned());
            let Some(region) = next else { break };
            let mut hours = Vec::new();
            for row in days.range((url, region.as_str(), first)..=(url, region.as_str(), last))? {
                let (k, v) = row?;
                let record = DayHours::decode(v.value()).map_err(corrupt)?;
                hours.extend(record.of_day(k.value().2).filter(|(h, _)| (from_hour..=to_hour).contains(h)));
            }
            if !hours.is_empty() {
                out.insert(region.clone(), hours);
            }
            after = Some(region);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::{ProbeStatus, TargetSpec, Timings};

    use super::*;
    use crate::latency::quantile;
    use crate::store::housekeeping::Pruning;
    use crate::store::results::StoredResult;
    use crate::store::testing::{prune, result, temp_dir};

    const H: i64 = HOUR_MS;
    /// An hour in 2026.
    const BASE: i64 = 494_000;

    fn timed(url: &str, region: &str, at: i64, ms: f64, status: ProbeStatus) -> StoredResult {
        let mut r = result(url, region, at, status);
        if let Some(p) = r.entry.result.as_mut() {
            p.timings = Some(Timings { total_ms: ms, ..Default::default() });
        }
        r
    }

    fn add_targets(store: &Store, urls: &[&str]) {
        for u in urls {
            store.upsert_target(&TargetSpec { url: (*u).into(), ..Default::default() }).unwrap();
        }
    }

    /// A pass with only the roll-up stage doing anything: nothing pruned.
    fn pass(closed_before: i64, first_hour: i64) -> Pruning {
        let mut p = Pruning::new(i64::MIN, i64::MIN, i64::MIN);
        p.rollups_before_day = i64::MIN;
        p.latency = Some(LatencyPass::new(closed_before, first_hour));
        p
    }

    /// What every figure should be, from the raw results (independently of `Summary::of`).
    fn expected(times: &[f64], failed: u32) -> (u32, u32, u32, u32, u32) {
        let mut us: Vec<u32> = times.iter().map(|t| (t * 1000.0).round() as u32).collect();
        us.sort();
        (us.len() as u32, failed, quantile(&us, 0.5), quantile(&us, 0.95), quantile(&us, 0.99))
    }

    fn figures(s: &Summary) -> (u32, u32, u32, u32, u32) {
        (s.ok, s.failed, s.p50_us, s.p95_us, s.p99_us)
    }

    #[test]
    fn closed_hours_are_rolled_up_per_region_at_their_boundaries_the_open_hour_is_not() {
        let dir = temp_dir("latency-hours");
        let store = Store::open(&dir).unwrap();
        let (a, b) = ("https://a.example/", "https://b.example/");
        add_targets(&store, &[a, b]);
        let start = BASE * H;
        // Hour BASE: eu 1..=40 ms passing, 2 failures; the last millisecond of the hour counts,
        // the first of the next does not. us: one result. Hour BASE+2: eu only. b: nothing.
        let mut batch: Vec<StoredResult> =
            (1..=40).map(|i| timed(a, "eu", start + i * 1000, i as f64, ProbeStatus::Up)).collect();
        batch.push(timed(a, "eu", start + H - 1, 0.5, ProbeStatus::Up));
        batch.push(timed(a, "eu", start + 5, 10_000.0, ProbeStatus::Down));
        batch.push(timed(a, "eu", start + 6, 2.0, ProbeStatus::Degraded));
        batch.push(timed(a, "us", start + 100, 77.25, ProbeStatus::Up));
        batch.push(timed(a, "eu", start + H, 999.0, ProbeStatus::Up));
        batch.push(timed(a, "eu", start + 2 * H + 10, 33.0, ProbeStatus::Up));
        batch.push(timed(a, "eu", start + 3 * H + 10, 44.0, ProbeStatus::Up));
        store.record_batch("agent", 1, &batch).unwrap();

        // Hours BASE..BASE+3 are closed; BASE+3 is not.
        let done = prune(&store, pass(BASE + 3, BASE - 24), 100);
        assert_eq!(done.latency_hours, 3, "a's three hours with results");
        let hours = store.latency_hours(a, BASE - 1, BASE + 10).unwrap();
        let eu = &hours["eu"];
        assert_eq!(eu.iter().map(|(h, _)| *h).collect::<Vec<_>>(), [BASE, BASE + 1, BASE + 2], "not the open hour");
        let mut times: Vec<f64> = (1..=40).map(f64::from).collect();
        times.push(0.5);
        assert_eq!(figures(&eu[0].1), expected(&times, 2));
        assert_eq!((eu[0].1.min_us, eu[0].1.max_us), (500, 40_000));
        assert_eq!(figures(&eu[1].1), expected(&[999.0], 0), "the first millisecond of the next hour");
        assert_eq!(hours["us"], [(BASE, Summary::of(&mut [77_250], 0))]);
        assert!(store.latency_hours(b, BASE - 1, BASE + 10).unwrap().is_empty());
        // Asking for part of a day gives only those hours.
        assert_eq!(store.latency_hours(a, BASE + 1, BASE + 1).unwrap()["eu"].len(), 1);

        // A pass out of reading time leaves the hours to the next.
        let mut spent = pass(BASE + 4, BASE - 24);
        if let Some(l) = spent.latency.as_mut() {
            l.budget = Duration::ZERO;
        }
        assert_eq!(prune(&store, spent, 100).latency_hours, 0);
        // Nothing new closed: the next pass writes nothing at all.
        assert_eq!(prune(&store, pass(BASE + 3, BASE - 24), 100).steps, 0);
        // The hour closes: only it is read.
        let done = prune(&store, pass(BASE + 4, BASE - 24), 100);
        assert_eq!(done.latency_hours, 1);
        assert_eq!(store.latency_hours(a, BASE + 3, BASE + 3).unwrap()["eu"][0].1.p50_us, 44_000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pass_on_a_fresh_store_finds_nothing_and_fails_nothing() {
        let dir = temp_dir("latency-fresh");
        let store = Store::open(&dir).unwrap();
        add_targets(&store, &["https://a.example/"]);
        let done = prune(&store, pass(BASE + 3, BASE - 24), 100);
        assert_eq!(done.latency_hours, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_hour_with_more_results_than_a_page_counts_each_once() {
        let dir = temp_dir("latency-pages");
        let store = Store::open(&dir).unwrap();
        let a = "https://a.example/";
        add_targets(&store, &[a]);
        let start = BASE * H;
        // 2,500 results, three regions sharing each millisecond: the pages cut inside one.
        let mut all = Vec::new();
        for i in 0..2_500i64 {
            let region = ["ap", "eu", "us"][(i % 3) as usize];
            all.push(timed(a, region, start + i / 3, (i % 997) as f64 + 0.25, ProbeStatus::Up));
        }
        for (n, chunk) in all.chunks(500).enumerate() {
            store.record_batch("agent", n as u64 + 1, chunk).unwrap();
        }
        prune(&store, pass(BASE + 1, BASE), 100);
        let hours = store.latency_hours(a, BASE, BASE).unwrap();
        for (k, region) in ["ap", "eu", "us"].iter().enumerate() {
            let times: Vec<f64> = all
                .iter()
                .skip(k)
                .step_by(3)
                .map(|r| r.entry.result.as_ref().unwrap().timings.unwrap().total_ms)
                .collect();
            assert_eq!(figures(&hours[*region][0].1), expected(&times, 0), "{region}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pass_stopped_between_steps_resumes_after_reopening_and_counts_nothing_twice() {
        let dir = temp_dir("latency-resume");
        let urls = ["https://a.example/", "https://b.example/", "https://c.example/"];
        let start = BASE * H;
        let record = |store: &Store| {
            add_targets(store, &urls);
            let mut seq = 0;
            for hour in 0..6 {
                for (k, u) in urls.iter().enumerate() {
                    let batch: Vec<StoredResult> = (0..20)
                        .map(|i| {
                            timed(
                                u,
                                "eu",
                                start + hour * H + i * 60_000,
                                (10 * k + i as usize + hour as usize) as f64,
                                ProbeStatus::Up,
                            )
                        })
                        .collect();
                    seq += 1;
                    store.record_batch("agent", seq, &batch).unwrap();
                }
            }
        };
        // The whole pass at once, in a store of its own: what every hour should hold.
        let whole: Vec<LatencyHours> = {
            let other = temp_dir("latency-resume-whole");
            let store = Store::open(&other).unwrap();
            record(&store);
            let done = prune(&store, pass(BASE + 6, BASE), 1_000);
            assert_eq!(done.latency_hours, 18);
            let out = urls.iter().map(|u| store.latency_hours(u, BASE, BASE + 6).unwrap()).collect();
            let _ = std::fs::remove_dir_all(&other);
            out
        };
        let done_before_stop = {
            let store = Store::open(&dir).unwrap();
            record(&store);
            // A few steps of at most 4 rows, then the process stops (the pass is dropped).
            let mut pruning = pass(BASE + 6, BASE);
            for _ in 0..3 {
                assert!(!store.prune_step(&mut pruning, 4, Duration::MAX).unwrap());
            }
            assert!(pruning.done.latency_hours > 0 && pruning.done.latency_hours < 18, "{:?}", pruning.done);
            store.sync().unwrap();
            pruning.done.latency_hours
        };
        let store = Store::open(&dir).unwrap();
        // Restarted later: one more hour has closed meanwhile. The interrupted range is finished
        // first, then the new hour; no hour is read twice.
        let timed_later: Vec<StoredResult> =
            (0..5).map(|i| timed(urls[1], "eu", start + 6 * H + i, 5.0, ProbeStatus::Up)).collect();
        store.record_batch("agent", 1_000, &timed_later).unwrap();
        let done = prune(&store, pass(BASE + 7, BASE), 4);
        for (u, expected) in urls.iter().zip(&whole) {
            assert_eq!(&store.latency_hours(u, BASE, BASE + 5).unwrap(), expected, "{u}");
        }
        assert_eq!(store.latency_hours(urls[1], BASE + 6, BASE + 6).unwrap()["eu"][0].1.ok, 5);
        assert_eq!(done_before_stop + done.latency_hours, 18 + 1, "no hour is rolled up twice");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_records_start_afresh_instead_of_stopping_housekeeping() {
        let dir = temp_dir("latency-unreadable");
        let store = Store::open(&dir).unwrap();
        let a = "https://a.example/";
        add_targets(&store, &[a]);
        store.record_batch("agent", 1, &[timed(a, "eu", BASE * H + 5, 12.0, ProbeStatus::Up)]).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(HOUSEKEEPING).unwrap().insert(LATENCY_PROGRESS, b"{not json".as_slice()).unwrap();
        let day = day_of_hour(BASE);
        txn.open_table(LATENCY_DAYS).unwrap().insert((a, "eu", day), [7u8, 1, 2].as_slice()).unwrap();
        txn.commit().unwrap();
        let done = prune(&store, pass(BASE + 1, BASE - 24), 100);
        assert_eq!(done.latency_hours, 1);
        assert_eq!(store.latency_hours(a, BASE, BASE).unwrap()["eu"][0].1.p50_us, 12_000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn latency_rollups_are_pruned_with_the_availability_rollups_and_outlive_the_results() {
        let dir = temp_dir("latency-prune");
        let store = Store::open(&dir).unwrap();
        let a = "https://a.example/";
        add_targets(&store, &[a]);
        let day = crate::latency::day_of_hour(BASE);
        let batch: Vec<StoredResult> =
            (0..3).map(|d| timed(a, "eu", (BASE + d * 24) * H + 5, 12.0, ProbeStatus::Up)).collect();
        store.record_batch("agent", 1, &batch).unwrap();
        prune(&store, pass(BASE + 3 * 24, BASE), 100);
        assert_eq!(store.latency_hours(a, BASE, BASE + 3 * 24).unwrap()["eu"].len(), 3);
        // The raw results go; the roll-ups stay. Then roll-ups of days before day+2 go.
        let mut p = Pruning::new(i64::MAX, i64::MIN, i64::MIN);
        p.rollups_before_day = day + 2;
        let done = prune(&store, p, 1);
        assert_eq!(done.results, 3);
        assert_eq!(done.rollups, 2, "two days of one region, one row each");
        let left = store.latency_hours(a, BASE, BASE + 3 * 24).unwrap();
        assert_eq!(left["eu"].iter().map(|(h, _)| *h).collect::<Vec<_>>(), [BASE + 48]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
