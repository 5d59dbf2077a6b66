//! Microsoft Teams through a Workflows webhook (Power Automate's "Post to a channel when a
//! webhook request is received"): a message with one Adaptive Card, its title coloured by
//! severity, the alert's fields as facts (Markdown: no masked links from target text), and a
//! button to the status page. The workflow's URL
//! carries its own signature, so it is kept as a secret (`url_file`) and never shown.
//! <https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/add-incoming-webhook>,
//! <https://adaptivecards.io/explorer/>

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Channel, Http, Secret, Sending, Settings, cut, json, no_links};
use crate::alert::{Alert, Severity};

/// Longest fact value: a card stays far below Teams' 28 KB message limit.
const FACT_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teams {
    /// The workflow's URL (its signature is its credential).
    pub url: Secret,
}

/// `type = "teams"`: `url_file` (or `url`).
pub fn build(settings: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    Ok(Arc::new(Teams { url: settings.secret_url(dir)? }))
}

impl Channel for Teams {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(async move { http.post_json(&self.url.0, json(&body(alert))?, &[]).await })
    }
}

/// The Workflows webhook's message: one Adaptive Card (schema 1.4).
pub fn body(alert: &Alert) -> serde_json::Value {
    let color = match alert.kind.severity() {
        Severity::Critical => "Attention",
        Severity::Warning => "Warning",
        Severity::Info if alert.kind.resolves() => "Good",
        Severity::Info => "Default",
    };
    let facts: Vec<serde_json::Value> = alert
        .text()
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| json!({ "title": name, "value": cut(&no_links(value.trim()), FACT_MAX) }))
        .collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            { "type": "TextBlock", "text": alert.kind.title(), "weight": "Bolder", "size": "Medium", "color": color },
            { "type": "TextBlock", "text": cut(&no_links(&alert.summary()), FACT_MAX), "wrap": true },
            { "type": "FactSet", "facts": facts },
        ],
    });
    if !alert.link.is_empty() {
        card["actions"] = json!([{ "type": "Action.OpenUrl", "title": "Open the status page", "url": alert.link }]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertKind;

    #[test]
    fn the_url_may_come_from_a_file_and_is_never_shown() {
        let dir = std::env::temp_dir().join(format!("vantage-teams-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret =
            "https://prod-00.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=S1GNATURE";
        std::fs::write(dir.join("teams.url"), format!("{secret}\n")).unwrap();
        let settings = |extra: &str| -> Settings {
            toml::from_str(&format!("name = \"chat\"\ntype = \"teams\"\n{extra}")).unwrap()
        };
        let built = build(&settings("url_file = \"teams.url\""), &dir).unwrap();
        let teams = (&*built as &dyn std::any::Any).downcast_ref::<Teams>().unwrap();
        assert_eq!(teams.url.0, secret);
        assert!(!format!("{built:?}").contains("S1GNATURE"));
        for (extra, expected) in [
            ("", "channel chat: url: missing (or url_file)"),
            ("url_file = \"missing.url\"", "channel chat: cannot read"),
            ("url = \"https://a.example/\"\nurl_file = \"teams.url\"", "channel chat: give url or url_file, not both"),
            ("url = \"http://a.example/?sig=S1GNATURE\"", "channel chat: url: must be https"),
        ] {
            let e = build(&settings(extra), &dir).unwrap_err();
            assert!(e.starts_with(expected) && !e.contains("S1GNATURE"), "{e}");
        }
        std::fs::write(dir.join("bad.url"), "not a url S1GNATURE").unwrap();
        let e = build(&settings("url_file = \"bad.url\""), &dir).unwrap_err();
        assert!(e.starts_with("channel chat: url_file: not a URL") && !e.contains("S1GNATURE"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn target_text_makes_no_link() {
        let mut changed = Alert::new(AlertKind::CertChanged, "https://a.example/", 0, "k".into());
        changed.detail = "now served: [Renew here](https://evil.example/) (expires soon)".into();
        let text = body(&changed).to_string();
        assert!(!text.contains("[Renew here](") && text.contains(r"\\[Renew here\\](https"), "{text}");
    }

    #[test]
    fn a_resolve_is_green_and_without_a_link_has_no_button() {
        let up = Alert::new(AlertKind::Recovered, "https://a.example/", 0, "k".into());
        let card = &body(&up)["attachments"][0]["content"];
        assert_eq!(card["body"][0]["color"], "Good");
        assert!(card.get("actions").is_none());
    }
}
