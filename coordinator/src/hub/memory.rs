//! Alerting's memory: what the alert planner must remember across restarts to alert once and
//! resolve where it alerted (the certificates seen per target, silent regions, heartbeats, open
//! `degraded` and `unknown` spells, which channels heard each problem, triggers held back by a
//! silence, the triggers still firing for channels that want them re-sent, incident groups, each
//! flapping or recently changing target's flap window, and what the pager holds where hold-down
//! or flap damping made it differ from the incidents). Typed in memory; every change is recorded as it is made and committed with the
//! alerts it goes with. In the store it is one row per entry under a kind prefix (`cert:URL`,
//! `sent:DEDUP_KEY`, …) with a JSON value, and a `version` row: a store written by a newer
//! memory format is refused rather than misread.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::damping::{FlapMemory, Paging};
use crate::alert::Alert;

/// The memory format this coordinator writes and reads.
pub const VERSION: u32 = 1;
const VERSION_KEY: &str = "version";

/// A change to the stored memory: key, and the new value (JSON; `None` deletes it).
pub type Remembered = (String, Option<Vec<u8>>);

/// What alerting remembers about a target's certificates: the one served now, and the health
/// threshold each recent one has crossed (so a renewed certificate starts afresh, and a
/// load balancer alternating two certificates does not repeat alerts).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertMemory {
    pub current: String,
    /// (fingerprint, highest level alerted: 1 warning, 2 critical), newest last.
    pub levels: Vec<(String, u8)>,
}

/// A region without a connected agent: since when, and whether that was alerted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegionMemory {
    pub since_ms: i64,
    pub alerted: bool,
}

/// An impaired region: since when, and its counts when it turned impaired. Its `region_impaired`
/// went out then; the entry goes with its `region_recovered`. It is also what makes the region
/// impaired for judging, so an impairment survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImpairedMemory {
    pub since_ms: i64,
    pub judged: u32,
    pub alone: u32,
}

/// A heartbeat: the last one accepted, and whether it is overdue and alerted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatMemory {
    /// When the last heartbeat was accepted (or, before the first, when the heartbeat was first
    /// configured: the period runs from there).
    pub last_ms: i64,
    /// Its timestamp (Unix seconds): a heartbeat must be newer, so none can be replayed.
    pub last_timestamp: i64,
    /// The signatures accepted with that timestamp.
    #[serde(default)]
    pub last_signatures: Vec<String>,
    pub alerted: bool,
    /// What the last heartbeat said (its body, up to 1 KiB of text).
    #[serde(default)]
    pub note: String,
}

/// A target in an incident group: its incident's start, and whether that incident is open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupMember {
    pub url: String,
    pub opened: i64,
    pub open: bool,
}

/// Targets DOWN for one shared cause (see `hub::groups`): while collecting, the `down` alerts
/// held back until the window ends or every target sharing the cause is in; once paged as a
/// group, the group's dedup key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupMemory {
    /// The shared cause in words ("behind 203.0.113.7:443").
    pub words: String,
    /// Members joining before this are paged together (collecting only).
    pub window_ends: i64,
    /// Targets sharing the cause that are not DOWN yet: when none is left, the page goes at once.
    pub waiting: Vec<String>,
    /// The members' `down` alerts, held while collecting (empty once paged).
    pub held: Vec<Alert>,
    /// The labels every member has (those of the first while collecting), fixed once paged so
    /// Alertmanager sees one alert throughout.
    pub labels: std::collections::BTreeMap<String, String>,
    pub members: Vec<GroupMember>,
    /// The group page's dedup key, once it went out.
    pub dedup: Option<String>,
}

/// The memory's kinds of entry, each a key prefix in the store.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Cert,
    Region,
    Heartbeat,
    Degraded,
    Unknown,
    Sent,
    Held,
    Firing,
    Impaired,
    Group,
    Flap,
    Paging,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Cert => "cert:",
            Kind::Region => "region:",
            Kind::Heartbeat => "heartbeat:",
            Kind::Degraded => "degraded:",
            Kind::Unknown => "unknown:",
            Kind::Sent => "sent:",
            Kind::Held => "held:",
            Kind::Firing => "firing:",
            Kind::Impaired => "impaired:",
            Kind::Group => "group:",
            Kind::Flap => "flap:",
            Kind::Paging => "paging:",
        }
    }
}

/// The store's memory was written by a newer coordinator.
#[derive(Debug, thiserror::Error)]
#[error("the alert memory in the store has format version {0}; this coordinator reads version {VERSION}: upgrade it")]
pub struct NewerVersion(pub u32);

#[derive(Debug, Default)]
pub struct AlertMemory {
    /// Per target URL.
    pub certs: HashMap<String, CertMemory>,
    /// Per region.
    pub silent_regions: HashMap<String, RegionMemory>,
    /// Impaired regions, per region.
    pub impaired: HashMap<String, ImpairedMemory>,
    /// Per heartbeat name.
    pub heartbeats: HashMap<String, HeartbeatMemory>,
    /// Targets with a `degraded` alert not yet cleared: url → since (ms).
    pub degraded: HashMap<String, i64>,
    /// Targets with an `unknown` alert not yet cleared: url → since (ms).
    pub unknown: HashMap<String, i64>,
    /// Per problem (dedup key): the channels that heard its trigger, so its resolve reaches them
    /// whatever the routes say.
    pub sent: HashMap<String, Vec<String>>,
    /// Per problem: its trigger, held back by a silence, to be sent if the problem outlasts it.
    pub held: HashMap<String, Alert>,
    /// Per problem heard by a channel that re-sends what is still firing (Alertmanager): its
    /// trigger as planned, to send again until its resolve is planned (see `dispatch::resend`).
    pub firing: HashMap<String, Alert>,
    /// Incident groups collecting or open, by shared cause key (`hub::groups`).
    pub groups: HashMap<String, GroupMemory>,
    /// Per target URL with a verdict change in its flap window, or flapping.
    pub flaps: HashMap<String, FlapMemory>,
    /// Per target URL whose pager state differs from its incidents (a `down` held by
    /// `alert_after` or flapping, a `recovered` waiting for `recover_after` or flapping).
    pub paging: HashMap<String, Paging>,
    /// Changes not yet taken for committing.
    changes: Vec<Remembered>,
}

fn recall<T: DeserializeOwned>(rows: &[(String, Vec<u8>)], kind: Kind) -> HashMap<String, T> {
    rows.iter()
        .filter_map(|(key, value)| {
            Some((key.strip_prefix(kind.prefix())?.to_owned(), serde_json::from_slice(value).ok()?))
        })
        .collect()
}

impl AlertMemory {
    /// The memory from the store's rows (other prefixes, such as the dispatcher's `channel:`, are
    /// left to their owners).
    pub fn load(rows: &[(String, Vec<u8>)]) -> Result<AlertMemory, NewerVersion> {
        let version = rows
            .iter()
            .find(|(k, _)| k == VERSION_KEY)
            .and_then(|(_, v)| serde_json::from_slice::<u32>(v).ok())
            .unwrap_or(VERSION);
        if version > VERSION {
            return Err(NewerVersion(version));
        }
        let mut memory = AlertMemory {
            certs: recall(rows, Kind::Cert),
            silent_regions: recall(rows, Kind::Region),
            impaired: recall(rows, Kind::Impaired),
            heartbeats: recall(rows, Kind::Heartbeat),
            degraded: recall(rows, Kind::Degraded),
            unknown: recall(rows, Kind::Unknown),
            sent: recall(rows, Kind::Sent),
            held: recall(rows, Kind::Held),
            firing: recall(rows, Kind::Firing),
            groups: recall(rows, Kind::Group),
            flaps: recall(rows, Kind::Flap),
            paging: recall(rows, Kind::Paging),
            changes: Vec::new(),
        };
        // A trigger whose problem ended under a coordinator that did not keep this is forgotten.
        let ended: Vec<String> = memory.firing.keys().filter(|k| !memory.sent.contains_key(*k)).cloned().collect();
        for dedup in ended {
            memory.firing.remove(&dedup);
            memory.record::<()>(Kind::Firing, &dedup, None);
        }
        if !rows.iter().any(|(k, _)| k == VERSION_KEY) {
            memory.changes.push((VERSION_KEY.into(), serde_json::to_vec(&VERSION).ok()));
        }
        Ok(memory)
    }

    /// The changes made since the last call, to commit.
    pub fn take_changes(&mut self) -> Vec<Remembered> {
        std::mem::take(&mut self.changes)
    }

    fn record<T: Serialize>(&mut self, kind: Kind, key: &str, value: Option<&T>) {
        let key = format!("{}{key}", kind.prefix());
        self.changes.push((key, value.and_then(|v| serde_json::to_vec(v).ok())));
    }

    pub fn set_cert(&mut self, url: &str, memory: CertMemory) {
        self.record(Kind::Cert, url, Some(&memory));
        self.certs.insert(url.to_owned(), memory);
    }

    pub fn forget_cert(&mut self, url: &str) {
        self.certs.remove(url);
        self.record::<()>(Kind::Cert, url, None);
    }

    pub fn set_region(&mut self, region: &str, memory: Option<RegionMemory>) {
        self.record(Kind::Region, region, memory.as_ref());
        match memory {
            Some(m) => self.silent_regions.insert(region.to_owned(), m),
            None => self.silent_regions.remove(region),
        };
    }

    /// Notes a region going silent without recording it (a silence shorter than the alert delay
    /// is not worth a write; its start is recorded with the alert).
    pub fn note_region_silent(&mut self, region: &str, since_ms: i64) {
        self.silent_regions.insert(region.to_owned(), RegionMemory { since_ms, alerted: false });
    }

    pub fn set_impaired(&mut self, region: &str, memory: Option<ImpairedMemory>) {
        self.record(Kind::Impaired, region, memory.as_ref());
        match memory {
            Some(m) => self.impaired.insert(region.to_owned(), m),
            None => self.impaired.remove(region),
        };
    }

    pub fn set_heartbeat(&mut self, name: &str, memory: HeartbeatMemory) {
        self.record(Kind::Heartbeat, name, Some(&memory));
        self.heartbeats.insert(name.to_owned(), memory);
    }

    pub fn set_degraded(&mut self, url: &str, since: Option<i64>) {
        self.record(Kind::Degraded, url, since.as_ref());
        match since {
            Some(s) => self.degraded.insert(url.to_owned(), s),
            None => self.degraded.remove(url),
        };
    }

    pub fn set_unknown(&mut self, url: &str, since: Option<i64>) {
        self.record(Kind::Unknown, url, since.as_ref());
        match since {
            Some(s) => self.unknown.insert(url.to_owned(), s),
            None => self.unknown.remove(url),
        };
    }

    /// Sets (or, with `None`, forgets) a target's flap memory; `record`: write it to the store
    /// (a window that only slid, with no change and no step, is not worth a write: it is slid
    /// again after a restart).
    pub fn set_flap(&mut self, url: &str, flap: Option<FlapMemory>, record: bool) {
        if record {
            self.record(Kind::Flap, url, flap.as_ref());
        }
        match flap {
            Some(f) => self.flaps.insert(url.to_owned(), f),
            None => self.flaps.remove(url),
        };
    }

    /// Sets a target's pager state; one that does not differ from its incidents (`plain`) is
    /// forgotten.
    pub fn set_paging(&mut self, url: &str, paging: Paging, plain: Paging) {
        if paging == plain {
            if self.paging.remove(url).is_some() {
                self.record::<()>(Kind::Paging, url, None);
            }
        } else if self.paging.get(url) != Some(&paging) {
            self.record(Kind::Paging, url, Some(&paging));
            self.paging.insert(url.to_owned(), paging);
        }
    }

    /// Adds channels that heard the problem `dedup`'s trigger.
    pub fn heard(&mut self, dedup: &str, channels: impl IntoIterator<Item = String>) {
        let heard = self.sent.entry(dedup.to_owned()).or_default();
        for channel in channels {
            if !heard.contains(&channel) {
                heard.push(channel);
            }
        }
        let value = serde_json::to_vec(&*heard).ok();
        self.changes.push((format!("{}{dedup}", Kind::Sent.prefix()), value));
    }

    /// The channels that heard `dedup`'s trigger, forgotten now (its resolve goes out), with the
    /// trigger kept for re-sending.
    pub fn take_heard(&mut self, dedup: &str) -> Vec<String> {
        let heard = self.sent.remove(dedup).unwrap_or_default();
        if !heard.is_empty() {
            self.record::<()>(Kind::Sent, dedup, None);
        }
        if self.firing.remove(dedup).is_some() {
            self.record::<()>(Kind::Firing, dedup, None);
        }
        heard
    }

    /// Keeps `trigger` (heard by a channel that re-sends what is still firing) until its problem
    /// is resolved; a later trigger of the same problem (critical after warning) replaces it.
    pub fn keep_firing(&mut self, trigger: &Alert) {
        self.record(Kind::Firing, &trigger.dedup_key, Some(trigger));
        self.firing.insert(trigger.dedup_key.clone(), trigger.clone());
    }

    pub fn hold(&mut self, dedup: &str, alert: Alert) {
        self.record(Kind::Held, dedup, Some(&alert));
        self.held.insert(dedup.to_owned(), alert);
    }

    /// The trigger held back for `dedup`, forgotten now.
    pub fn take_held(&mut self, dedup: &str) -> Option<Alert> {
        let held = self.held.remove(dedup);
        if held.is_some() {
            self.record::<()>(Kind::Held, dedup, None);
        }
        held
    }

    pub fn set_group(&mut self, key: &str, group: Option<GroupMemory>) {
        self.record(Kind::Group, key, group.as_ref());
        match group {
            Some(g) => self.groups.insert(key.to_owned(), g),
            None => self.groups.remove(key),
        };
    }

    /// Whether the problem `dedup` was alerted (heard by a channel, or held back).
    pub fn alerted(&self, dedup: &str) -> bool {
        self.sent.contains_key(dedup) || self.held.contains_key(dedup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_recorded_and_reads_back_the_same() {
        let mut memory = AlertMemory::load(&[]).unwrap();
        memory.set_cert("https://a/", CertMemory { current: "ff".into(), levels: vec![("ff".into(), 1)] });
        memory.set_degraded("https://a/", Some(5));
        memory.set_unknown("https://b/", Some(7));
        memory.heard("vantage/target/https://a/#1", ["pager".to_owned()]);
        memory.set_region("r1", Some(RegionMemory { since_ms: 3, alerted: true }));
        memory.set_impaired("r2", Some(ImpairedMemory { since_ms: 4, judged: 6, alone: 6 }));
        let rows: Vec<(String, Vec<u8>)> =
            memory.take_changes().into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        assert!(rows.iter().any(|(k, _)| k == "version"), "a new memory records its format version");
        let again = AlertMemory::load(&rows).unwrap();
        assert_eq!(again.certs, memory.certs);
        assert_eq!(again.degraded, memory.degraded);
        assert_eq!(again.unknown, memory.unknown);
        assert_eq!(again.sent, memory.sent);
        assert_eq!(again.silent_regions, memory.silent_regions);
        assert_eq!(again.impaired, memory.impaired);
        assert!(again.firing.is_empty());
        // Forgetting records a deletion.
        let mut again = again;
        again.set_degraded("https://a/", None);
        assert_eq!(again.take_changes(), vec![("degraded:https://a/".to_owned(), None)]);
    }

    #[test]
    fn a_firing_trigger_is_kept_until_its_problem_is_resolved_and_survives_a_restart() {
        let dedup = "vantage/target/https://a/#1";
        let trigger = Alert::new(crate::alert::AlertKind::Down, "https://a/", 1, dedup.into());
        let mut memory = AlertMemory::load(&[]).unwrap();
        memory.heard(dedup, ["am".to_owned()]);
        memory.keep_firing(&trigger);
        let rows = |memory: &mut AlertMemory| -> Vec<(String, Vec<u8>)> {
            memory.take_changes().into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
        };
        let mut again = AlertMemory::load(&rows(&mut memory)).unwrap();
        assert_eq!(again.firing.get(dedup), Some(&trigger), "read back after a restart");
        again.take_heard(dedup);
        assert!(again.firing.is_empty());
        assert!(again.take_changes().contains(&(format!("firing:{dedup}"), None)), "forgotten in the store too");
        // A trigger left behind by a coordinator that resolved without knowing it is dropped.
        let orphan = vec![(format!("firing:{dedup}"), serde_json::to_vec(&trigger).unwrap())];
        let mut loaded = AlertMemory::load(&orphan).unwrap();
        assert!(loaded.firing.is_empty());
        assert!(loaded.take_changes().contains(&(format!("firing:{dedup}"), None)));
    }

    #[test]
    fn flap_windows_and_the_pagers_state_survive_a_restart_and_plain_ones_are_not_written() {
        use crate::hub::damping::{FlapMemory, Paging};
        let mut memory = AlertMemory::load(&[]).unwrap();
        memory.take_changes();
        let flap =
            FlapMemory { changes: vec![1_000, 2_000], causes: vec!["http_5xx".into()], flapping: Some((2_000, 55)) };
        memory.set_flap("https://a/", Some(flap.clone()), true);
        memory.set_flap("https://b/", Some(FlapMemory { changes: vec![5], ..FlapMemory::default() }), false);
        let waiting = Paging { paged: Some(1_000), up_since: Some(9_000) };
        memory.set_paging("https://a/", waiting, Paging::plain(None));
        // As without hold-down: nothing to write.
        memory.set_paging("https://c/", Paging::plain(Some(4)), Paging::plain(Some(4)));
        let rows: Vec<(String, Vec<u8>)> =
            memory.take_changes().into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let mut again = AlertMemory::load(&rows).unwrap();
        assert_eq!(again.flaps.get("https://a/"), Some(&flap));
        assert!(!again.flaps.contains_key("https://b/"), "a window that only slid is not written");
        assert_eq!(again.paging.get("https://a/"), Some(&waiting));
        // Back to plain: the row goes.
        again.take_changes();
        again.set_paging("https://a/", Paging::plain(None), Paging::plain(None));
        assert_eq!(again.take_changes(), vec![("paging:https://a/".to_owned(), None)]);
    }

    #[test]
    fn a_newer_format_is_refused() {
        let rows = vec![("version".to_owned(), b"2".to_vec())];
        assert_eq!(AlertMemory::load(&rows).unwrap_err().0, 2);
    }
}
