//! Heartbeats: jobs (a certificate renewal, say) that must report every `period`. A heartbeat is
//! accepted only when signed (`v2=` HMAC-SHA256 of `timestamp.name.body` under its secret), fresh
//! and never seen before; `heartbeat_overdue` is raised when one is missing for a period, and
//! `heartbeat_recovered` when the next arrives.

use super::memory::{AlertMemory, HeartbeatMemory};
use crate::alert::{Alert, AlertCause, AlertKind, Heartbeat};
use crate::clock;

/// Why a heartbeat was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("no heartbeat {0} is configured")]
    Unknown(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("the timestamp is {0}s away from the coordinator's clock (at most 300s are accepted)")]
    Skewed(i64),
    #[error("the timestamp is older than the last accepted heartbeat's, or this one was accepted already: a replay")]
    Replay,
    #[error("{0}")]
    Store(String),
}

/// Most seconds a heartbeat's timestamp may be from the coordinator's clock.
const MAX_SKEW_SECONDS: i64 = 300;

/// A heartbeat whose signature is good: its timestamp (Unix seconds) and signature (hex).
pub struct Signed {
    pub timestamp: i64,
    pub tag_hex: String,
}

/// Checks a heartbeat's signature: `signature` (`v2=<hex>`) must be the HMAC-SHA256 of
/// `timestamp.name.body` under the heartbeat's secret (the name is signed, so a request for one
/// heartbeat cannot be replayed to another with the same secret).
pub fn verify(config: &Heartbeat, timestamp: &str, signature: &str, body: &[u8]) -> Result<Signed, HeartbeatError> {
    let unauthenticated = |why: &str| HeartbeatError::Unauthenticated(why.to_owned());
    let ts: i64 = timestamp.trim().parse().map_err(|_| unauthenticated("X-Vantage-Timestamp must be Unix seconds"))?;
    let tag = match signature.trim().split_once('=') {
        Some(("v2", hex)) => hex_bytes(hex),
        Some(("v1", _)) => {
            return Err(unauthenticated(
                "v1 signatures do not cover the heartbeat's name and are no longer accepted: send v2=<hex \
                 HMAC-SHA256 of timestamp.name.body> (the deploy hook of this version does)",
            ));
        }
        _ => None,
    };
    let tag =
        tag.ok_or_else(|| unauthenticated("X-Vantage-Signature must be v2=<hex HMAC-SHA256 of timestamp.name.body>"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, config.secret.0.as_bytes());
    let signed = [timestamp.trim().as_bytes(), b".", config.name.as_bytes(), b".", body].concat();
    // Constant time.
    ring::hmac::verify(&key, &signed, &tag).map_err(|_| unauthenticated("the signature does not match"))?;
    Ok(Signed { timestamp: ts, tag_hex: tag.iter().map(|b| format!("{b:02x}")).collect() })
}

/// Accepts a signed heartbeat at `now` if it is fresh and new: remembers it, and returns the
/// `heartbeat_recovered` it owes if it was overdue.
pub fn accept(
    memory: &mut AlertMemory,
    config: &Heartbeat,
    signed: Signed,
    body: &[u8],
    now: i64,
) -> Result<Vec<Alert>, HeartbeatError> {
    let skew = signed.timestamp.saturating_sub(now / 1000);
    if skew.abs() > MAX_SKEW_SECONDS {
        return Err(HeartbeatError::Skewed(skew));
    }
    let mut last = memory.heartbeats.get(&config.name).cloned().unwrap_or_default();
    // Newer than the last, or of the same second with another signature (certbot runs the hook
    // once per renewed certificate, maybe within one second).
    if signed.timestamp < last.last_timestamp
        || (signed.timestamp == last.last_timestamp && last.last_signatures.contains(&signed.tag_hex))
    {
        return Err(HeartbeatError::Replay);
    }
    let mut signatures =
        if signed.timestamp == last.last_timestamp { std::mem::take(&mut last.last_signatures) } else { Vec::new() };
    signatures.push(signed.tag_hex);
    let mut alerts = Vec::new();
    if last.alerted {
        let mut alert = heartbeat_alert(config, AlertKind::HeartbeatRecovered, now);
        let due = last.last_ms + config.period.as_millis() as i64;
        (alert.since_ms, alert.duration_ms) = (due, Some(now - due));
        alerts.push(alert);
    }
    let note: String = String::from_utf8_lossy(body).chars().take(1024).collect();
    memory.set_heartbeat(
        &config.name,
        HeartbeatMemory {
            last_ms: now,
            last_timestamp: signed.timestamp,
            last_signatures: signatures,
            alerted: false,
            note,
        },
    );
    Ok(alerts)
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || hex.len() > 128 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

fn heartbeat_alert(config: &Heartbeat, kind: AlertKind, now: i64) -> Alert {
    let mut alert = Alert::new(kind, &config.name, now, format!("vantage/heartbeat/{}", config.name));
    alert.labels = config.labels.clone();
    alert
}

/// `heartbeat_overdue` for each heartbeat whose period has passed without one.
pub fn overdue_alerts(memory: &mut AlertMemory, heartbeats: &[Heartbeat], now: i64) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for config in heartbeats {
        let Some(mut entry) = memory.heartbeats.get(&config.name).cloned() else {
            // Never heard from: the period runs from now.
            memory.set_heartbeat(&config.name, HeartbeatMemory { last_ms: now, ..HeartbeatMemory::default() });
            continue;
        };
        let due = entry.last_ms + config.period.as_millis() as i64;
        if entry.alerted || now <= due {
            continue;
        }
        entry.alerted = true;
        let mut alert = heartbeat_alert(config, AlertKind::HeartbeatOverdue, now);
        alert.since_ms = due;
        let last = if entry.last_timestamp == 0 {
            "none has arrived since it was configured".to_owned()
        } else {
            format!("the last arrived {}", clock::rfc3339(entry.last_ms))
        };
        alert.cause = Some(AlertCause {
            code: "heartbeat_overdue".into(),
            message: format!(
                "Heartbeat {} is overdue: one is expected every {}, and {last}.",
                config.name,
                clock::human_duration(config.period.as_millis() as i64)
            ),
            hint: "The job that sends it (a certificate renewal, say) has not run or failed: check its timer or cron \
                   entry and its log (certbot renew --dry-run), and that it can reach the coordinator."
                .into(),
        });
        alert.detail = entry.note.clone();
        memory.set_heartbeat(&config.name, entry);
        alerts.push(alert);
    }
    alerts
}
