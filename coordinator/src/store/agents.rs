//! Agents and where they come from: agent records, each agent's last committed batch sequence,
//! revoked certificates, and the regions agents have connected from.

use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::db::{Store, StoreError, corrupt};
use super::tables::{AGENTS, REGIONS, REVOKED, SEQUENCES};

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

/// Opens the agents' tables. A database from before region records gets them from its agents:
/// each region its agents came from, last seen when its agents last were.
pub(super) fn open_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(AGENTS)?;
    txn.open_table(SEQUENCES)?;
    txn.open_table(REVOKED)?;
    let mut regions = txn.open_table(REGIONS)?;
    if regions.is_empty()? {
        let mut seen: BTreeMap<String, i64> = BTreeMap::new();
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
    Ok(())
}

impl Store {
    pub fn record_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        let bytes = serde_json::to_vec(agent).map_err(corrupt)?;
        txn.open_table(AGENTS)?.insert(agent.name.as_str(), bytes.as_slice())?;
        txn.commit()?;
        Ok(())
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

    /// Writes region records (one transaction).
    pub fn put_regions(&self, records: &[RegionRecord]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        write_regions(&txn, records)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_dir;

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
}

/// Writes region records in `txn`.
pub(super) fn write_regions(txn: &redb::WriteTransaction, records: &[RegionRecord]) -> Result<(), StoreError> {
    let mut table = txn.open_table(REGIONS)?;
    for record in records {
        table.insert(record.name.as_str(), serde_json::to_vec(record).map_err(corrupt)?.as_slice())?;
    }
    Ok(())
}
