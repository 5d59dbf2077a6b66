//! Where alerts go: a generic webhook (JSON signed with HMAC-SHA256), a Slack incoming webhook,
//! PagerDuty's Events API v2, and email over SMTP. Each send has a time limit and reads at most a
//! few KiB of the answer; a 2xx (or the SMTP server's acceptance) is a delivery, and anything
//! else is classified (`SendError`): worth retrying, this alert refused, or the channel broken.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use super::{Alert, Severity};
use crate::clock::rfc3339 as ms_rfc3339;

/// Longest a send may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of a receiver's answer read (for the error message).
const MAX_ANSWER: usize = 4096;
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// A secret read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plaintext, then STARTTLS (required).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only for a relay on the same host or in tests.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Webhook { url: String, secret: Option<Secret> },
    Slack { url: String },
    PagerDuty { url: String, routing_key: Secret },
    Email(Email),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    /// Extra CA certificates (PEM) to trust, for a relay with a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    pub kind: Kind,
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

/// Sends alerts; one per coordinator (it pools HTTP connections).
pub struct Sender {
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for Sender {
    fn default() -> Self {
        Sender::new()
    }
}

impl Sender {
    pub fn new() -> Sender {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
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
        Sender { http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector) }
    }

    /// Delivers `alert` to `channel`, or says why not.
    pub async fn send(&self, channel: &Channel, alert: &Alert) -> Result<(), SendError> {
        let work = async {
            match &channel.kind {
                Kind::Webhook { url, secret } => {
                    let body =
                        serde_json::to_vec(&webhook_body(alert)).map_err(|e| SendError::Rejected(e.to_string()))?;
                    let timestamp = (crate::clock::now_ms() / 1000).to_string();
                    let mut headers =
                        vec![("x-vantage-event-id", alert.id.clone()), ("x-vantage-timestamp", timestamp.clone())];
                    if let Some(secret) = secret {
                        headers.push(("x-vantage-signature", format!("v1={}", sign(secret, &timestamp, &body))));
                    }
                    self.post(url, body, &headers).await
                }
                Kind::Slack { url } => {
                    let body =
                        serde_json::to_vec(&slack_body(alert)).map_err(|e| SendError::Rejected(e.to_string()))?;
                    self.post(url, body, &[]).await
                }
                Kind::PagerDuty { url, routing_key } => {
                    let body = serde_json::to_vec(&pagerduty_body(alert, routing_key))
                        .map_err(|e| SendError::Rejected(e.to_string()))?;
                    self.post(url, body, &[]).await
                }
                Kind::Email(email) => send_email(email, alert).await,
            }
        };
        tokio::time::timeout(SEND_TIMEOUT, work)
            .await
            .map_err(|_| SendError::Transient(format!("no answer within {SEND_TIMEOUT:?}")))?
    }

    async fn post(&self, url: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Result<(), SendError> {
        let mut request = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("vantage/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Misconfigured(format!("bad request: {e}")))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| SendError::Transient(format!("cannot deliver: {}", chain(&e))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The receiver's reason, bounded.
        let mut body = response.into_body();
        let mut answer = Vec::new();
        while answer.len() < MAX_ANSWER {
            match body.frame().await {
                Some(Ok(frame)) => answer.extend(frame.into_data().unwrap_or_default()),
                _ => break,
            }
        }
        answer.truncate(MAX_ANSWER.min(200));
        let error = format!("HTTP {status}: {}", String::from_utf8_lossy(&answer).trim());
        Err(SendError::from_status(status.as_u16(), error))
    }
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

/// Hex HMAC-SHA256 of `timestamp.body`: what the `X-Vantage-Signature` header carries (`v1=…`).
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.0.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    context.sign().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The generic webhook's JSON.
pub fn webhook_body(alert: &Alert) -> serde_json::Value {
    json!({
        "id": alert.id,
        "kind": alert.kind.as_str(),
        "subject": alert.subject,
        "summary": alert.summary(),
        "text": alert.text(),
        "labels": alert.labels,
        "at": ms_rfc3339(alert.at_ms),
        "since": ms_rfc3339(alert.since_ms),
        "regions": alert.regions,
        "of_regions": alert.of_regions,
        "backend": alert.backend,
        "cause": alert.cause,
        "detail": alert.detail,
        "duration_seconds": alert.duration_ms.map(|d| d / 1000),
        "fingerprint": alert.fingerprint,
        "previous_fingerprint": alert.previous_fingerprint,
        "not_after": alert.not_after,
        "dedup_key": alert.dedup_key,
        "link": alert.link,
    })
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Slack's incoming-webhook format: a fallback `text` and Block Kit sections.
pub fn slack_body(alert: &Alert) -> serde_json::Value {
    let emoji = match alert.kind.severity() {
        Severity::Critical => ":red_circle:",
        Severity::Warning => ":large_orange_circle:",
        Severity::Info if alert.kind.resolves() => ":large_green_circle:",
        Severity::Info => ":information_source:",
    };
    let mut lines = vec![format!("{emoji} *{}*", slack_escape(&alert.summary()))];
    for line in alert.text().lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            lines.push(format!("*{}:* {}", slack_escape(name), slack_escape(value.trim())));
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

/// PagerDuty Events API v2: a trigger, or a resolve of the same `dedup_key`.
pub fn pagerduty_body(alert: &Alert, routing_key: &Secret) -> serde_json::Value {
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
            "timestamp": ms_rfc3339(alert.at_ms),
            "component": alert.subject,
            "class": alert.cause.as_ref().map_or(alert.kind.as_str(), |c| c.code.as_str()),
            "custom_details": webhook_body(alert),
        },
    });
    if !alert.link.is_empty() {
        body["client_url"] = alert.link.clone().into();
        body["links"] = json!([{ "href": alert.link, "text": "Vantage status" }]);
    }
    body
}

async fn send_email(email: &Email, alert: &Alert) -> Result<(), SendError> {
    send_email_inner(email, alert).await
}

/// What an SMTP error means: authentication or a refused address is the channel's setup (every
/// message would fail); a message too large is this alert; any other permanent refusal is this
/// alert too; the rest (connection, TLS, 4xx) is worth retrying.
fn smtp_error(e: &lettre::transport::smtp::Error) -> SendError {
    let text = format!("SMTP: {}", chain(e));
    let code = e.status().map(|c| c.to_string());
    match code.as_deref() {
        Some("530" | "534" | "535" | "538" | "550" | "551" | "553") => SendError::Misconfigured(text),
        _ if e.is_permanent() => SendError::Rejected(text),
        _ => SendError::Transient(text),
    }
}

async fn send_email_inner(email: &Email, alert: &Alert) -> Result<(), SendError> {
    // The addresses, the CA and TLS come from the channel's configuration.
    let bad = SendError::Misconfigured;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let mut message = Message::builder()
        .from(email.from.parse().map_err(|e| bad(format!("from {:?}: {e}", email.from)))?)
        .subject(alert.summary())
        .message_id(Some(format!("<{}@vantage>", alert.id)));
    for to in &email.to {
        message = message.to(to.parse().map_err(|e| bad(format!("to {to:?}: {e}")))?);
    }
    let message =
        message.body(alert.text()).map_err(|e| SendError::Rejected(format!("cannot build the message: {e}")))?;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let tls = match email.tls {
        SmtpTls::None => Tls::None,
        mode => {
            let mut parameters = TlsParameters::builder(email.host.clone());
            if let Some(pem) = &email.ca_pem {
                let ca = Certificate::from_pem(pem).map_err(|e| bad(format!("ca_file: {e}")))?;
                parameters = parameters.add_root_certificate(ca);
            }
            let parameters = parameters.build_rustls().map_err(|e| bad(format!("TLS: {e}")))?;
            if mode == SmtpTls::StartTls { Tls::Required(parameters) } else { Tls::Wrapper(parameters) }
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.host)
        .port(email.port)
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT));
    if let (Some(user), Some(password)) = (&email.username, &email.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
    }
    builder.build().send(message).await.map(|_| ()).map_err(|e| smtp_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertKind;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Known answer, as `printf '1700000000.{}' | openssl dgst -sha256 -hmac secret` gives it.
        let sig = sign(&Secret("secret".into()), "1700000000", b"{}");
        assert_eq!(sig, "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163");
    }

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

    #[test]
    fn pagerduty_triggers_and_resolves_one_dedup_key() {
        let key = Secret("R0UTING".into());
        let down = Alert::new(AlertKind::Down, "https://a.example/", 0, "vantage/target/https://a.example/".into());
        let up = Alert::new(AlertKind::Recovered, "https://a.example/", 1, "vantage/target/https://a.example/".into());
        let (t, r) = (pagerduty_body(&down, &key), pagerduty_body(&up, &key));
        assert_eq!((t["event_action"].as_str(), r["event_action"].as_str()), (Some("trigger"), Some("resolve")));
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        assert_eq!(t["payload"]["severity"], "critical");
        assert!(format!("{key:?}") == "Secret(…)");
    }
}
