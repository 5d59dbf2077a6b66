//! The judge: a target's regions' opinions from their newest results, the verdict the rules of
//! `verdict` decide from them, and the incident state machine (README: "Verdicts and
//! incidents"): an incident opens when a target turns DOWN and closes when it is UP again
//! (DEGRADED and UNKNOWN leave it as it is). Pure: the clock, the connected regions and the
//! impaired ones come in. It also keeps each region's tally for the rule of impaired regions
//! (`recount`), from the same opinions.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::targets::{Decided, Name, Target};
use crate::clock;
use crate::impairment::{self, Tally};
use crate::store::VerdictRecord;
use crate::verdict::{self, Decision, RegionOpinion, Verdict};

/// After a `degraded` verdict, its alert waits for one run period and this: the batch carrying
/// the last of an impaired region's results, the tick that finds it impaired, and the one that
/// judges its targets again.
const DEGRADED_SETTLE_MS: i64 = 3_000;

/// What a judgement depends on besides the target.
pub struct Context<'a> {
    /// The default region set (targets without their own regions are judged by it).
    pub default_regions: &'a [Name],
    /// Regions with a connected agent.
    pub connected: &'a HashSet<Name>,
    /// Just after start-up every region counts as connected, so agents have time to come back.
    pub in_grace: bool,
    /// Impaired regions: their opinions are shown but not counted.
    pub impaired: &'a HashSet<Name>,
    /// The rule for impaired regions is on: a `degraded` alert waits until a region failing alone
    /// could have been found impaired ([`degraded_wait_ms`]).
    pub hold_degraded: bool,
    pub now: i64,
}

/// What an incident does with a judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentStep {
    Opened,
    /// The incident open since `opened` is over.
    Closed {
        opened: i64,
    },
    None,
}

/// One judgement of a target.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub decision: Decision,
    pub opinions: Vec<RegionOpinion>,
    /// The verdict to record (its `since` moves only when the verdict changes).
    pub record: VerdictRecord,
    /// The verdict differs from the one last decided (or none was).
    pub changed: bool,
    /// The target's first verdict.
    pub first: bool,
    pub incident: IncidentStep,
    /// When the failing regions' trouble began, by the probes' own times: the earliest start of
    /// a failing run among them (`now` when none is failing). An incident opens, and a degraded
    /// spell starts, at this time, so coordinators judging the same results give them the same
    /// start and their alerts the same dedup key.
    pub began: i64,
    /// From when a DEGRADED verdict may raise its `degraded` alert (coordinator time): at once,
    /// or once it has lasted [`degraded_wait_ms`] with the rule for impaired regions on.
    pub degraded_alert_at: i64,
}

/// How long a DEGRADED verdict waits before its `degraded` alert, with the rule for impaired
/// regions on: one run period (every target of a region whose network broke has failed there
/// by then) and a few seconds for the region to be found impaired and its targets judged again,
/// so a broken region pages once (`region_impaired`), not once per target.
pub fn degraded_wait_ms(interval: Duration, timeout: Duration) -> i64 {
    verdict::run_period_ms(interval.as_millis() as i64, timeout.as_millis() as i64).saturating_add(DEGRADED_SETTLE_MS)
}

/// The earliest start of a failing run among `regions`' newest results, if any is failing.
pub fn failing_since(target: &Target, regions: &[String]) -> Option<i64> {
    regions.iter().filter_map(|r| target.latest_in(r)).filter_map(|l| l.failing_since()).min()
}

impl Judgement {
    /// What the target holds of it until the next judgement.
    pub fn decided(&self) -> Decided {
        Decided { verdict: self.decision.verdict, since_ms: self.record.since_ms }
    }
}

/// Each judging region's opinion, and the decision from them.
pub fn decide(target: &Target, ctx: &Context<'_>) -> (Decision, Vec<RegionOpinion>) {
    let spec = &target.spec;
    let (interval, timeout) = spec.timing();
    let mut opinions = Vec::with_capacity(ctx.default_regions.len().max(spec.regions.len()));
    super::agents::for_each_region(spec, ctx.default_regions, |region| {
        let connected = ctx.in_grace || ctx.connected.contains(region);
        let newest = target.latest_in(region).and_then(|l| l.observation());
        let (opinion, code) = verdict::opinion(
            newest.as_ref(),
            connected,
            ctx.now,
            interval.as_millis() as i64,
            timeout.as_millis() as i64,
        );
        opinions.push(RegionOpinion { region: region.to_owned(), opinion, code });
    });
    let decision = if ctx.impaired.is_empty() {
        verdict::decide(&opinions, verdict::effective_quorum(spec.quorum, opinions.len()))
    } else {
        verdict::decide_discounting(&opinions, spec.quorum, |region| ctx.impaired.contains(region))
    };
    (decision, opinions)
}

/// Brings the regions' tallies up to date with `opinions`, the target's regions' opinions now
/// (raw: impaired regions counted like the others, so the rule never feeds on its own effect).
/// Only what changed since the target's last judgement is added or taken away: the cost is that
/// of the judgement, not a scan of every target.
pub fn recount(tallies: &mut HashMap<Name, Tally>, target: &mut Target, opinions: &[RegionOpinion]) {
    for (region, latest) in &mut target.latest {
        let now = opinions.iter().position(|o| *o.region == **region).map_or(0, |i| impairment::flags(opinions, i));
        if now != latest.counted {
            let tally = tallies.entry(region.clone()).or_default();
            tally.apply(latest.counted, now);
            if tally.is_empty() {
                tallies.remove(region);
            }
            latest.counted = now;
        }
    }
}

/// Takes a removed target's opinions out of the tallies.
pub fn uncount(tallies: &mut HashMap<Name, Tally>, target: &Target) {
    for (region, latest) in &target.latest {
        if latest.counted != 0 {
            if let Some(tally) = tallies.get_mut(region) {
                tally.apply(latest.counted, 0);
            }
        }
    }
    tallies.retain(|_, t| !t.is_empty());
}

/// Judges `target` now: its decision, and what changes against the verdict last recorded.
pub fn judge(target: &Target, ctx: &Context<'_>) -> Judgement {
    let (decision, opinions) = decide(target, ctx);
    let previous = target.verdict.as_ref();
    let changed = previous.is_none_or(|p| p.verdict != decision.verdict);
    let record = VerdictRecord {
        verdict: decision.verdict.as_str().to_owned(),
        cause: decision.cause.map(|c| c.as_str().to_owned()),
        since_ms: match previous {
            Some(p) if !changed => p.since_ms,
            _ => ctx.now,
        },
        failing_regions: decision.failing.clone(),
    };
    let incident = match (changed, decision.verdict, target.open_incident) {
        (true, Verdict::Down, None) => IncidentStep::Opened,
        (true, Verdict::Up, Some(opened)) => IncidentStep::Closed { opened },
        _ => IncidentStep::None,
    };
    // Never after the judgement: a result clamped to its arrival is at most `now`.
    let began = failing_since(target, &decision.failing).unwrap_or(ctx.now).min(ctx.now);
    let degraded_alert_at = if ctx.hold_degraded {
        let (interval, timeout) = target.spec.timing();
        record.since_ms.saturating_add(degraded_wait_ms(interval, timeout))
    } else {
        record.since_ms
    };
    Judgement { decision, opinions, record, changed, first: previous.is_none(), incident, began, degraded_alert_at }
}

/// When the target must be judged again if no result comes: the first moment a judging region's
/// newest result is too old to count, its `unknown` alert falls due (`unknown_alerted`: one is
/// out already), or its `degraded` alert (`degraded_spell`: a spell is open, its alert is out).
/// `i64::MAX` for never.
pub fn next_deadline(
    target: &Target,
    judgement: &Judgement,
    now: i64,
    unknown_after: Duration,
    unknown_alerted: bool,
    degraded_spell: bool,
) -> i64 {
    let (interval, timeout) = target.spec.timing();
    let max_age = verdict::max_age_ms(interval.as_millis() as i64, timeout.as_millis() as i64);
    let stale = judgement
        .opinions
        .iter()
        .filter_map(|o| target.latest_in(&o.region))
        .map(|l| l.at_ms.saturating_add(max_age).saturating_add(1))
        .filter(|at| *at > now)
        .min()
        .unwrap_or(i64::MAX);
    let unknown = if judgement.decision.verdict == Verdict::Unknown && !unknown_alerted && !unknown_after.is_zero() {
        judgement.record.since_ms.saturating_add(unknown_after.as_millis() as i64).max(now + 1)
    } else {
        i64::MAX
    };
    let degraded = if judgement.decision.verdict == Verdict::Degraded
        && !degraded_spell
        && target.open_incident.is_none()
        && judgement.degraded_alert_at > now
    {
        judgement.degraded_alert_at
    } else {
        i64::MAX
    };
    stale.min(unknown).min(degraded)
}

/// The incident a judgement opens, as the store records it.
pub fn opened_incident(url: &str, judgement: &Judgement, now: i64) -> vantage_proto::v1::Incident {
    vantage_proto::v1::Incident {
        url: url.to_owned(),
        opened: Some(clock::timestamp(now)),
        closed: None,
        cause: judgement.decision.cause.map(super::projection::cause),
        regions: judgement.decision.failing.clone(),
        closed_reason: String::new(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::targets::{FailureFacts, Latest};
    use vantage_proto::v1::TargetSpec;
    use vantage_shared::{FailureCode, ProbeStatus};

    fn latest(at_ms: i64, status: ProbeStatus) -> Latest {
        Latest {
            at_ms,
            timed: true,
            status: Some(status),
            code: (status == ProbeStatus::Down).then_some(FailureCode::TcpRefused),
            latency_ms: 1.0,
            agent: "a".into(),
            failure: (status != ProbeStatus::Up).then(|| {
                Box::new(FailureFacts {
                    code: "tcp_refused".into(),
                    detail: "".into(),
                    backend: None,
                    failing_since: Some(at_ms),
                })
            }),
            cert: None,
            counted: 0,
            tracked: None,
        }
    }

    fn target(results: &[(&str, ProbeStatus)], at: i64) -> Target {
        let mut t = Target::new(TargetSpec {
            url: "https://x/".into(),
            interval: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
            ..Default::default()
        });
        for (region, status) in results {
            t.observe(Name::from(*region), latest(at, *status));
        }
        t
    }

    /// Judges `t` at `now` with regions r1..r3 connected, and applies the result as the hub does.
    fn step(t: &mut Target, now: i64) -> Judgement {
        let regions: Vec<Name> = ["r1", "r2", "r3"].into_iter().map(Name::from).collect();
        let connected: HashSet<Name> = regions.iter().cloned().collect();
        let impaired = HashSet::new();
        let ctx = Context {
            default_regions: &regions,
            connected: &connected,
            in_grace: false,
            impaired: &impaired,
            hold_degraded: false,
            now,
        };
        let j = judge(t, &ctx);
        match j.incident {
            IncidentStep::Opened => t.open_incident = Some(j.began),
            IncidentStep::Closed { .. } => t.open_incident = None,
            IncidentStep::None => {}
        }
        t.verdict = Some(j.decided());
        j
    }

    #[test]
    fn a_pair_that_received_the_same_results_opens_the_incident_at_the_same_time() {
        use ProbeStatus::*;
        // Each region's results, by probe time: r1 fails from 10 s, r2 from 12 s, r3 stays up.
        let results = [("r1", 10_000, Down), ("r2", 12_000, Down), ("r1", 20_000, Down), ("r2", 22_000, Down)];
        // The live coordinator judges after each result, as it arrives.
        let mut live = target(&[("r1", Up), ("r2", Up), ("r3", Up)], 1_000);
        step(&mut live, 1_000);
        let mut opened_live = None;
        for (region, at, status) in results {
            live.observe(Name::from(region), latest(at, status));
            let j = step(&mut live, at + 300);
            if j.incident == IncidentStep::Opened {
                opened_live = Some(j.began);
            }
        }
        // Its twin was away and gets the same results in one go (outboxes resent), later.
        let mut late = target(&[("r1", Up), ("r2", Up), ("r3", Up)], 1_000);
        step(&mut late, 1_000);
        for (region, at, status) in results {
            late.observe(Name::from(region), latest(at, status));
        }
        let j = step(&mut late, 23_000);
        assert_eq!(j.incident, IncidentStep::Opened);
        assert_eq!(opened_live, Some(10_000), "when the first agreeing region began failing, not the clock");
        assert_eq!(j.began, 10_000, "the same start, hence the same dedup key");
        // Up again and failing anew: a new run, a new start.
        for region in ["r1", "r2"] {
            late.observe(Name::from(region), latest(30_000, Up));
        }
        assert_eq!(step(&mut late, 30_000).incident, IncidentStep::Closed { opened: 10_000 });
        for region in ["r1", "r2"] {
            late.observe(Name::from(region), latest(40_000, Down));
        }
        assert_eq!(step(&mut late, 40_000).began, 40_000);
    }

    #[test]
    fn an_incident_opens_on_down_survives_degraded_and_unknown_and_closes_on_up() {
        use ProbeStatus::*;
        let mut t = target(&[("r1", Up), ("r2", Up), ("r3", Up)], 1_000);
        let first = step(&mut t, 1_000);
        assert!(first.first && first.changed && first.incident == IncidentStep::None);
        let again = step(&mut t, 2_000);
        assert!(!again.changed && again.record.since_ms == 1_000, "since stays while the verdict holds");
        for r in ["r1", "r2"] {
            t.observe(Name::from(r), latest(3_000, Down));
        }
        assert_eq!(step(&mut t, 3_000).incident, IncidentStep::Opened);
        // Down in one region only: DEGRADED, the incident stays open.
        t.observe(Name::from("r1"), latest(4_000, Up));
        let degraded = step(&mut t, 4_000);
        assert_eq!((degraded.decision.verdict, degraded.incident), (Verdict::Degraded, IncidentStep::None));
        // Every result stale: UNKNOWN, still open.
        let unknown = step(&mut t, 100_000);
        assert_eq!((unknown.decision.verdict, unknown.incident), (Verdict::Unknown, IncidentStep::None));
        for r in ["r1", "r2", "r3"] {
            t.observe(Name::from(r), latest(100_000, Up));
        }
        assert_eq!(step(&mut t, 100_000).incident, IncidentStep::Closed { opened: 3_000 });
    }

    #[test]
    fn tallies_count_each_regions_current_opinions_as_they_change_and_not_twice() {
        use ProbeStatus::*;
        let regions: Vec<Name> = ["r1", "r2", "r3"].into_iter().map(Name::from).collect();
        let connected: HashSet<Name> = regions.iter().cloned().collect();
        let impaired = HashSet::new();
        let ctx = |now| Context {
            default_regions: &regions,
            connected: &connected,
            in_grace: false,
            impaired: &impaired,
            hold_degraded: false,
            now,
        };
        let mut tallies = HashMap::new();
        let mut targets: Vec<Target> = (0..3).map(|_| target(&[("r1", Up), ("r2", Up), ("r3", Up)], 1_000)).collect();
        let judge_all = |targets: &mut Vec<Target>, tallies: &mut HashMap<Name, Tally>, now| {
            for t in targets.iter_mut() {
                let j = judge(t, &ctx(now));
                recount(tallies, t, &j.opinions);
            }
        };
        judge_all(&mut targets, &mut tallies, 1_000);
        judge_all(&mut targets, &mut tallies, 1_500);
        assert_eq!(tallies[&Name::from("r1")], Tally { judged: 3, alone: 0 }, "judged again: counted once");
        // r1 fails two targets alone, then a third that r2 fails too.
        for t in &mut targets[..2] {
            t.observe(Name::from("r1"), latest(2_000, Down));
        }
        targets[2].observe(Name::from("r1"), latest(2_000, Down));
        targets[2].observe(Name::from("r2"), latest(2_000, Down));
        judge_all(&mut targets, &mut tallies, 2_000);
        assert_eq!(tallies[&Name::from("r1")], Tally { judged: 3, alone: 2 });
        assert_eq!(tallies[&Name::from("r2")], Tally { judged: 3, alone: 0 }, "a shared failure is nobody's alone");
        // A newer failing result keeps the count as it was.
        targets[0].observe(Name::from("r1"), latest(3_000, Down));
        judge_all(&mut targets, &mut tallies, 3_000);
        assert_eq!(tallies[&Name::from("r1")], Tally { judged: 3, alone: 2 });
        // Stale: nothing is judged any more; a removed target leaves nothing behind.
        judge_all(&mut targets, &mut tallies, 1_000_000);
        assert!(tallies.is_empty(), "{tallies:?}");
        judge_all(&mut targets, &mut tallies, 3_000);
        for t in &targets {
            uncount(&mut tallies, t);
        }
        assert!(tallies.is_empty(), "{tallies:?}");
    }

    #[test]
    fn a_degraded_alert_waits_a_run_period_while_the_rule_for_impaired_regions_is_on() {
        use ProbeStatus::*;
        let regions: Vec<Name> = ["r1", "r2", "r3"].into_iter().map(Name::from).collect();
        let connected: HashSet<Name> = regions.iter().cloned().collect();
        let none = HashSet::new();
        let mut t = target(&[("r1", Up), ("r2", Up), ("r3", Up)], 1_000);
        t.observe(Name::from("r1"), latest(2_000, Down));
        let ctx = |hold_degraded, impaired| Context {
            default_regions: &regions,
            connected: &connected,
            in_grace: false,
            impaired,
            hold_degraded,
            now: 2_000,
        };
        let j = judge(&t, &ctx(true, &none));
        assert_eq!(j.decision.verdict, Verdict::Degraded);
        let (interval, timeout) = t.spec.timing();
        let wait = degraded_wait_ms(interval, timeout);
        assert_eq!(wait, verdict::run_period_ms(10_000, timeout.as_millis() as i64) + DEGRADED_SETTLE_MS);
        assert_eq!(j.degraded_alert_at, 2_000 + wait);
        assert_eq!(next_deadline(&t, &j, 2_000, Duration::ZERO, false, false), 2_000 + wait, "judged again then");
        assert!(next_deadline(&t, &j, 2_000, Duration::ZERO, false, true) > 2_000 + wait, "its alert is out already");
        assert_eq!(judge(&t, &ctx(false, &none)).degraded_alert_at, 2_000, "off: at once, as before");
        // Once r1 is impaired the same opinions are UP, r1 shown but not counted.
        let r1: HashSet<Name> = [Name::from("r1")].into();
        let j = judge(&t, &ctx(true, &r1));
        assert_eq!((j.decision.verdict, j.decision.discounted.clone()), (Verdict::Up, vec!["r1".to_owned()]));
        assert_eq!(j.opinions.len(), 3, "every region's opinion is still shown");
    }

    #[test]
    fn the_deadline_is_when_the_first_result_turns_stale_or_unknown_falls_due() {
        let mut t = target(&[("r1", ProbeStatus::Up), ("r2", ProbeStatus::Up)], 1_000);
        t.observe(Name::from("r2"), latest(5_000, ProbeStatus::Up));
        let j = step(&mut t, 5_000);
        let max_age = verdict::max_age_ms(10_000, t.spec.timing().1.as_millis() as i64);
        assert_eq!(next_deadline(&t, &j, 5_000, Duration::from_secs(300), false, false), 1_000 + max_age + 1);
        // Past both: no deadline until a result comes; once UNKNOWN, the unknown alert's.
        let later = 1_000_000;
        let unknown = step(&mut t, later);
        assert_eq!(unknown.decision.verdict, Verdict::Unknown);
        assert_eq!(next_deadline(&t, &unknown, later, Duration::from_secs(300), false, false), later + 300_000);
        assert_eq!(next_deadline(&t, &unknown, later, Duration::from_secs(300), true, false), i64::MAX);
        assert_eq!(next_deadline(&t, &unknown, later, Duration::ZERO, false, false), i64::MAX);
    }
}
