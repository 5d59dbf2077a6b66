//! The `[watchdog]` table of the config file, checked into a [`Watchdog`]: where the heartbeat
//! goes (a healthchecks-style URL, or Alertmanager), how, and how often.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::alert::channel::{Endpoint, EndpointKeys, Http, Secret, label_name};

/// The default `period`: as often as Prometheus evaluates kube-prometheus's Watchdog rule, and
/// well inside the smallest period healthchecks.io and Cronitor accept.
pub const PERIOD: Duration = Duration::from_secs(60);

/// `[watchdog]` as written; [`Entry::check`] makes it a [`Watchdog`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(rename = "type")]
    kind: Kind,
    url: Option<String>,
    period: Option<String>,
    method: Option<Method>,
    fail_url: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    token_file: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Http,
    Alertmanager,
}

/// How an `http` watchdog pings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// A bare request: what every dead man's switch service takes.
    #[default]
    Get,
    /// With the health summary as a `text/plain` body (healthchecks.io shows it in its log).
    Post,
}

/// A checked `[watchdog]`.
#[derive(Debug)]
pub struct Watchdog {
    /// How often the coordinator looks at its health, and pings when healthy.
    pub period: Duration,
    pub target: Target,
}

/// Where the heartbeat goes.
#[derive(Debug)]
pub enum Target {
    /// `type = "http"`: `url` is requested while healthy; `fail_url`, when given, while not.
    /// The URLs are secrets (knowing one is enough to ping), never shown.
    Http { url: Secret, method: Method, fail_url: Option<Secret>, http: Option<Http> },
    /// `type = "alertmanager"`: an always-firing `Watchdog` alert, with `labels` added.
    Alertmanager { endpoint: Endpoint, labels: BTreeMap<String, String> },
}

impl Target {
    /// The `type` it was configured with.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Http { .. } => "http",
            Target::Alertmanager { .. } => "alertmanager",
        }
    }
}

/// An http(s) URL, kept secret.
fn http_url(key: &str, url: &str) -> Result<Secret, String> {
    // The parser's message names the fault, not the URL.
    let parsed = url::Url::parse(url).map_err(|e| format!("watchdog: {key}: not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("watchdog: {key}: must be http(s)"));
    }
    Ok(Secret(url.to_owned()))
}

impl Entry {
    /// The watchdog this table describes; files are read relative to `dir`. An error starts
    /// with `watchdog:` and names the key at fault.
    pub fn check(self, dir: &Path) -> Result<Watchdog, String> {
        let period = match &self.period {
            Some(text) => {
                let period =
                    vantage_shared::duration::parse_duration(text).map_err(|e| format!("watchdog: period: {e}"))?;
                if period < Duration::from_secs(1) {
                    return Err("watchdog: period: at least 1s".into());
                }
                period
            }
            None => PERIOD,
        };
        let only = |key: &str, given: bool, kind: &str| {
            if given { Err(format!("watchdog: {key}: only for type = \"{kind}\"")) } else { Ok(()) }
        };
        let target = match self.kind {
            Kind::Http => {
                only("labels", !self.labels.is_empty(), "alertmanager")?;
                only("token_file", self.token_file.is_some(), "alertmanager")?;
                only("username", self.username.is_some(), "alertmanager")?;
                only("password_file", self.password_file.is_some(), "alertmanager")?;
                let url = http_url("url", self.url.as_deref().ok_or("watchdog: url: missing")?)?;
                let fail_url = self.fail_url.as_deref().map(|u| http_url("fail_url", u)).transpose()?;
                let http = match &self.ca_file {
                    Some(path) => {
                        let path = dir.join(path);
                        let pem = std::fs::read(&path)
                            .map_err(|e| format!("watchdog: cannot read {}: {e}", path.display()))?;
                        Some(Http::with_ca(&pem).map_err(|e| format!("watchdog: ca_file {}: {e}", path.display()))?)
                    }
                    None => None,
                };
                Target::Http { url, method: self.method.unwrap_or_default(), fail_url, http }
            }
            Kind::Alertmanager => {
                only("method", self.method.is_some(), "http")?;
                only("fail_url", self.fail_url.is_some(), "http")?;
                crate::spec::check_labels(self.labels.iter()).map_err(|e| format!("watchdog: {e}"))?;
                let labels: BTreeMap<String, String> =
                    self.labels.into_iter().map(|(k, v)| (label_name(&k), v)).collect();
                if let Some(ours) = ["alertname", "severity"].into_iter().find(|k| labels.contains_key(*k)) {
                    return Err(format!("watchdog: labels: {ours} is the watchdog's own label"));
                }
                let keys = EndpointKeys {
                    url: self.url.as_deref(),
                    token_file: self.token_file.as_deref(),
                    username: self.username.as_deref(),
                    password_file: self.password_file.as_deref(),
                    ca_file: self.ca_file.as_deref(),
                };
                Target::Alertmanager { endpoint: Endpoint::new("watchdog", keys, dir)?, labels }
            }
        };
        Ok(Watchdog { period, target })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with a token file in it, one per test (they run at once).
    fn dir() -> PathBuf {
        let test = std::thread::current().name().unwrap_or("test").replace("::", "-");
        let dir = std::env::temp_dir().join(format!("vantage-watchdog-{test}-{}", std::process::id()));
        if !dir.join("am.token").exists() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("am.token"), "t0ken\n").unwrap();
        }
        dir
    }

    fn check(toml: &str) -> Result<Watchdog, String> {
        let entry: Entry = toml::from_str(toml).map_err(|e| e.message().to_owned())?;
        entry.check(&dir())
    }

    #[test]
    fn an_http_watchdog_pings_with_get_every_minute_unless_told_otherwise() {
        let w = check("type = \"http\"\nurl = \"https://hc-ping.com/0b5e\"\n").unwrap();
        assert_eq!(w.period, PERIOD);
        let Target::Http { url, method, fail_url, http } = &w.target else { panic!("{w:?}") };
        assert_eq!(
            (url.0.as_str(), *method, fail_url, http.is_none()),
            ("https://hc-ping.com/0b5e", Method::Get, &None, true)
        );
        assert!(!format!("{w:?}").contains("0b5e"), "the ping URL is a secret");

        let w = check(
            "type = \"http\"\nurl = \"https://hc-ping.com/0b5e\"\nmethod = \"POST\"\nperiod = \"30s\"\n\
             fail_url = \"https://hc-ping.com/0b5e/fail\"\n",
        )
        .unwrap();
        assert_eq!(w.period, Duration::from_secs(30));
        assert!(
            matches!(&w.target, Target::Http { method: Method::Post, fail_url: Some(f), .. } if f.0.ends_with("/fail"))
        );
    }

    #[test]
    fn an_alertmanager_watchdog_posts_to_the_alerts_api_with_its_labels() {
        let w = check(
            "type = \"alertmanager\"\nurl = \"https://am.example:9093/\"\ntoken_file = \"am.token\"\n\
             labels = { coordinator = \"vantage-1\", \"k8s.cluster\" = \"prod\" }\n",
        )
        .unwrap();
        let Target::Alertmanager { endpoint, labels } = &w.target else { panic!("{w:?}") };
        assert_eq!(endpoint.url, "https://am.example:9093/api/v2/alerts");
        assert!(endpoint.auth.is_some());
        assert_eq!(labels.get("coordinator").map(String::as_str), Some("vantage-1"));
        assert_eq!(labels.get("k8s_cluster").map(String::as_str), Some("prod"), "as an Alertmanager label name");
    }

    /// The README's `[watchdog]` examples (in "Watchdog: who watches the watcher") load as the
    /// coordinator loads its config.
    #[test]
    fn the_readmes_watchdog_examples_load() {
        let readme = include_str!("../../../README.md");
        let section = readme.split("### Watchdog: who watches the watcher").nth(1).expect("the README's section");
        let blocks: Vec<&str> = section
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("\n```").next())
            .filter(|b| b.starts_with("[watchdog]"))
            .collect();
        assert_eq!(blocks.len(), 2, "an http and an alertmanager example");
        let kinds: Vec<&str> = blocks
            .iter()
            .map(|block| {
                let config = crate::config::parse_config(block, "README.md", &dir()).unwrap_or_else(|e| panic!("{e}"));
                config.alerting.watchdog.expect("a watchdog").target.kind()
            })
            .collect();
        assert_eq!(kinds, ["http", "alertmanager"]);
    }

    #[test]
    fn a_bad_watchdog_table_is_refused_with_the_key_at_fault() {
        for (toml, error) in [
            ("url = \"https://a/\"", "missing field `type`"),
            ("type = \"cronitor\"\nurl = \"https://a/\"", "unknown variant `cronitor`"),
            ("type = \"http\"\nurl = \"https://a/\"\nmethod = \"PUT\"", "unknown variant `PUT`"),
            ("type = \"http\"\nurl = \"https://a/\"\nsecret = \"x\"", "unknown field `secret`"),
            ("type = \"http\"", "watchdog: url: missing"),
            ("type = \"http\"\nurl = \"hc-ping.com/x\"", "watchdog: url: not a URL"),
            ("type = \"http\"\nurl = \"ftp://a/\"", "watchdog: url: must be http(s)"),
            ("type = \"http\"\nurl = \"https://a/\"\nfail_url = \"nope\"", "watchdog: fail_url: not a URL"),
            ("type = \"http\"\nurl = \"https://a/\"\nperiod = \"500ms\"", "watchdog: period: at least 1s"),
            ("type = \"http\"\nurl = \"https://a/\"\nperiod = \"often\"", "watchdog: period: invalid duration"),
            (
                "type = \"http\"\nurl = \"https://a/\"\nlabels = { a = \"b\" }",
                "watchdog: labels: only for type = \"alertmanager\"",
            ),
            ("type = \"http\"\nurl = \"https://a/\"\ntoken_file = \"am.token\"", "watchdog: token_file: only for"),
            ("type = \"http\"\nurl = \"https://a/\"\nca_file = \"missing.pem\"", "watchdog: cannot read"),
            ("type = \"alertmanager\"", "watchdog: url: missing"),
            (
                "type = \"alertmanager\"\nurl = \"https://a/\"\nmethod = \"POST\"",
                "watchdog: method: only for type = \"http\"",
            ),
            (
                "type = \"alertmanager\"\nurl = \"https://a/\"\nfail_url = \"https://a/fail\"",
                "watchdog: fail_url: only for",
            ),
            (
                "type = \"alertmanager\"\nurl = \"https://a/?x=1\"",
                "watchdog: url: Alertmanager's base URL takes no query",
            ),
            ("type = \"alertmanager\"\nurl = \"http://am.example/\"\ntoken_file = \"am.token\"", "only over https"),
            (
                "type = \"alertmanager\"\nurl = \"https://a/\"\nusername = \"v\"",
                "watchdog: username and password_file go together",
            ),
            (
                "type = \"alertmanager\"\nurl = \"https://a/\"\nlabels = { severity = \"page\" }",
                "watchdog: labels: severity is the watchdog's own label",
            ),
        ] {
            let e = check(toml).map(|w| format!("{w:?}")).unwrap_err();
            assert!(e.contains(error), "{toml}: {e}");
        }
    }
}
