//! A Discord webhook: the summary as the message's `content` and an embed with the alert's
//! fields, with mentions turned off so no target's text can ping `@everyone`, and no masked
//! links made of target text. Discord's rate
//! limit (429 with `retry_after`) is a transient error, retried with the usual backoff. The
//! webhook's URL carries its token, so it may come from `url_file`.
//! <https://discord.com/developers/docs/resources/webhook#execute-webhook>,
//! <https://discord.com/developers/docs/resources/message#embed-object-embed-limits>,
//! <https://discord.com/developers/docs/topics/rate-limits>

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Channel, Http, Secret, Sending, Settings, cut, json, no_links};
use crate::alert::{Alert, Severity};
use crate::clock::rfc3339;

/// Discord's limit on `content`.
pub const CONTENT_MAX: usize = 2000;
/// Discord's limits on an embed's title and a field's name; the description and field values
/// are held shorter, so a whole embed stays under Discord's 6000 characters.
const TITLE_MAX: usize = 256;
const DESCRIPTION_MAX: usize = 1000;
const VALUE_MAX: usize = 350;
const FIELDS_MAX: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discord {
    /// The webhook's URL (it carries the webhook's token).
    pub url: Secret,
}

/// `type = "discord"`: `url_file` (or `url`).
pub fn build(settings: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    Ok(Arc::new(Discord { url: settings.secret_url(dir)? }))
}

impl Channel for Discord {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(async move { http.post_json(&self.url.0, json(&body(alert))?, &[]).await })
    }
}

/// Execute Webhook's JSON: `content`, one embed, and no mentions.
pub fn body(alert: &Alert) -> serde_json::Value {
    let color = match alert.kind.severity() {
        Severity::Critical => 0xD93025,
        Severity::Warning => 0xF29900,
        Severity::Info if alert.kind.resolves() => 0x1E8E3E,
        Severity::Info => 0x5F6368,
    };
    let fields: Vec<serde_json::Value> = alert
        .text()
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .take(FIELDS_MAX)
        .map(|(name, value)| json!({ "name": name, "value": cut(&no_links(value.trim()), VALUE_MAX), "inline": false }))
        .collect();
    let mut embed = json!({
        "title": cut(&format!("{} {}", alert.kind.title(), alert.about()), TITLE_MAX),
        "description": cut(&no_links(&alert.summary()), DESCRIPTION_MAX),
        "color": color,
        "fields": fields,
        "timestamp": rfc3339(alert.at_ms),
    });
    if !alert.link.is_empty() {
        embed["url"] = alert.link.clone().into();
    }
    json!({
        "content": cut(&no_links(&alert.summary()), CONTENT_MAX),
        "embeds": [embed],
        "allowed_mentions": { "parse": [] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertCause, AlertKind};

    #[test]
    fn a_long_alert_stays_within_discords_limits_and_pings_nobody() {
        let mut down =
            Alert::new(AlertKind::Down, &format!("https://a.example/@everyone/{}", "x".repeat(3000)), 0, "k".into());
        down.cause = Some(AlertCause { code: "http_status".into(), message: "m".repeat(5000), hint: "h".repeat(5000) });
        down.detail = "[d](https://evil.example/)".repeat(500);
        let body = body(&down);
        assert_eq!(body["allowed_mentions"], json!({ "parse": [] }));
        assert_eq!(body["content"].as_str().unwrap().chars().count(), CONTENT_MAX);
        let embed = &body["embeds"][0];
        let mut total = embed["title"].as_str().unwrap().chars().count();
        total += embed["description"].as_str().unwrap().chars().count();
        for field in embed["fields"].as_array().unwrap() {
            total += field["name"].as_str().unwrap().chars().count() + field["value"].as_str().unwrap().chars().count();
        }
        assert!(total <= 6000, "{total}");
        assert_eq!(embed["color"], 0xD93025);
        assert!(embed.get("url").is_none(), "no link configured");
        assert!(!body.to_string().contains("[d](https"), "no masked link: {body}");
    }

    #[test]
    fn the_url_is_a_secret() {
        let dir = std::env::temp_dir();
        let settings = |extra: &str| -> Settings {
            toml::from_str(&format!("name = \"chat\"\ntype = \"discord\"\n{extra}")).unwrap()
        };
        let hook = "https://discord.com/api/webhooks/1234567890/D1SC0RD-T0KEN";
        let built = build(&settings(&format!("url = \"{hook}\"")), &dir).unwrap();
        assert!(!format!("{built:?}").contains("T0KEN"), "{built:?}");
        for (extra, expected) in [
            (String::new(), "channel chat: url: missing (or url_file)"),
            ("url_file = \"no-such-discord.url\"".into(), "channel chat: cannot read"),
            (format!("url = \"{}\"", hook.replace("https", "http")), "channel chat: url: must be https"),
        ] {
            let e = build(&settings(&extra), &dir).unwrap_err();
            assert!(e.starts_with(expected) && !e.contains("T0KEN"), "{e}");
        }
    }
}
