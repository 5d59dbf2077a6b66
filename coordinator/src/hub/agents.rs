//! The agent registry and the assigner: every agent the coordinator knows (its record, its live
//! session if connected, the targets that lately left it), revoked certificates, and who probes
//! what. Within a region targets are spread over its connected agents by `assign::owner`; a
//! session hears its whole assignment once, then only what changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use vantage_proto::v1::{Assignment, AssignmentChange, CoordinatorMessage, TargetSpec, coordinator_message};

use super::targets::{Name, Spec, Targets};
use crate::{assign, store::AgentRecord};

/// What the coordinator sends down an agent's stream.
pub type AgentTx = mpsc::Sender<Result<CoordinatorMessage, tonic::Status>>;

/// A connected agent's stream.
pub struct Session {
    pub id: u64,
    pub tx: AgentTx,
    /// Dropped with the session: tells the stream's reader to stop.
    pub _close: tokio::sync::oneshot::Sender<()>,
    pub since_ms: i64,
    /// The targets it probes now.
    pub assigned: HashSet<Name>,
    pub sent_full: bool,
    /// The agent's newest committed batch when it connected, told in its first assignment.
    pub last_sequence: u64,
    /// Its clock minus the coordinator's at its hello.
    pub clock_offset_ms: i64,
    /// Empty without mTLS.
    pub cert_sha256: String,
    /// When one of its results was last stored (until the first, when it connected).
    pub last_accepted_ms: i64,
    /// Its results have been refused since the last one was stored.
    pub refusing: bool,
    /// How long it may go on with only refused results before it no longer counts as reporting
    /// (see `Session::reporting`).
    pub patience_ms: i64,
}

impl Session {
    /// Whether the agent's results are being stored. Connected is not enough: an agent whose
    /// every result is refused leaves its targets unjudged as surely as a disconnected one. A
    /// refusal counts only once the agent has gone longer without a stored result than its
    /// targets need, so an odd refused result (for a target deleted a moment ago) says nothing.
    pub fn reporting(&self, now: i64) -> bool {
        !self.refusing || now - self.last_accepted_ms <= self.patience_ms
    }
}

/// How long an agent may go without a stored result for a target with this timing: two of its
/// intervals plus a probe and its retry (two timeouts and the retry's second) and a few seconds
/// of delivery.
fn patience_ms(interval: Duration, timeout: Duration) -> i64 {
    (2 * interval + 2 * timeout + Duration::from_secs(5)).as_millis() as i64
}

/// How long after a target left an agent's assignment its results for it are still accepted: a
/// run under way when it moved (the probe, its retry a second later, the retry) and the batch's
/// way to the coordinator, with a minute to spare for a reconnection.
pub fn release_grace(spec: &Spec) -> Duration {
    let (interval, timeout) = spec.timing();
    interval + 2 * timeout + Duration::from_secs(60)
}

pub struct Agent {
    pub record: AgentRecord,
    pub session: Option<Session>,
    /// Targets that left this agent's assignment lately: url → when (ms). Its results for them are
    /// still accepted for their `release_grace`.
    pub released: HashMap<Name, i64>,
}

impl Agent {
    /// Drops the session (its stream ends); what it was assigned counts as released now.
    pub fn end_session(&mut self, now: i64) {
        if let Some(session) = self.session.take() {
            for url in session.assigned {
                self.released.insert(url, now);
            }
        }
    }
}

/// Every agent known, by name.
#[derive(Default)]
pub struct Registry {
    pub agents: BTreeMap<String, Agent>,
    pub epoch: u64,
    pub next_session: u64,
    /// Fingerprints of revoked agent certificates.
    pub revoked: HashSet<String>,
}

impl Registry {
    /// Whether an agent of `region` is connected and its results are being stored.
    pub fn reporting_in(&self, region: &str, now: i64) -> bool {
        self.agents.values().any(|a| a.record.region == region && a.session.as_ref().is_some_and(|s| s.reporting(now)))
    }

    /// Regions with a connected agent.
    pub fn connected_regions(&self) -> BTreeSet<String> {
        self.agents.values().filter(|a| a.session.is_some()).map(|a| a.record.region.clone()).collect()
    }

    /// The connected agents of `region`, by name.
    pub fn connected_in(&self, region: &str) -> Vec<&str> {
        self.agents
            .values()
            .filter(|a| a.session.is_some() && a.record.region == region)
            .map(|a| a.record.name.as_str())
            .collect()
    }

    /// Connected agents by region.
    fn by_region(&self) -> HashMap<&str, Vec<&str>> {
        let mut by_region: HashMap<&str, Vec<&str>> = HashMap::new();
        for a in self.agents.values().filter(|a| a.session.is_some()) {
            by_region.entry(a.record.region.as_str()).or_default().push(a.record.name.as_str());
        }
        by_region
    }

    /// Refuses a second live agent with `name` in another region: agents are known by name, so
    /// the two would take each other's session (and results) in turn. Once the other is gone,
    /// the name may move (a host moved to another region).
    pub fn name_taken(&self, name: &str, region: &str) -> Option<String> {
        match self.agents.get(name) {
            Some(other) if other.session.is_some() && other.record.region != region => Some(format!(
                "agent name {name} is already connected from region {}; give each agent its own name \
                 (pki issue-agent --name)",
                other.record.region
            )),
            _ => None,
        }
    }

    /// Recomputes who probes what, for every target (after agents came or went), and tells each
    /// connected agent what changed.
    pub fn reassign_all(&mut self, targets: &Targets, default_regions: &[Name], now: i64) {
        let mut desired: HashMap<String, HashSet<Name>> = HashMap::new();
        {
            let by_region = self.by_region();
            for (url, target) in targets {
                for_each_region(&target.spec, default_regions, |region| {
                    if let Some(owner) = by_region.get(region).and_then(|agents| assign::owner(url, agents)) {
                        desired.entry(owner.to_owned()).or_default().insert(url.clone());
                    }
                });
            }
        }
        let mut sessions = Vec::new();
        for (name, agent) in &self.agents {
            if agent.session.is_some() {
                sessions.push((name.clone(), desired.remove(name).unwrap_or_default()));
            }
        }
        self.send(targets, default_regions, sessions, now);
    }

    /// Assigns `changed` targets (added, edited or deleted) again: each goes to its owner in each
    /// of its regions (edited ones are re-sent even if the owner stays), and leaves the agents that
    /// had it and no longer do.
    pub fn reassign_some(&mut self, targets: &Targets, default_regions: &[Name], changed: &[Name], now: i64) {
        let mut owners: HashMap<String, Vec<Name>> = HashMap::new();
        {
            let by_region = self.by_region();
            for url in changed {
                let Some(target) = targets.get(url) else { continue };
                for_each_region(&target.spec, default_regions, |region| {
                    if let Some(owner) = by_region.get(region).and_then(|agents| assign::owner(url, agents)) {
                        owners.entry(owner.to_owned()).or_default().push(url.clone());
                    }
                });
            }
        }
        // Only the changed targets are looked at: an edit costs the same at 10 or 100,000 targets.
        self.epoch += 1;
        let epoch = self.epoch;
        let mut dead = Vec::new();
        for (name, agent) in self.agents.iter_mut() {
            let Some(session) = agent.session.as_mut() else { continue };
            let mine = owners.remove(name).unwrap_or_default();
            let (mut upserted, mut removed_urls) = (Vec::new(), Vec::new());
            for url in changed {
                if mine.contains(url) {
                    if let Some(target) = targets.get(url) {
                        session.assigned.insert(url.clone());
                        let (interval, timeout) = target.spec.timing();
                        session.patience_ms = session.patience_ms.min(patience_ms(interval, timeout));
                        upserted.push(target.spec.to_proto());
                    }
                } else if session.assigned.remove(url) {
                    agent.released.insert(url.clone(), now);
                    removed_urls.push(url.to_string());
                }
            }
            if upserted.is_empty() && removed_urls.is_empty() {
                continue;
            }
            if session.assigned.len() == upserted.len() {
                // Nothing to report until now: its time starts with its first targets.
                session.last_accepted_ms = session.last_accepted_ms.max(now);
            }
            let change = AssignmentChange { epoch, upserted, removed_urls };
            let message = CoordinatorMessage { kind: Some(coordinator_message::Kind::Change(change)) };
            if session.tx.try_send(Ok(message)).is_err() {
                dead.push(name.clone());
            }
        }
        self.disconnect(dead, targets, default_regions, now);
    }

    /// Disconnects agents not reading their stream; their targets go to the region's other agents.
    fn disconnect(&mut self, dead: Vec<String>, targets: &Targets, default_regions: &[Name], now: i64) {
        if dead.is_empty() {
            return;
        }
        for name in dead {
            tracing::warn!(agent = name, "agent stream is full; disconnecting it");
            if let Some(a) = self.agents.get_mut(&name) {
                a.end_session(now);
            }
        }
        self.reassign_all(targets, default_regions, now);
    }

    /// Gives each named session its wanted targets, sending a full assignment to a new session and
    /// a change to the others; an agent not reading its stream is disconnected and its targets go
    /// to the region's other agents.
    fn send(&mut self, targets: &Targets, default_regions: &[Name], sessions: Vec<(String, HashSet<Name>)>, now: i64) {
        self.epoch += 1;
        let epoch = self.epoch;
        let mut dead = Vec::new();
        for (name, want) in sessions {
            let Some(agent) = self.agents.get_mut(&name) else { continue };
            // Released targets are forgotten once their grace is over (or they are gone).
            agent.released.retain(|url, at| {
                targets.get(url).is_some_and(|t| now - *at <= release_grace(&t.spec).as_millis() as i64)
            });
            let Some(session) = agent.session.as_mut() else { continue };
            for url in session.assigned.iter().filter(|u| !want.contains(*u)) {
                agent.released.insert(url.clone(), now);
            }
            session.patience_ms = want
                .iter()
                .filter_map(|url| targets.get(url))
                .map(|t| {
                    let (interval, timeout) = t.spec.timing();
                    patience_ms(interval, timeout)
                })
                .min()
                .unwrap_or(i64::MAX);
            if session.assigned.is_empty() && !want.is_empty() {
                // Nothing to report until now: its time starts with its first targets.
                session.last_accepted_ms = session.last_accepted_ms.max(now);
            }
            let spec_of = |url: &Name| targets.get(url).map(|t| t.spec.for_agent());
            let messages: Vec<coordinator_message::Kind> = if !session.sent_full {
                session.sent_full = true;
                let mut specs: Vec<_> = want.iter().filter_map(spec_of).collect();
                specs.sort_by(|a, b| a.url.cmp(&b.url));
                let mut slices = slices(specs).into_iter();
                let targets = slices.next().unwrap_or_default();
                let first = Assignment { epoch, targets, last_sequence: session.last_sequence };
                let rest = slices.map(|upserted| AssignmentChange { epoch, upserted, removed_urls: Vec::new() });
                std::iter::once(coordinator_message::Kind::Assignment(first))
                    .chain(rest.map(coordinator_message::Kind::Change))
                    .collect()
            } else {
                let mut upserted: Vec<_> =
                    want.iter().filter(|url| !session.assigned.contains(*url)).filter_map(spec_of).collect();
                let mut removed_urls: Vec<String> =
                    session.assigned.iter().filter(|u| !want.contains(*u)).map(|u| u.to_string()).collect();
                if upserted.is_empty() && removed_urls.is_empty() {
                    session.assigned = want;
                    continue;
                }
                upserted.sort_by(|a, b| a.url.cmp(&b.url));
                removed_urls.sort();
                let mut removed_urls = Some(removed_urls);
                slices(upserted)
                    .into_iter()
                    .map(|upserted| {
                        let removed_urls = removed_urls.take().unwrap_or_default();
                        coordinator_message::Kind::Change(AssignmentChange { epoch, upserted, removed_urls })
                    })
                    .collect()
            };
            session.assigned = want;
            for message in messages {
                if session.tx.try_send(Ok(CoordinatorMessage { kind: Some(message) })).is_err() {
                    // The agent is not reading its stream; dropping the session closes it.
                    dead.push(name);
                    break;
                }
            }
        }
        self.disconnect(dead, targets, default_regions, now);
    }
}

/// Targets per message to an agent: a larger assignment goes as an `Assignment` of the first
/// slice and `AssignmentChange`s adding the others, so neither side holds one message of every
/// target at once (100,000 targets are 20 messages of about 250 KB).
pub const ASSIGNMENT_SLICE: usize = 5_000;

/// `specs` in slices of at most [`ASSIGNMENT_SLICE`]; one (empty) slice when there are none.
fn slices(specs: Vec<TargetSpec>) -> Vec<Vec<TargetSpec>> {
    let mut slices = Vec::with_capacity(specs.len().div_ceil(ASSIGNMENT_SLICE).max(1));
    let mut specs = specs.into_iter().peekable();
    loop {
        slices.push(specs.by_ref().take(ASSIGNMENT_SLICE).collect());
        if specs.peek().is_none() {
            return slices;
        }
    }
}

/// The regions that judge a target: its own, or the default set.
pub fn for_each_region(spec: &Spec, default_regions: &[Name], mut f: impl FnMut(&str)) {
    if spec.regions.is_empty() {
        default_regions.iter().for_each(|r| f(r));
    } else {
        spec.regions.iter().for_each(|r| f(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_assignment_goes_in_slices_and_an_empty_one_as_one_message() {
        let specs =
            |n: usize| (0..n).map(|i| TargetSpec { url: format!("https://t{i}.example/"), ..Default::default() });
        let sizes = |n: usize| slices(specs(n).collect()).iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(0), [0], "an empty assignment is still sent");
        assert_eq!(sizes(ASSIGNMENT_SLICE), [ASSIGNMENT_SLICE]);
        assert_eq!(sizes(2 * ASSIGNMENT_SLICE + 1), [ASSIGNMENT_SLICE, ASSIGNMENT_SLICE, 1]);
        let urls: Vec<String> = slices(specs(12_000).collect()).concat().into_iter().map(|s| s.url).collect();
        assert_eq!(urls, specs(12_000).map(|s| s.url).collect::<Vec<_>>(), "every target once, in order");
    }
}
