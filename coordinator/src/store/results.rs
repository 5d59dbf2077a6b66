//! Results: each agent batch committed once (its sequence drops redeliveries), as compact rows
//! (`codec`) keyed by target id, and whole as the newest result per target and region. History
//! reads rows not yet sealed (`RECENT`) and sealed blocks (`BLOCKS`) and gives back the entries
//! as they came in (`codec::join`).

use std::collections::HashMap;

use prost::Message;
use redb::{ReadableTable, Table};
use vantage_proto::v1::HistoryEntry;

use super::codec::{self, Row, block};
use super::db::{Store, StoreError, corrupt};
use super::ids::{self, DAY_MS, HOUR_MS};
use super::tables::{BLOCKS, FACTS, LATEST, NAME_IDS, NAMES, RECENT, SEQUENCES, TARGET_IDS, TARGET_URLS};
use crate::clock::entry_ms;

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

/// The tables a write of results goes through, open for one transaction.
pub(super) struct Writer<'t> {
    target_ids: Table<'t, &'static str, u32>,
    target_urls: Table<'t, u32, &'static str>,
    name_ids: Table<'t, &'static str, u32>,
    names: Table<'t, u32, &'static str>,
    facts: Table<'t, (u32, i64, u64), &'static [u8]>,
    recent: Table<'t, (u32, i64, u32, u64, u32), &'static [u8]>,
    latest: Table<'t, (&'static str, &'static str), &'static [u8]>,
}

impl<'t> Writer<'t> {
    pub(super) fn open(txn: &'t redb::WriteTransaction) -> Result<Writer<'t>, StoreError> {
        Ok(Writer {
            target_ids: txn.open_table(TARGET_IDS)?,
            target_urls: txn.open_table(TARGET_URLS)?,
            name_ids: txn.open_table(NAME_IDS)?,
            names: txn.open_table(NAMES)?,
            facts: txn.open_table(FACTS)?,
            recent: txn.open_table(RECENT)?,
            latest: txn.open_table(LATEST)?,
        })
    }

    /// Writes one result as a row not yet sealed, its residual once per target and day, and
    /// (with `newest`) as the newest of its target and region where it is.
    pub(super) fn insert(
        &mut self,
        result: &StoredResult,
        sequence: u64,
        index: u32,
        newest: bool,
    ) -> Result<(), StoreError> {
        let target = ids::intern(&mut self.target_ids, &mut self.target_urls, &result.url)?;
        let (mut row, residual) = codec::split(&result.entry, &result.url, result.at_ms);
        row.meta.region = ids::intern(&mut self.name_ids, &mut self.names, &result.entry.region)?;
        row.meta.agent = ids::intern(&mut self.name_ids, &mut self.names, &result.entry.agent)?;
        if let Some(bytes) = residual {
            let key = (target, result.at_ms.div_euclid(DAY_MS), row.meta.residual);
            if self.facts.get(key)?.is_none() {
                self.facts.insert(key, bytes.as_slice())?;
            }
        }
        self.recent
            .insert((target, result.at_ms, row.meta.region, sequence, index), codec::encode_row(&row).as_slice())?;
        if !newest {
            return Ok(());
        }
        let region = result.entry.region.as_str();
        let newer = match self.latest.get((result.url.as_str(), region))? {
            Some(current) => {
                let current = HistoryEntry::decode(current.value()).map_err(corrupt)?;
                entry_ms(&current) <= result.at_ms
            }
            None => true,
        };
        if newer {
            self.latest.insert((result.url.as_str(), region), result.entry.encode_to_vec().as_slice())?;
        }
        Ok(())
    }
}

impl Store {
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
            let mut writer = Writer::open(&txn)?;
            for (index, result) in results.iter().enumerate() {
                writer.insert(result, sequence, index as u32, true)?;
            }
        }
        super::compact::count_stored(&txn, results.len() as i64)?;
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
    /// for one region: the rows not yet sealed, and the sealed blocks from the newest hour back
    /// until `limit` newer rows are found.
    pub fn history(
        &self,
        url: &str,
        region: Option<&str>,
        since_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredResult>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(target) = txn.open_table(TARGET_IDS)?.get(url)?.map(|v| v.value()) else { return Ok(Vec::new()) };
        let region = match region {
            Some(name) => match txn.open_table(NAME_IDS)?.get(name)? {
                Some(id) => Some(id.value()),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        if since_ms > until_ms || limit == 0 {
            return Ok(Vec::new());
        }
        // (row, agent sequence, index in batch): the order rows of the same ms come in.
        let mut found: Vec<(Row, u64, u32)> = Vec::new();
        let recent = txn.open_table(RECENT)?;
        for entry in
            recent.range((target, since_ms, 0u32, 0u64, 0u32)..=(target, until_ms, u32::MAX, u64::MAX, u32::MAX))?
        {
            let (key, value) = entry?;
            let (_, at_ms, row_region, sequence, index) = key.value();
            if region.is_none_or(|r| r == row_region) {
                found.push((codec::decode_row(at_ms, value.value())?, sequence, index));
            }
        }
        let blocks = txn.open_table(BLOCKS)?;
        let first_hour = since_ms.div_euclid(HOUR_MS).saturating_mul(HOUR_MS);
        for part in blocks.range((target, first_hour, 0u32)..=(target, until_ms, u32::MAX))?.rev() {
            let (key, value) = part?;
            let (_, hour, _) = key.value();
            // Every row still to come is older than this hour's end.
            if found.iter().filter(|(r, _, _)| r.at_ms >= hour.saturating_add(HOUR_MS)).count() >= limit {
                break;
            }
            for row in block::decode(value.value())? {
                if (since_ms..=until_ms).contains(&row.at_ms) && region.is_none_or(|r| r == row.meta.region) {
                    found.push((row, 0, 0));
                }
            }
        }
        let names = txn.open_table(NAMES)?;
        let mut name_of: HashMap<u32, String> = HashMap::new();
        for (row, _, _) in &found {
            for id in [row.meta.region, row.meta.agent] {
                if let std::collections::hash_map::Entry::Vacant(slot) = name_of.entry(id) {
                    let name = names.get(id)?.ok_or_else(|| corrupt("an interned name is missing"))?;
                    slot.insert(name.value().to_owned());
                }
            }
        }
        found.sort_by(|(a, sa, ia), (b, sb, ib)| {
            (b.at_ms, &name_of[&b.meta.region], sb, ib).cmp(&(a.at_ms, &name_of[&a.meta.region], sa, ia))
        });
        found.truncate(limit);
        let facts = txn.open_table(FACTS)?;
        let mut residuals: HashMap<(i64, u64), Vec<u8>> = HashMap::new();
        let mut out = Vec::with_capacity(found.len());
        for (row, _, _) in &found {
            let residual = match row.meta.residual() {
                Some(hash) => {
                    let key = (row.at_ms.div_euclid(DAY_MS), hash);
                    if !residuals.contains_key(&key) {
                        let found = facts.get((target, key.0, key.1))?.map(|bytes| bytes.value().to_vec());
                        residuals.extend(found.map(|bytes| (key, bytes)));
                    }
                    residuals.get(&key).map(Vec::as_slice)
                }
                None => None,
            };
            let entry = codec::join(row, url, &name_of[&row.meta.region], &name_of[&row.meta.agent], residual)?;
            out.push(StoredResult { url: url.to_owned(), at_ms: row.at_ms, entry });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::ProbeStatus;

    use super::*;
    use crate::store::housekeeping::Pruning;
    use crate::store::testing::{prune, result, rich_result, temp_dir};

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

    #[test]
    fn history_reads_sealed_blocks_and_recent_rows_as_written_late_rows_join_their_block() {
        const MIN: i64 = 60_000;
        const HOUR: i64 = 3_600_000;
        let dir = temp_dir("sealed-history");
        let store = Store::open(&dir).unwrap();
        let (a, b) = ("https://a.example/", "https://b.example/");
        let mut written = Vec::new();
        let mut sequence = 0;
        // Three hours, every minute from two regions, a down spell in the second hour.
        for minute in 0..180 {
            let status = if (70..80).contains(&minute) { ProbeStatus::Down } else { ProbeStatus::Up };
            let batch = vec![
                rich_result(a, "eu", minute * MIN + 1_000, status),
                rich_result(a, "us", minute * MIN + 20_000, ProbeStatus::Up),
                rich_result(b, "eu", minute * MIN + 1_500, ProbeStatus::Up),
            ];
            sequence += 1;
            store.record_batch("agent", sequence, &batch).unwrap();
            written.extend(batch.into_iter().filter(|r| r.url == a));
        }
        written.reverse();
        let mut pruning = Pruning::new(i64::MIN, i64::MIN, i64::MIN);
        pruning.seal_before = 2 * HOUR;
        let done = prune(&store, pruning, 50);
        assert_eq!(done.sealed, 2 * 60 * 3, "the two closed hours sealed");
        let all = store.history(a, None, i64::MIN, i64::MAX, 10_000).unwrap();
        assert_eq!(all, written, "every result read back as written, newest first");
        // Limits and spans across blocks and rows not yet sealed.
        assert_eq!(store.history(a, None, i64::MIN, i64::MAX, 5).unwrap(), written[..5]);
        let span = store.history(a, None, 59 * MIN, 121 * MIN, 10_000).unwrap();
        let expected: Vec<_> = written.iter().filter(|r| (59 * MIN..=121 * MIN).contains(&r.at_ms)).cloned().collect();
        assert_eq!(span, expected);
        let us = store.history(a, Some("us"), 0, 2 * HOUR, 3).unwrap();
        assert_eq!(
            us.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [119 * MIN + 20_000, 118 * MIN + 20_000, 117 * MIN + 20_000]
        );
        assert!(store.history(a, Some("nowhere"), i64::MIN, i64::MAX, 10).unwrap().is_empty());
        assert!(store.history("https://unknown.example/", None, i64::MIN, i64::MAX, 10).unwrap().is_empty());
        // A batch that comes late (an agent's outbox, after the hour was sealed) joins its block.
        let late = rich_result(a, "ap", 30 * MIN, ProbeStatus::Down);
        store.record_batch("agent-ap", 1, std::slice::from_ref(&late)).unwrap();
        let mut pruning = Pruning::new(i64::MIN, i64::MIN, i64::MIN);
        pruning.seal_before = 2 * HOUR;
        assert_eq!(prune(&store, pruning, 50).sealed, 1);
        let hour0 = store.history(a, None, 0, HOUR - 1, 10_000).unwrap();
        assert_eq!(hour0.len(), 121);
        assert_eq!(hour0.iter().find(|r| r.entry.region == "ap"), Some(&late));
        drop(store);
        // And after reopening.
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.history(a, None, i64::MIN, i64::MAX, 10_000).unwrap().len(), written.len() + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
