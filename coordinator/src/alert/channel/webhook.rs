//! The generic webhook: the alert as JSON, POSTed with its id and a timestamp in headers, and
//! signed with HMAC-SHA256 (`X-Vantage-Signature: v1=…`) when the channel has a secret.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Channel, Http, Secret, Sending, Settings, json};
use crate::alert::Alert;
use crate::clock::rfc3339;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret: Option<Secret>,
}

/// `type = "webhook"`: `url`, and optionally `secret_file`.
pub fn build(settings: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    Ok(Arc::new(Webhook {
        url: settings.url(true)?.unwrap_or_default(),
        secret: settings.secret_file.as_deref().map(|p| Secret::read(p, dir)).transpose()?,
    }))
}

impl Channel for Webhook {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(async move {
            let body = json(&body(alert))?;
            let timestamp = (crate::clock::now_ms() / 1000).to_string();
            let mut headers =
                vec![("x-vantage-event-id", alert.id.clone()), ("x-vantage-timestamp", timestamp.clone())];
            if let Some(secret) = &self.secret {
                headers.push(("x-vantage-signature", format!("v1={}", sign(secret, &timestamp, &body))));
            }
            http.post_json(&self.url, body, &headers).await
        })
    }
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

/// The generic webhook's JSON (also PagerDuty's `custom_details`).
pub fn body(alert: &Alert) -> serde_json::Value {
    json!({
        "id": alert.id,
        "kind": alert.kind.as_str(),
        "subject": alert.subject,
        "summary": alert.summary(),
        "text": alert.text(),
        "labels": alert.labels,
        "at": rfc3339(alert.at_ms),
        "since": rfc3339(alert.since_ms),
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
        // An incident group's alert: its key, shared cause and members (absent otherwise).
        "group": alert.group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Known answer, as `printf '1700000000.{}' | openssl dgst -sha256 -hmac secret` gives it.
        let sig = sign(&Secret("secret".into()), "1700000000", b"{}");
        assert_eq!(sig, "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163");
    }
}
