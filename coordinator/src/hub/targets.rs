//! What the hub holds per target: its spec in a compact form (what judging, assignment, silences
//! and alerts read, decoded; the probe settings only agents need, encoded), the newest result of
//! each region in a compact form (the facts verdicts, status and alerts read; full results stay
//! in the store), its verdict as last decided and its open incident; and the deadline queue that
//! says when a target's verdict may change by the clock alone (a region's result growing stale,
//! an `unknown` alert falling due), so the hub re-judges exactly those instead of sweeping every
//! target every second. At 100,000 targets each byte here is 100 kB of the coordinator's memory
//! (README: "Scale benchmark").

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use vantage_proto::v1::{CertHealth, HistoryEntry, ProbeResult, TargetSpec};
use vantage_shared::FailureCode;

use crate::alert::Damping;
use crate::spec;
use crate::store::VerdictRecord;
use crate::verdict::Verdict;

/// A target URL or a region name, shared between the maps that name it.
pub type Name = Arc<str>;

/// One target.
#[derive(Debug, Clone)]
pub struct Target {
    pub spec: Spec,
    /// The newest result of each region that reported one.
    pub latest: Vec<(Name, Latest)>,
    /// As last decided (`None` until the first decision).
    pub verdict: Option<Decided>,
    /// When its open incident began.
    pub open_incident: Option<i64>,
    /// The backend address of its newest result (incident groups find the targets served from
    /// one address by it, passing or not).
    pub address: Option<Box<str>>,
    /// What watchers last heard (a digest of the status fields they are told about).
    pub announced: u64,
    /// The earliest deadline queued for it (see [`Deadlines`]); `i64::MAX` for none.
    pub due: i64,
}

impl Target {
    pub fn new(spec: TargetSpec) -> Target {
        Target {
            spec: Spec::new(spec),
            latest: Vec::new(),
            verdict: None,
            open_incident: None,
            address: None,
            announced: 0,
            due: i64::MAX,
        }
    }

    /// The target's URL (shared with the map that holds it).
    pub fn url(&self) -> &Name {
        &self.spec.url
    }

    /// Notes the backend address `entry` was probed at (kept without reallocating when the same).
    pub fn note_address(&mut self, entry: &HistoryEntry) {
        let address = entry.result.as_ref().and_then(|r| r.backends.first()).map(|b| b.address.as_str());
        if let Some(address) = address.filter(|a| !a.is_empty()) {
            if self.address.as_deref() != Some(address) {
                self.address = Some(address.into());
            }
        }
    }

    pub fn latest_in(&self, region: &str) -> Option<&Latest> {
        self.latest.iter().find(|(r, _)| &**r == region).map(|(_, l)| l)
    }

    /// Keeps `latest` as `region`'s newest result unless a newer one is held. Returns whether it
    /// was kept. A failing result after a failing one keeps the start of the failing run.
    pub fn observe(&mut self, region: Name, mut latest: Latest) -> bool {
        match self.latest.iter_mut().find(|(r, _)| *r == region) {
            Some((_, held)) if held.at_ms > latest.at_ms => false,
            Some((_, held)) => {
                latest.tracked = held.tracked;
                if let (Some(failure), Some(before)) = (latest.failure.as_mut(), held.failing_since()) {
                    if failure.failing_since.is_some() {
                        failure.failing_since = Some(before.min(latest.at_ms));
                    }
                }
                // The tally counts the opinion as last judged, whatever result it came from.
                latest.counted = held.counted;
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

/// A target's spec as the hub holds it. What is read on every judgement or assignment (URL,
/// timing, regions, quorum, labels, flap damping and hold-down) is decoded; the rest (expected statuses, IPs, pins,
/// certificate thresholds, source), which only agents and `ListTargets` read, stays
/// protobuf-encoded and is decoded when the whole spec is asked for ([`Spec::to_proto`]). A
/// `TargetSpec` held whole is 256 bytes before its strings; this is 104.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub url: Name,
    /// Its own regions (empty: the default region set judges it).
    pub regions: Box<[Box<str>]>,
    /// Regions that must agree before it is DOWN (0: a strict majority).
    pub quorum: u32,
    /// What alert routes and silences select on.
    pub labels: BTreeMap<String, String>,
    /// Its own hold-down and flap damping, if it sets any: most targets take the `[alerts]`
    /// defaults, and pay a pointer for it.
    own: Option<Box<OwnDamping>>,
    /// `spec::timing`, in nanoseconds.
    interval_ns: u64,
    timeout_ns: u64,
    /// The `TargetSpec` without the decoded fields above (its `interval` and `timeout` stay, as
    /// given), encoded.
    rest: Box<[u8]>,
}

impl Spec {
    pub fn new(mut spec: TargetSpec) -> Spec {
        let (interval, timeout) = spec::timing(&spec);
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let url = Name::from(std::mem::take(&mut spec.url));
        let regions = std::mem::take(&mut spec.regions).into_iter().map(String::into_boxed_str).collect();
        let labels = std::mem::take(&mut spec.labels).into_iter().collect();
        let quorum = std::mem::take(&mut spec.quorum);
        let own = OwnDamping::take(&mut spec);
        Spec {
            url,
            regions,
            quorum,
            labels,
            own: (own != OwnDamping::default()).then(|| Box::new(own)),
            interval_ns: nanos(interval),
            timeout_ns: nanos(timeout),
            rest: spec.encode_to_vec().into_boxed_slice(),
        }
    }

    /// Probe interval and timeout, defaults applied (as `spec::timing`).
    pub fn timing(&self) -> (Duration, Duration) {
        (Duration::from_nanos(self.interval_ns), Duration::from_nanos(self.timeout_ns))
    }

    /// Its flap damping and hold-down: its own settings, else `defaults`'.
    pub fn damping(&self, defaults: &Damping) -> Damping {
        let Some(own) = self.own.as_deref() else { return *defaults };
        Damping {
            alert_after: own.alert_after.unwrap_or(defaults.alert_after),
            recover_after: own.recover_after.unwrap_or(defaults.recover_after),
            flap_window: own.flap_window.unwrap_or(defaults.flap_window),
            // The thresholds go together (`spec::normalize`).
            flap_high: own.flap_high.unwrap_or(defaults.flap_high),
            flap_low: if own.flap_high.is_some() {
                own.flap_low.unwrap_or(defaults.flap_low)
            } else {
                defaults.flap_low
            },
        }
    }

    /// Its hold-down, in milliseconds: its own, else `defaults`'.
    pub fn hold(&self, defaults: &Damping) -> super::damping::Hold {
        let d = self.damping(defaults);
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        super::damping::Hold { alert_after: ms(d.alert_after), recover_after: ms(d.recover_after) }
    }

    /// Whether `spec` is the spec this was made from (a reload leaves such a target alone).
    pub fn describes(&self, spec: &TargetSpec) -> bool {
        *self.url == *spec.url
            && self.quorum == spec.quorum
            && self.regions.len() == spec.regions.len()
            && self.regions.iter().zip(&spec.regions).all(|(a, b)| **a == **b)
            && self.labels.len() == spec.labels.len()
            && self.labels.iter().all(|(k, v)| spec.labels.get(k) == Some(v))
            && self.own.as_deref().copied().unwrap_or_default() == OwnDamping::of(spec)
            && *self.rest == *rest_of(spec).encode_to_vec()
    }

    /// Where the target came from (`TargetSpec::source`), decoded from the rest.
    pub fn source(&self) -> String {
        TargetSpec::decode(&*self.rest).map(|s| s.source).unwrap_or_default()
    }

    /// What an agent needs to probe it: the spec without what only the coordinator uses (its
    /// regions, quorum, labels and source), which would cost every agent memory per target.
    pub fn for_agent(&self) -> TargetSpec {
        let mut spec = TargetSpec::decode(&*self.rest).unwrap_or_default();
        spec.url = self.url.to_string();
        spec.source = String::new();
        spec
    }

    /// The whole spec, as it was given.
    pub fn to_proto(&self) -> TargetSpec {
        // Encoded by `new` from a valid message: decoding it cannot fail.
        let mut spec = TargetSpec::decode(&*self.rest).unwrap_or_default();
        spec.url = self.url.to_string();
        spec.regions = self.regions.iter().map(|r| r.to_string()).collect();
        spec.quorum = self.quorum;
        spec.labels = self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(own) = self.own.as_deref() {
            own.put(&mut spec);
        }
        spec
    }
}

/// A target's own flap damping and hold-down settings, as given (unset: the `[alerts]` default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OwnDamping {
    alert_after: Option<Duration>,
    recover_after: Option<Duration>,
    flap_window: Option<u32>,
    flap_high: Option<u32>,
    flap_low: Option<u32>,
}

impl OwnDamping {
    fn of(spec: &TargetSpec) -> OwnDamping {
        OwnDamping {
            alert_after: spec::to_duration(spec.alert_after.as_ref()),
            recover_after: spec::to_duration(spec.recover_after.as_ref()),
            flap_window: spec.flap_window,
            flap_high: spec.flap_high,
            flap_low: spec.flap_low,
        }
    }

    /// Its settings, taken out of `spec`.
    fn take(spec: &mut TargetSpec) -> OwnDamping {
        let own = OwnDamping::of(spec);
        (spec.alert_after, spec.recover_after, spec.flap_window, spec.flap_high, spec.flap_low) =
            (None, None, None, None, None);
        own
    }

    fn put(&self, spec: &mut TargetSpec) {
        spec.alert_after = self.alert_after.map(spec::from_duration);
        spec.recover_after = self.recover_after.map(spec::from_duration);
        (spec.flap_window, spec.flap_high, spec.flap_low) = (self.flap_window, self.flap_high, self.flap_low);
    }
}

/// `spec` without the fields `Spec` holds decoded (its timing stays, as given).
fn rest_of(spec: &TargetSpec) -> TargetSpec {
    TargetSpec {
        interval: spec.interval,
        timeout: spec.timeout,
        all_backends: spec.all_backends,
        expect_status: spec.expect_status.clone(),
        expect_ips: spec.expect_ips.clone(),
        warn_days: spec.warn_days,
        critical_days: spec.critical_days,
        source: spec.source.clone(),
        pin_sha256: spec.pin_sha256.clone(),
        ..TargetSpec::default()
    }
}

/// A verdict as last decided: what the next judgement compares with, what the status says since
/// when. (The full record, with its cause and failing regions, is written to the store when it
/// changes.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    pub verdict: Verdict,
    pub since_ms: i64,
}

impl Decided {
    /// `None` for a stored verdict this version does not know (judged again as a first verdict).
    pub fn of(record: &VerdictRecord) -> Option<Decided> {
        let verdict = [Verdict::Up, Verdict::Degraded, Verdict::Down, Verdict::Unknown]
            .into_iter()
            .find(|v| v.as_str() == record.verdict)?;
        Some(Decided { verdict, since_ms: record.since_ms })
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
    /// How this region's opinion counted toward its region's tally at the target's last
    /// judgement (`impairment::JUDGED`, `ALONE`): the tallies change by the difference.
    pub counted: u8,
    /// The state availability last recorded for this region's opinion (`None`: not yet since
    /// start-up, or the region no longer judges the target); carried from one result to the next.
    /// Not loaded at start-up: the first judgement reports every region's opinion, and the store
    /// writes only those that differ from the span it holds open. In a byte that was padding.
    pub tracked: Option<crate::uptime::State>,
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
    /// For a failing (down or partial) result: when this region's run of failing results began,
    /// by the probes' own times (`at_ms` of the first). Coordinators that received the same
    /// results agree on it, so an outage's alerts carry the same identity on each (README:
    /// "Coordinator pairs"). A run under way when the coordinator started begins at the newest
    /// stored result. (Here, not in `Latest`: only failing results pay for it.)
    pub failing_since: Option<i64>,
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
        let at_ms = crate::clock::entry_ms(entry);
        let failure = result.filter(|r| r.failure.is_some() || failing).map(|r| {
            Box::new(FailureFacts {
                failing_since: failing.then_some(at_ms),
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
            at_ms,
            timed: result.is_some_and(|r| r.checked_at.is_some()),
            status,
            code: result.and_then(|r| r.failure.as_ref()).and_then(|f| FailureCode::from_code(&f.code)),
            latency_ms: result.and_then(|r| r.timings.as_ref()).map_or(0.0, |t| t.total_ms as f32),
            agent,
            failure,
            counted: 0,
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
            tracked: None,
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

    /// When this region's run of failing results began (see [`FailureFacts::failing_since`]).
    pub fn failing_since(&self) -> Option<i64> {
        self.failure.as_ref().and_then(|f| f.failing_since)
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
    fn the_compact_spec_gives_back_the_spec_it_was_made_from() {
        let full = TargetSpec {
            url: "https://example.com/health".into(),
            interval: Some(prost_types::Duration { seconds: 30, nanos: 500_000_000 }),
            timeout: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
            regions: vec!["eu-west".into(), "us-east".into()],
            quorum: 2,
            all_backends: true,
            expect_status: vec![200, 204],
            expect_ips: vec!["192.0.2.1".into()],
            warn_days: 21,
            critical_days: 3,
            source: "api".into(),
            labels: [("team".to_owned(), "web".to_owned()), ("env".to_owned(), "prod".to_owned())].into(),
            pin_sha256: vec!["ab".repeat(32)],
            alert_after: Some(prost_types::Duration { seconds: 90, nanos: 0 }),
            recover_after: None,
            flap_window: Some(0),
            flap_high: None,
            flap_low: None,
        };
        let spec = Spec::new(full.clone());
        assert_eq!(spec.to_proto(), full);
        assert!(spec.describes(&full));
        assert_eq!(spec.source(), "api");
        for changed in [
            TargetSpec { quorum: 1, ..full.clone() },
            TargetSpec { labels: [("team".to_owned(), "ops".to_owned())].into(), ..full.clone() },
            TargetSpec { expect_status: vec![200], ..full.clone() },
            TargetSpec { source: "config".into(), ..full.clone() },
            TargetSpec { regions: vec!["eu-west".into()], ..full.clone() },
            TargetSpec { alert_after: None, ..full.clone() },
            TargetSpec { flap_window: None, ..full.clone() },
            TargetSpec { recover_after: Some(prost_types::Duration { seconds: 0, nanos: 0 }), ..full.clone() },
        ] {
            assert!(!spec.describes(&changed), "{changed:?}");
        }
        assert_eq!(spec.timing(), (Duration::from_millis(30_500), Duration::from_secs(5)));
        assert_eq!(&*spec.url, "https://example.com/health");
        // Its own alert_after; recover_after from the defaults.
        let defaults = crate::alert::Damping { recover_after: Duration::from_secs(7), ..Default::default() };
        assert_eq!(spec.hold(&defaults), super::super::damping::Hold { alert_after: 90_000, recover_after: 7_000 });
        assert_eq!(spec.damping(&Damping { flap_window: 20, ..defaults }).flap_window, 0, "damping off for it");
        // A spec without timing (stored by an older version) keeps none, and is judged by the defaults.
        let bare = TargetSpec { url: "https://example.com/".into(), ..Default::default() };
        let spec = Spec::new(bare.clone());
        assert_eq!(spec.to_proto(), bare);
        assert_eq!(spec.timing(), spec::timing(&bare));
    }

    #[test]
    fn a_run_of_failing_results_keeps_its_start_and_a_passing_one_ends_it() {
        use vantage_proto::v1::ProbeStatus as Status;
        let entry = |ms: i64, status: Status| HistoryEntry {
            result: Some(ProbeResult {
                status: status as i32,
                checked_at: Some(prost_types::Timestamp { seconds: ms / 1000, nanos: 0 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut target = Target::new(TargetSpec::default());
        let mut see = |ms: i64, status: Status| {
            target.observe("r1".into(), Latest::of(&entry(ms, status), "a1".into()));
            target.latest_in("r1").and_then(Latest::failing_since)
        };
        assert_eq!(see(10_000, Status::Up), None);
        assert_eq!(see(20_000, Status::Down), Some(20_000), "the run begins");
        assert_eq!(see(30_000, Status::Degraded), Some(20_000), "partial is failing too: the same run");
        assert_eq!(see(40_000, Status::Down), Some(20_000));
        assert_eq!(see(15_000, Status::Down), Some(20_000), "an older result changes nothing");
        assert_eq!(see(50_000, Status::Up), None, "a passing result ends it");
        assert_eq!(see(60_000, Status::Down), Some(60_000), "the next run starts afresh");
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
            counted: 0,
            tracked: None,
        };
        assert!(target.observe("r1".into(), at(10)));
        assert!(!target.observe("r1".into(), at(5)), "an older result (an outbox resent) is not the newest");
        assert!(target.observe("r1".into(), at(10)), "the same time: the later arrival wins");
        assert!(target.observe("r2".into(), at(1)));
        assert_eq!(target.latest_in("r1").map(|l| l.at_ms), Some(10));
        assert_eq!(target.latest.len(), 2);
    }
}
