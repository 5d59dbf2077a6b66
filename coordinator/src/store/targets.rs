//! Targets: their specs, keyed by URL. Removing one also drops its verdict and newest results and
//! closes its open incident, in the same transaction as the alerts its removal sends.

use prost::Message;
use redb::ReadableTable;
use vantage_proto::v1::TargetSpec;

use super::alerts::write_alerts;
use super::db::{Store, StoreError, corrupt};
use super::tables::{LATEST, TARGETS, VERDICTS};
use super::verdicts::{CLOSED_REMOVED, close_incidents};
use crate::alert::AlertRecord;
use crate::clock::now_ms;

impl Store {
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
        // Its availability so far stays (rolled up); its open spans end now.
        super::uptime::end_target(&txn, url, now_ms())?;
        txn.open_table(VERDICTS)?.remove(url)?;
        txn.open_table(LATEST)?.retain_in((url, "")..(url, "\u{10ffff}"), |_, _| false)?;
        // An open incident of a target that is gone is over.
        close_incidents(&txn, url, now_ms(), CLOSED_REMOVED)?;
        write_alerts(&txn, alerts, state)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_dir;

    #[test]
    fn a_config_upserted_again_keeps_its_targets_and_takes_what_changed() {
        let dir = temp_dir("upsert-targets");
        let spec = |url: &str, quorum: u32| TargetSpec {
            url: url.into(),
            quorum,
            source: "config".into(),
            ..Default::default()
        };
        let (a, b, c) = ("https://a.example/", "https://b.example/", "https://c.example/");
        {
            let store = Store::open(&dir).unwrap();
            store.upsert_targets(&[spec(a, 1), spec(b, 1)]).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        store.upsert_targets(&[spec(a, 1), spec(b, 2), spec(c, 1)]).unwrap();
        let mut stored = store.targets().unwrap();
        stored.sort_by(|x, y| x.url.cmp(&y.url));
        assert_eq!(stored, [spec(a, 1), spec(b, 2), spec(c, 1)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
