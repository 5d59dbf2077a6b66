//! Opsgenie's Alert API v2: a problem's first alert creates an Opsgenie alert whose `alias` is
//! the problem's dedup key, and the alert that ends it closes that alias. Opsgenie answers 202:
//! it has accepted the request and processes it later.
//! <https://docs.opsgenie.com/docs/alert-api#create-alert>,
//! <https://docs.opsgenie.com/docs/alert-api#close-alert>

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Channel, Http, Secret, Sending, Settings, cut, json};
use crate::alert::{Alert, AlertKind, Severity};

pub const OPSGENIE_URL: &str = "https://api.opsgenie.com";
/// Opsgenie's limits on a created alert's fields.
const MESSAGE_MAX: usize = 130;
const ALIAS_MAX: usize = 512;
const DESCRIPTION_MAX: usize = 15_000;
const ENTITY_MAX: usize = 512;
const TAGS_MAX: usize = 20;
const TAG_MAX: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opsgenie {
    /// The API's base, without a trailing `/` (`https://api.eu.opsgenie.com` for the EU).
    pub url: String,
    pub api_key: Secret,
}

/// `type = "opsgenie"`: `api_key_file`, and `url` when not Opsgenie's US instance.
pub fn build(settings: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    let name = &settings.name;
    let key = settings.api_key_file.as_deref().ok_or_else(|| format!("channel {name}: api_key_file: missing"))?;
    Ok(Arc::new(Opsgenie {
        url: settings.credential_url(OPSGENIE_URL)?,
        api_key: Secret::read(key, dir).map_err(|e| format!("channel {name}: api_key_file: {e}"))?,
    }))
}

impl Channel for Opsgenie {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(async move {
            let auth = [("authorization", format!("GenieKey {}", self.api_key.0))];
            let (url, body) = request(&self.url, alert);
            http.post_json(&url, json(&body)?, &auth).await
        })
    }
}

/// Opsgenie's priority for the alert that `kind` creates (P1 the highest); `None` for the kinds
/// that close one.
pub fn priority(kind: AlertKind) -> Option<&'static str> {
    match kind.severity() {
        _ if kind.resolves() => None,
        _ if kind == AlertKind::Down => Some("P1"),
        Severity::Critical => Some("P2"),
        Severity::Warning => Some("P3"),
        Severity::Info => Some("P5"),
    }
}

/// The alert's alias: its dedup key, or (longer than Opsgenie keeps) a digest of it, the same
/// for the create and the close.
pub fn alias(alert: &Alert) -> String {
    if alert.dedup_key.chars().count() <= ALIAS_MAX {
        return alert.dedup_key.clone();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, alert.dedup_key.as_bytes());
    digest.as_ref().iter().fold(String::from("vantage/sha256/"), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    })
}

/// The URL (under `base`) and body that create or close the alert's Opsgenie alert.
pub fn request(base: &str, alert: &Alert) -> (String, serde_json::Value) {
    let alias = alias(alert);
    let Some(priority) = priority(alert.kind) else {
        let url = format!("{base}/v2/alerts/{}/close?identifierType=alias", path_segment(&alias));
        return (url, json!({ "source": "Vantage", "note": cut(&alert.summary(), 25_000) }));
    };
    let mut tags = vec!["vantage".to_owned(), alert.kind.as_str().to_owned()];
    tags.extend(alert.labels.iter().map(|(k, v)| cut(&format!("{k}:{v}"), TAG_MAX)).take(TAGS_MAX - tags.len()));
    let mut details: serde_json::Map<String, serde_json::Value> =
        alert.labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    for (key, value) in [
        ("kind", alert.kind.as_str().to_owned()),
        ("subject", alert.subject.clone()),
        ("regions", alert.regions.join(", ")),
        ("cause", alert.cause.as_ref().map(|c| c.code.clone()).unwrap_or_default()),
        ("event_id", alert.id.clone()),
        ("link", alert.link.clone()),
    ] {
        if !value.is_empty() {
            details.insert(key.to_owned(), value.into());
        }
    }
    let body = json!({
        "message": cut(&alert.summary(), MESSAGE_MAX),
        "alias": alias,
        "description": cut(&alert.text(), DESCRIPTION_MAX),
        "tags": tags,
        "details": details,
        "entity": cut(&alert.subject, ENTITY_MAX),
        "source": "Vantage",
        "priority": priority,
    });
    (format!("{base}/v2/alerts"), body)
}

/// `text` percent-encoded as one path segment (every byte but the unreserved ones).
fn path_segment(text: &str) -> String {
    text.bytes().fold(String::new(), |mut s, b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opsgenie_creates_and_closes_one_alias_within_its_limits() {
        let key = "vantage/target/https://a.example/#1795635848863";
        let mut down = Alert::new(AlertKind::Down, "https://a.example/", 0, key.into());
        down.labels = [("team".to_owned(), "shop".to_owned())].into();
        down.link = "https://status.example.net/".into();
        let (url, body) = request("https://api.eu.opsgenie.com", &down);
        assert_eq!(url, "https://api.eu.opsgenie.com/v2/alerts");
        assert_eq!((body["alias"].as_str(), body["priority"].as_str()), (Some(key), Some("P1")));
        assert_eq!(body["tags"], json!(["vantage", "down", "team:shop"]));
        assert_eq!(body["details"]["team"], "shop");
        assert_eq!(body["details"]["link"], "https://status.example.net/");
        let up = Alert::new(AlertKind::Recovered, "https://a.example/", 1, key.into());
        let (url, body) = request("https://api.eu.opsgenie.com", &up);
        assert_eq!(
            url,
            "https://api.eu.opsgenie.com/v2/alerts/vantage%2Ftarget%2Fhttps%3A%2F%2Fa.example%2F%231795635848863/close?identifierType=alias"
        );
        assert_eq!(body["source"], "Vantage");

        let long = Alert::new(AlertKind::Down, &format!("https://a.example/{}", "é".repeat(900)), 0, "k".repeat(600));
        let (_, body) = request("https://api.opsgenie.com", &long);
        assert_eq!(body["message"].as_str().unwrap().chars().count(), MESSAGE_MAX);
        assert_eq!(body["entity"].as_str().unwrap().chars().count(), ENTITY_MAX);
        let digest = body["alias"].as_str().unwrap();
        assert!(digest.starts_with("vantage/sha256/") && digest.len() == 15 + 64, "{digest}");
        let mut end = long.clone();
        end.kind = AlertKind::Recovered;
        assert!(request("https://api.opsgenie.com", &end).0.contains(&path_segment(digest)));
    }

    #[test]
    fn every_trigger_has_a_priority_and_every_resolve_closes() {
        for kind in AlertKind::ALL {
            assert_eq!(priority(kind).is_none(), kind.resolves(), "{kind:?}");
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let dir = std::env::temp_dir();
        let settings = |extra: &str| -> Settings {
            toml::from_str(&format!("name = \"og\"\ntype = \"opsgenie\"\n{extra}")).unwrap()
        };
        for (extra, expected) in [
            ("", "channel og: api_key_file: missing"),
            ("api_key_file = \"no-such-opsgenie.key\"", "channel og: api_key_file: cannot read"),
        ] {
            let e = build(&settings(extra), &dir).unwrap_err();
            assert!(e.starts_with(expected), "{e}");
        }
    }
}
