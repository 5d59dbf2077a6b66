//! Where alerts go. A channel kind (a generic webhook, Slack, PagerDuty, email, Twilio SMS,
//! Opsgenie, Microsoft Teams, Discord, Telegram, ntfy) is one file in
//! `channel/` with a type implementing [`Channel`] and a `build` function that makes it from its
//! `[[channel]]` table. Each send has a time limit and reads at most a few KiB of the answer; a
//! 2xx (or the SMTP server's acceptance) is a delivery, and anything else is classified
//! (`SendError`): worth retrying, this alert refused, or the channel broken.
//!
//! Adding a channel kind: write `channel/<kind>.rs` (the type, its `Channel::send`, its `build`,
//! its tests), declare it below with `mod <kind>;`, and add one line to [`KINDS`] naming its
//! `type` in the config file. Keys of the `[[channel]]` table that no kind had before become
//! fields of [`Settings`], the one table every kind reads from (so an unknown key is still
//! refused with the list of known ones). Then document it in the README's alerting section,
//! with a `[[channel]]` of its kind in the channel example (a test loads that example and wants
//! every kind in it).
//!
//! A receiver that forgets an alert nobody re-sends (Alertmanager) says so with
//! [`Channel::resend_every`]: the dispatcher then re-sends it the alerts still firing for it.

mod alertmanager;
mod discord;
mod email;
mod ntfy;
mod opsgenie;
mod pagerduty;
mod slack;
mod teams;
mod telegram;
mod twilio;
mod webhook;

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;

pub use alertmanager::{Alertmanager, Endpoint, EndpointKeys, VALID_FOR, label_name};
pub use discord::Discord;
pub use email::{Email, SmtpTls};
pub use ntfy::{Ntfy, NtfyAuth};
pub use opsgenie::{OPSGENIE_URL, Opsgenie};
pub use pagerduty::{PAGERDUTY_URL, PagerDuty};
pub use slack::Slack;
pub use teams::Teams;
pub use telegram::{ChatId, TELEGRAM_URL, Telegram};
pub use twilio::{TWILIO_URL, Twilio};
pub use webhook::{Webhook, sign};

use super::Alert;

/// Longest a send may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of a receiver's answer read (for the error message).
const MAX_ANSWER: usize = 4096;

/// Builds a channel of one kind from its `[[channel]]` table; secret files are read relative to
/// `dir`, the config file's directory. An error names the channel and the key at fault.
pub type Build = fn(&Settings, &Path) -> Result<Arc<dyn Channel>, String>;

/// Every channel kind, by its `type` in the config file.
pub const KINDS: [(&str, Build); 11] = [
    ("webhook", webhook::build),
    ("slack", slack::build),
    ("pagerduty", pagerduty::build),
    ("email", email::build),
    ("alertmanager", alertmanager::build),
    ("discord", discord::build),
    ("ntfy", ntfy::build),
    ("opsgenie", opsgenie::build),
    ("teams", teams::build),
    ("telegram", telegram::build),
    ("twilio", twilio::build),
];

/// The `type`s of `KINDS`, as serde lists them in an error.
const TYPES: [&str; KINDS.len()] = {
    let mut types = [""; KINDS.len()];
    let mut i = 0;
    while i < KINDS.len() {
        types[i] = KINDS[i].0;
        i += 1;
    }
    types
};

/// The future a channel's `send` returns.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;

/// A kind of alert receiver: the one thing it does is deliver an alert, or say why it did not.
/// (`Any` lets tests look at what the config built.)
pub trait Channel: Any + Debug + Send + Sync {
    /// Delivers `alert`; `http` is the coordinator's pooled client for channels that POST. The
    /// caller bounds the time (`SEND_TIMEOUT`).
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a>;

    /// How often the receiver wants the alerts still firing for it sent again (`None`: never;
    /// it keeps what it heard until the resolve).
    fn resend_every(&self) -> Option<Duration> {
        None
    }

    /// Sends `firing`, the alerts still firing for this channel, again (for a channel with
    /// `resend_every`; the caller bounds the time).
    fn resend<'a>(&'a self, _http: &'a Http, _firing: &'a [Alert]) -> Sending<'a> {
        Box::pin(async { Ok(()) })
    }
}

/// A configured channel: the name routes and deliveries use, and what sends to it.
#[derive(Debug, Clone)]
pub struct Named {
    pub name: String,
    pub channel: Arc<dyn Channel>,
}

impl Named {
    /// Delivers `alert` within `SEND_TIMEOUT`, or says why not.
    pub async fn send(&self, http: &Http, alert: &Alert) -> Result<(), SendError> {
        tokio::time::timeout(SEND_TIMEOUT, self.channel.send(http, alert))
            .await
            .map_err(|_| SendError::Transient(format!("no answer within {SEND_TIMEOUT:?}")))?
    }
}

/// A `[[channel]]` table of the config file: its name, its `type`, and the keys of every kind
/// (each kind reads its own and ignores the rest).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub name: String,
    /// An index into `KINDS`.
    #[serde(rename = "type", deserialize_with = "kind")]
    pub kind: usize,
    pub url: Option<String>,
    /// Webhook: the HMAC-SHA256 key.
    pub secret_file: Option<PathBuf>,
    /// PagerDuty: the integration's routing key.
    pub routing_key_file: Option<PathBuf>,
    /// Email: `host:port`.
    pub smtp: Option<String>,
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Email, Alertmanager: extra CA certificates (PEM) to trust for the server.
    pub ca_file: Option<PathBuf>,
    /// Alertmanager, ntfy: a bearer token.
    pub token_file: Option<PathBuf>,
    /// Alertmanager: how often firing alerts are sent again.
    pub resend_delay: Option<String>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Twilio: the account (`AC…`) and its auth token.
    pub account_sid: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    /// Opsgenie: the API integration's key.
    pub api_key_file: Option<PathBuf>,
    /// Telegram: the bot's token, and the chat it writes to (a number, or `@channelname`).
    pub bot_token_file: Option<PathBuf>,
    pub chat_id: Option<ChatId>,
    /// ntfy: the topic `url` is the server of (without it, `url` is the topic's own URL); a
    /// bearer token in `token_file`, or `username` with `password_file`.
    pub topic: Option<String>,
    /// Teams, Discord: `url` from a file, as the webhook's URL is its credential.
    pub url_file: Option<PathBuf>,
}

impl Settings {
    /// The channel these settings describe.
    pub fn build(&self, dir: &Path) -> Result<Named, String> {
        crate::spec::check_name("channel", &self.name).map_err(|e| e.to_string())?;
        let channel = (KINDS[self.kind].1)(self, dir)?;
        Ok(Named { name: self.name.clone(), channel })
    }

    /// `url`, checked to be http(s); an error when `required` and absent.
    pub fn url(&self, required: bool) -> Result<Option<String>, String> {
        let name = &self.name;
        match &self.url {
            Some(u) => {
                let parsed = url::Url::parse(u).map_err(|e| format!("channel {name}: url: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("channel {name}: url: must be http(s)"));
                }
                Ok(Some(u.clone()))
            }
            None if required => Err(format!("channel {name}: url: missing")),
            None => Ok(None),
        }
    }

    /// `url` (or `default`) for a kind that sends a credential with each request: https, or
    /// http only to this host (a relay or a test), so the credential never crosses a network
    /// in the clear.
    pub fn credential_url(&self, default: &str) -> Result<String, String> {
        let url = self.url(false)?.unwrap_or_else(|| default.to_owned());
        only_tls(&self.name, "url", &url)?;
        Ok(url.trim_end_matches('/').to_owned())
    }

    /// A webhook URL that is itself the credential: from `url_file` (read relative to `dir`) or
    /// `url`, https or http to this host only; never shown in an error.
    pub fn secret_url(&self, dir: &Path) -> Result<Secret, String> {
        let name = &self.name;
        let (key, url) = match (&self.url, &self.url_file) {
            (Some(_), Some(_)) => return Err(format!("channel {name}: give url or url_file, not both")),
            (Some(url), None) => ("url", Secret(url.clone())),
            (None, Some(path)) => ("url_file", Secret::read(path, dir).map_err(|e| format!("channel {name}: {e}"))?),
            (None, None) => return Err(format!("channel {name}: url: missing (or url_file)")),
        };
        // The parser's message names the fault, not the URL.
        url::Url::parse(&url.0).map_err(|e| format!("channel {name}: {key}: not a URL: {e}"))?;
        only_tls(name, key, &url.0)?;
        Ok(url)
    }
}

/// Refuses `url` unless it is https, or http to a loopback host.
fn only_tls(name: &str, key: &str, url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("channel {name}: {key}: {e}"))?;
    let local = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        "http" => {
            Err(format!("channel {name}: {key}: must be https (http only to this host): it carries a credential"))
        }
        _ => Err(format!("channel {name}: {key}: must be http(s)")),
    }
}

/// `Authorization: Basic …` for `user` and `password`.
pub fn basic_auth(user: &str, password: &Secret) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.0)))
}

/// `text` with `\`, `[` and `]` escaped, for Markdown that target-provided text (a certificate's
/// subject, a server's answer) reaches (Teams' Adaptive Cards, Discord): it cannot make a masked
/// link (`[Renew here](https://…)`) that points elsewhere than it says.
pub fn no_links(text: &str) -> String {
    text.replace('\\', "\\\\").replace('[', "\\[").replace(']', "\\]")
}

/// `text` cut to at most `max` characters (never inside one), ending in `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `type = "…"`, read as serde reads an enum of unit variants (so a wrong type is refused with
/// the same words and place), into an index of `KINDS`.
fn kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct Kind;
    impl<'de> serde::de::Visitor<'de> for Kind {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a channel type")
        }
        fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<usize, A::Error> {
            use serde::de::{Error, VariantAccess};
            let (name, variant): (String, _) = data.variant()?;
            variant.unit_variant()?;
            TYPES.iter().position(|t| *t == name).ok_or_else(|| A::Error::unknown_variant(&name, &TYPES))
        }
    }
    d.deserialize_enum("ChannelType", &TYPES, Kind)
}

/// A secret read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Reads the secret file at `path` (relative to `dir`; surrounding whitespace dropped),
    /// warning when others may read it.
    pub fn read(path: &Path, dir: &Path) -> Result<Secret, String> {
        let path = dir.join(path);
        vantage_shared::identity::warn_if_loose(&path);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(Secret(text.to_owned()))
    }
}

/// Why a delivery failed, classified by what it says about the alert and the channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: the receiver or the network may recover (5xx, 408, 425, 429, timeouts,
    /// connection errors, an SMTP server's temporary refusal).
    #[error("{0}")]
    Transient(String),
    /// The receiver refused this alert for good (400, 413, 422, a message that cannot be built):
    /// retrying would not help, and other alerts may still go through.
    #[error("{0} (this alert is refused: not retried)")]
    Rejected(String),
    /// The channel itself is misconfigured (401, 403, 404, and the other 3xx/4xx: a wrong URL,
    /// key or token; SMTP authentication or address refused): every alert to it fails until
    /// someone fixes it, so it is retried like a transient error, and said loudly.
    #[error("{0} (the channel is misconfigured: check its URL and credentials; retried)")]
    Misconfigured(String),
}

impl SendError {
    /// What an HTTP receiver's non-2xx `status` means.
    pub fn from_status(status: u16, error: String) -> SendError {
        match status {
            400 | 413 | 422 => SendError::Rejected(error),
            408 | 425 | 429 | 500.. => SendError::Transient(error),
            // 401, 403, 404 above all; a redirect or any other refusal is a wrong URL or
            // credential too, and says nothing about this one alert.
            _ => SendError::Misconfigured(error),
        }
    }

    pub fn is_misconfigured(&self) -> bool {
        matches!(self, SendError::Misconfigured(_))
    }
}

/// The HTTP client the channels that POST share; one per coordinator (it pools connections).
pub struct Http {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

impl Http {
    pub fn new() -> Http {
        Http::with_roots(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
    }

    /// A client that also trusts the CA certificates in `pem` (a receiver with a private CA).
    pub fn with_ca(pem: &[u8]) -> Result<Http, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not PEM certificates: {e}"))?;
            roots.add(cert).map_err(|e| format!("not a CA certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("no certificate in it".to_owned());
        }
        Ok(Http::with_roots(roots))
    }

    fn with_roots(roots: rustls::RootCertStore) -> Http {
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .unwrap_or_else(|_| unreachable_config());
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(SEND_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Http { client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector) }
    }

    /// POSTs `body` as JSON to `url` with `headers`: a 2xx is a delivery, anything else an error
    /// carrying the start of the receiver's answer.
    pub async fn post_json(&self, url: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Result<(), SendError> {
        self.post(url, "application/json", body, headers, false).await.map(drop)
    }

    /// POSTs `body` of `content_type` to `url` with `headers`: a 2xx is a delivery, anything
    /// else an error carrying the start of the receiver's answer. With `read_answer`, a 2xx's
    /// answer is read too (at most `MAX_ANSWER` bytes) and returned, for kinds whose receiver
    /// says more than its status (Telegram's `{"ok":true}`).
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
        read_answer: bool,
    ) -> Result<Vec<u8>, SendError> {
        self.request(hyper::Method::POST, url, Some(content_type), body, headers, read_answer).await
    }

    /// GETs `url` with `headers`: a 2xx is a success, anything else an error as for `post`.
    pub async fn get(&self, url: &str, headers: &[(&str, String)]) -> Result<(), SendError> {
        self.request(hyper::Method::GET, url, None, Vec::new(), headers, false).await.map(drop)
    }

    async fn request(
        &self,
        method: hyper::Method,
        url: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, String)],
        read_answer: bool,
    ) -> Result<Vec<u8>, SendError> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header(hyper::header::USER_AGENT, concat!("vantage/", env!("CARGO_PKG_VERSION")));
        if let Some(content_type) = content_type {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        // The error names the fault, never a header's value or the URL (either may be a secret).
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Misconfigured(format!("bad request: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| SendError::Transient(format!("cannot deliver: {}", chain(&e))))?;
        let status = response.status();
        if status.is_success() && !read_answer {
            return Ok(Vec::new());
        }
        // The receiver's answer (or reason), bounded.
        let mut body = response.into_body();
        let mut answer = Vec::new();
        while answer.len() < MAX_ANSWER {
            match body.frame().await {
                Some(Ok(frame)) => answer.extend(frame.into_data().unwrap_or_default()),
                _ => break,
            }
        }
        answer.truncate(MAX_ANSWER);
        if status.is_success() {
            return Ok(answer);
        }
        answer.truncate(200);
        let error = format!("HTTP {status}: {}", String::from_utf8_lossy(&answer).trim());
        Err(SendError::from_status(status.as_u16(), error))
    }
}

/// A JSON body, or the alert refused when it cannot be written.
fn json(value: &serde_json::Value) -> Result<Vec<u8>, SendError> {
    serde_json::to_vec(value).map_err(|e| SendError::Rejected(e.to_string()))
}

fn unreachable_config() -> rustls::ClientConfig {
    // ring supports the default versions; this is not reached.
    rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
}

/// An error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_answers_are_classified_by_what_they_say_about_the_alert_and_the_channel() {
        let class = |status: u16| match SendError::from_status(status, String::new()) {
            SendError::Transient(_) => "transient",
            SendError::Rejected(_) => "rejected",
            SendError::Misconfigured(_) => "misconfigured",
        };
        for (status, expected) in [
            (400, "rejected"),
            (413, "rejected"),
            (422, "rejected"),
            (401, "misconfigured"),
            (403, "misconfigured"),
            (404, "misconfigured"),
            (410, "misconfigured"),
            (302, "misconfigured"),
            (408, "transient"),
            (429, "transient"),
            (500, "transient"),
            (503, "transient"),
        ] {
            assert_eq!(class(status), expected, "HTTP {status}");
        }
        assert!(SendError::from_status(401, "HTTP 401".into()).is_misconfigured());
    }

    /// The README's `[[channel]]` example (the TOML block after "**Channels**"), loaded as the
    /// coordinator loads its config, with stand-ins for the secret files it names: it must stay
    /// valid and show every kind.
    #[test]
    fn the_readmes_channel_examples_load_and_show_every_kind() {
        let readme = include_str!("../../../README.md");
        let section = readme.split("**Channels** (`[[channel]]`").nth(1).expect("the README's channel list");
        let block = section.split("```toml\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a TOML block");
        let dir = std::env::temp_dir().join(format!("vantage-readme-channels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for line in block.lines() {
            let Some((key, value)) = line.split('#').next().and_then(|l| l.split_once('=')) else { continue };
            let (key, file) = (key.trim(), value.trim().trim_matches('"'));
            let stand_in = match key {
                "ca_file" => rcgen::generate_simple_self_signed(vec!["ca.example.net".into()]).unwrap().cert.pem(),
                "url_file" => "https://hooks.example.net/x".to_owned(),
                _ if key.ends_with("_file") => "123456:ABC-DEF_0123".to_owned(),
                _ => continue,
            };
            std::fs::write(dir.join(file), stand_in).unwrap();
        }
        let config = crate::config::parse_config(block, "README.md", &dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.alerting.channels.len(), block.matches("[[channel]]").count());
        for kind in TYPES {
            assert!(block.contains(&format!("type = \"{kind}\"")), "the README shows no {kind} channel");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_kind_has_its_own_type_name() {
        let mut types = TYPES.to_vec();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), KINDS.len());
        assert_eq!(
            TYPES,
            [
                "webhook",
                "slack",
                "pagerduty",
                "email",
                "alertmanager",
                "discord",
                "ntfy",
                "opsgenie",
                "teams",
                "telegram",
                "twilio"
            ]
        );
    }
}
