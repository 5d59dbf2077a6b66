//! Availability roll-ups (README: "Availability"): a span of time is added to its UTC days when
//! it ends, in the transaction that records why it ended (a verdict change, a region's opinion
//! changing, the target's removal). The span still open is read from the verdict record (the
//! target) or `UPTIME_OPEN` (a region), so a restart, even after SIGKILL, neither loses nor
//! counts twice any time: what was committed is exactly what was rolled up.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::db::{Store, StoreError, corrupt};
use super::tables::{UPTIME_BY_DAY, UPTIME_DAYS, UPTIME_OPEN, VERDICTS};
use super::verdicts::{IncidentChange, VerdictRecord};
use crate::uptime::{DAY_MS, Day, State, add_span, day_of};

/// A region's opinion of a target changed (`None`: the region no longer judges it).
#[derive(Debug, Clone, PartialEq)]
pub struct OpinionChange {
    pub url: String,
    pub region: String,
    pub state: Option<State>,
    pub at_ms: i64,
}

/// What the roll-ups hold of one target (or region) for a span of days.
#[derive(Debug, Clone, Default)]
pub struct Rolled {
    /// (day, record), oldest first.
    pub days: Vec<(i64, Day)>,
    /// The span still open: its state and since when.
    pub open: Option<(State, i64)>,
}

/// One target's roll-ups: its own, and each region's (by name) when asked for.
#[derive(Debug, Clone, Default)]
pub struct TargetRollups {
    pub url: String,
    pub target: Rolled,
    pub regions: BTreeMap<String, Rolled>,
}

pub(super) fn open_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(UPTIME_DAYS)?;
    txn.open_table(UPTIME_BY_DAY)?;
    txn.open_table(UPTIME_OPEN)?;
    Ok(())
}

/// Adds `[from, to)` in `state` (and incidents opened at `incidents`) to the days of `url`'s
/// `region`.
fn roll_up(
    txn: &redb::WriteTransaction,
    url: &str,
    region: &str,
    span: Option<(i64, i64, State)>,
    incidents: &[i64],
) -> Result<(), StoreError> {
    let mut days: BTreeMap<i64, Day> = BTreeMap::new();
    let mut table = txn.open_table(UPTIME_DAYS)?;
    let mut load = |day: i64, table: &redb::Table<(&str, &str, i64), &[u8]>| -> Result<(), StoreError> {
        if let std::collections::btree_map::Entry::Vacant(slot) = days.entry(day) {
            let held = table.get((url, region, day))?.map(|v| Day::decode(v.value()).map_err(corrupt)).transpose()?;
            slot.insert(held.unwrap_or_default());
        }
        Ok(())
    };
    // Days older than the roll-ups keep would be pruned at once: a span that long adds only the
    // days kept.
    let kept = |(from, to, _): (i64, i64, State)| add_span(from.max(to - crate::uptime::ROLLUP_DAYS * DAY_MS), to);
    let parts = span.map(kept).unwrap_or_default();
    for &(day, _, _) in &parts {
        load(day, &table)?;
    }
    for &at in incidents {
        load(day_of(at), &table)?;
    }
    if let Some((_, _, state)) = span {
        for (day, a, b) in parts {
            if let Some(record) = days.get_mut(&day) {
                record.add(a, b, state);
            }
        }
    }
    for &at in incidents {
        let day = day_of(at);
        if let Some(record) = days.get_mut(&day) {
            record.incidents.push((at - day * DAY_MS) as u32);
        }
    }
    let mut index = txn.open_table(UPTIME_BY_DAY)?;
    for (day, record) in days {
        table.insert((url, region, day), record.encode().as_slice())?;
        index.insert((day, url, region), ())?;
    }
    Ok(())
}

/// Before `url`'s verdict record is replaced by `new`: the span of the verdict it ends goes to
/// the roll-ups, with the incident `change` opens.
pub(super) fn end_verdict_span(
    txn: &redb::WriteTransaction,
    url: &str,
    new: &VerdictRecord,
    change: &IncidentChange,
) -> Result<(), StoreError> {
    // Whatever replaces it (a new verdict, or the same one with a later `since`), the time since
    // the old record's `since` was spent in its state.
    let span = read_verdict(txn, url)?
        .filter(|(_, since)| *since < new.since_ms)
        .map(|(state, since)| (since, new.since_ms, state));
    let opened = match change {
        IncidentChange::Open(incident) => vec![incident.opened.as_ref().map_or(new.since_ms, crate::clock::ms)],
        _ => Vec::new(),
    };
    if span.is_some() || !opened.is_empty() {
        roll_up(txn, url, "", span, &opened)?;
    }
    Ok(())
}

fn read_verdict(txn: &redb::WriteTransaction, url: &str) -> Result<Option<(State, i64)>, StoreError> {
    let verdicts = txn.open_table(VERDICTS)?;
    let Some(bytes) = verdicts.get(url)? else { return Ok(None) };
    let record: VerdictRecord = serde_json::from_slice(bytes.value()).map_err(corrupt)?;
    Ok(State::of_verdict(&record.verdict).map(|s| (s, record.since_ms)))
}

fn encode_open(state: State, since: i64) -> [u8; 9] {
    let mut out = [0; 9];
    out[0] = state.index() as u8;
    out[1..].copy_from_slice(&since.to_le_bytes());
    out
}

fn decode_open(bytes: &[u8]) -> Result<(State, i64), StoreError> {
    let state = bytes.first().and_then(|i| State::from_index(*i));
    let since = bytes.get(1..9).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes);
    state.zip(since).ok_or_else(|| corrupt("an open availability span is malformed"))
}

/// Regions' opinions changed: each ends its open span (rolled up) and opens the next. A region
/// turning down counts as one of its incidents. A change to the state already held open (the hub's
/// first judgement after a restart reports every region) writes nothing.
pub(super) fn write_opinions(txn: &redb::WriteTransaction, changes: &[OpinionChange]) -> Result<(), StoreError> {
    for change in changes {
        let (url, region) = (change.url.as_str(), change.region.as_str());
        let held = {
            let open = txn.open_table(UPTIME_OPEN)?;
            open.get((url, region))?.map(|v| decode_open(v.value())).transpose()?
        };
        if held.map(|(s, _)| s) == change.state {
            continue;
        }
        let span = held.map(|(state, since)| (since, change.at_ms, state));
        let incident = (change.state == Some(State::Down)).then_some(change.at_ms);
        if span.is_some() || incident.is_some() {
            roll_up(txn, url, region, span, incident.as_slice())?;
        }
        let mut open = txn.open_table(UPTIME_OPEN)?;
        match change.state {
            Some(state) => open.insert((url, region), encode_open(state, change.at_ms).as_slice())?,
            None => open.remove((url, region))?,
        };
    }
    Ok(())
}

/// `url` is being removed at `at_ms`: its open spans (the verdict's, each region's) end there.
/// Its days stay until they age out.
pub(super) fn end_target(txn: &redb::WriteTransaction, url: &str, at_ms: i64) -> Result<(), StoreError> {
    if let Some((state, since)) = read_verdict(txn, url)? {
        roll_up(txn, url, "", Some((since, at_ms, state)), &[])?;
    }
    let regions: Vec<String> = {
        let open = txn.open_table(UPTIME_OPEN)?;
        open.range((url, "")..=(url, "\u{10ffff}"))?
            .map(|row| row.map(|(k, _)| k.value().1.to_owned()))
            .collect::<Result<_, _>>()?
    };
    let changes: Vec<OpinionChange> =
        regions.into_iter().map(|region| OpinionChange { url: url.to_owned(), region, state: None, at_ms }).collect();
    write_opinions(txn, &changes)
}

impl Store {
    /// The roll-ups of `urls` for days `from_day..=to_day`, with their open spans; each region's
    /// too when `regions`. One read transaction.
    pub fn rollups(
        &self,
        urls: &[String],
        from_day: i64,
        to_day: i64,
        regions: bool,
    ) -> Result<Vec<TargetRollups>, StoreError> {
        let txn = self.db.begin_read()?;
        let days = txn.open_table(UPTIME_DAYS)?;
        let open = txn.open_table(UPTIME_OPEN)?;
        let verdicts = txn.open_table(VERDICTS)?;
        let read_days = |url: &str, region: &str| -> Result<Vec<(i64, Day)>, StoreError> {
            days.range((url, region, from_day)..=(url, region, to_day))?
                .map(|row| {
                    let (k, v) = row?;
                    Ok((k.value().2, Day::decode(v.value()).map_err(corrupt)?))
                })
                .collect()
        };
        let mut out = Vec::with_capacity(urls.len());
        for url in urls {
            let url = url.as_str();
            let mut rollups = TargetRollups { url: url.to_owned(), ..Default::default() };
            rollups.target.days = read_days(url, "")?;
            if let Some(bytes) = verdicts.get(url)? {
                let record: VerdictRecord = serde_json::from_slice(bytes.value()).map_err(corrupt)?;
                rollups.target.open = State::of_verdict(&record.verdict).map(|s| (s, record.since_ms));
            }
            if regions {
                // Each region that has days: one seek to its first row after the last one's.
                let mut after = String::from("\u{0}");
                loop {
                    let next = days.range((url, after.as_str(), i64::MIN)..=(url, "\u{10ffff}", i64::MAX))?.next();
                    let Some(row) = next else { break };
                    let region = row?.0.value().1.to_owned();
                    let rolled = Rolled { days: read_days(url, &region)?, open: None };
                    after = format!("{region}\u{0}");
                    rollups.regions.insert(region, rolled);
                }
                for row in open.range((url, "")..=(url, "\u{10ffff}"))? {
                    let (k, v) = row?;
                    let state = decode_open(v.value())?;
                    rollups.regions.entry(k.value().1.to_owned()).or_default().open = Some(state);
                }
                rollups.regions.retain(|_, r| r.open.is_some() || !r.days.is_empty());
            }
            out.push(rollups);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_dir;
    use crate::uptime::figures;

    const H: i64 = 3_600_000;

    fn verdict(v: &str, since_ms: i64) -> VerdictRecord {
        VerdictRecord { verdict: v.into(), cause: None, since_ms, failing_regions: vec![] }
    }

    #[test]
    fn spans_roll_up_when_they_end_and_survive_reopening_without_double_counting() {
        let dir = temp_dir("uptime-rollups");
        let u = "https://a.example/";
        let d0 = 20_000 * DAY_MS;
        {
            let store = Store::open(&dir).unwrap();
            let change = |r: VerdictRecord, i| vec![(u.to_owned(), r, i)];
            store.record_changes(&change(verdict("UP", d0 + 20 * H), IncidentChange::None), &[], &[]).unwrap();
            let incident = vantage_proto::v1::Incident {
                url: u.into(),
                opened: Some(crate::clock::timestamp(d0 + 23 * H)),
                ..Default::default()
            };
            store
                .record_changes(&change(verdict("DOWN", d0 + 23 * H), IncidentChange::Open(incident)), &[], &[])
                .unwrap();
            store
                .record_changes(&change(verdict("UP", d0 + DAY_MS + H), IncidentChange::Close { at_ms: 0 }), &[], &[])
                .unwrap();
            let regions = [
                OpinionChange { url: u.into(), region: "eu".into(), state: Some(State::Up), at_ms: d0 + 20 * H },
                OpinionChange { url: u.into(), region: "eu".into(), state: Some(State::Down), at_ms: d0 + 22 * H },
            ];
            store.record_event_with_opinions(&[], &[], &[], &[], &[], &regions).unwrap();
        }
        // Reopened as after a SIGKILL: what was committed is all there is, once.
        let store = Store::open(&dir).unwrap();
        let now = d0 + DAY_MS + 4 * H;
        let rolled = store.rollups(&[u.to_owned()], day_of(now - 2 * DAY_MS), day_of(now), true).unwrap();
        let target = &rolled[0].target;
        assert_eq!(target.open, Some((State::Up, d0 + DAY_MS + H)));
        let f = figures(target.days.iter().map(|(d, r)| (*d, r)), target.open, now - DAY_MS, now);
        assert_eq!(
            (f.of(State::Down), f.judged_ms(), f.incidents),
            (2 * H, 8 * H, 1),
            "judged since the first verdict at 20:00"
        );
        let eu = &rolled[0].regions["eu"];
        assert_eq!(eu.open, Some((State::Down, d0 + 22 * H)));
        let f = figures(eu.days.iter().map(|(d, r)| (*d, r)), eu.open, d0, now);
        assert_eq!((f.of(State::Up), f.of(State::Down), f.incidents), (2 * H, 6 * H, 1));
        // Reported again in the state held open (as after a restart): nothing changes.
        let again = [OpinionChange { url: u.into(), region: "eu".into(), state: Some(State::Down), at_ms: now }];
        store.record_event_with_opinions(&[], &[], &[], &[], &[], &again).unwrap();
        let same = store.rollups(&[u.to_owned()], day_of(d0), day_of(now), true).unwrap();
        assert_eq!(same[0].regions["eu"].open, Some((State::Down, d0 + 22 * H)));
        // Removing the target ends its spans; its days stay.
        store.delete_target(u).unwrap();
        let rolled = store.rollups(&[u.to_owned()], day_of(d0), day_of(now), true).unwrap();
        assert!(rolled[0].target.open.is_none() && rolled[0].regions["eu"].open.is_none());
        assert!(!rolled[0].target.days.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
