//! The status projection: a target's consolidated status as the API, the CLI, the page and
//! `/metrics` show it, built from the hub's compact state (and flap damping's memory), and the digest that tells whether
//! watchers must hear about a change.

use std::hash::{Hash, Hasher};

use vantage_proto::v1::{Cause, CertSummary, Flapping, RegionStatus, TargetStatus};
use vantage_shared::FailureCode;

use super::damping::FlapMemory;
use super::targets::Target;
use crate::alert::Silence;
use crate::clock;
use crate::verdict::{Decision, Opinion, RegionOpinion, Verdict};

pub fn cause(code: FailureCode) -> Cause {
    Cause { code: code.as_str().into(), message: code.cause().into(), hint: code.hint().into() }
}

/// The silence holding back the target's notifications now, if any.
pub fn silence_of<'a>(target: &Target, silences: &'a [Silence], now: i64) -> Option<&'a Silence> {
    if silences.is_empty() {
        return None;
    }
    silences.iter().find(|s| s.active(now) && s.matches(&target.spec.url, &target.spec.labels))
}

/// What watchers are told about, digested: the verdict, its cause, each region's opinion and
/// failure, and the silence. A change of latency alone is no news.
pub fn digest(
    decision: &Decision,
    opinions: &[RegionOpinion],
    target: &Target,
    silence: Option<&Silence>,
    flapping: bool,
) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    flapping.hash(&mut h);
    decision.verdict.hash(&mut h);
    decision.cause.map(|c| c.as_str()).hash(&mut h);
    for o in opinions {
        o.opinion.hash(&mut h);
        target.latest_in(&o.region).map(|l| l.failure_code()).hash(&mut h);
    }
    silence.map(|s| &s.id).hash(&mut h);
    decision.discounted.hash(&mut h);
    // Zero means "never announced".
    h.finish() | 1
}

/// The API's name for a verdict.
pub fn proto_verdict(verdict: Verdict) -> vantage_proto::v1::Verdict {
    use vantage_proto::v1::Verdict as PVerdict;
    match verdict {
        Verdict::Up => PVerdict::Up,
        Verdict::Degraded => PVerdict::Degraded,
        Verdict::Down => PVerdict::Down,
        Verdict::Unknown => PVerdict::Unknown,
    }
}

pub fn build_status(
    target: &Target,
    decision: &Decision,
    opinions: &[RegionOpinion],
    silence: Option<&Silence>,
) -> TargetStatus {
    use vantage_proto::v1::Opinion as POpinion;
    let spec = &target.spec;
    let verdict = proto_verdict(decision.verdict);
    let mut cert: Option<CertSummary> = None;
    let regions = opinions
        .iter()
        .map(|o| {
            let latest = target.latest_in(&o.region);
            if let Some(c) = latest.and_then(|l| l.cert.as_deref()) {
                // The certificate closest to expiry that any region saw.
                if cert.as_ref().is_none_or(|cur| c.days_remaining < cur.days_remaining) {
                    cert = Some(CertSummary {
                        days_remaining: c.days_remaining,
                        health: c.health,
                        not_after: c.not_after.as_ref().map(clock::timestamp_rfc3339).unwrap_or_default(),
                    });
                }
            }
            RegionStatus {
                region: o.region.clone(),
                opinion: match o.opinion {
                    Opinion::Up => POpinion::Up,
                    Opinion::Down => POpinion::Down,
                    Opinion::Partial => POpinion::Partial,
                    Opinion::Unknown => POpinion::Unknown,
                } as i32,
                last_result_time: latest.filter(|l| l.timed).map(|l| clock::timestamp(l.at_ms)),
                failure_code: latest.map(|l| l.failure_code().to_owned()).unwrap_or_default(),
                latency_ms: latest.map_or(0.0, |l| f64::from(l.latency_ms)),
                agent: latest.map(|l| l.agent.to_string()).unwrap_or_default(),
                detail: latest.map(|l| l.detail().to_owned()).unwrap_or_default(),
            }
        })
        .collect();
    TargetStatus {
        url: spec.url.to_string(),
        verdict: verdict as i32,
        cause: decision.cause.map(cause),
        since: target.verdict.as_ref().map(|v| clock::timestamp(v.since_ms)),
        cert,
        regions,
        quorum: decision.quorum as u32,
        failing_regions: decision.failing.clone(),
        silence: silence.map(silence_to_proto),
        removed: false,
        discounted_regions: decision.discounted.clone(),
        discounted_reason: discounted_reason(decision, opinions.len()),
        // Read from the store by the calls that show it (`Hub::fill_uptime`).
        uptime: Vec::new(),
        flapping: None,
        flap_rate_percent: 0,
    }
}

/// Why the discounted regions do not count, in words ("" when none is discounted).
fn discounted_reason(decision: &Decision, regions: usize) -> String {
    let discounted = &decision.discounted;
    if discounted.is_empty() {
        return String::new();
    }
    let (names, verb) = match discounted.len() {
        1 => (discounted[0].clone(), "is"),
        _ => (discounted.join(", "), "are"),
    };
    let counted = regions - discounted.len();
    format!(
        "{names} {verb} impaired (failing most of its targets while every other region sees them UP): shown, not \
         counted; the verdict is the other {counted} regions', quorum {} of {counted}",
        decision.quorum
    )
}

/// Sets the status's flap damping fields from the target's flap memory: its rate now over
/// `window` intervals, and whether it flaps.
pub fn set_flap(status: &mut TargetStatus, target: &Target, flap: Option<&FlapMemory>, now: i64, window: u32) {
    let Some(flap) = flap else { return };
    let interval = target.spec.timing().0.as_millis() as i64;
    status.flap_rate_percent = super::damping::rate(&flap.changes, now, interval, window);
    status.flapping = flap.flapping.map(|(since, rate)| Flapping {
        since: Some(clock::timestamp(since)),
        rate_percent: rate,
        causes: flap.causes.clone(),
    });
}

pub fn silence_to_proto(s: &Silence) -> vantage_proto::v1::Silence {
    vantage_proto::v1::Silence {
        id: s.id.clone(),
        target: s.target.clone(),
        labels: s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        start: Some(clock::timestamp(s.start_ms)),
        end: Some(clock::timestamp(s.end_ms)),
        comment: s.comment.clone(),
        source: s.source.clone(),
    }
}
