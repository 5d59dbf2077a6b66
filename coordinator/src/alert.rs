//! Alerts: what happened (an `Alert`), who hears it (routes to channels), and when nobody does
//! (silences). An alert is written to the store's outbox in the same transaction as the verdict
//! change that causes it, with one delivery per routed channel; `dispatch` delivers each with
//! retries and marks it delivered once. Receivers can deduplicate by the alert's id.
//!
//! Here: routes and the plan of an alert's deliveries. Beside it: `kind` (the kinds of alert),
//! `record` (an alert, its message and its deliveries), `silence`, `channel` (one file per kind
//! of receiver), `dispatch` (sending the outbox) and `health` (channels that keep failing).

pub mod channel;
pub mod health;
mod kind;
mod record;
mod silence;
pub mod watchdog;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use kind::{AlertKind, Severity};
pub use record::{Alert, AlertCause, AlertGroup, AlertRecord, Delivery, DeliveryState, new_id, region_impaired_key};
pub use silence::{Silence, check_silence};

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
    pub channels: Vec<channel::Named>,
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
    /// `[alerts] correlation_window`: targets turning DOWN for one shared cause within it are one
    /// incident group (`None`: two intervals of the first; zero: no grouping).
    pub correlation_window: Option<Duration>,
    /// `[watchdog]`: the dead man's switch, if any.
    pub watchdog: Option<std::sync::Arc<watchdog::Watchdog>>,
    /// Flap damping and the hold-down defaults (`[alerts]`).
    pub damping: Damping,
}

/// Flap damping and hold-down (README: "Flap damping and hold-down"): the `[alerts]` defaults;
/// a target's own `alert_after`/`recover_after` win over them. `Damping::default()` (all zero)
/// is today's behaviour: no hold-down and no flap damping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Damping {
    /// An incident must last this long before its `down` is sent.
    pub alert_after: Duration,
    /// A recovered target must stay up this long before its `recovered` is sent.
    pub recover_after: Duration,
    /// How many of a target's probe intervals the flap rate looks back over (zero: no damping).
    pub flap_window: u32,
    /// Flapping from this share of changed intervals (percent) ...
    pub flap_high: u32,
    /// ... until it falls below this one.
    pub flap_low: u32,
}

impl Alerting {
    /// Whether the channel named `channel` wants the alerts still firing for it re-sent.
    pub fn resends(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c.name == channel && c.channel.resend_every().is_some())
    }

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
}
