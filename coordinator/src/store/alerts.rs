//! Alerting's records: the alert outbox (each alert with its deliveries, indexed by time, by
//! subject and by whether deliveries are pending), alerting's memory between events, and
//! silences.

use redb::{ReadableTable, ReadableTableMetadata};

use super::db::{Store, StoreError, corrupt};
use super::tables::{ALERT_BY_SUBJECT, ALERT_ORDER, ALERT_PENDING, ALERT_STATE, ALERTS, SILENCES};
use crate::alert::{AlertRecord, Delivery, Silence};

/// Opens alerting's tables. The subject index is built again whenever it does not hold every
/// alert: a database from before it, or written by a binary from before it since.
pub(super) fn open_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ALERT_ORDER)?;
    let mut by_subject = txn.open_table(ALERT_BY_SUBJECT)?;
    let alerts = txn.open_table(ALERTS)?;
    if by_subject.len()? != alerts.len()? {
        by_subject.retain(|_, _| false)?;
        for row in alerts.iter()? {
            let (id, value) = row?;
            let record: AlertRecord = serde_json::from_slice(value.value()).map_err(corrupt)?;
            by_subject.insert((record.alert.subject.as_str(), record.alert.at_ms, id.value()), ())?;
        }
    }
    txn.open_table(ALERT_PENDING)?;
    txn.open_table(ALERT_STATE)?;
    txn.open_table(SILENCES)?;
    Ok(())
}

/// Queues `alerts` and applies alerting's memory changes (`None` deletes the key) in `txn`, the
/// transaction that records their cause.
pub(super) fn write_alerts(
    txn: &redb::WriteTransaction,
    alerts: &[AlertRecord],
    state: &[(String, Option<Vec<u8>>)],
) -> Result<(), StoreError> {
    {
        let mut table = txn.open_table(ALERTS)?;
        let mut order = txn.open_table(ALERT_ORDER)?;
        let mut by_subject = txn.open_table(ALERT_BY_SUBJECT)?;
        let mut pending = txn.open_table(ALERT_PENDING)?;
        for record in alerts {
            let id = record.alert.id.as_str();
            table.insert(id, serde_json::to_vec(record).map_err(corrupt)?.as_slice())?;
            order.insert((record.alert.at_ms, id), ())?;
            by_subject.insert((record.alert.subject.as_str(), record.alert.at_ms, id), ())?;
            if record.pending() {
                pending.insert(id, ())?;
            }
        }
        let mut kv = txn.open_table(ALERT_STATE)?;
        for (key, value) in state {
            match value {
                Some(bytes) => kv.insert(key.as_str(), bytes.as_slice())?,
                None => kv.remove(key.as_str())?,
            };
        }
    }
    Ok(())
}

impl Store {
    /// Writes back delivery attempts, each into its alert's record (by alert id and channel), so
    /// what other channels' attempts of the same alert wrote meanwhile is kept.
    pub fn record_deliveries(&self, deliveries: &[(String, Delivery)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ALERTS)?;
            let mut pending = txn.open_table(ALERT_PENDING)?;
            for (id, delivery) in deliveries {
                let Some(value) = table.get(id.as_str())? else { continue }; // pruned meanwhile
                let mut record: AlertRecord = serde_json::from_slice(value.value()).map_err(corrupt)?;
                drop(value);
                for slot in record.deliveries.iter_mut().filter(|d| d.channel == delivery.channel) {
                    *slot = delivery.clone();
                }
                table.insert(id.as_str(), serde_json::to_vec(&record).map_err(corrupt)?.as_slice())?;
                if record.pending() {
                    pending.insert(id.as_str(), ())?;
                } else {
                    pending.remove(id.as_str())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Alerts with deliveries still to make.
    pub fn pending_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let pending = txn.open_table(ALERT_PENDING)?;
        let table = txn.open_table(ALERTS)?;
        let mut out = Vec::new();
        for row in pending.iter()? {
            let (id, _) = row?;
            if let Some(value) = table.get(id.value())? {
                out.push(serde_json::from_slice(value.value()).map_err(corrupt)?);
            }
        }
        Ok(out)
    }

    /// The newest `limit` alerts (of one subject, when `subject` is not empty).
    pub fn alerts(&self, subject: &str, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ALERTS)?;
        let ids: Vec<String> = if subject.is_empty() {
            let order = txn.open_table(ALERT_ORDER)?;
            order
                .iter()?
                .rev()
                .take(limit)
                .map(|row| Ok(row?.0.value().1.to_owned()))
                .collect::<Result<_, StoreError>>()?
        } else {
            let by_subject = txn.open_table(ALERT_BY_SUBJECT)?;
            let rows = by_subject.range((subject, i64::MIN, "")..(subject, i64::MAX, ""))?;
            rows.rev().take(limit).map(|row| Ok(row?.0.value().2.to_owned())).collect::<Result<_, StoreError>>()?
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(value) = table.get(id.as_str())? {
                out.push(serde_json::from_slice(value.value()).map_err(corrupt)?);
            }
        }
        Ok(out)
    }

    /// Alerting's remembered state.
    pub fn alert_state(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ALERT_STATE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            out.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }

    pub fn put_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(SILENCES)?
            .insert(silence.id.as_str(), serde_json::to_vec(silence).map_err(corrupt)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Replaces every silence that came from the config file.
    pub fn replace_config_silences(&self, silences: &[Silence]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SILENCES)?;
            let old: Vec<String> = table
                .iter()?
                .filter_map(Result::ok)
                .filter_map(|(k, v)| {
                    let s: Silence = serde_json::from_slice(v.value()).ok()?;
                    (s.source == "config").then(|| k.value().to_owned())
                })
                .collect();
            for id in old {
                table.remove(id.as_str())?;
            }
            for silence in silences {
                table.insert(silence.id.as_str(), serde_json::to_vec(silence).map_err(corrupt)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn delete_silence(&self, id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let deleted = txn.open_table(SILENCES)?.remove(id)?.is_some();
        txn.commit()?;
        Ok(deleted)
    }

    pub fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SILENCES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(serde_json::from_slice(row?.1.value()).map_err(corrupt)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_dir;

    #[test]
    fn each_delivery_is_written_into_its_alert_without_undoing_the_others() {
        use crate::alert::{Alert, AlertKind, Delivery, DeliveryState};
        let dir = temp_dir("record-deliveries");
        let store = Store::open(&dir).unwrap();
        let delivery = |channel: &str, state| Delivery {
            channel: channel.into(),
            state,
            attempts: 0,
            last_error: String::new(),
            next_attempt_ms: 0,
            delivered_ms: 0,
        };
        let record = AlertRecord {
            alert: Alert::new(AlertKind::Down, "https://a.example/", 1_000, "k".into()),
            deliveries: vec![delivery("good", DeliveryState::Pending), delivery("bad", DeliveryState::Pending)],
            silenced_by: None,
        };
        let id = record.alert.id.clone();
        store.record_changes(&[], std::slice::from_ref(&record), &[]).unwrap();
        // Two sends of one alert finish apart, each written from its own copy.
        store.record_deliveries(&[(id.clone(), delivery("good", DeliveryState::Delivered))]).unwrap();
        let mut bad = delivery("bad", DeliveryState::Pending);
        bad.last_error = "HTTP 401".into();
        store.record_deliveries(&[(id.clone(), bad)]).unwrap();
        let stored = store.pending_alerts().unwrap();
        assert_eq!(stored.len(), 1);
        let states: Vec<_> = stored[0].deliveries.iter().map(|d| (d.state, d.last_error.as_str())).collect();
        assert_eq!(states, [(DeliveryState::Delivered, ""), (DeliveryState::Pending, "HTTP 401")]);
        store.record_deliveries(&[(id, delivery("bad", DeliveryState::Failed))]).unwrap();
        assert!(store.pending_alerts().unwrap().is_empty(), "settled: out of the pending index");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn alerts_by_subject_come_from_the_index_newest_first_also_after_an_upgrade() {
        use crate::alert::{Alert, AlertKind};
        let dir = temp_dir("alerts-by-subject");
        let record = |subject: &str, at: i64| AlertRecord {
            alert: Alert::new(AlertKind::Down, subject, at, format!("{subject}{at}")),
            deliveries: Vec::new(),
            silenced_by: None,
        };
        let (a, b) = ("https://a.example/", "https://b.example/");
        let ids = |records: Vec<AlertRecord>| records.into_iter().map(|r| r.alert.at_ms).collect::<Vec<_>>();
        {
            let store = Store::open(&dir).unwrap();
            let records: Vec<AlertRecord> =
                (1..=6).map(|i| record(if i % 2 == 0 { a } else { b }, i * 1_000)).collect();
            store.record_changes(&[], &records, &[]).unwrap();
            assert_eq!(ids(store.alerts(a, 10).unwrap()), [6_000, 4_000, 2_000]);
            assert_eq!(ids(store.alerts(b, 2).unwrap()), [5_000, 3_000]);
            assert_eq!(ids(store.alerts("", 3).unwrap()), [6_000, 5_000, 4_000]);
            assert!(store.alerts("https://a.example", 10).unwrap().is_empty(), "a prefix is not the subject");
            // A database from before the index: it is empty.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(ALERT_BY_SUBJECT).unwrap();
            txn.commit().unwrap();
        }
        {
            let store = Store::open(&dir).unwrap();
            assert_eq!(ids(store.alerts(a, 10).unwrap()), [6_000, 4_000, 2_000], "the index is rebuilt on open");
            // An alert written by a binary from before the index, after an upgrade.
            let txn = store.db.begin_write().unwrap();
            txn.open_table(ALERT_BY_SUBJECT).unwrap().retain(|(s, at, _), _| (s, at) != (a, 6_000)).unwrap();
            txn.commit().unwrap();
            assert_eq!(ids(store.alerts(a, 10).unwrap()), [4_000, 2_000]);
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(ids(store.alerts(a, 10).unwrap()), [6_000, 4_000, 2_000], "a partial index is rebuilt");
    }
}
