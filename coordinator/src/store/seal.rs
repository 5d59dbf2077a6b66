//! Housekeeping's work on results, a target at a time (walking target ids, so no time index is
//! needed): pruning what aged out, and sealing closed hours into blocks.
//!
//! Pruning removes a target's rows not yet sealed from before the cutoff exactly, its sealed
//! blocks whose hour ended by the cutoff (a block is removed whole: results are kept the
//! retention and at most one hour more), and its facts (`FACTS`) of days that ended by it.
//! Sealing moves a target's rows of hours that closed into one block per hour (merged into the
//! block already there, for rows that came late). Both stop after a bounded amount of work and
//! say which target to go on from.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::codec::{self, Row, block};
use super::db::StoreError;
use super::ids::{DAY_MS, HOUR_MS};
use redb::ReadableTable;

use super::tables::{BLOCKS, FACTS, RECENT, TARGET_URLS};

/// How long after an hour ends its rows are sealed: batches an agent sends late (from its
/// outbox, after a reconnect) mostly arrive by then; later ones are merged into the block.
pub const SEAL_AFTER: Duration = Duration::from_secs(600);

/// The hour boundary before which rows are sealed, at `now_ms`.
pub(super) fn seal_before(now_ms: i64) -> i64 {
    let ready = now_ms.saturating_sub(SEAL_AFTER.as_millis() as i64);
    ready.div_euclid(HOUR_MS).saturating_mul(HOUR_MS)
}

/// What one step did: rows removed or sealed, and the target to go on from (`None`: the walk is
/// over). Work counts rows and targets visited.
pub(super) struct Walked {
    pub rows: u64,
    pub next: Option<u32>,
}

/// Removes results from before `before_ms`, targets from `from` on, for at most `max` work and
/// `max_time`.
pub(super) fn prune(
    txn: &redb::WriteTransaction,
    before_ms: i64,
    from: u32,
    max: u64,
    max_time: Duration,
) -> Result<Walked, StoreError> {
    let started = Instant::now();
    let mut recent = txn.open_table(RECENT)?;
    let mut blocks = txn.open_table(BLOCKS)?;
    let mut facts = txn.open_table(FACTS)?;
    let (mut rows, mut work) = (0u64, 0u64);
    // A block is removed once its whole hour is before the cutoff.
    let hours_before = before_ms.saturating_sub(HOUR_MS).saturating_add(1);
    let days_before = before_ms.div_euclid(DAY_MS);
    let urls = txn.open_table(TARGET_URLS)?;
    for entry in urls.range(from..)? {
        let target = entry?.0.value();
        work += 1;
        let room = max.saturating_sub(work).max(1) as usize;
        let gone = recent
            .extract_from_if((target, i64::MIN, 0u32, 0u64, 0u32)..(target, before_ms, 0u32, 0u64, 0u32), |_, _| true)?
            .take(room)
            .count() as u64;
        rows += gone;
        work += gone;
        let mut more = gone as usize == room;
        let room = max.saturating_sub(work).max(1) as usize;
        let mut parts = 0;
        for part in
            blocks.extract_from_if((target, i64::MIN, 0u32)..(target, hours_before, 0u32), |_, _| true)?.take(room)
        {
            let (_, value) = part?;
            let n = block::rows(value.value())?;
            rows += n;
            work += n.max(1);
            parts += 1;
        }
        more |= parts == room;
        let room = max.saturating_sub(work).max(1) as usize;
        let facts_gone = facts
            .extract_from_if((target, i64::MIN, 0u64)..(target, days_before, 0u64), |_, _| true)?
            .take(room)
            .count();
        work += facts_gone as u64;
        more |= facts_gone == room;
        if more {
            return Ok(Walked { rows, next: Some(target) });
        }
        if work >= max || started.elapsed() >= max_time {
            return Ok(Walked { rows, next: target.checked_add(1) });
        }
    }
    Ok(Walked { rows, next: None })
}

/// Seals rows of hours before `before_ms` (an hour boundary) into blocks, targets from `from` on,
/// for at most `max` work and `max_time`.
pub(super) fn seal(
    txn: &redb::WriteTransaction,
    before_ms: i64,
    from: u32,
    max: u64,
    max_time: Duration,
) -> Result<Walked, StoreError> {
    let started = Instant::now();
    let mut recent = txn.open_table(RECENT)?;
    let mut blocks = txn.open_table(BLOCKS)?;
    let (mut rows, mut work) = (0u64, 0u64);
    let urls = txn.open_table(TARGET_URLS)?;
    for entry in urls.range(from..)? {
        let target = entry?.0.value();
        work += 1;
        let room = max.saturating_sub(work).max(1) as usize;
        let mut hours: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
        let mut taken = 0;
        for entry in recent
            .extract_from_if((target, i64::MIN, 0u32, 0u64, 0u32)..(target, before_ms, 0u32, 0u64, 0u32), |_, _| true)?
            .take(room)
        {
            let (key, value) = entry?;
            let at_ms = key.value().1;
            let row = codec::decode_row(at_ms, value.value())?;
            hours.entry(at_ms.div_euclid(HOUR_MS).saturating_mul(HOUR_MS)).or_default().push(row);
            taken += 1;
        }
        for (hour, mut sealed) in hours {
            rows += sealed.len() as u64;
            work += sealed.len() as u64;
            // Rows that came after the hour was sealed join its block.
            for part in blocks.extract_from_if((target, hour, 0u32)..=(target, hour, u32::MAX), |_, _| true)? {
                let (_, value) = part?;
                sealed.extend(block::decode(value.value())?);
            }
            for (index, part) in block::encode(&mut sealed, hour).iter().enumerate() {
                blocks.insert((target, hour, index as u32), part.as_slice())?;
            }
        }
        if taken == room {
            return Ok(Walked { rows, next: Some(target) });
        }
        if work >= max || started.elapsed() >= max_time {
            return Ok(Walked { rows, next: target.checked_add(1) });
        }
    }
    Ok(Walked { rows, next: None })
}
