//! PagerDuty's Events API v2: a problem's first alert triggers an incident, and the alert that
//! ends it resolves the same `dedup_key`.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Channel, Http, Secret, Sending, Settings, json};
use crate::alert::{Alert, Severity};
use crate::clock::rfc3339;

pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagerDuty {
    pub url: String,
    pub routing_key: Secret,
}

/// `type = "pagerduty"`: `routing_key_file`, and `url` when not PagerDuty's own.
pub fn build(settings: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    let name = &settings.name;
    Ok(Arc::new(PagerDuty {
        url: settings.url(false)?.unwrap_or_else(|| PAGERDUTY_URL.to_owned()),
        routing_key: Secret::read(
            settings.routing_key_file.as_deref().ok_or_else(|| format!("channel {name}: routing_key_file: missing"))?,
            dir,
        )?,
    }))
}

impl Channel for PagerDuty {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(async move { http.post_json(&self.url, json(&body(alert, &self.routing_key))?, &[]).await })
    }
}

/// PagerDuty Events API v2: a trigger, or a resolve of the same `dedup_key`.
pub fn body(alert: &Alert, routing_key: &Secret) -> serde_json::Value {
    if alert.kind.resolves() {
        return json!({
            "routing_key": routing_key.0,
            "event_action": "resolve",
            "dedup_key": alert.dedup_key,
        });
    }
    let severity = match alert.kind.severity() {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    };
    let mut body = json!({
        "routing_key": routing_key.0,
        "event_action": "trigger",
        "dedup_key": alert.dedup_key,
        "client": "Vantage",
        "payload": {
            "summary": alert.summary().chars().take(1024).collect::<String>(),
            "source": alert.subject,
            "severity": severity,
            "timestamp": rfc3339(alert.at_ms),
            "component": alert.subject,
            "class": alert.cause.as_ref().map_or(alert.kind.as_str(), |c| c.code.as_str()),
            "custom_details": super::webhook::body(alert),
        },
    });
    if !alert.link.is_empty() {
        body["client_url"] = alert.link.clone().into();
        body["links"] = json!([{ "href": alert.link, "text": "Vantage status" }]);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertKind;

    #[test]
    fn pagerduty_triggers_and_resolves_one_dedup_key() {
        let key = Secret("R0UTING".into());
        let down = Alert::new(AlertKind::Down, "https://a.example/", 0, "vantage/target/https://a.example/".into());
        let up = Alert::new(AlertKind::Recovered, "https://a.example/", 1, "vantage/target/https://a.example/".into());
        let (t, r) = (body(&down, &key), body(&up, &key));
        assert_eq!((t["event_action"].as_str(), r["event_action"].as_str()), (Some("trigger"), Some("resolve")));
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        assert_eq!(t["payload"]["severity"], "critical");
        assert!(format!("{key:?}") == "Secret(…)");
    }
}
