//! Availability in the hub: which regions' opinions changed state at a judgement (the verdict's
//! own changes are recorded with the verdict), and the figures asked for (`GetUptime`,
//! `/v1/uptime`, the status), read from the store's roll-ups (README: "Availability").

use vantage_proto::v1::{Availability, RegionUptime, TargetStatus, TargetUptime};

use super::targets::Target;
use super::{Hub, HubError, blocking};
use crate::clock::{now_ms, timestamp};
use crate::store::{OpinionChange, Rolled, Store, StoreError};
use crate::uptime::{self, State, Window, day_of, figures};
use crate::verdict::RegionOpinion;

/// Targets whose roll-ups are read in one read transaction.
const SLICE: usize = 1_000;

/// Notes in `out` each region whose opinion of `target` is in another state than availability
/// last recorded (a region no longer among `opinions` ends its span), and remembers the new one.
pub(super) fn opinion_changes(target: &mut Target, opinions: &[RegionOpinion], now: i64, out: &mut Vec<OpinionChange>) {
    let url = &target.spec.url;
    for (region, latest) in &mut target.latest {
        let state = opinions.iter().find(|o| *o.region == **region).map(|o| State::of_opinion(o.opinion));
        if latest.tracked != state {
            latest.tracked = state;
            out.push(OpinionChange { url: url.to_string(), region: region.to_string(), state, at_ms: now });
        }
    }
}

/// One window's figures from `rolled`, as the API shows them.
fn availability(rolled: &Rolled, window: &Window, now: i64) -> Availability {
    let from = now - window.ms;
    let f = figures(rolled.days.iter().map(|(d, r)| (*d, r)), rolled.open, from, now);
    let seconds = |s: State| f.of(s) as f64 / 1000.0;
    let worst = State::worst_of(&f.ms).map_or(vantage_proto::v1::Verdict::Unspecified, |s| match s {
        State::Up => vantage_proto::v1::Verdict::Up,
        State::Degraded => vantage_proto::v1::Verdict::Degraded,
        State::Down => vantage_proto::v1::Verdict::Down,
        State::Unknown => vantage_proto::v1::Verdict::Unknown,
    });
    Availability {
        window: window.name.clone(),
        from: Some(timestamp(from)),
        to: Some(timestamp(now)),
        percent: f.availability().map(|a| a * 100.0),
        up_seconds: seconds(State::Up),
        degraded_seconds: seconds(State::Degraded),
        down_seconds: seconds(State::Down),
        unknown_seconds: seconds(State::Unknown),
        incidents: f.incidents,
        worst: worst as i32,
    }
}

/// The figures of `urls` over `windows` ending `now`, read in one transaction.
fn read(
    store: &Store,
    urls: &[String],
    windows: &[Window],
    now: i64,
    regions: bool,
) -> Result<Vec<TargetUptime>, StoreError> {
    let longest = windows.iter().map(|w| w.ms).max().unwrap_or(0);
    let rolled = store.rollups(urls, day_of(now - longest), day_of(now), regions)?;
    Ok(rolled
        .into_iter()
        .map(|t| TargetUptime {
            windows: windows.iter().map(|w| availability(&t.target, w, now)).collect(),
            regions: t
                .regions
                .iter()
                .map(|(region, rolled)| RegionUptime {
                    region: region.clone(),
                    windows: windows.iter().map(|w| availability(rolled, w, now)).collect(),
                })
                .collect(),
            url: t.url,
        })
        .collect())
}

impl Hub {
    /// `GetUptime`: the figures of `url` (every target when empty) over `windows` (the default
    /// four when empty); each region's too when one target is asked for (every target's regions
    /// at 100,000 targets would not fit in one answer).
    pub async fn uptime(&self, url: &str, windows: &[String]) -> Result<Vec<TargetUptime>, HubError> {
        let windows = uptime::parse_windows(windows).map_err(|e| HubError::Refused(e.to_string()))?;
        let urls: Vec<String> = if url.is_empty() {
            self.lock().targets.keys().map(|u| u.to_string()).collect()
        } else {
            let url = vantage_shared::TargetUrl::parse(url).map(|u| u.to_string()).unwrap_or_else(|_| url.to_owned());
            if !self.lock().targets.contains_key(url.as_str()) {
                return Err(HubError::NoTarget(url));
            }
            vec![url]
        };
        let (now, regions) = (now_ms(), !url.is_empty());
        let mut out = Vec::with_capacity(urls.len());
        for slice in urls.chunks(SLICE) {
            let (slice, windows) = (slice.to_vec(), windows.clone());
            out.extend(blocking(&self.store, move |s| read(s, &slice, &windows, now, regions)).await?);
        }
        Ok(out)
    }

    /// The last `days` UTC days of `url` (oldest first, today last, up to now), each with its
    /// figures: the target page's bar. One range read of the target's roll-ups.
    pub async fn daily(&self, url: &str, days: i64) -> Result<Vec<(i64, uptime::Figures)>, HubError> {
        let (now, urls) = (now_ms(), vec![url.to_owned()]);
        let (first, last) = (day_of(now) - days.max(1) + 1, day_of(now));
        let rolled = blocking(&self.store, move |s| s.rollups(&urls, first, last, false)).await?;
        let target = rolled.into_iter().next().map(|t| t.target).unwrap_or_default();
        Ok(uptime::per_day(&target.days, target.open, first, last, now))
    }

    /// `statuses` with their `uptime` filled ([`Hub::fill_uptime`], off the async threads).
    pub async fn with_uptime(&self, mut statuses: Vec<TargetStatus>) -> Vec<TargetStatus> {
        let windows = uptime::parse_windows(&[]).unwrap_or_default();
        let urls: Vec<String> = statuses.iter().map(|s| s.url.clone()).collect();
        match blocking(&self.store, move |s| read(s, &urls, &windows, now_ms(), false)).await {
            Ok(figures) => {
                for (status, figures) in statuses.iter_mut().zip(figures) {
                    status.uptime = figures.windows;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading availability for the status failed"),
        }
        statuses
    }

    /// Fills each status's `uptime` (the default four windows, the target's own figures). Reads
    /// the store on this thread: call it where blocking is allowed, or for few statuses. A store
    /// error leaves the figures out (and is logged).
    pub fn fill_uptime(&self, statuses: &mut [TargetStatus]) {
        let windows = uptime::parse_windows(&[]).unwrap_or_default();
        let urls: Vec<String> = statuses.iter().map(|s| s.url.clone()).collect();
        match read(&self.store, &urls, &windows, now_ms(), false) {
            Ok(figures) => {
                for (status, figures) in statuses.iter_mut().zip(figures) {
                    status.uptime = figures.windows;
                }
            }
            Err(e) => {
                self.store.note(&e);
                tracing::warn!(error = %e, "reading availability for the status failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::targets::{Latest, Name};
    use crate::verdict::Opinion;

    fn latest() -> Latest {
        Latest {
            counted: 0,
            at_ms: 1,
            timed: true,
            status: None,
            code: None,
            latency_ms: 0.0,
            agent: "a".into(),
            failure: None,
            cert: None,
            tracked: None,
        }
    }

    fn opinions(of: &[(&str, Opinion)]) -> Vec<RegionOpinion> {
        of.iter().map(|(r, o)| RegionOpinion { region: (*r).into(), opinion: *o, code: None }).collect()
    }

    #[test]
    fn only_a_region_whose_opinion_changed_state_is_recorded() {
        let mut t = Target::new(vantage_proto::v1::TargetSpec { url: "https://x/".into(), ..Default::default() });
        t.observe(Name::from("r1"), latest());
        t.observe(Name::from("r2"), latest());
        let mut out = Vec::new();
        opinion_changes(&mut t, &opinions(&[("r1", Opinion::Up), ("r2", Opinion::Up)]), 10, &mut out);
        assert_eq!(out.len(), 2, "the first opinion of each region opens its span");
        out.clear();
        opinion_changes(&mut t, &opinions(&[("r1", Opinion::Up), ("r2", Opinion::Up)]), 20, &mut out);
        assert!(out.is_empty(), "nothing changed, nothing written (not one write per result)");
        opinion_changes(&mut t, &opinions(&[("r1", Opinion::Partial), ("r2", Opinion::Up)]), 30, &mut out);
        assert_eq!(
            out,
            vec![OpinionChange {
                url: "https://x/".into(),
                region: "r1".into(),
                state: Some(State::Degraded),
                at_ms: 30
            }]
        );
        out.clear();
        // The next result keeps what was recorded; r2 stops judging the target: its span ends.
        t.observe(Name::from("r1"), Latest { at_ms: 2, ..latest() });
        opinion_changes(&mut t, &opinions(&[("r1", Opinion::Partial)]), 40, &mut out);
        assert_eq!(out, vec![OpinionChange { url: "https://x/".into(), region: "r2".into(), state: None, at_ms: 40 }]);
    }
}
