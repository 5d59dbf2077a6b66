//! Display names of the API's enums, in one place: the status page, `/metrics`, `/v1/status`
//! and the CLI all write a verdict, an opinion, a certificate's health, a probe's result, a
//! failing stage or a delivery's state with these words. Enum values arrive as the `i32` proto
//! fields carry; one this build does not know reads as the unspecified value.

use vantage_proto::v1::{CertHealth, Opinion, ProbeStatus, Stage, Verdict};

use crate::alert::DeliveryState;

/// The verdicts in the order people read them (the page's counts).
pub const VERDICTS: [Verdict; 4] = [Verdict::Up, Verdict::Degraded, Verdict::Down, Verdict::Unknown];

/// `UP`, `DEGRADED`, `DOWN` or `UNKNOWN`.
pub fn verdict(v: i32) -> &'static str {
    match Verdict::try_from(v).unwrap_or(Verdict::Unspecified) {
        Verdict::Up => "UP",
        Verdict::Degraded => "DEGRADED",
        Verdict::Down => "DOWN",
        Verdict::Unknown | Verdict::Unspecified => "UNKNOWN",
    }
}

/// A region's opinion of a target: `up`, `down`, `partial` or `unknown`.
pub fn opinion(o: i32) -> &'static str {
    match Opinion::try_from(o).unwrap_or(Opinion::Unspecified) {
        Opinion::Up => "up",
        Opinion::Down => "down",
        Opinion::Partial => "partial",
        Opinion::Unknown | Opinion::Unspecified => "unknown",
    }
}

/// A certificate's health: `ok`, `warning`, `critical`, `expired` or `unknown`.
pub fn cert_health(h: i32) -> &'static str {
    match CertHealth::try_from(h).unwrap_or(CertHealth::Unspecified) {
        CertHealth::Ok => "ok",
        CertHealth::Warning => "warning",
        CertHealth::Critical => "critical",
        CertHealth::Expired => "expired",
        CertHealth::Unspecified => "unknown",
    }
}

/// One probe's result, in the words of region opinions: `up`, `partial` (some backends fail),
/// `down` or `unknown`.
pub fn probe_status(s: i32) -> &'static str {
    match ProbeStatus::try_from(s).unwrap_or(ProbeStatus::Unspecified) {
        ProbeStatus::Up => "up",
        ProbeStatus::Degraded => "partial",
        ProbeStatus::Down => "down",
        ProbeStatus::Unspecified => "unknown",
    }
}

/// The stage a probe failed at: `dns`, `connect`, `tls`, `certificate`, `http`, or `-`.
pub fn stage(s: i32) -> &'static str {
    match Stage::try_from(s).unwrap_or(Stage::Unspecified) {
        Stage::Dns => "dns",
        Stage::Connect => "connect",
        Stage::Tls => "tls",
        Stage::Certificate => "certificate",
        Stage::Http => "http",
        Stage::Unspecified => "-",
    }
}

/// A delivery's state, as `ListAlerts` and the outbox (serde) write it.
pub fn delivery_state(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
        DeliveryState::Silenced => "silenced",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_read_as_unspecified() {
        assert_eq!((verdict(99), opinion(-1), cert_health(42)), ("UNKNOWN", "unknown", "unknown"));
        assert_eq!((probe_status(7), stage(9)), ("unknown", "-"));
        assert_eq!(VERDICTS.map(|v| verdict(v as i32)), ["UP", "DEGRADED", "DOWN", "UNKNOWN"]);
    }

    #[test]
    fn delivery_states_read_as_the_outbox_stores_them() {
        use DeliveryState::*;
        for state in [Pending, Delivered, Failed, Silenced] {
            assert_eq!(serde_json::to_value(state).unwrap(), delivery_state(state), "{state:?}");
        }
    }
}
