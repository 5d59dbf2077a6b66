//! A Slack incoming webhook: a fallback `text` and Block Kit sections, one line per field of the
//! alert's message.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Channel, Http, Sending, Settings, json};
use crate::alert::{Alert, Severity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slack {
    pub url: String,
}

/// `type = "slack"`: `url`.
pub fn build(settings: &Settings, _dir: &Path) -> Result<Arc<dyn Channel>, String> {
    Ok(Arc::new(Slack { url: settings.url(true)?.unwrap_or_default() }))
}

impl Channel for Slack {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(async move { http.post_json(&self.url, json(&body(alert))?, &[]).await })
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Slack's incoming-webhook format: a fallback `text` and Block Kit sections.
pub fn body(alert: &Alert) -> serde_json::Value {
    let emoji = match alert.kind.severity() {
        Severity::Critical => ":red_circle:",
        Severity::Warning => ":large_orange_circle:",
        Severity::Info if alert.kind.resolves() => ":large_green_circle:",
        Severity::Info => ":information_source:",
    };
    let mut lines = vec![format!("{emoji} *{}*", escape(&alert.summary()))];
    for line in alert.text().lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            lines.push(format!("*{}:* {}", escape(name), escape(value.trim())));
        }
    }
    json!({
        "text": alert.summary(),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": lines.join("\n") } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": format!("Vantage · event {}", alert.id) } ] },
        ],
    })
}
