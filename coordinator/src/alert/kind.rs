//! What an alert is about (`AlertKind`): its name in the API and the config, how severe it is,
//! whether it ends a problem, and the title messages start with.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Down,
    Recovered,
    Degraded,
    DegradedCleared,
    CertWarning,
    CertCritical,
    CertChanged,
    RegionSilent,
    RegionRecovered,
    HeartbeatOverdue,
    HeartbeatRecovered,
    /// An alert channel has answered "misconfigured" (401/403/404) for `channel_failing_after`.
    ChannelFailing,
    ChannelRecovered,
    // Blindness and the region set.
    Unknown,
    UnknownCleared,
    RegionForgotten,
    /// A region fails most of its targets while every other region sees them UP (its network is
    /// at fault); resolved by `region_recovered` under its own dedup key.
    RegionImpaired,
    // Flap damping: the target's verdict changes too often to page on each change.
    Flapping,
    FlappingCleared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl AlertKind {
    pub const ALL: [AlertKind; 19] = [
        AlertKind::Down,
        AlertKind::Recovered,
        AlertKind::Degraded,
        AlertKind::DegradedCleared,
        AlertKind::CertWarning,
        AlertKind::CertCritical,
        AlertKind::CertChanged,
        AlertKind::RegionSilent,
        AlertKind::RegionRecovered,
        AlertKind::HeartbeatOverdue,
        AlertKind::HeartbeatRecovered,
        AlertKind::ChannelFailing,
        AlertKind::ChannelRecovered,
        AlertKind::Unknown,
        AlertKind::UnknownCleared,
        AlertKind::RegionForgotten,
        AlertKind::RegionImpaired,
        AlertKind::Flapping,
        AlertKind::FlappingCleared,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Down => "down",
            AlertKind::Recovered => "recovered",
            AlertKind::Degraded => "degraded",
            AlertKind::DegradedCleared => "degraded_cleared",
            AlertKind::CertWarning => "cert_warning",
            AlertKind::CertCritical => "cert_critical",
            AlertKind::CertChanged => "cert_changed",
            AlertKind::RegionSilent => "region_silent",
            AlertKind::RegionRecovered => "region_recovered",
            AlertKind::HeartbeatOverdue => "heartbeat_overdue",
            AlertKind::HeartbeatRecovered => "heartbeat_recovered",
            AlertKind::ChannelFailing => "channel_failing",
            AlertKind::ChannelRecovered => "channel_recovered",
            AlertKind::Unknown => "unknown",
            AlertKind::UnknownCleared => "unknown_cleared",
            AlertKind::RegionForgotten => "region_forgotten",
            AlertKind::RegionImpaired => "region_impaired",
            AlertKind::Flapping => "flapping",
            AlertKind::FlappingCleared => "flapping_cleared",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Sent by a route that does not list its events: everything but the noisy ones.
    pub fn on_by_default(self) -> bool {
        !matches!(self, AlertKind::Degraded | AlertKind::DegradedCleared | AlertKind::CertChanged)
    }

    pub fn severity(self) -> Severity {
        match self {
            AlertKind::Down | AlertKind::CertCritical | AlertKind::RegionSilent | AlertKind::HeartbeatOverdue => {
                Severity::Critical
            }
            AlertKind::ChannelFailing => Severity::Critical,
            AlertKind::Degraded
            | AlertKind::CertWarning
            | AlertKind::Unknown
            | AlertKind::RegionImpaired
            | AlertKind::Flapping => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// Whether it ends the problem its dedup key names (a PagerDuty `resolve`).
    pub fn resolves(self) -> bool {
        matches!(
            self,
            AlertKind::Recovered
                | AlertKind::DegradedCleared
                | AlertKind::CertChanged
                | AlertKind::RegionRecovered
                | AlertKind::HeartbeatRecovered
                | AlertKind::ChannelRecovered
                | AlertKind::UnknownCleared
                | AlertKind::FlappingCleared
                // It ends the region's `region_silent` (same dedup key): the region is gone for good.
                | AlertKind::RegionForgotten
        )
    }

    /// The kinds of trigger a resolving kind ends (a certificate change ends the old
    /// certificate's warning and critical alike); empty for a trigger.
    pub fn ends(self) -> &'static [AlertKind] {
        match self {
            AlertKind::Recovered => &[AlertKind::Down],
            AlertKind::DegradedCleared => &[AlertKind::Degraded],
            AlertKind::CertChanged => &[AlertKind::CertWarning, AlertKind::CertCritical],
            // Which one a `region_recovered` ends, its dedup key says (`Alert::ended`).
            AlertKind::RegionRecovered => &[AlertKind::RegionSilent, AlertKind::RegionImpaired],
            AlertKind::RegionForgotten => &[AlertKind::RegionSilent],
            AlertKind::HeartbeatRecovered => &[AlertKind::HeartbeatOverdue],
            AlertKind::ChannelRecovered => &[AlertKind::ChannelFailing],
            AlertKind::UnknownCleared => &[AlertKind::Unknown],
            AlertKind::FlappingCleared => &[AlertKind::Flapping],
            _ => &[],
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            AlertKind::Down => "DOWN",
            AlertKind::Recovered => "RECOVERED",
            AlertKind::Degraded => "DEGRADED",
            AlertKind::DegradedCleared => "NO LONGER DEGRADED",
            AlertKind::CertWarning => "CERTIFICATE WARNING",
            AlertKind::CertCritical => "CERTIFICATE CRITICAL",
            AlertKind::CertChanged => "CERTIFICATE CHANGED",
            AlertKind::RegionSilent => "REGION SILENT",
            AlertKind::RegionRecovered => "REGION BACK",
            AlertKind::HeartbeatOverdue => "HEARTBEAT OVERDUE",
            AlertKind::HeartbeatRecovered => "HEARTBEAT BACK",
            AlertKind::ChannelFailing => "ALERT CHANNEL FAILING",
            AlertKind::ChannelRecovered => "ALERT CHANNEL BACK",
            AlertKind::Unknown => "UNKNOWN",
            AlertKind::UnknownCleared => "JUDGED AGAIN",
            AlertKind::RegionForgotten => "REGION FORGOTTEN",
            AlertKind::RegionImpaired => "REGION IMPAIRED",
            AlertKind::Flapping => "FLAPPING",
            AlertKind::FlappingCleared => "NO LONGER FLAPPING",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resolving_kind_names_the_triggers_it_ends_and_no_trigger_ends_anything() {
        for kind in AlertKind::ALL {
            assert_eq!(kind.resolves(), !kind.ends().is_empty(), "{kind:?}");
            assert!(kind.ends().iter().all(|t| !t.resolves()), "{kind:?} ends a trigger, not a resolve");
        }
    }
}
