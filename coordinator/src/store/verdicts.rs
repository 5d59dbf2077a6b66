//! Verdicts: each target's current verdict, the transitions that led to it, and incidents (opened
//! by a verdict change, closed by recovery or by the target's removal). A verdict change is
//! written in one transaction with the alerts it causes.

use prost::Message;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use vantage_proto::v1::Incident;

use super::alerts::write_alerts;
use super::db::{Store, StoreError, corrupt};
use super::tables::{INCIDENTS, INCIDENTS_CLOSED, TRANSITIONS, TRANSITIONS_BY_TIME, VERDICTS};
use crate::alert::AlertRecord;
use crate::clock::{ms, timestamp};

/// A target's current verdict, as last decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictRecord {
    /// `UP`, `DEGRADED`, `DOWN` or `UNKNOWN`.
    pub verdict: String,
    pub cause: Option<String>,
    pub since_ms: i64,
    pub failing_regions: Vec<String>,
}

/// What a verdict change does to incidents.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentChange {
    None,
    Open(Incident),
    /// Close the target's open incident at this time.
    Close {
        at_ms: i64,
    },
}

/// A member's incident in an incident group: its group, members and shared cause, recorded on
/// it (`Incident.group`, `members`, `shared_cause`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentGroup {
    pub url: String,
    /// The incident's start (its key with the URL).
    pub opened: i64,
    /// The group's dedup key.
    pub group: String,
    pub members: Vec<String>,
    pub shared_cause: String,
}

/// `Incident.closed_reason` of an incident closed by the target's `UP`.
pub const CLOSED_RECOVERED: &str = "recovered";
/// … and of one closed because its target was removed.
pub const CLOSED_REMOVED: &str = "removed";

impl Store {
    /// Verdict changes (each with its transition and incident change), the alerts they cause and
    /// alerting's state changes (`None` deletes the key), all in one transaction: an alert is
    /// queued exactly when its cause is recorded.
    pub fn record_changes(
        &self,
        verdicts: &[(String, VerdictRecord, IncidentChange)],
        alerts: &[AlertRecord],
        state: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), StoreError> {
        self.record_event(&[], verdicts, &[], alerts, state)
    }

    /// What one hub event changed, in one transaction: region records and incident groups as well
    /// as [`Store::record_changes`]' verdicts, alerts and alerting's state.
    pub fn record_event(
        &self,
        regions: &[super::RegionRecord],
        verdicts: &[(String, VerdictRecord, IncidentChange)],
        groups: &[IncidentGroup],
        alerts: &[AlertRecord],
        state: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), StoreError> {
        self.record_event_with_opinions(regions, verdicts, groups, alerts, state, &[])
    }

    /// [`Store::record_event`], with the regions' opinion changes availability rolls up.
    pub fn record_event_with_opinions(
        &self,
        regions: &[super::RegionRecord],
        verdicts: &[(String, VerdictRecord, IncidentChange)],
        groups: &[IncidentGroup],
        alerts: &[AlertRecord],
        state: &[(String, Option<Vec<u8>>)],
        opinions: &[super::OpinionChange],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        super::uptime::write_opinions(&txn, opinions)?;
        if !regions.is_empty() {
            super::agents::write_regions(&txn, regions)?;
        }
        for (url, record, incident) in verdicts {
            write_verdict(&txn, url, record, incident)?;
        }
        if !groups.is_empty() {
            let mut incidents = txn.open_table(INCIDENTS)?;
            for g in groups {
                // Opened in this transaction or an earlier one; one gone (pruned) is left alone.
                let Some(bytes) = incidents.get((g.url.as_str(), g.opened))?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                let mut incident = Incident::decode(bytes.as_slice()).map_err(corrupt)?;
                incident.group = g.group.clone();
                incident.members = g.members.clone();
                incident.shared_cause = g.shared_cause.clone();
                incidents.insert((g.url.as_str(), g.opened), incident.encode_to_vec().as_slice())?;
            }
        }
        write_alerts(&txn, alerts, state)?;
        txn.commit()?;
        Ok(())
    }

    pub fn verdicts(&self) -> Result<Vec<(String, VerdictRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(VERDICTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            out.push((key.value().to_owned(), serde_json::from_slice(value.value()).map_err(corrupt)?));
        }
        Ok(out)
    }

    /// A target's verdict transitions, oldest first.
    pub fn transitions(&self, url: &str) -> Result<Vec<VerdictRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TRANSITIONS)?;
        let mut out = Vec::new();
        for row in table.range((url, i64::MIN)..=(url, i64::MAX))? {
            let (_, value) = row?;
            out.push(serde_json::from_slice(value.value()).map_err(corrupt)?);
        }
        Ok(out)
    }

    /// The newest `limit` incidents: of one target, or of all when `url` is empty.
    pub fn incidents(&self, url: &str, open_only: bool, limit: usize) -> Result<Vec<Incident>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INCIDENTS)?;
        let mut out = Vec::new();
        // Keyed by (url, opened): one target's incidents are one range, newest last.
        let (rows, one_target) = if url.is_empty() {
            (table.iter()?, false)
        } else {
            (table.range((url, i64::MIN)..=(url, i64::MAX))?, true)
        };
        for row in rows.rev() {
            let (_, value) = row?;
            let incident = Incident::decode(value.value()).map_err(corrupt)?;
            if !open_only || incident.closed.is_none() {
                out.push(incident);
                if one_target && out.len() >= limit {
                    break;
                }
            }
        }
        out.sort_by_key(|i| std::cmp::Reverse(i.opened.map(|t| (t.seconds, t.nanos))));
        out.truncate(limit);
        Ok(out)
    }
}

fn write_verdict(
    txn: &redb::WriteTransaction,
    url: &str,
    record: &VerdictRecord,
    incident: &IncidentChange,
) -> Result<(), StoreError> {
    {
        // Read before it is replaced: the verdict ending holds its span's start.
        super::uptime::end_verdict_span(txn, url, record, incident)?;
        let bytes = serde_json::to_vec(record).map_err(corrupt)?;
        txn.open_table(VERDICTS)?.insert(url, bytes.as_slice())?;
        txn.open_table(TRANSITIONS)?.insert((url, record.since_ms), bytes.as_slice())?;
        txn.open_table(TRANSITIONS_BY_TIME)?.insert((record.since_ms, url), ())?;
        match incident {
            IncidentChange::None => {}
            IncidentChange::Open(new) => {
                let opened = new.opened.as_ref().map_or(record.since_ms, ms);
                txn.open_table(INCIDENTS)?.insert((url, opened), new.encode_to_vec().as_slice())?;
            }
            IncidentChange::Close { at_ms } => close_incidents(txn, url, *at_ms, CLOSED_RECOVERED)?,
        }
    }
    Ok(())
}

/// Closes every open incident of `url` at `at_ms`, for `reason`.
pub(super) fn close_incidents(
    txn: &redb::WriteTransaction,
    url: &str,
    at_ms: i64,
    reason: &str,
) -> Result<(), StoreError> {
    let mut incidents = txn.open_table(INCIDENTS)?;
    let mut closed = txn.open_table(INCIDENTS_CLOSED)?;
    let open: Vec<(i64, Incident)> = incidents
        .range((url, i64::MIN)..=(url, i64::MAX))?
        .filter_map(Result::ok)
        .filter_map(|(k, v)| Some((k.value().1, Incident::decode(v.value()).ok()?)))
        .filter(|(_, i)| i.closed.is_none())
        .collect();
    for (opened, mut incident) in open {
        incident.closed = Some(timestamp(at_ms));
        incident.closed_reason = reason.to_owned();
        incidents.insert((url, opened), incident.encode_to_vec().as_slice())?;
        closed.insert((at_ms, url, opened), ())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_dir;

    #[test]
    fn verdicts_transitions_and_incidents() {
        let dir = temp_dir("verdicts");
        let store = Store::open(&dir).unwrap();
        let u = "https://a.example/";
        let down = VerdictRecord {
            verdict: "DOWN".into(),
            cause: Some("cert_expired".into()),
            since_ms: 10_000,
            failing_regions: vec!["eu".into()],
        };
        let incident = Incident { url: u.into(), opened: Some(timestamp(10_000)), ..Default::default() };
        let change = |record: &VerdictRecord, incident| vec![(u.to_owned(), record.clone(), incident)];
        store.record_changes(&change(&down, IncidentChange::Open(incident)), &[], &[]).unwrap();
        assert_eq!(store.incidents(u, true, 100).unwrap().len(), 1);
        let up = VerdictRecord { verdict: "UP".into(), cause: None, since_ms: 20_000, failing_regions: vec![] };
        store.record_changes(&change(&up, IncidentChange::Close { at_ms: 20_000 }), &[], &[]).unwrap();
        assert!(store.incidents(u, true, 100).unwrap().is_empty());
        let all = store.incidents("", false, 100).unwrap();
        assert_eq!(all[0].closed, Some(timestamp(20_000)));
        assert_eq!(all[0].closed_reason, "recovered");
        assert_eq!(store.verdicts().unwrap(), vec![(u.to_owned(), up)]);
        assert_eq!(store.transitions(u).unwrap().len(), 2);
        // Deleting a target ends its open incident.
        let again = Incident { url: u.into(), opened: Some(timestamp(30_000)), ..Default::default() };
        store.record_changes(&change(&down, IncidentChange::Open(again)), &[], &[]).unwrap();
        assert_eq!(store.incidents(u, true, 100).unwrap().len(), 1);
        store.delete_target(u).unwrap();
        assert!(store.incidents(u, true, 100).unwrap().is_empty());
        assert_eq!(store.incidents(u, false, 1).unwrap()[0].closed_reason, "removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
