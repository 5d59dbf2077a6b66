//! Alerts: what happened (an `Alert`), who hears it (routes to channels), and when nobody does
//! (silences). An alert is written to the store's outbox in the same transaction as the verdict
//! change that causes it, with one delivery per routed channel; `dispatch` delivers each with
//! retries and marks it delivered once. Receivers can deduplicate by the alert's id.

pub mod channel;
pub mod dispatch;
pub mod health;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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
    // Blindness and the region set (issue 11).
    Unknown,
    UnknownCleared,
    RegionForgotten,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl AlertKind {
    pub const ALL: [AlertKind; 16] = [
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
            AlertKind::Degraded | AlertKind::CertWarning | AlertKind::Unknown => Severity::Warning,
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
                // It ends the region's `region_silent` (same dedup key): the region is gone for good.
                | AlertKind::RegionForgotten
        )
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCause {
    pub code: String,
    pub message: String,
    pub hint: String,
}

/// One event worth telling people about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique; receivers deduplicate by it.
    pub id: String,
    pub kind: AlertKind,
    /// What it is about: a target URL, a region, a heartbeat's name.
    pub subject: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub at_ms: i64,
    /// When the condition began (for `recovered`: when the outage began).
    pub since_ms: i64,
    /// The regions that agree on it (or the silent region).
    #[serde(default)]
    pub regions: Vec<String>,
    /// How many regions judge the target.
    #[serde(default)]
    pub of_regions: usize,
    /// The failing backend address, when one is known.
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub cause: Option<AlertCause>,
    #[serde(default)]
    pub detail: String,
    /// For `recovered` and the like: how long the problem lasted.
    #[serde(default)]
    pub duration_ms: Option<i64>,
    /// The certificate it is about (for certificate alerts), and the one it replaced.
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub previous_fingerprint: Option<String>,
    #[serde(default)]
    pub not_after: Option<String>,
    /// Shared by the trigger and the resolve of one problem (PagerDuty's `dedup_key`).
    pub dedup_key: String,
    /// The status page.
    #[serde(default)]
    pub link: String,
}

impl Alert {
    /// A new alert of `kind` about `subject`, now; the rest is filled in by the caller.
    pub fn new(kind: AlertKind, subject: &str, at_ms: i64, dedup_key: String) -> Alert {
        Alert {
            id: new_id(),
            kind,
            subject: subject.to_owned(),
            labels: BTreeMap::new(),
            at_ms,
            since_ms: at_ms,
            regions: Vec::new(),
            of_regions: 0,
            backend: None,
            cause: None,
            detail: String::new(),
            duration_ms: None,
            fingerprint: None,
            previous_fingerprint: None,
            not_after: None,
            dedup_key,
            link: String::new(),
        }
    }

    /// One line: what and where.
    pub fn summary(&self) -> String {
        let mut line = format!("{} {}", self.kind.title(), self.subject);
        if let Some(cause) = &self.cause {
            line.push_str(&format!(": {}", cause.code));
        }
        match self.kind {
            AlertKind::Down | AlertKind::Degraded if !self.regions.is_empty() => {
                line.push_str(&format!(
                    " in {} ({} of {} regions)",
                    self.regions.join(", "),
                    self.regions.len(),
                    self.of_regions
                ));
            }
            AlertKind::Recovered
            | AlertKind::DegradedCleared
            | AlertKind::HeartbeatRecovered
            | AlertKind::ChannelRecovered
            | AlertKind::UnknownCleared => {
                if let Some(d) = self.duration_ms {
                    line.push_str(&format!(" after {}", crate::clock::human_duration(d)));
                }
            }
            AlertKind::CertWarning | AlertKind::CertCritical => {
                if let Some(not_after) = &self.not_after {
                    line.push_str(&format!(" (expires {not_after})"));
                }
            }
            _ => {}
        }
        line
    }

    /// The whole message in plain text: what, where, since when, the cause, the fix, the link.
    pub fn text(&self) -> String {
        let mut out = self.summary();
        out.push('\n');
        let mut field = |name: &str, value: &str| {
            if !value.is_empty() {
                out.push_str(&format!("{name:<8}{value}\n"));
            }
        };
        if let Some(cause) = &self.cause {
            field("What:", &cause.message);
        }
        let mut where_ = self.regions.join(", ");
        if self.of_regions > 0 && !self.regions.is_empty() {
            where_ = format!("{where_} ({} of {} regions agree)", self.regions.len(), self.of_regions);
        }
        if let Some(backend) = &self.backend {
            where_ =
                if where_.is_empty() { format!("backend {backend}") } else { format!("{where_}; backend {backend}") };
        }
        field("Where:", &where_);
        field("Since:", &crate::clock::rfc3339(self.since_ms));
        if let Some(d) = self.duration_ms {
            field("Lasted:", &crate::clock::human_duration(d));
        }
        if let Some(fp) = &self.fingerprint {
            field("Cert:", &format!("sha256 {fp}"));
        }
        if let Some(fp) = &self.previous_fingerprint {
            field("Was:", &format!("sha256 {fp}"));
        }
        if let Some(cause) = &self.cause {
            field("Fix:", &cause.hint);
        }
        field("Detail:", &self.detail);
        field("Status:", &self.link);
        out.push_str(&format!("Event:  {}\n", self.id));
        out
    }
}

/// A random id, `a_` and 24 hex digits.
pub fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 12];
    // The system RNG does not fail on Linux; a zero id would still be unique enough with the time.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    bytes[0] ^= nanos as u8;
    bytes.iter().fold(String::from("a_"), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Refused by the receiver for good (400, 413, 422), or given up after retrying for
    /// `dispatch::GIVE_UP_AFTER`; `last_error` says which.
    Failed,
    /// Held back by a silence: never sent.
    Silenced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub channel: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: String,
    pub next_attempt_ms: i64,
    pub delivered_ms: i64,
}

/// An alert with its deliveries, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert: Alert,
    pub deliveries: Vec<Delivery>,
    /// The silence that held it back.
    #[serde(default)]
    pub silenced_by: Option<String>,
}

impl AlertRecord {
    pub fn pending(&self) -> bool {
        self.deliveries.iter().any(|d| d.state == DeliveryState::Pending)
    }
}

/// Which channels hear which alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub channels: Vec<String>,
    /// Every label must match (empty: every subject).
    pub labels: BTreeMap<String, String>,
    /// `None`: the kinds `on_by_default`.
    pub events: Option<BTreeSet<AlertKind>>,
}

impl Route {
    pub fn matches(&self, alert: &Alert) -> bool {
        let kind = match &self.events {
            Some(events) => events.contains(&alert.kind),
            None => alert.kind.on_by_default(),
        };
        kind && labels_match(&self.labels, &alert.labels)
    }
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A time window in which matching alerts are recorded but not sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    /// One subject (a target URL, a region, a heartbeat), or empty.
    #[serde(default)]
    pub target: String,
    /// Every label must match (with `target` empty: every subject when this is empty too).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default)]
    pub comment: String,
    /// "api" or "config".
    #[serde(default)]
    pub source: String,
}

impl Silence {
    pub fn active(&self, now_ms: i64) -> bool {
        self.start_ms <= now_ms && now_ms < self.end_ms
    }

    pub fn matches(&self, subject: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.target.is_empty() || self.target == subject) && labels_match(&self.labels, labels)
    }

    pub fn describe(&self) -> String {
        let what = if self.comment.is_empty() { self.id.clone() } else { format!("{} ({})", self.id, self.comment) };
        format!("{what} until {}", crate::clock::rfc3339(self.end_ms))
    }
}

/// Checks a silence (from the API or the config) and fills in its id and start.
pub fn check_silence(
    target: &str,
    labels: BTreeMap<String, String>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    comment: &str,
    source: &str,
    now_ms: i64,
) -> Result<Silence, crate::spec::SpecError> {
    use crate::spec::SpecError;
    let bad = |field: &'static str, reason: &str| SpecError { field, reason: reason.into() };
    // A target URL is normalized; anything else must be a region's or heartbeat's name.
    let target = match target {
        "" => String::new(),
        t if t.contains("://") => {
            vantage_shared::TargetUrl::parse(t).map_err(|e| bad("target", &e.to_string()))?.to_string()
        }
        t => {
            crate::spec::check_name("target", t)?;
            t.to_owned()
        }
    };
    crate::spec::check_labels(labels.iter())?;
    if target.is_empty() && labels.is_empty() {
        return Err(bad("target", "give a target or labels (a silence of everything is not accepted)"));
    }
    let start_ms = start_ms.unwrap_or(now_ms);
    let end_ms = end_ms.ok_or_else(|| bad("end", "missing"))?;
    if end_ms <= start_ms || end_ms <= now_ms {
        return Err(bad("end", "must be after the start and in the future"));
    }
    if end_ms - start_ms > 366 * 86_400_000 {
        return Err(bad("end", "a silence lasts at most a year"));
    }
    if comment.len() > 256 {
        return Err(bad("comment", "at most 256 bytes"));
    }
    let id = format!("s_{}", &new_id()[2..14]);
    Ok(Silence { id, target, labels, start_ms, end_ms, comment: comment.to_owned(), source: source.to_owned() })
}

/// A push monitor: a job (a certificate renewal, say) that must check in every `period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub name: String,
    pub period: Duration,
    /// Signs its requests (HMAC-SHA256).
    pub secret: channel::Secret,
    pub labels: BTreeMap<String, String>,
}

/// The alerting part of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Alerting {
    pub heartbeats: Vec<Heartbeat>,
    pub channels: Vec<channel::Channel>,
    pub routes: Vec<Route>,
    /// The status page's address, for links in messages.
    pub status_url: String,
    /// How long a region may have no connected agent before `region_silent`.
    pub region_silent_after: Duration,
    /// How long a channel may answer "misconfigured" before `channel_failing` goes to the other
    /// channels (`None`: `health::CHANNEL_FAILING_AFTER`).
    pub channel_failing_after: Option<Duration>,
    /// How long a target may be `UNKNOWN` before `unknown` (zero: never).
    pub unknown_after: Duration,
}

impl Alerting {
    /// The alert with its deliveries: one per channel of every matching route (each channel once),
    /// held back when a silence covers it.
    pub fn plan(&self, mut alert: Alert, silences: &[Silence]) -> AlertRecord {
        if alert.link.is_empty() && !self.status_url.is_empty() {
            alert.link = self.status_url.clone();
        }
        let silence = silences.iter().find(|s| s.active(alert.at_ms) && s.matches(&alert.subject, &alert.labels));
        let mut channels: Vec<&String> = Vec::new();
        for route in self.routes.iter().filter(|r| r.matches(&alert)) {
            for name in &route.channels {
                if !channels.contains(&name) {
                    channels.push(name);
                }
            }
        }
        let state = if silence.is_some() { DeliveryState::Silenced } else { DeliveryState::Pending };
        let deliveries = channels
            .into_iter()
            .map(|channel| Delivery {
                channel: channel.clone(),
                state,
                attempts: 0,
                last_error: String::new(),
                next_attempt_ms: alert.at_ms,
                delivered_ms: 0,
            })
            .collect();
        AlertRecord { alert, deliveries, silenced_by: silence.map(Silence::describe) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: AlertKind, labels: &[(&str, &str)]) -> Alert {
        let mut a = Alert::new(kind, "https://shop.example/", 1_000, "vantage/target/https://shop.example/".into());
        a.labels = labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        a
    }

    fn route(channels: &[&str], labels: &[(&str, &str)], events: Option<&[AlertKind]>) -> Route {
        Route {
            channels: channels.iter().map(|c| (*c).into()).collect(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            events: events.map(|e| e.iter().copied().collect()),
        }
    }

    #[test]
    fn routes_pick_channels_by_labels_and_kind_each_channel_once() {
        let alerting = Alerting {
            routes: vec![
                route(&["slack", "mail"], &[], None),
                route(&["pager", "slack"], &[("team", "shop")], Some(&[AlertKind::Down, AlertKind::Recovered])),
                route(&["noisy"], &[], Some(&[AlertKind::Degraded])),
            ],
            ..Alerting::default()
        };
        let names = |r: AlertRecord| r.deliveries.into_iter().map(|d| d.channel).collect::<Vec<_>>();
        assert_eq!(names(alerting.plan(alert(AlertKind::Down, &[("team", "shop")]), &[])), ["slack", "mail", "pager"]);
        assert_eq!(names(alerting.plan(alert(AlertKind::Down, &[("team", "blog")]), &[])), ["slack", "mail"]);
        assert_eq!(names(alerting.plan(alert(AlertKind::Degraded, &[("team", "shop")]), &[])), ["noisy"]);
        assert!(names(alerting.plan(alert(AlertKind::CertChanged, &[]), &[])).is_empty());
    }

    #[test]
    fn a_silence_holds_back_what_it_covers_while_it_lasts() {
        let alerting = Alerting { routes: vec![route(&["slack"], &[], None)], ..Alerting::default() };
        let silence = Silence {
            id: "s1".into(),
            target: String::new(),
            labels: [("env".to_owned(), "staging".to_owned())].into(),
            start_ms: 0,
            end_ms: 2_000,
            comment: "maintenance".into(),
            source: "api".into(),
        };
        let held = alerting.plan(alert(AlertKind::Down, &[("env", "staging")]), std::slice::from_ref(&silence));
        assert_eq!(held.deliveries[0].state, DeliveryState::Silenced);
        assert!(held.silenced_by.unwrap().starts_with("s1 (maintenance)"));
        let other = alerting.plan(alert(AlertKind::Down, &[("env", "prod")]), std::slice::from_ref(&silence));
        assert_eq!(other.deliveries[0].state, DeliveryState::Pending);
        let mut later = alert(AlertKind::Down, &[("env", "staging")]);
        later.at_ms = 2_000;
        assert_eq!(alerting.plan(later, &[silence]).deliveries[0].state, DeliveryState::Pending);
    }

    #[test]
    fn the_message_says_what_where_since_cause_and_fix() {
        let mut a = alert(AlertKind::Down, &[]);
        a.regions = vec!["eu-west".into(), "us-east".into()];
        a.of_regions = 3;
        a.backend = Some("203.0.113.7:443".into());
        a.cause = Some(AlertCause {
            code: "cert_expired".into(),
            message: "The certificate has expired.".into(),
            hint: "Renew it.".into(),
        });
        a.link = "https://vantage.example/".into();
        let text = a.text();
        assert!(text.starts_with("DOWN https://shop.example/: cert_expired in eu-west, us-east (2 of 3 regions)\n"));
        for part in [
            "What:   The certificate has expired.",
            "Where:  eu-west, us-east (2 of 3 regions agree); backend 203.0.113.7:443",
            "Since:  1970-01-01T00:00:01Z",
            "Fix:    Renew it.",
            "Status: https://vantage.example/",
        ] {
            assert!(text.contains(part), "{part} in\n{text}");
        }
        assert_eq!(crate::clock::human_duration(6 * 3_600_000 + 12 * 60_000), "6h 12m");
        assert_eq!(crate::clock::human_duration(61_000), "1m 1s");
    }
}
