//! Alerts about regions: `region_silent` when no agent of a region has been reporting for
//! `region_silent_after` (its targets go UNKNOWN from there), `region_recovered` when one is back,
//! `region_forgotten` when a region leaves the default region set, and `region_impaired` when a
//! region fails most of its targets alone (README: "Impaired regions"), `region_recovered` again
//! under that problem's own key when it no longer does.

use std::collections::BTreeSet;
use std::time::Duration;

use super::agents::Registry;
use super::memory::{AlertMemory, ImpairedMemory, RegionMemory};
use crate::alert::{Alert, AlertCause, AlertKind, region_impaired_key};
use crate::clock::human_duration;
use crate::impairment::{self, Policy, Tally};
use crate::regions::RegionSet;
use crate::store::RegionRecord;

impl super::State {
    /// After the impaired regions changed in alerting's memory: the names judging uses.
    pub(super) fn refresh_impaired(&mut self) {
        let impaired: Vec<String> = self.memory.impaired.keys().cloned().collect();
        self.impaired = impaired.iter().map(|r| self.intern(r)).collect();
    }

    /// The rule for impaired regions applied at the tick, once every target due has been judged
    /// (the counts are then whole): the alerts it raises. When the impaired set changes, every
    /// target is judged again at the next tick.
    pub(super) fn apply_impairment(&mut self, policy: &Policy, now: i64) -> Vec<Alert> {
        let tallies = &self.tallies;
        let tally = |region: &str| tallies.get(region).copied().unwrap_or_default();
        let (alerts, changed) = impairment_alerts(&mut self.memory, &self.regions, policy, tally, now);
        if changed {
            self.refresh_impaired();
            self.full_pass = true;
        }
        alerts
    }
}

/// Applies the rule for impaired regions to the regions' counts now: `region_impaired` for each
/// region it impairs, `region_recovered` (the same dedup key) for each that recovers; the memory
/// holds the impaired set. Returns the alerts, and whether the set changed (every target must
/// then be judged again).
fn impairment_alerts(
    memory: &mut AlertMemory,
    regions: &RegionSet,
    policy: &Policy,
    tally: impl Fn(&str) -> Tally,
    now: i64,
) -> (Vec<Alert>, bool) {
    let impaired: BTreeSet<String> = memory.impaired.keys().cloned().collect();
    let evaluation = impairment::evaluate(policy, &regions.current(), &impaired, &tally);
    let changed = !evaluation.impaired.is_empty() || !evaluation.recovered.is_empty();
    let mut alerts = Vec::new();
    for (region, t) in evaluation.impaired {
        tracing::warn!(
            region,
            failing_alone = t.alone,
            judged = t.judged,
            "region impaired: it fails most of its targets while every other region sees them UP; its opinions \
             are not counted until it recovers"
        );
        let mut alert = Alert::new(AlertKind::RegionImpaired, &region, now, region_impaired_key(&region));
        alert.regions = vec![region.clone()];
        alert.detail = format!("{} of {} targets fail there alone", t.alone, t.judged);
        alert.cause = Some(AlertCause {
            code: "region_impaired".into(),
            message: format!(
                "Region {region} {}. Its opinions are shown but not counted until it recovers: those targets \
                 are judged by the other regions, and stay UP.",
                impairment::reason(policy, t, false).trim_start_matches("it ")
            ),
            hint: "Check the network of this region's agent hosts (firewall rules, routes, DNS, the upstream \
                   provider): vantage-coordinator regions ls shows its counts, and vantage-agent check URL run on \
                   an agent host shows what it sees. A site down everywhere is still DOWN meanwhile."
                .into(),
        });
        alerts.push(alert);
        memory.set_impaired(&region, Some(ImpairedMemory { since_ms: now, judged: t.judged, alone: t.alone }));
    }
    for (region, t) in evaluation.recovered {
        let since = memory.impaired.get(&region).map_or(now, |m| m.since_ms);
        let gone = !regions.contains(&region);
        tracing::info!(region, failing_alone = t.alone, judged = t.judged, "region no longer impaired");
        let mut alert = Alert::new(AlertKind::RegionRecovered, &region, now, region_impaired_key(&region));
        (alert.since_ms, alert.duration_ms) = (since, Some(now - since));
        alert.regions = vec![region.clone()];
        alert.detail = format!("impaired for {}", human_duration(now - since));
        alert.cause = Some(AlertCause {
            code: "region_impaired_ended".into(),
            message: if gone {
                format!("Region {region} left the default region set: its impairment ends with it.")
            } else if !policy.enabled() {
                format!("Impaired regions are off now (impaired_share = 0): region {region} counts again.")
            } else {
                format!(
                    "Region {region} now fails {} of the {} targets it judges alone ({}%): its opinions count again.",
                    t.alone,
                    t.judged,
                    t.percent()
                )
            },
            hint: "Nothing to do.".into(),
        });
        alerts.push(alert);
        memory.set_impaired(&region, None);
    }
    (alerts, changed)
}

/// `region_silent` for a region without a reporting agent for longer than `after`, and
/// `region_recovered` when one is back. `after` zero: never.
pub fn silence_alerts(
    memory: &mut AlertMemory,
    regions: &RegionSet,
    agents: &Registry,
    now: i64,
    after: Duration,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    if after.is_zero() {
        return alerts;
    }
    for region in regions.current() {
        // Connected is not enough: an agent whose every result is refused judges nothing.
        let reporting = agents.reporting_in(&region, now);
        let dedup = format!("vantage/region/{region}");
        match (reporting, memory.silent_regions.get(&region).cloned()) {
            (true, Some(gone)) => {
                if gone.alerted {
                    let mut alert = Alert::new(AlertKind::RegionRecovered, &region, now, dedup);
                    (alert.since_ms, alert.duration_ms) = (gone.since_ms, Some(now - gone.since_ms));
                    alert.regions = vec![region.clone()];
                    alerts.push(alert);
                    memory.set_region(&region, None);
                } else {
                    memory.silent_regions.remove(&region);
                }
            }
            (false, None) => memory.note_region_silent(&region, now),
            (false, Some(gone)) if !gone.alerted && now - gone.since_ms >= after.as_millis() as i64 => {
                let mut alert = Alert::new(AlertKind::RegionSilent, &region, now, dedup);
                alert.since_ms = gone.since_ms;
                alert.regions = vec![region.clone()];
                let quiet = human_duration(now - gone.since_ms);
                alert.cause = Some(AlertCause {
                    code: "region_silent".into(),
                    message: if agents.connected_in(&region).is_empty() {
                        format!("No agent of region {region} has been connected for {quiet}.")
                    } else {
                        format!(
                            "The agents of region {region} are connected, but none of their results has been \
                             stored for {quiet}: they are refused (vantage_results_refused_total and the \
                             coordinator's log say why)."
                        )
                    },
                    hint: "Check the agent hosts of this region (service running, network to the coordinator, \
                           certificate not expired or revoked); its targets are UNKNOWN from there meanwhile."
                        .into(),
                });
                alerts.push(alert);
                memory.set_region(&region, Some(RegionMemory { since_ms: gone.since_ms, alerted: true }));
            }
            _ => {}
        }
    }
    alerts
}

/// `region_forgotten` for a region that left the default set now (it resolves the region's
/// `region_silent`, which has the same dedup key), and the end of its silence watch.
pub fn forgotten(memory: &mut AlertMemory, regions: &RegionSet, region: &str, last_seen: i64, now: i64) -> Alert {
    if memory.silent_regions.contains_key(region) {
        memory.set_region(region, None);
    }
    let mut alert = Alert::new(AlertKind::RegionForgotten, region, now, format!("vantage/region/{region}"));
    alert.since_ms = last_seen;
    alert.regions = vec![region.to_owned()];
    alert.cause = Some(AlertCause {
        code: "region_forgotten".into(),
        message: format!(
            "Region {region} has left the default region set: targets without their own regions are judged by \
             the others ({}).",
            regions.current().into_iter().collect::<Vec<_>>().join(", ")
        ),
        hint: "Nothing to do if the region is gone for good. If not, start an agent in it: the region comes back \
               as soon as one connects. Targets that name it in their own regions still count it."
            .into(),
    });
    alert
}

/// Regions without a connected agent for `after` leave the default set (`region_forgotten`).
/// Returns the alerts, the region records to store, and whether the set changed.
pub fn forget_quiet(
    memory: &mut AlertMemory,
    regions: &mut RegionSet,
    agents: &Registry,
    now: i64,
    after: Duration,
) -> (Vec<Alert>, Vec<RegionRecord>, bool) {
    let (gone, save) = regions.tick(&agents.connected_regions(), now, after);
    let changed = !gone.is_empty();
    let mut alerts = Vec::new();
    for (region, quiet) in gone {
        let quiet_for = human_duration(quiet);
        tracing::warn!(
            region,
            without_agents = quiet_for,
            "region forgotten: no agent for longer than region_forget_after; it leaves the default region set \
             until an agent connects from it"
        );
        let mut alert = forgotten(memory, regions, &region, now - quiet, now);
        alert.detail = format!("no agent for {quiet_for} (region_forget_after)");
        alerts.push(alert);
    }
    (alerts, save, changed)
}
