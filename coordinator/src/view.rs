//! The API's values written out the same way by the server and the CLI: a target's status as
//! JSON (`GET /v1/status` and `status --json`) and a silence in words (the page, the table).

use vantage_proto::v1::{Silence, TargetStatus};

use crate::clock::timestamp_json as ts;
use crate::names;

/// A target's status as JSON (the `--json` output and `/v1/status`).
pub fn to_json(s: &TargetStatus) -> serde_json::Value {
    serde_json::json!({
        "url": s.url,
        "verdict": names::verdict(s.verdict),
        "cause": s.cause.as_ref().map(|c| serde_json::json!({"code": c.code, "message": c.message, "hint": c.hint})),
        "since": ts(s.since.as_ref()),
        "cert": s.cert.as_ref().map(|c| serde_json::json!({
            "days_remaining": c.days_remaining, "health": names::cert_health(c.health), "not_after": c.not_after,
        })),
        "silence": s.silence.as_ref().map(|x| serde_json::json!({
            "id": x.id, "comment": x.comment, "start": ts(x.start.as_ref()), "end": ts(x.end.as_ref()),
        })),
        "quorum": s.quorum,
        "failing_regions": s.failing_regions,
        "discounted_regions": s.discounted_regions,
        "discounted_reason": Some(&s.discounted_reason).filter(|r| !r.is_empty()),
        "regions": s.regions.iter().map(|r| serde_json::json!({
            "region": r.region,
            "opinion": names::opinion(r.opinion),
            "last_result_time": ts(r.last_result_time.as_ref()),
            "failure_code": Some(&r.failure_code).filter(|c| !c.is_empty()),
            "latency_ms": r.latency_ms,
            "agent": r.agent,
            "detail": Some(&r.detail).filter(|d| !d.is_empty()),
        })).collect::<Vec<_>>(),
    })
}

/// "s_1a2b (db migration) until 2026-…".
pub fn describe_silence(s: &Silence) -> String {
    let comment = if s.comment.is_empty() { String::new() } else { format!(" ({})", s.comment) };
    let end = ts(s.end.as_ref());
    format!("{}{comment} until {}", s.id, end.as_str().unwrap_or("?"))
}
