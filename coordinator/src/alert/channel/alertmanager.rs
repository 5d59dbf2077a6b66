//! Prometheus Alertmanager (`POST <url>/api/v2/alerts`): each alert becomes an Alertmanager alert
//! whose labels name the problem the same way on every coordinator with the same config (no ids,
//! times or agreeing regions in them), so Alertmanager groups, inhibits and deduplicates them, and
//! a resolve posts the labels of the trigger it ends with `endsAt` set. Like Prometheus, a firing
//! alert is valid for `VALID_FOR` resend delays and is sent again every delay while it lasts (the
//! dispatcher asks [`Channel::resend_every`]), so Alertmanager expires the alerts of a coordinator
//! that is gone.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Channel, Http, Secret, Sending, Settings, json};
use crate::alert::{Alert, AlertKind, Severity};
use crate::clock::{now_ms, rfc3339};

/// The default of `resend_delay`: Prometheus's `--rules.alert.resend-delay`.
pub const RESEND_DELAY: Duration = Duration::from_secs(60);
/// A firing alert's `endsAt` is this many resend delays ahead (as Prometheus sets it).
pub const VALID_FOR: u32 = 4;
/// Most alerts in one re-send request.
const ALERTS_PER_POST: usize = 256;
/// The Alertmanager API path below the configured base URL.
const ALERTS_PATH: &str = "/api/v2/alerts";

/// How the coordinator authenticates to Alertmanager (or the proxy in front of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

impl Auth {
    fn header(&self) -> String {
        match self {
            Auth::Bearer(token) => format!("Bearer {}", token.0),
            Auth::Basic { username, password } => super::basic_auth(username, password),
        }
    }
}

/// Where and how to reach an Alertmanager: its alerts URL, the credentials, and its own client
/// when it trusts an extra CA. The `alertmanager` channel and the watchdog's `type =
/// "alertmanager"` both post through one.
#[derive(Debug)]
pub struct Endpoint {
    /// `<url>/api/v2/alerts`.
    pub url: String,
    pub auth: Option<Auth>,
    /// Its own client when it trusts an extra CA (`ca_file`).
    pub http: Option<Http>,
}

/// The keys an [`Endpoint`] is made of, as a config table names them.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointKeys<'a> {
    /// Alertmanager's base URL.
    pub url: Option<&'a str>,
    pub token_file: Option<&'a Path>,
    pub username: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
}

impl Endpoint {
    /// The endpoint `keys` describe (files read relative to `dir`); an error starts with `who`
    /// (`channel am`, `watchdog`) and names the key at fault.
    pub fn new(who: &str, keys: EndpointKeys<'_>, dir: &Path) -> Result<Endpoint, String> {
        let base = keys.url.ok_or_else(|| format!("{who}: url: missing"))?;
        let parsed = url::Url::parse(base).map_err(|e| format!("{who}: url: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{who}: url: must be http(s)"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!("{who}: url: Alertmanager's base URL takes no query or fragment"));
        }
        let password = keys.password_file.map(|p| Secret::read(p, dir)).transpose()?;
        let token = keys.token_file.map(|p| Secret::read(p, dir)).transpose()?;
        let auth = match (token, keys.username, password) {
            (None, None, None) => None,
            (Some(token), None, None) => Some(Auth::Bearer(token)),
            (None, Some(username), Some(password)) => Some(Auth::Basic { username: username.to_owned(), password }),
            (Some(_), _, _) => return Err(format!("{who}: token_file or username with password_file, not both")),
            _ => return Err(format!("{who}: username and password_file go together")),
        };
        let loopback = match parsed.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if auth.is_some() && parsed.scheme() != "https" && !loopback {
            return Err(format!("{who}: credentials are sent only over https (http is for this host)"));
        }
        let http = match keys.ca_file {
            Some(path) => {
                let path = dir.join(path);
                let pem = std::fs::read(&path).map_err(|e| format!("{who}: cannot read {}: {e}", path.display()))?;
                Some(Http::with_ca(&pem).map_err(|e| format!("{who}: ca_file {}: {e}", path.display()))?)
            }
            None => None,
        };
        Ok(Endpoint { url: format!("{}{ALERTS_PATH}", base.trim_end_matches('/')), auth, http })
    }

    /// Posts `alerts` (`postableAlerts`); `http` is the shared client, used unless the endpoint
    /// has its own.
    pub async fn post(&self, http: &Http, alerts: Vec<Value>) -> Result<(), super::SendError> {
        let headers: Vec<(&str, String)> =
            self.auth.iter().map(|a| (hyper::header::AUTHORIZATION.as_str(), a.header())).collect();
        let http = self.http.as_ref().unwrap_or(http);
        http.post_json(&self.url, json(&Value::Array(alerts))?, &headers).await
    }
}

#[derive(Debug)]
pub struct Alertmanager {
    pub endpoint: Endpoint,
    pub resend_delay: Duration,
}

/// `type = "alertmanager"`: `url` (Alertmanager's base URL), optionally `token_file` (a bearer
/// token) or `username` with `password_file` (basic auth), `ca_file`, and `resend_delay`.
pub fn build(settings: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    let name = &settings.name;
    let keys = EndpointKeys {
        url: settings.url.as_deref(),
        token_file: settings.token_file.as_deref(),
        username: settings.username.as_deref(),
        password_file: settings.password_file.as_deref(),
        ca_file: settings.ca_file.as_deref(),
    };
    let endpoint = Endpoint::new(&format!("channel {name}"), keys, dir)?;
    let resend_delay = match &settings.resend_delay {
        Some(text) => {
            let delay = vantage_shared::duration::parse_duration(text)
                .map_err(|e| format!("channel {name}: resend_delay: {e}"))?;
            if delay < Duration::from_secs(1) {
                return Err(format!("channel {name}: resend_delay: at least 1s"));
            }
            delay
        }
        None => RESEND_DELAY,
    };
    Ok(Arc::new(Alertmanager { endpoint, resend_delay }))
}

impl Alertmanager {
    async fn post(&self, http: &Http, alerts: Vec<Value>) -> Result<(), super::SendError> {
        self.endpoint.post(http, alerts).await
    }
}

impl Channel for Alertmanager {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(async move { self.post(http, body(alert, now_ms(), self.resend_delay)).await })
    }

    fn resend_every(&self) -> Option<Duration> {
        Some(self.resend_delay)
    }

    fn resend<'a>(&'a self, http: &'a Http, firing: &'a [Alert]) -> Sending<'a> {
        Box::pin(async move {
            let now = now_ms();
            for chunk in firing.chunks(ALERTS_PER_POST) {
                let alerts = chunk.iter().flat_map(|a| body(a, now, self.resend_delay)).collect();
                self.post(http, alerts).await?;
            }
            Ok(())
        })
    }
}

/// The label naming what an alert is about, by its kind.
fn subject_label(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::RegionSilent
        | AlertKind::RegionRecovered
        | AlertKind::RegionForgotten
        | AlertKind::RegionImpaired => "region",
        AlertKind::HeartbeatOverdue | AlertKind::HeartbeatRecovered => "heartbeat",
        AlertKind::ChannelFailing | AlertKind::ChannelRecovered => "channel",
        _ => "target",
    }
}

/// Alertmanager's `severity` label for a trigger kind.
pub fn severity(kind: AlertKind) -> &'static str {
    match kind.severity() {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// A Vantage label name as an Alertmanager one (`[a-zA-Z_][a-zA-Z0-9_]*`): `-` and `.` become `_`,
/// and a leading digit gets a `_` before it.
pub fn label_name(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The labels of the Alertmanager alert for `alert` as the trigger kind `trigger`: the subject's
/// own labels, then Vantage's (which win a clash).
fn labels(alert: &Alert, trigger: AlertKind) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> =
        alert.labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (label_name(k), v.clone())).collect();
    labels.insert("alertname".into(), trigger.as_str().into());
    // An incident group is one alert under its key (its members, which grow, are annotations).
    let subject = if alert.group.is_some() { "group" } else { subject_label(trigger) };
    labels.insert(subject.into(), alert.subject.clone());
    labels.insert("severity".into(), severity(trigger).into());
    // Each certificate is its own problem: a renewed certificate that is expiring too is a new
    // alert, not the old one resolved and fired again.
    let certificate =
        if alert.kind == AlertKind::CertChanged { &alert.previous_fingerprint } else { &alert.fingerprint };
    if let (Some(fingerprint), AlertKind::CertWarning | AlertKind::CertCritical) = (certificate, trigger) {
        labels.insert("certificate".into(), fingerprint.clone());
    }
    labels
}

/// What people read: the summary, the full message, cause and hint, the agreeing regions and the
/// failing backend, the link (empty ones are left out).
fn annotations(alert: &Alert) -> Map<String, Value> {
    let cause = alert.cause.as_ref();
    let fields = [
        ("summary", alert.summary()),
        ("description", alert.text()),
        ("cause", cause.map(|c| c.message.clone()).unwrap_or_default()),
        ("failure", cause.map(|c| c.code.clone()).unwrap_or_default()),
        ("hint", cause.map(|c| c.hint.clone()).unwrap_or_default()),
        ("regions", alert.regions.join(", ")),
        ("backend", alert.backend.clone().unwrap_or_default()),
        ("detail", alert.detail.clone()),
        ("link", alert.link.clone()),
        ("shared_cause", alert.group.as_ref().map(|g| g.shared_cause.clone()).unwrap_or_default()),
        ("members", alert.group.as_ref().map(|g| g.members.join("\n")).unwrap_or_default()),
    ];
    fields.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_owned(), Value::String(v))).collect()
}

/// The Alertmanager alerts (`postableAlerts`) for `alert` sent at `now`: one for a trigger, valid
/// for `VALID_FOR` resend delays; for a resolve, one per trigger kind it ends, with the trigger's
/// labels and `endsAt` the time it ended.
pub fn body(alert: &Alert, now: i64, resend_delay: Duration) -> Vec<Value> {
    let (kinds, ends_at) = if alert.kind.resolves() {
        (alert.ended(), alert.at_ms.max(alert.since_ms))
    } else {
        (std::slice::from_ref(&alert.kind), now + (resend_delay * VALID_FOR).as_millis() as i64)
    };
    kinds
        .iter()
        .map(|trigger| {
            let mut one = json!({
                "labels": labels(alert, *trigger),
                "annotations": annotations(alert),
                "startsAt": rfc3339(alert.since_ms.min(ends_at)),
                "endsAt": rfc3339(ends_at),
            });
            if !alert.link.is_empty() {
                one["generatorURL"] = alert.link.clone().into();
            }
            one
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertCause;

    fn settings(toml: &str) -> Settings {
        toml::from_str(&format!("name = \"am\"\ntype = \"alertmanager\"\n{toml}")).unwrap()
    }

    fn down() -> Alert {
        let url = "https://shop.example/";
        let mut a = Alert::new(AlertKind::Down, url, 1_700_000_000_000, format!("vantage/target/{url}#1"));
        a.since_ms = a.at_ms;
        a.labels = [("team".to_owned(), "shop".to_owned()), ("k8s.namespace".to_owned(), "prod".to_owned())].into();
        a.regions = vec!["eu-west".into(), "us-east".into()];
        a.of_regions = 3;
        a.cause = Some(AlertCause {
            code: "tcp_refused".into(),
            message: "The server refused the connection.".into(),
            hint: "Check that the server runs.".into(),
        });
        a.link = "https://vantage.example/".into();
        a
    }

    #[test]
    fn an_incident_group_is_one_alert_under_its_key_with_its_members_annotated() {
        let key = "backend:203.0.113.7:443:tcp_refused";
        let group = |members: &[&str]| {
            let mut a = down();
            a.subject = key.into();
            a.dedup_key = format!("vantage/group/{key}#1");
            a.group = Some(crate::alert::AlertGroup {
                key: key.into(),
                shared_cause: "behind 203.0.113.7:443".into(),
                members: members.iter().map(|m| m.to_string()).collect(),
            });
            a
        };
        let now = 1_700_000_030_000;
        let first = body(&group(&["https://a.example/", "https://b.example/"]), now, Duration::from_secs(60));
        let labels = first[0]["labels"].as_object().unwrap();
        assert_eq!(labels["group"], key);
        assert!(!labels.contains_key("target"), "the group, not one of its targets");
        let annotations = &first[0]["annotations"];
        assert_eq!(annotations["members"], "https://a.example/\nhttps://b.example/");
        assert_eq!(annotations["shared_cause"], "behind 203.0.113.7:443");
        assert!(
            annotations["summary"].as_str().unwrap().starts_with("DOWN 2 targets behind 203.0.113.7:443: tcp_refused")
        );
        // A member joining later: the same alert for Alertmanager, its annotations grown.
        let grown = body(
            &group(&["https://a.example/", "https://b.example/", "https://c.example/"]),
            now,
            Duration::from_secs(60),
        );
        assert_eq!(grown[0]["labels"], first[0]["labels"]);
        assert!(grown[0]["annotations"]["members"].as_str().unwrap().ends_with("https://c.example/"));
    }

    #[test]
    fn a_down_is_posted_with_stable_labels_annotations_and_a_validity_of_four_resend_delays() {
        let now = 1_700_000_030_000;
        let posted = body(&down(), now, Duration::from_secs(60));
        assert_eq!(posted.len(), 1);
        let one = &posted[0];
        assert_eq!(
            one["labels"],
            json!({
                "alertname": "down",
                "target": "https://shop.example/",
                "severity": "critical",
                "team": "shop",
                "k8s_namespace": "prod",
            })
        );
        let annotations = one["annotations"].as_object().unwrap();
        assert!(annotations["summary"].as_str().unwrap().starts_with("DOWN https://shop.example/: tcp_refused"));
        assert_eq!(annotations["cause"], "The server refused the connection.");
        assert_eq!(annotations["failure"], "tcp_refused");
        assert_eq!(annotations["hint"], "Check that the server runs.");
        assert_eq!(annotations["regions"], "eu-west, us-east");
        assert_eq!(annotations["link"], "https://vantage.example/");
        assert!(annotations["description"].as_str().unwrap().contains("Fix:    Check that the server runs."));
        assert!(!annotations.contains_key("backend"), "empty annotations are left out");
        assert_eq!(one["startsAt"], "2023-11-14T22:13:20Z");
        assert_eq!(one["endsAt"], rfc3339(now + 240_000));
        assert_eq!(one["generatorURL"], "https://vantage.example/");
        // Another coordinator judging the same outage later, seeing other regions: the same labels.
        let mut other = down();
        (other.id, other.at_ms, other.regions) = ("a_other".into(), other.at_ms + 1_234, vec!["ap-south".into()]);
        assert_eq!(body(&other, now, Duration::from_secs(60))[0]["labels"], one["labels"]);
    }

    #[test]
    fn a_resolve_posts_its_triggers_labels_ending_when_it_ended() {
        let trigger = down();
        let mut recovered =
            Alert::new(AlertKind::Recovered, &trigger.subject, trigger.at_ms + 300_000, trigger.dedup_key);
        (recovered.labels, recovered.since_ms, recovered.duration_ms) =
            (trigger.labels.clone(), trigger.at_ms, Some(300_000));
        let posted = body(&recovered, recovered.at_ms + 5, RESEND_DELAY);
        let fired = body(&down(), down().at_ms, RESEND_DELAY);
        assert_eq!(posted.len(), 1);
        assert_eq!(posted[0]["labels"], fired[0]["labels"]);
        assert_eq!(posted[0]["startsAt"], fired[0]["startsAt"]);
        assert_eq!(posted[0]["endsAt"], rfc3339(recovered.at_ms));
        assert!(posted[0]["annotations"]["summary"].as_str().unwrap().starts_with("RECOVERED"));
    }

    #[test]
    fn a_certificate_change_ends_the_old_certificates_warning_and_critical() {
        let url = "https://shop.example/";
        let mut warning = Alert::new(AlertKind::CertWarning, url, 1_000, format!("vantage/cert/{url}/aa"));
        warning.fingerprint = Some("aa".into());
        let mut changed = Alert::new(AlertKind::CertChanged, url, 2_000, format!("vantage/cert/{url}/aa"));
        (changed.fingerprint, changed.previous_fingerprint) = (Some("bb".into()), Some("aa".into()));
        let fired = body(&warning, 1_000, RESEND_DELAY);
        assert_eq!(fired[0]["labels"]["certificate"], "aa");
        assert_eq!(fired[0]["labels"]["severity"], "warning");
        let ended = body(&changed, 2_000, RESEND_DELAY);
        let names: Vec<&str> = ended.iter().map(|a| a["labels"]["alertname"].as_str().unwrap()).collect();
        assert_eq!(names, ["cert_warning", "cert_critical"]);
        assert_eq!(ended[0]["labels"], fired[0]["labels"]);
        assert_eq!(ended[1]["labels"]["severity"], "critical");
    }

    #[test]
    fn regions_heartbeats_and_channels_are_named_by_their_own_label() {
        let mut silent = Alert::new(AlertKind::RegionSilent, "ap-south", 1_000, "vantage/region/ap-south".into());
        silent.regions = vec!["ap-south".into()];
        let forgotten = Alert::new(AlertKind::RegionForgotten, "ap-south", 9_000, "vantage/region/ap-south".into());
        let fired = body(&silent, 1_000, RESEND_DELAY);
        assert_eq!(
            fired[0]["labels"],
            json!({"alertname": "region_silent", "region": "ap-south", "severity": "critical"})
        );
        assert_eq!(body(&forgotten, 9_000, RESEND_DELAY)[0]["labels"], fired[0]["labels"]);
        // A region_recovered ends only the problem its dedup key names: silence, or impairment.
        let key = crate::alert::region_impaired_key("ap-south");
        let impaired = Alert::new(AlertKind::RegionImpaired, "ap-south", 1_000, key.clone());
        let fired_impaired = body(&impaired, 1_000, RESEND_DELAY);
        assert_eq!(
            fired_impaired[0]["labels"],
            json!({"alertname": "region_impaired", "region": "ap-south", "severity": "warning"})
        );
        let ended = body(&Alert::new(AlertKind::RegionRecovered, "ap-south", 5_000, key), 5_000, RESEND_DELAY);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0]["labels"], fired_impaired[0]["labels"]);
        let back = Alert::new(AlertKind::RegionRecovered, "ap-south", 5_000, "vantage/region/ap-south".into());
        let ended = body(&back, 5_000, RESEND_DELAY);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0]["labels"], fired[0]["labels"]);
        let beat = Alert::new(AlertKind::HeartbeatOverdue, "backup", 1_000, "vantage/heartbeat/backup".into());
        assert_eq!(body(&beat, 1_000, RESEND_DELAY)[0]["labels"]["heartbeat"], "backup");
        let channel = Alert::new(AlertKind::ChannelRecovered, "slack", 1_000, "vantage/channel/slack".into());
        assert_eq!(body(&channel, 1_000, RESEND_DELAY)[0]["labels"]["alertname"], "channel_failing");
        assert_eq!(label_name("9-lives.x"), "_9_lives_x");
    }

    #[test]
    fn the_config_says_where_how_to_authenticate_and_how_often_to_resend() {
        let dir = std::env::temp_dir().join(format!("vantage-am-build-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "t0ken\n").unwrap();
        std::fs::write(dir.join("password"), "pw").unwrap();
        let built = |toml: &str| build(&settings(toml), &dir);
        let am = |toml: &str| {
            let channel = built(toml).unwrap();
            let any: &dyn std::any::Any = &*channel;
            let am = any.downcast_ref::<Alertmanager>().unwrap();
            (am.endpoint.url.clone(), am.endpoint.auth.as_ref().map(Auth::header), am.resend_delay)
        };
        assert_eq!(
            am("url = \"http://127.0.0.1:9093/\""),
            ("http://127.0.0.1:9093/api/v2/alerts".into(), None, RESEND_DELAY)
        );
        assert_eq!(
            am("url = \"https://am.example/prefix\"\ntoken_file = \"token\"\nresend_delay = \"30s\""),
            ("https://am.example/prefix/api/v2/alerts".into(), Some("Bearer t0ken".into()), Duration::from_secs(30))
        );
        assert_eq!(
            am("url = \"https://am.example\"\nusername = \"vantage\"\npassword_file = \"password\"").1.unwrap(),
            "Basic dmFudGFnZTpwdw==" // vantage:pw
        );
        for (toml, error) in [
            ("", "url: missing"),
            ("url = \"https://am.example/?x=1\"", "no query"),
            ("url = \"http://am.example\"\ntoken_file = \"token\"", "only over https"),
            (
                "url = \"https://am.example\"\ntoken_file = \"token\"\nusername = \"v\"\npassword_file = \"password\"",
                "not both",
            ),
            ("url = \"https://am.example\"\nusername = \"v\"", "go together"),
            ("url = \"https://am.example\"\nresend_delay = \"10ms\"", "at least 1s"),
            ("url = \"https://am.example\"\nca_file = \"token\"", "ca_file"),
        ] {
            let e = built(toml).unwrap_err();
            assert!(e.starts_with("channel am: ") && e.contains(error), "{toml}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
