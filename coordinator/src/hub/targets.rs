//! What the hub holds per target: its spec, the newest result of each region in a compact form
//! (the facts verdicts, status and alerts read; full results stay in the store), its verdict as
//! last decided and its open incident; and the deadline queue that says when a target's verdict
//! may change by the clock alone (a region's result growing stale, an `unknown` alert falling
//! due), so the hub re-judges exactly those instead of sweeping every target every second.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use vantage_proto::v1::{CertHealth, HistoryEntry, ProbeResult, TargetSpec};
use vantage_shared::FailureCode;

use crate::store::VerdictRecord;

/// A target URL or a region name, shared between the maps that name it.
pub type Name = Arc<str>;

/// One target.
#[derive(Debug, Clone)]
pub struct Target {
    pub spec: TargetSpec,
    /// The newest result of each region that reported one.
    pub latest: Vec<(Name, Latest)>,
    /// As last decided (`None` until the first decision).
    pub verdict: Option<VerdictRecord>,
    /// When its open incident began.
    pub open_incident: Option<i64>,
    /// What watchers last heard (a digest of the status fields they are told about).
    pub announced: u64,
    /// The earliest deadline queued for it (see [`Deadlines`]); `i64::MAX` for none.
    pub due: i64,
}

impl Target {
    pub fn new(spec: TargetSpec) -> Target {
        Target { spec, latest: Vec::new(), verdict: None, open_incident: None, announced: 0, due: i64::MAX }
    }

    pub fn latest_in(&self, region: &str) -> Option<&Latest> {
        self.latest.iter().find(|(r, _)| &**r == region).map(|(_, l)| l)
    }

    /// Keeps `latest` as `region`'s newest result unless a newer one is held. Returns whether it
    /// was kept.
    pub fn observe(&mut self, region: Name, latest: Latest) -> bool {
        match self.latest.iter_mut().find(|(r, _)| *r == region) {
            Some((_, held)) if held.at_ms > latest.at_ms => false,
            Some((_, held)) => {
                *held = latest;
                true
            }
            None => {
                // Exactly as many as regions report: most targets never grow past three.
                self.latest.reserve_exact(1);
                self.latest.push((region, latest));
                true
            }
        }
    }
}

/// A region's newest result, as much of it as verdicts, the status and alerts use (48 bytes and,
/// only for a failure or a certificate, one allocation each: 100,000 targets in three regions
/// hold 300,000 of these).
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// When the probe ran, Unix ms.
    pub at_ms: i64,
    /// The result carried its time (`at_ms` is then shown as its time).
    pub timed: bool,
    /// `None` for a result without a status (it says nothing).
    pub status: Option<vantage_shared::ProbeStatus>,
    /// The failure code, when it is one Vantage knows.
    pub code: Option<FailureCode>,
    pub latency_ms: f32,
    pub agent: Name,
    pub failure: Option<Box<FailureFacts>>,
    pub cert: Option<Box<CertFacts>>,
}

/// What status and alerts read of a failure.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureFacts {
    /// The code as sent.
    pub code: Box<str>,
    /// Its detail (bounded by `limits::MAX_TEXT` when it was received).
    pub detail: Box<str>,
    /// The failing backend's address (or the first backend's).
    pub backend: Option<Box<str>>,
}

/// What status and certificate alerts read of a certificate (the chain and SANs stay in the
/// store).
#[derive(Debug, Clone, PartialEq)]
pub struct CertFacts {
    pub sha256: String,
    pub subject: String,
    pub issuer: String,
    pub days_remaining: i64,
    pub health: i32,
    pub not_after: Option<prost_types::Timestamp>,
}

impl CertFacts {
    /// 0 fine, 1 warning, 2 critical.
    pub fn level(&self) -> u8 {
        match CertHealth::try_from(self.health).unwrap_or(CertHealth::Unspecified) {
            CertHealth::Warning => 1,
            CertHealth::Critical => 2,
            _ => 0,
        }
    }
}

impl Latest {
    /// The compact form of a stored entry; `agent` is the interned agent name.
    pub fn of(entry: &HistoryEntry, agent: Name) -> Latest {
        let result = entry.result.as_ref();
        let status = result.and_then(status);
        // Kept for a failing or partial result only (alerts name its failing backend).
        let failing = status.is_some_and(|s| s != vantage_shared::ProbeStatus::Up);
        let failure = result.filter(|r| r.failure.is_some() || failing).map(|r| {
            Box::new(FailureFacts {
                code: r.failure.as_ref().map_or("", |f| f.code.as_str()).into(),
                detail: r.failure.as_ref().map_or("", |f| f.detail.as_str()).into(),
                backend: r
                    .backends
                    .iter()
                    .find(|b| b.failure.is_some())
                    .or(r.backends.first())
                    .map(|b| b.address.as_str())
                    .filter(|a| !a.is_empty())
                    .map(Into::into),
            })
        });
        Latest {
            at_ms: crate::clock::entry_ms(entry),
            timed: result.is_some_and(|r| r.checked_at.is_some()),
            status,
            code: result.and_then(|r| r.failure.as_ref()).and_then(|f| FailureCode::from_code(&f.code)),
            latency_ms: result.and_then(|r| r.timings.as_ref()).map_or(0.0, |t| t.total_ms as f32),
            agent,
            failure,
            cert: result.and_then(|r| r.cert.as_ref()).map(|c| {
                Box::new(CertFacts {
                    sha256: c.sha256.clone(),
                    subject: c.subject.clone(),
                    issuer: c.issuer.clone(),
                    days_remaining: c.days_remaining,
                    health: c.health,
                    not_after: c.not_after,
                })
            }),
        }
    }

    /// What the verdict rules read.
    pub fn observation(&self) -> Option<crate::verdict::Observation> {
        Some(crate::verdict::Observation { at_ms: self.at_ms, status: self.status?, code: self.code })
    }

    /// The failure code as sent ("" for none).
    pub fn failure_code(&self) -> &str {
        self.failure.as_ref().map_or("", |f| &f.code)
    }

    /// The failure's detail ("" for none).
    pub fn detail(&self) -> &str {
        self.failure.as_ref().map_or("", |f| &f.detail)
    }
}

fn status(result: &ProbeResult) -> Option<vantage_shared::ProbeStatus> {
    match vantage_proto::v1::ProbeStatus::try_from(result.status).ok()? {
        vantage_proto::v1::ProbeStatus::Up => Some(vantage_shared::ProbeStatus::Up),
        vantage_proto::v1::ProbeStatus::Degraded => Some(vantage_shared::ProbeStatus::Degraded),
        vantage_proto::v1::ProbeStatus::Down => Some(vantage_shared::ProbeStatus::Down),
        vantage_proto::v1::ProbeStatus::Unspecified => None,
    }
}

/// Targets by URL (in URL order: the API lists them so).
pub type Targets = BTreeMap<Name, Target>;

/// When targets must be judged again though no result came: a min-heap of (when, URL). A target
/// keeps only its earliest deadline (`Target::due`); entries superseded by an earlier one, or
/// left by a deleted target, are skipped when they come up.
#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(i64, Name)>>,
}

impl Deadlines {
    /// Asks for `target` to be judged at `at` (ignored if an earlier deadline is queued and not
    /// yet past `now`).
    pub fn schedule(&mut self, target: &mut Target, url: &Name, at: i64, now: i64) {
        if at == i64::MAX || (target.due <= at && target.due > now) {
            return;
        }
        target.due = at;
        self.heap.push(Reverse((at, url.clone())));
    }

    /// The targets whose deadline has come, each once.
    pub fn due(&mut self, targets: &mut Targets, now: i64) -> Vec<Name> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, url))) = self.heap.pop() else { break };
            if let Some(target) = targets.get_mut(&url).filter(|t| t.due == at) {
                target.due = i64::MAX;
                due.push(url);
            }
        }
        due
    }

    /// Drops superseded entries once they outnumber live ones, so the heap stays the size of the
    /// target set.
    pub fn compact(&mut self, targets: &Targets) {
        if self.heap.len() > 2 * targets.len() + 1024 {
            let live = std::mem::take(&mut self.heap)
                .into_iter()
                .filter(|Reverse((at, url))| targets.get(url).is_some_and(|t| t.due == *at))
                .collect();
            self.heap = live;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(urls: &[&str]) -> Targets {
        urls.iter()
            .map(|u| (Name::from(*u), Target::new(TargetSpec { url: (*u).into(), ..Default::default() })))
            .collect()
    }

    #[test]
    fn a_target_comes_due_once_at_its_earliest_deadline() {
        let mut all = targets(&["a", "b"]);
        let mut deadlines = Deadlines::default();
        let (a, b) = (Name::from("a"), Name::from("b"));
        deadlines.schedule(all.get_mut("a").unwrap(), &a, 5_000, 0);
        // A later deadline does not replace an earlier one still to come; an earlier one does.
        deadlines.schedule(all.get_mut("a").unwrap(), &a, 9_000, 0);
        deadlines.schedule(all.get_mut("b").unwrap(), &b, 7_000, 0);
        deadlines.schedule(all.get_mut("b").unwrap(), &b, 3_000, 0);
        assert!(deadlines.due(&mut all, 2_999).is_empty());
        assert_eq!(deadlines.due(&mut all, 3_000), vec![b.clone()]);
        assert_eq!(deadlines.due(&mut all, 6_000), vec![a.clone()], "b's superseded 7 s entry is skipped");
        assert!(deadlines.due(&mut all, 60_000).is_empty());
        // A deleted target's deadline is dropped.
        deadlines.schedule(all.get_mut("a").unwrap(), &a, 70_000, 60_000);
        all.remove("a");
        assert!(deadlines.due(&mut all, 80_000).is_empty());
    }

    #[test]
    fn a_newer_result_replaces_an_older_one_and_not_the_reverse() {
        let mut target = Target::new(TargetSpec::default());
        let at = |ms: i64| Latest {
            at_ms: ms,
            timed: true,
            status: None,
            code: None,
            latency_ms: 0.0,
            agent: "a1".into(),
            failure: None,
            cert: None,
        };
        assert!(target.observe("r1".into(), at(10)));
        assert!(!target.observe("r1".into(), at(5)), "an older result (an outbox resent) is not the newest");
        assert!(target.observe("r1".into(), at(10)), "the same time: the later arrival wins");
        assert!(target.observe("r2".into(), at(1)));
        assert_eq!(target.latest_in("r1").map(|l| l.at_ms), Some(10));
        assert_eq!(target.latest.len(), 2);
    }
}
