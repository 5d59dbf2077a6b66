//! The default region set: every region an agent has connected from, less the ones that left it
//! (forgotten by `ForgetRegion`, or by themselves after `region_forget_after` without an agent).
//! Targets without their own `regions` are judged by this set, so a region gone for good must
//! leave it or it holds their quorum hostage. Pure: the hub applies what it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::store::RegionRecord;

/// Connected regions' `last_seen` is written to the store at most this often (it only bounds how
/// early a region can be forgotten after a coordinator crash).
pub const SAVE_EVERY_MS: i64 = 60_000;

#[derive(Debug, Clone, Default)]
pub struct RegionSet {
    records: BTreeMap<String, RegionRecord>,
    /// When connected regions' records were last written.
    saved_ms: i64,
}

/// Why `forget` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    #[error("region {region} has {agents} connected agent(s): stop them (or revoke their certificates) first")]
    Connected { region: String, agents: usize },
}

impl RegionSet {
    pub fn new(records: impl IntoIterator<Item = RegionRecord>) -> RegionSet {
        RegionSet { records: records.into_iter().map(|r| (r.name.clone(), r)).collect(), saved_ms: 0 }
    }

    /// The regions in the default set, by name.
    pub fn current(&self) -> BTreeSet<String> {
        self.records.values().filter(|r| r.forgotten_ms.is_none()).map(|r| r.name.clone()).collect()
    }

    pub fn contains(&self, region: &str) -> bool {
        self.records.get(region).is_some_and(|r| r.forgotten_ms.is_none())
    }

    pub fn records(&self) -> impl Iterator<Item = &RegionRecord> {
        self.records.values()
    }

    pub fn get(&self, region: &str) -> Option<&RegionRecord> {
        self.records.get(region)
    }

    /// An agent of `region` connected or left now: the region is (back) in the set. Returns the
    /// record to store, and whether the region had been forgotten.
    pub fn seen(&mut self, region: &str, now: i64) -> (RegionRecord, bool) {
        let record = self.records.entry(region.to_owned()).or_insert_with(|| RegionRecord {
            name: region.to_owned(),
            last_seen_ms: now,
            forgotten_ms: None,
        });
        let returned = record.forgotten_ms.take().is_some();
        record.last_seen_ms = record.last_seen_ms.max(now);
        (record.clone(), returned)
    }

    /// Takes `region` out of the set now. `Ok(None)`: it was not in it (unknown, or forgotten
    /// already); otherwise the record to store.
    pub fn forget(&mut self, region: &str, connected: usize, now: i64) -> Result<Option<RegionRecord>, ForgetError> {
        if connected > 0 {
            return Err(ForgetError::Connected { region: region.to_owned(), agents: connected });
        }
        match self.records.get_mut(region) {
            Some(record) if record.forgotten_ms.is_none() => {
                record.forgotten_ms = Some(now);
                Ok(Some(record.clone()))
            }
            _ => Ok(None),
        }
    }

    /// When `region` leaves the set by itself unless an agent connects first: `None` while one is
    /// connected, once it is forgotten, or when `after` is zero (never).
    pub fn forget_at(&self, region: &str, connected: bool, after: Duration) -> Option<i64> {
        let record = self.records.get(region)?;
        if connected || after.is_zero() || record.forgotten_ms.is_some() {
            return None;
        }
        Some(record.last_seen_ms.saturating_add(after.as_millis() as i64))
    }

    /// The periodic look: connected regions are seen now; regions in the set without a connected
    /// agent for `after` are forgotten. Returns the regions forgotten now (with how long they had
    /// been without an agent) and the records to store.
    pub fn tick(
        &mut self,
        connected: &BTreeSet<String>,
        now: i64,
        after: Duration,
    ) -> (Vec<(String, i64)>, Vec<RegionRecord>) {
        let mut forgotten = Vec::new();
        let mut save = Vec::new();
        let refresh = now - self.saved_ms >= SAVE_EVERY_MS;
        for record in self.records.values_mut() {
            if connected.contains(&record.name) {
                record.last_seen_ms = now;
                if record.forgotten_ms.take().is_some() || refresh {
                    save.push(record.clone());
                }
                continue;
            }
            let quiet = now.saturating_sub(record.last_seen_ms);
            if record.forgotten_ms.is_none() && !after.is_zero() && quiet >= after.as_millis() as i64 {
                record.forgotten_ms = Some(now);
                forgotten.push((record.name.clone(), quiet));
                save.push(record.clone());
            }
        }
        if refresh {
            self.saved_ms = now;
        }
        (forgotten, save)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, last_seen_ms: i64, forgotten_ms: Option<i64>) -> RegionRecord {
        RegionRecord { name: name.into(), last_seen_ms, forgotten_ms }
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    #[test]
    fn forgotten_regions_are_out_of_the_set_until_an_agent_connects() {
        let mut set = RegionSet::new([record("eu", 0, None), record("us", 0, None), record("old", 0, Some(5))]);
        assert_eq!(names(&set.current()), ["eu", "us"]);
        assert!(!set.contains("old"));
        let (stored, returned) = set.seen("old", 1_000);
        assert!(returned, "a forgotten region comes back with an agent");
        assert_eq!(stored, record("old", 1_000, None));
        assert_eq!(names(&set.current()), ["eu", "old", "us"]);
        let (_, returned) = set.seen("new", 2_000);
        assert!(!returned, "a new region is not a return");
        assert!(set.contains("new"));
    }

    #[test]
    fn forgetting_needs_a_region_in_the_set_without_connected_agents() {
        let mut set = RegionSet::new([record("eu", 0, None), record("r4", 0, None)]);
        assert_eq!(
            set.forget("eu", 2, 100),
            Err(ForgetError::Connected { region: "eu".into(), agents: 2 }),
            "a region with agents cannot be forgotten"
        );
        assert_eq!(set.forget("r4", 0, 100), Ok(Some(record("r4", 0, Some(100)))));
        assert_eq!(set.forget("r4", 0, 200), Ok(None), "forgotten already");
        assert_eq!(set.forget("nowhere", 0, 200), Ok(None), "never known");
        assert_eq!(names(&set.current()), ["eu"]);
    }

    #[test]
    fn a_region_without_agents_leaves_by_itself_after_the_timeout_from_its_last_agent() {
        let after = Duration::from_secs(3);
        let mut set = RegionSet::new([record("eu", 0, None), record("r4", 10_000, None)]);
        let connected: BTreeSet<String> = ["eu".to_owned()].into();
        assert_eq!(set.forget_at("r4", false, after), Some(13_000));
        assert_eq!(set.forget_at("eu", true, after), None, "not while an agent is connected");
        let (gone, _) = set.tick(&connected, 12_999, after);
        assert!(gone.is_empty(), "not before the timeout");
        let (gone, save) = set.tick(&connected, 13_000, after);
        assert_eq!(gone, [("r4".to_owned(), 3_000)]);
        assert!(save.contains(&record("r4", 10_000, Some(13_000))));
        assert_eq!(names(&set.current()), ["eu"]);
        assert_eq!(set.forget_at("r4", false, after), None, "forgotten already");
        let (gone, _) = set.tick(&connected, 99_000, after);
        assert!(gone.is_empty(), "forgotten once");
        // A connected region is never forgotten, however long ago it was first seen.
        let (gone, _) = set.tick(&connected, 10 * WEEK.as_millis() as i64, WEEK);
        assert!(gone.is_empty());
    }

    #[test]
    fn zero_means_never_by_itself() {
        let mut set = RegionSet::new([record("r4", 0, None)]);
        let (gone, _) = set.tick(&BTreeSet::new(), i64::MAX / 2, Duration::ZERO);
        assert!(gone.is_empty());
        assert_eq!(set.forget_at("r4", false, Duration::ZERO), None);
    }

    #[test]
    fn connected_regions_are_saved_now_and_then_not_every_tick() {
        let mut set = RegionSet::new([record("eu", 0, None)]);
        let connected: BTreeSet<String> = ["eu".to_owned()].into();
        let (_, save) = set.tick(&connected, 100_000, WEEK);
        assert_eq!(save, [record("eu", 100_000, None)]);
        let (_, save) = set.tick(&connected, 101_000, WEEK);
        assert!(save.is_empty(), "a second later: nothing to write");
        let (_, save) = set.tick(&connected, 100_000 + SAVE_EVERY_MS, WEEK);
        assert_eq!(save.len(), 1);
    }
}
