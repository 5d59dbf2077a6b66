//! Email over SMTP (lettre): the alert's summary as the subject and its plain-text message as
//! the body, over STARTTLS, TLS from the first byte, or (for a relay on this host) no TLS.

use std::path::Path;
use std::sync::Arc;

use super::{Channel, Http, SEND_TIMEOUT, Secret, SendError, Sending, Settings, chain};
use crate::alert::Alert;

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

/// `type = "email"`: `smtp` (host:port), `from`, `to`, and optionally `tls`, `username` with
/// `password_file`, and `ca_file`.
pub fn build(c: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    let name = &c.name;
    let smtp = c.smtp.as_deref().ok_or_else(|| format!("channel {name}: smtp: missing (host:port)"))?;
    let (host, port) =
        smtp.rsplit_once(':').ok_or_else(|| format!("channel {name}: smtp: {smtp:?} is not host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("channel {name}: smtp: bad port in {smtp:?}"))?;
    let tls = match c.tls.as_deref().unwrap_or("starttls") {
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Tls,
        "none" => SmtpTls::None,
        other => return Err(format!("channel {name}: tls: {other:?} is not starttls, tls or none")),
    };
    let from = c.from.clone().ok_or_else(|| format!("channel {name}: from: missing"))?;
    for address in std::iter::once(&from).chain(&c.to) {
        address
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| format!("channel {name}: {address:?} is not an email address: {e}"))?;
    }
    if c.to.is_empty() {
        return Err(format!("channel {name}: to: name at least one address"));
    }
    let password = c.password_file.as_deref().map(|p| Secret::read(p, dir)).transpose()?;
    if c.username.is_some() != password.is_some() {
        return Err(format!("channel {name}: username and password_file go together"));
    }
    let local = matches!(host, "localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if tls == SmtpTls::None && password.is_some() && !local {
        return Err(format!(
            "channel {name}: a password is sent only over TLS (tls = \"none\" is for a relay on this host)"
        ));
    }
    let ca_pem = match &c.ca_file {
        Some(path) => {
            let path = dir.join(path);
            let pem =
                std::fs::read(&path).map_err(|e| format!("channel {name}: cannot read {}: {e}", path.display()))?;
            Some(pem)
        }
        None => None,
    };
    Ok(Arc::new(Email {
        host: host.to_owned(),
        port,
        tls,
        username: c.username.clone(),
        password,
        from,
        to: c.to.clone(),
        ca_pem,
    }))
}

impl Channel for Email {
    fn send<'a>(&'a self, _http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(send(self, alert))
    }
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

async fn send(email: &Email, alert: &Alert) -> Result<(), SendError> {
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
