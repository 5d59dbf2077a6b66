//! The API's values written out the same way by the server and the CLI: a target's status as
//! JSON (`GET /v1/status` and `status --json`), a silence and a flapping target in words (the
//! page, the table), and availability as JSON and CSV (`GET /v1/uptime`, `uptime --json`) and as
//! a percentage.

use vantage_proto::v1::{Availability, Silence, TargetStatus, TargetUptime};

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
        "flapping": s.flapping.as_ref().map(|f| serde_json::json!({
            "since": ts(f.since.as_ref()), "rate_percent": f.rate_percent, "causes": f.causes,
        })),
        "flap_rate_percent": s.flap_rate_percent,
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
        "uptime": s.uptime.iter().map(availability_json).collect::<Vec<_>>(),
    })
}

/// One window's availability as JSON (`percent` is null when nothing was judged).
pub fn availability_json(a: &Availability) -> serde_json::Value {
    serde_json::json!({
        "window": a.window,
        "from": ts(a.from.as_ref()),
        "to": ts(a.to.as_ref()),
        "percent": a.percent,
        "up_seconds": a.up_seconds,
        "degraded_seconds": a.degraded_seconds,
        "down_seconds": a.down_seconds,
        "unknown_seconds": a.unknown_seconds,
        "incidents": a.incidents,
        "worst": (a.worst != 0).then(|| names::verdict(a.worst)),
    })
}

/// A target's availability as JSON, each region's beside it.
pub fn uptime_json(t: &TargetUptime) -> serde_json::Value {
    serde_json::json!({
        "url": t.url,
        "windows": t.windows.iter().map(availability_json).collect::<Vec<_>>(),
        "regions": t.regions.iter().map(|r| serde_json::json!({
            "region": r.region,
            "windows": r.windows.iter().map(availability_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// "99.931%", or "-" when nothing was judged. Never rounded up to 100% while there was down time.
pub fn percent(a: &Availability) -> String {
    match a.percent {
        None => "-".to_owned(),
        Some(p) if p < 100.0 => format!("{:.3}%", (p * 1000.0).floor() / 1000.0),
        Some(_) => "100%".to_owned(),
    }
}

/// The CSV of `GET /v1/uptime?format=csv`: one line per target and window (the targets' own
/// figures), for SLA reports. RFC 4180: a URL holding a comma or a quote is quoted.
pub fn uptime_csv(targets: &[TargetUptime]) -> String {
    let mut out = String::from(
        "url,window,from,to,availability_percent,judged_seconds,up_seconds,degraded_seconds,down_seconds,unknown_seconds,incidents,worst\r\n",
    );
    for t in targets {
        let url = if t.url.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", t.url.replace('"', "\"\""))
        } else {
            t.url.clone()
        };
        for a in &t.windows {
            let judged = a.up_seconds + a.degraded_seconds + a.down_seconds;
            let stamp = |t: Option<&prost_types::Timestamp>| ts(t).as_str().unwrap_or_default().to_owned();
            out.push_str(&format!(
                "{url},{},{},{},{},{judged:.3},{:.3},{:.3},{:.3},{:.3},{},{}\r\n",
                a.window,
                stamp(a.from.as_ref()),
                stamp(a.to.as_ref()),
                a.percent.map(|p| format!("{p:.4}")).unwrap_or_default(),
                a.up_seconds,
                a.degraded_seconds,
                a.down_seconds,
                a.unknown_seconds,
                a.incidents,
                if a.worst == 0 { "" } else { names::verdict(a.worst) },
            ));
        }
    }
    out
}

/// A flapping target in words: since when, its rate, the causes seen, what is held back.
pub fn describe_flapping(f: &vantage_proto::v1::Flapping) -> String {
    let causes = if f.causes.is_empty() { String::new() } else { format!(", causes seen: {}", f.causes.join(", ")) };
    format!(
        "since {} ({}% of its probe intervals changed verdict{causes}): down/recovered notifications held back",
        ts(f.since.as_ref()).as_str().unwrap_or("?"),
        f.rate_percent
    )
}

/// "s_1a2b (db migration) until 2026-…".
pub fn describe_silence(s: &Silence) -> String {
    let comment = if s.comment.is_empty() { String::new() } else { format!(" ({})", s.comment) };
    let end = ts(s.end.as_ref());
    format!("{}{comment} until {}", s.id, end.as_str().unwrap_or("?"))
}
