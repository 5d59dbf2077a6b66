//! The coordinator's TOML config file: targets (`targets`: their fields; `discovery`: targets
//! from other files), channels, routes, silences, heartbeats, the `[watchdog]` (its table is in
//! `crate::alert::watchdog`), the `[alerts]`/`[quorum]` settings and `[shard]`, checked while loading,
//! with the file, line and reason on any error (one line, fit for a log).

pub mod discovery;
pub mod status_page;
mod targets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vantage_proto::v1::TargetSpec;

use crate::alert::channel::{self, Secret};
use crate::alert::{AlertKind, Alerting, Route, Silence};
use crate::shard::Shard;
use crate::spec;
use targets::TargetEntry;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    target: Vec<toml::Spanned<TargetEntry>>,
    #[serde(default)]
    alerts: AlertsEntry,
    #[serde(default)]
    channel: Vec<toml::Spanned<channel::Settings>>,
    #[serde(default)]
    route: Vec<toml::Spanned<RouteEntry>>,
    #[serde(default)]
    silence: Vec<toml::Spanned<SilenceEntry>>,
    #[serde(default)]
    heartbeat: Vec<toml::Spanned<HeartbeatEntry>>,
    #[serde(default)]
    quorum: QuorumEntry,
    #[serde(default)]
    target_files: Vec<toml::Spanned<discovery::TargetFilesEntry>>,
    shard: Option<toml::Spanned<ShardEntry>>,
    watchdog: Option<toml::Spanned<crate::alert::watchdog::Entry>>,
    #[serde(default)]
    status_page: Vec<toml::Spanned<status_page::Entry>>,
}

/// `[shard]`: this coordinator's share of a split (README: "Past one machine: shards").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardEntry {
    count: u32,
    index: u32,
}

/// `[quorum]`: how the default region set (of targets without their own `regions`) is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuorumEntry {
    #[serde(default, deserialize_with = "duration")]
    region_forget_after: Option<std::time::Duration>,
    /// README: "Impaired regions".
    impaired_share: Option<f64>,
    impaired_min_targets: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatEntry {
    name: String,
    #[serde(deserialize_with = "duration")]
    period: Option<std::time::Duration>,
    secret_file: PathBuf,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsEntry {
    #[serde(default)]
    status_url: String,
    #[serde(default, deserialize_with = "duration")]
    region_silent_after: Option<std::time::Duration>,
    /// How long a channel may answer "misconfigured" (401/403/404) before the other channels
    /// hear `channel_failing` (default `alert::health::CHANNEL_FAILING_AFTER`, 1h).
    #[serde(default, deserialize_with = "duration")]
    channel_failing_after: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    unknown_after: Option<std::time::Duration>,
    /// Targets turning DOWN for one shared cause within this are one incident group (default:
    /// two intervals of the first; "0s": no grouping).
    #[serde(default, deserialize_with = "duration")]
    correlation_window: Option<std::time::Duration>,
    /// Hold-down defaults (README: "Flap damping and hold-down").
    #[serde(default, deserialize_with = "duration")]
    alert_after: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    recover_after: Option<std::time::Duration>,
    /// Flap damping: probe intervals looked back over (0: off), and the thresholds in percent.
    flap_window: Option<u32>,
    flap_high: Option<u32>,
    flap_low: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    channels: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    events: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceEntry {
    #[serde(default)]
    target: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    start: Option<String>,
    end: String,
    #[serde(default)]
    comment: String,
}

/// Everything the config file holds.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub targets: Vec<TargetSpec>,
    pub alerting: Alerting,
    pub silences: Vec<Silence>,
    /// `[quorum] region_forget_after`: a region without a connected agent this long leaves the
    /// default region set (zero: never by itself).
    pub region_forget_after: std::time::Duration,
    /// `[quorum] impaired_share`, `impaired_min_targets`: when a region is impaired.
    pub impaired: crate::impairment::Policy,
    /// `[[target_files]]`: where more targets come from.
    pub target_files: Vec<discovery::TargetFiles>,
    /// `[shard]`: which of the config's targets this coordinator keeps (all, without it).
    pub shard: Shard,
    /// `[[status_page]]`: the public status pages (`/s/{slug}`).
    pub status_pages: Vec<status_page::StatusPage>,
}

/// Default of `[alerts] region_silent_after`.
pub const REGION_SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(300);
/// Default of `[alerts] unknown_after`.
pub const UNKNOWN_AFTER: std::time::Duration = std::time::Duration::from_secs(300);
/// Defaults of `[alerts] flap_window`, `flap_high`, `flap_low`: Nagios's window (21 checks, 20
/// changes between them) and thresholds.
pub const FLAP_WINDOW: u32 = 20;
pub const FLAP_HIGH: u32 = 50;
pub const FLAP_LOW: u32 = 25;
/// Default of `[quorum] region_forget_after`: a week, long enough for any planned maintenance of
/// a region's agents, short enough that a decommissioned region stops holding quorums hostage.
pub const REGION_FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
    let text = String::deserialize(d)?;
    vantage_shared::duration::parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{line}: target {url}: {source}")]
    Target { path: String, line: usize, url: String, source: spec::SpecError },
    #[error("{path}:{line}: target {url} is listed twice")]
    Duplicate { path: String, line: usize, url: String },
    #[error("{path}:{line}: {message}")]
    Entry { path: String, line: usize, message: String },
}

/// Loads and checks the file at `path`; secret files named in it are read relative to its
/// directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: display.clone(), source })?;
    parse_config(&text, &display, path.parent().unwrap_or(Path::new(".")))
}

/// Parses config text's targets; `path` only names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Vec<TargetSpec>, ConfigError> {
    let file = parse_file(text, path)?;
    targets::targets(file.target, text, path)
}

fn parse_file(text: &str, path: &str) -> Result<File, ConfigError> {
    toml::from_str(text).map_err(|e| match one_line(text, &e) {
        (Some(line), message) => ConfigError::Entry { path: path.to_owned(), line, message },
        (None, message) => ConfigError::Parse { path: path.to_owned(), message },
    })
}

/// A TOML error's line and reason, on one line (toml's own text spans several, with the source
/// quoted), so a log line or an HTTP answer holds it whole.
fn one_line(text: &str, e: &toml::de::Error) -> (Option<usize>, String) {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    (e.span().map(|span| line_of(text, span)), message)
}

fn line_of(text: &str, span: std::ops::Range<usize>) -> usize {
    text.get(..span.start).unwrap_or(text).matches('\n').count() + 1
}

/// `[alerts]`' flap damping and hold-down, checked.
fn damping(alerts: &AlertsEntry) -> Result<crate::alert::Damping, String> {
    let window = alerts.flap_window.unwrap_or(FLAP_WINDOW);
    let (high, low) = (alerts.flap_high.unwrap_or(FLAP_HIGH), alerts.flap_low.unwrap_or(FLAP_LOW));
    if window > spec::MAX_FLAP_WINDOW {
        return Err(format!(
            "[alerts] flap_window: at most {} intervals (0 turns flap damping off)",
            spec::MAX_FLAP_WINDOW
        ));
    }
    if window > 0 && !(1..=100).contains(&high) {
        return Err(format!("[alerts] flap_high: {high} is not a percentage from 1 to 100"));
    }
    if window > 0 && !(1..high).contains(&low) {
        return Err(format!("[alerts] flap_low: {low} must be at least 1 and below flap_high ({high})"));
    }
    let hold = |field: &str, d: Option<std::time::Duration>| match d {
        Some(d) if d > spec::MAX_HOLD => Err(format!("[alerts] {field}: at most 1 day")),
        d => Ok(d.unwrap_or_default()),
    };
    Ok(crate::alert::Damping {
        alert_after: hold("alert_after", alerts.alert_after)?,
        recover_after: hold("recover_after", alerts.recover_after)?,
        flap_window: window,
        flap_high: high,
        flap_low: low,
    })
}

/// Parses the whole config text; secret files are read relative to `dir`.
pub fn parse_config(text: &str, path: &str, dir: &Path) -> Result<Config, ConfigError> {
    let file = parse_file(text, path)?;
    let entry_error = |line: usize, message: String| ConfigError::Entry { path: path.to_owned(), line, message };
    let mut channels: Vec<channel::Named> = Vec::new();
    for entry in file.channel {
        let line = line_of(text, entry.span());
        let channel = entry.into_inner().build(dir).map_err(|m| entry_error(line, m))?;
        if channels.iter().any(|c| c.name == channel.name) {
            return Err(entry_error(line, format!("channel {:?} is defined twice", channel.name)));
        }
        channels.push(channel);
    }
    let mut routes = Vec::new();
    for entry in file.route {
        let line = line_of(text, entry.span());
        let r = entry.into_inner();
        if r.channels.is_empty() {
            return Err(entry_error(line, "route: channels: name at least one".into()));
        }
        if let Some(unknown) = r.channels.iter().find(|name| !channels.iter().any(|c| &&c.name == name)) {
            return Err(entry_error(line, format!("route: no channel named {unknown:?}")));
        }
        let events = match r.events {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        AlertKind::parse(n).ok_or_else(|| {
                            let known: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
                            entry_error(line, format!("route: unknown event {n:?} (known: {})", known.join(", ")))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        spec::check_labels(r.labels.iter()).map_err(|e| entry_error(line, format!("route: {e}")))?;
        routes.push(Route { channels: r.channels, labels: r.labels, events });
    }
    let now = crate::clock::now_ms();
    let mut silences = Vec::new();
    for (n, entry) in file.silence.into_iter().enumerate() {
        let line = line_of(text, entry.span());
        let s = entry.into_inner();
        let time = |field: &str, value: &str| {
            vantage_shared::report::parse_rfc3339(value)
                .map(|seconds| seconds * 1000)
                .ok_or_else(|| entry_error(line, format!("silence: {field}: {value:?} is not an RFC 3339 time")))
        };
        let start = s.start.as_deref().map(|v| time("start", v)).transpose()?;
        let end = time("end", &s.end)?;
        if end <= now {
            continue; // over: nothing to hold back
        }
        let mut silence = crate::alert::check_silence(&s.target, s.labels, start, Some(end), &s.comment, "config", now)
            .map_err(|e| entry_error(line, format!("silence: {e}")))?;
        silence.id = format!("config-{}", n + 1);
        silences.push(silence);
    }
    let mut heartbeats: Vec<crate::alert::Heartbeat> = Vec::new();
    for entry in file.heartbeat {
        let line = line_of(text, entry.span());
        let h = entry.into_inner();
        let error = |m: String| entry_error(line, format!("heartbeat {}: {m}", h.name));
        spec::check_name("name", &h.name).map_err(|e| error(e.to_string()))?;
        if heartbeats.iter().any(|x| x.name == h.name) {
            return Err(error("is defined twice".into()));
        }
        let period = h.period.filter(|p| p.as_secs() >= 1).ok_or_else(|| error("period: at least 1s".into()))?;
        spec::check_labels(h.labels.iter()).map_err(|e| error(e.to_string()))?;
        let secret = Secret::read(&h.secret_file, dir).map_err(error)?;
        if secret.0.len() < 16 {
            return Err(error("secret_file: the secret must be at least 16 characters".into()));
        }
        heartbeats.push(crate::alert::Heartbeat { name: h.name.clone(), period, secret, labels: h.labels.clone() });
    }
    let watchdog = match file.watchdog {
        Some(entry) => {
            let line = line_of(text, entry.span());
            Some(std::sync::Arc::new(entry.into_inner().check(dir).map_err(|m| entry_error(line, m))?))
        }
        None => None,
    };
    let damping = damping(&file.alerts).map_err(|m| ConfigError::Parse { path: path.to_owned(), message: m })?;
    let alerting = Alerting {
        damping,
        watchdog,
        heartbeats,
        channels,
        routes,
        status_url: file.alerts.status_url,
        region_silent_after: file.alerts.region_silent_after.unwrap_or(REGION_SILENT_AFTER),
        channel_failing_after: file.alerts.channel_failing_after,
        unknown_after: file.alerts.unknown_after.unwrap_or(UNKNOWN_AFTER),
        correlation_window: file.alerts.correlation_window,
    };
    // Target files are found from the config's directory wherever the coordinator was started.
    let absolute = if dir.as_os_str().is_empty() { std::env::current_dir() } else { std::path::absolute(dir) };
    let absolute = absolute.unwrap_or_else(|_| dir.to_path_buf());
    let mut target_files = Vec::new();
    for entry in file.target_files {
        let line = line_of(text, entry.span());
        target_files.push(entry.into_inner().check(&absolute).map_err(|m| entry_error(line, m))?);
    }
    let shard = match file.shard {
        None => Shard::WHOLE,
        Some(entry) => {
            let line = line_of(text, entry.span());
            let s = entry.into_inner();
            Shard::new(s.count, s.index).map_err(|e| entry_error(line, format!("shard: {e}")))?
        }
    };
    let mut status_pages: Vec<status_page::StatusPage> = Vec::new();
    for entry in file.status_page {
        let line = line_of(text, entry.span());
        let page = entry.into_inner().check().map_err(|m| entry_error(line, m))?;
        if status_pages.iter().any(|p| p.slug == page.slug) {
            return Err(entry_error(line, format!("status_page {}: the slug is used twice", page.slug)));
        }
        if status_pages.len() == status_page::MAX_PAGES {
            return Err(entry_error(line, format!("status_page: at most {} pages", status_page::MAX_PAGES)));
        }
        status_pages.push(page);
    }
    let defaults = crate::impairment::Policy::default();
    let impaired = crate::impairment::Policy {
        share: match file.quorum.impaired_share {
            Some(share) => crate::impairment::Policy::check_share(share)
                .map_err(|m| ConfigError::Parse { path: path.to_owned(), message: format!("[quorum] {m}") })?,
            None => defaults.share,
        },
        min_targets: file.quorum.impaired_min_targets.unwrap_or(defaults.min_targets),
    };
    Ok(Config {
        impaired,
        shard,
        targets: targets::targets(file.target, text, path)?,
        alerting,
        silences,
        region_forget_after: file.quorum.region_forget_after.unwrap_or(REGION_FORGET_AFTER),
        target_files,
        status_pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_loads() {
        let text = r#"
[[target]]
url = "https://shop.example.com/"
interval = "30s"          # default 60s
timeout = "10s"
regions = ["eu-west", "us-east", "ap-south"]   # default: every region with agents
quorum = 2                # default: strict majority of regions
all_backends = true
expect_status = [200]
expect_ips = ["203.0.113.7"]
warn_days = 30
critical_days = 7
"#;
        let specs = parse(text, "vantage.toml").unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].regions.len(), 3);
        assert_eq!(spec::timing(&specs[0]).0, std::time::Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_file_line_and_reason() {
        let text = "[[target]]\nurl = \"https://a.example/\"\n\n[[target]]\nurl = \"https://b.example/\"\nquorum = 4\nregions = [\"eu\"]\n";
        let e = parse(text, "v.toml").unwrap_err().to_string();
        assert!(e.starts_with("v.toml:4: target https://b.example/: quorum:"), "{e}");

        let e =
            parse("[[target]]\nurl = \"https://a.example/\"\ninterval = \"soon\"\n", "v.toml").unwrap_err().to_string();
        assert!(e.starts_with("v.toml:3: invalid duration"), "{e}");

        let e =
            parse("[[target]]\nurl = \"https://a.example/\"\nintervl = \"5s\"\n", "v.toml").unwrap_err().to_string();
        assert!(e.contains("unknown field `intervl`"), "{e}");

        let e = parse("[[target]]\nurl = \"https://a.example/\"\n[[target]]\nurl = \"https://A.example\"\n", "v.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn a_url_longer_than_agents_can_report_is_refused() {
        let long = format!("https://a.example/{}", "x".repeat(vantage_shared::limits::MAX_URL));
        let e = parse(&format!("\n[[target]]\nurl = \"{long}\"\n"), "v.toml").unwrap_err().to_string();
        assert!(e.starts_with("v.toml:2: target https://a.example/"), "{e}");
        assert!(e.ends_with(&format!(": url: at most 2048 bytes, got {}", long.len())), "{e}");
    }

    #[test]
    fn the_correlation_window_defaults_to_two_intervals_and_zero_turns_grouping_off() {
        let dir = std::env::temp_dir();
        let window = |text: &str| parse_config(text, "v.toml", &dir).unwrap().alerting.correlation_window;
        assert_eq!(window(""), None, "unset: two intervals of the group's first target");
        assert_eq!(window("[alerts]\ncorrelation_window = \"30s\"\n"), Some(std::time::Duration::from_secs(30)));
        assert_eq!(window("[alerts]\ncorrelation_window = \"0s\"\n"), Some(std::time::Duration::ZERO));
        let bad = parse_config("[alerts]\ncorrelation_window = \"soon\"\n", "v.toml", &dir).unwrap_err();
        assert!(bad.to_string().starts_with("v.toml:2: invalid duration"), "{bad}");
    }

    #[test]
    fn alerting_sections_load_and_their_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("vantage-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hook.secret"), "s3cret-key-0123456789\n").unwrap();
        let text = r#"
[alerts]
status_url = "https://vantage.example.net/"
region_silent_after = "2m"
channel_failing_after = "30m"
unknown_after = "90s"

[quorum]
region_forget_after = "2d"
impaired_share = 0.6
impaired_min_targets = 3

[[channel]]
name = "ops"
type = "webhook"
url = "https://hooks.example.net/x"
secret_file = "hook.secret"

[[channel]]
name = "mail"
type = "email"
smtp = "smtp.example.net:587"
from = "Vantage <v@example.net>"
to = ["oncall@example.net"]

[[route]]
channels = ["ops", "mail"]
labels = { team = "shop" }
events = ["down", "recovered"]

[[silence]]
labels = { env = "staging" }
end = "END"
comment = "never mind"

[[silence]]
target = "https://old.example.net/"
end = "2001-01-01T00:00:00Z"

[[heartbeat]]
name = "certbot"
period = "93d"
secret_file = "hook.secret"
"#;
        let end = vantage_shared::report::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(30));
        let config = parse_config(&text.replace("END", &end), "v.toml", &dir).unwrap();
        let a = &config.alerting;
        assert_eq!(a.region_silent_after, std::time::Duration::from_secs(120));
        assert_eq!(a.channel_failing_after, Some(std::time::Duration::from_secs(1800)));
        assert_eq!(a.unknown_after, std::time::Duration::from_secs(90));
        assert_eq!(config.region_forget_after, std::time::Duration::from_secs(2 * 86_400));
        let defaults = parse_config("", "v.toml", &dir).unwrap();
        assert_eq!(defaults.alerting.unknown_after, UNKNOWN_AFTER);
        assert_eq!(defaults.region_forget_after, REGION_FORGET_AFTER);
        assert_eq!(config.impaired, crate::impairment::Policy { share: 0.6, min_targets: 3 });
        assert_eq!(defaults.impaired, crate::impairment::Policy { share: 0.5, min_targets: 5 });
        assert_eq!(defaults.shard, Shard::WHOLE);
        let split = parse_config("[shard]\ncount = 3\nindex = 2\n", "v.toml", &dir).unwrap();
        assert_eq!((split.shard.count(), split.shard.index()), (3, 2));
        assert_eq!(a.channels.len(), 2);
        let kind = |n: usize| -> &dyn std::any::Any { &*a.channels[n].channel };
        let webhook = kind(0).downcast_ref::<channel::Webhook>();
        assert!(matches!(webhook, Some(channel::Webhook { secret: Some(s), .. }) if s.0 == "s3cret-key-0123456789"));
        let email = kind(1).downcast_ref::<channel::Email>();
        assert!(matches!(email, Some(e) if e.port == 587 && e.tls == channel::SmtpTls::StartTls));
        assert_eq!(a.routes[0].events.as_ref().map(|e| e.len()), Some(2));
        assert_eq!(config.silences.len(), 1, "a silence that is over is dropped");
        assert_eq!((config.silences[0].id.as_str(), config.silences[0].source.as_str()), ("config-1", "config"));
        assert_eq!(a.heartbeats[0].period, std::time::Duration::from_secs(93 * 86_400));
        assert!(a.watchdog.is_none(), "no [watchdog], no heartbeat sent");
        let watchdog = "[watchdog]\ntype = \"http\"\nurl = \"https://hc-ping.com/x\"\n";
        let w = parse_config(watchdog, "v.toml", &dir).unwrap().alerting.watchdog.expect("a watchdog");
        assert_eq!((w.target.kind(), w.period), ("http", crate::alert::watchdog::PERIOD));

        for (bad, expected) in [
            ("[[route]]\nchannels = [\"nope\"]\n", "v.toml:1: route: no channel named \"nope\""),
            ("[[channel]]\nname = \"x\"\ntype = \"slack\"\n", "v.toml:1: channel x: url: missing"),
            (
                "\n[[channel]]\nname = \"x\"\ntype = \"webhook\"\nurl = \"ftp://a/\"\n",
                "v.toml:2: channel x: url: must be http(s)",
            ),
            (
                "[[channel]]\nname = \"x\"\ntype = \"webhook\"\nurl = \"https://a/\"\n[[route]]\nchannels = [\"x\"]\nevents = [\"boom\"]\n",
                "v.toml:5: route: unknown event \"boom\"",
            ),
            ("[[silence]]\nend = \"2999-01-01T00:00:00Z\"\n", "v.toml:1: silence: target: give a target or labels"),
            ("[quorum]\nregion_forget_after = \"soon\"\n", "v.toml:2: invalid duration"),
            ("[quorum]\nimpaired_share = 50\n", "v.toml: [quorum] impaired_share: 50 is not a fraction"),
            ("[quorum]\nimpaired_share = 1.5\n", "v.toml: [quorum] impaired_share: 1.5 is not a fraction from 0"),
            ("[[target_files]]\nfiles = []\n", "v.toml:1: target_files: files: name at least one"),
            (
                "\n[[target_files]]\nfiles = [\"t/*.yaml\"]\n",
                "v.toml:2: target_files: \"t/*.yaml\": must end in .json or .toml",
            ),
            (
                "[[target_files]]\nfiles = [\"t/*.json\"]\nrefresh = \"100ms\"\n",
                "v.toml:1: target_files: refresh: at least 1s",
            ),
            ("\n[shard]\ncount = 2\nindex = 2\n", "v.toml:2: shard: index: 2 is not below the count of 2"),
            ("[shard]\ncount = 0\nindex = 0\n", "v.toml:1: shard: count: at least 1, got 0"),
            ("[shard]\ncount = 2\n", "v.toml:1: missing field `index`"),
            (
                "[[heartbeat]]\nname = \"h\"\nperiod = \"1d\"\nsecret_file = \"missing.secret\"\n",
                "v.toml:1: heartbeat h: cannot read",
            ),
            ("\n[watchdog]\ntype = \"http\"\nperiod = \"1m\"\n", "v.toml:2: watchdog: url: missing"),
        ] {
            let e = parse_config(bad, "v.toml", &dir).unwrap_err().to_string();
            assert!(e.starts_with(expected), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flap_damping_and_hold_down_have_defaults_and_checked_values() {
        use std::time::Duration;
        let dir = Path::new(".");
        let defaults = parse_config("", "v.toml", dir).unwrap().alerting.damping;
        assert_eq!((defaults.alert_after, defaults.recover_after), (Duration::ZERO, Duration::ZERO), "today's");
        assert_eq!((defaults.flap_window, defaults.flap_high, defaults.flap_low), (FLAP_WINDOW, FLAP_HIGH, FLAP_LOW));
        let text = "[alerts]\nalert_after = \"2m\"\nrecover_after = \"5m\"\nflap_window = 10\nflap_high = 40\nflap_low = 20\n\n\
                    [[target]]\nurl = \"https://a.example/\"\nalert_after = \"0s\"\nrecover_after = \"90s\"\n\
                    flap_window = 0\n\n[[target]]\nurl = \"https://b.example/\"\nflap_high = 70\nflap_low = 30\n";
        let config = parse_config(text, "v.toml", dir).unwrap();
        let d = config.alerting.damping;
        assert_eq!((d.alert_after, d.recover_after), (Duration::from_secs(120), Duration::from_secs(300)));
        assert_eq!((d.flap_window, d.flap_high, d.flap_low), (10, 40, 20));
        let t = &config.targets[0];
        assert_eq!(t.alert_after, Some(prost_types::Duration { seconds: 0, nanos: 0 }), "0s is its own, not unset");
        assert_eq!(t.recover_after, Some(prost_types::Duration { seconds: 90, nanos: 0 }));
        assert_eq!(t.flap_window, Some(0), "damping off for this one");
        let b = &config.targets[1];
        assert_eq!((b.flap_window, b.flap_high, b.flap_low), (None, Some(70), Some(30)));
        let off = parse_config("[alerts]\nflap_window = 0\n", "v.toml", dir).unwrap();
        assert_eq!(off.alerting.damping.flap_window, 0);
        for (text, expected) in [
            ("[alerts]\nflap_high = 0\n", "flap_high: 0 is not a percentage"),
            ("[alerts]\nflap_low = 60\n", "flap_low: 60 must be at least 1 and below flap_high (50)"),
            ("[alerts]\nflap_window = 500\n", "flap_window: at most 100"),
            ("[alerts]\nrecover_after = \"2d\"\n", "recover_after: at most 1 day"),
            ("[[target]]\nurl = \"https://a.example/\"\nalert_after = \"25h\"\n", "alert_after: must be at most 1 day"),
            ("[[target]]\nurl = \"https://a.example/\"\nflap_high = 70\n", "flap_high and flap_low are set together"),
            ("[[target]]\nurl = \"https://a.example/\"\nflap_high = 30\nflap_low = 30\n", "flap_low: 30 must be"),
            ("[[target]]\nurl = \"https://a.example/\"\nflap_window = 101\n", "flap_window: at most 100"),
        ] {
            let e = parse_config(text, "v.toml", dir).unwrap_err().to_string();
            assert!(e.starts_with("v.toml") && e.contains(expected), "{text}: {e}");
        }
    }
}
