//! A coordinator's target as the agent keeps it between runs: its URL and how it is probed, in
//! as few bytes as the settings allow. An agent may hold 100,000 of them (README: "Agent
//! benchmark"), so the parsed [`Target`] (256 bytes and two heap strings) is not kept: it is
//! built again for each run, which costs a third of a microsecond beside a probe's hundreds, and
//! what targets rarely set (expected addresses, statuses, body, pins) sits behind one pointer.
//!
//! The session turns each decoded slice of an assignment into these at once, so the decoded
//! protobuf messages are dropped before the next slice is read.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use vantage_proto::v1::TargetSpec;
use vantage_shared::TargetUrl;

use crate::probe::Target;
use crate::probe::cert::Thresholds;
use crate::wire;

/// One assigned target: its URL as the coordinator sent it, and how to probe it, or why the
/// probe cannot take it (the scheduler logs that and treats the URL as not assigned).
#[derive(Debug, Clone)]
pub struct Assigned {
    pub url: Arc<str>,
    pub way: Result<Way, String>,
}

impl Assigned {
    pub fn from_spec(spec: TargetSpec) -> Assigned {
        let interval = interval_of(&spec);
        let way = wire::target(&spec).map(|target| Way::of(target, interval));
        Assigned { url: spec.url.into(), way }
    }
}

/// Every slice of an assignment, converted as it arrives.
pub fn all(specs: Vec<TargetSpec>) -> Vec<Assigned> {
    specs.into_iter().map(Assigned::from_spec).collect()
}

/// How a target is probed and how often: everything of a [`Target`] but its URL. Two ways are
/// equal exactly when the targets they make are (and their intervals are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Way {
    /// Durations in nanoseconds: exact up to 584 years, half the size of a `Duration`.
    timeout_nanos: u64,
    interval_nanos: u64,
    thresholds: Thresholds,
    all_backends: bool,
    follow_redirects: bool,
    /// `None` when the target sets none of them, as nearly every target.
    rare: Option<Box<Rare>>,
}

/// What a target rarely sets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rare {
    expect_ips: Vec<IpAddr>,
    expect_status: Vec<u16>,
    expect_body: Option<String>,
    pins: Vec<String>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Way {
    /// `target`'s way (its URL aside), run every `interval`.
    pub fn of(target: Target, interval: Duration) -> Way {
        let Target {
            url: _,
            timeout,
            expect_ips,
            expect_status,
            expect_body,
            all_backends,
            follow_redirects,
            thresholds,
            pins,
        } = target;
        let rare = Rare { expect_ips, expect_status, expect_body, pins };
        let set = !(rare.expect_ips.is_empty()
            && rare.expect_status.is_empty()
            && rare.expect_body.is_none()
            && rare.pins.is_empty());
        Way {
            timeout_nanos: nanos(timeout),
            interval_nanos: nanos(interval),
            thresholds,
            all_backends,
            follow_redirects,
            rare: set.then(|| Box::new(rare)),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// The target to probe `url` this way; `url` is the one this way was made with, which parsed
    /// then and so parses again (an error is still an error, never a panic).
    pub fn target(&self, url: &str) -> Result<Target, String> {
        let mut target = Target::new(TargetUrl::parse(url).map_err(|e| e.to_string())?);
        target.timeout = Duration::from_nanos(self.timeout_nanos);
        target.thresholds = self.thresholds;
        target.all_backends = self.all_backends;
        target.follow_redirects = self.follow_redirects;
        if let Some(rare) = &self.rare {
            target.expect_ips = rare.expect_ips.clone();
            target.expect_status = rare.expect_status.clone();
            target.expect_body = rare.expect_body.clone();
            target.pins = rare.pins.clone();
        }
        Ok(target)
    }
}

/// How often a target runs: its interval, 60 s when unset, never under a second.
pub fn interval_of(spec: &TargetSpec) -> Duration {
    crate::probe::duration_of(spec.interval.as_ref()).unwrap_or(Duration::from_secs(60)).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_field() -> TargetSpec {
        TargetSpec {
            url: "https://a.example:8443/health?x=1".into(),
            interval: Some(prost_types::Duration { seconds: 30, nanos: 250_000_001 }),
            timeout: Some(prost_types::Duration { seconds: 4, nanos: 999_999_999 }),
            all_backends: true,
            expect_status: vec![200, 204],
            expect_ips: vec!["192.0.2.1".into(), "2001:db8::1".into()],
            warn_days: 20,
            critical_days: 5,
            pin_sha256: vec!["ab".repeat(32)],
            ..Default::default()
        }
    }

    #[test]
    fn a_kept_target_makes_the_same_target_as_its_spec() {
        for spec in [every_field(), TargetSpec { url: "https://b.example/".into(), ..Default::default() }] {
            let assigned = Assigned::from_spec(spec.clone());
            let way = assigned.way.as_ref().unwrap();
            assert_eq!(way.target(&assigned.url).unwrap(), wire::target(&spec).unwrap());
            assert_eq!(way.interval(), interval_of(&spec));
        }
        let plain = Assigned::from_spec(TargetSpec { url: "https://b.example/".into(), ..Default::default() });
        assert!(plain.way.unwrap().rare.is_none(), "a plain target keeps nothing behind the pointer");
    }

    #[test]
    fn ways_differ_exactly_when_their_targets_or_intervals_do() {
        let way = |spec: TargetSpec| Assigned::from_spec(spec).way.unwrap();
        assert_eq!(way(every_field()), way(every_field()));
        let other_interval =
            TargetSpec { interval: Some(prost_types::Duration { seconds: 31, nanos: 0 }), ..every_field() };
        assert_ne!(way(every_field()), way(other_interval));
        let other_status = TargetSpec { expect_status: vec![200], ..every_field() };
        assert_ne!(way(every_field()), way(other_status));
    }

    #[test]
    fn a_target_the_probe_cannot_take_is_kept_with_its_reason() {
        let bad = Assigned::from_spec(TargetSpec { url: "ftp://a.example/".into(), ..Default::default() });
        assert_eq!(&*bad.url, "ftp://a.example/");
        assert!(bad.way.is_err());
    }

    #[test]
    fn a_kept_target_is_small() {
        // The scheduler keeps one per assigned target, beside its URL.
        assert!(std::mem::size_of::<Way>() <= 40, "{} bytes", std::mem::size_of::<Way>());
    }
}
