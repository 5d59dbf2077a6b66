//! The API's values written out the same way by the server and the CLI: a target's status as
//! JSON (`GET /v1/status` and `status --json`), a silence and a flapping target in words (the
//! page, the table), availability as JSON and CSV (`GET /v1/uptime`, `uptime --json`) and as
//! a percentage, and hourly latency as JSON and CSV (`GET /v1/latency`).

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
        let url = csv_field(&t.url);
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

/// A value as one CSV field (RFC 4180: quoted when it holds a comma, a quote or a line break).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// µs as ms (three decimals) for JSON.
fn ms_json(us: u32) -> serde_json::Value {
    serde_json::json!(f64::from(us) / 1000.0)
}

/// One target's hourly latency as JSON (`GET /v1/latency`): per region, per hour the probes
/// that passed (`count`) and the others (`failed`), and the passing ones' total time in ms
/// (null when none passed).
pub fn latency_json(r: &crate::hub::LatencyReport) -> serde_json::Value {
    let regions: Vec<serde_json::Value> = r
        .regions
        .iter()
        .map(|(region, hours)| {
            let hours: Vec<serde_json::Value> = hours
                .iter()
                .map(|(hour, s)| {
                    let figure = |us: u32| if s.ok > 0 { ms_json(us) } else { serde_json::Value::Null };
                    serde_json::json!({
                        "hour": crate::clock::rfc3339(hour * crate::latency::HOUR_MS),
                        "count": s.ok,
                        "failed": s.failed,
                        "min_ms": figure(s.min_us),
                        "p50_ms": figure(s.p50_us),
                        "p95_ms": figure(s.p95_us),
                        "p99_ms": figure(s.p99_us),
                        "max_ms": figure(s.max_us),
                        "mean_ms": figure(s.mean_us),
                    })
                })
                .collect();
            serde_json::json!({ "region": region, "hours": hours })
        })
        .collect();
    serde_json::json!({
        "url": r.url,
        "window": r.window.name,
        "from": crate::clock::rfc3339(r.from_ms),
        "to": crate::clock::rfc3339(r.to_ms),
        "regions": regions,
    })
}

/// The CSV of `GET /v1/latency?format=csv`: one line per region and hour, oldest first within
/// each region; the figures empty when no probe passed.
pub fn latency_csv(r: &crate::hub::LatencyReport) -> String {
    use crate::latency::Ms;
    let mut out = String::from("url,region,hour,count,failed,min_ms,p50_ms,p95_ms,p99_ms,max_ms,mean_ms\r\n");
    let url = csv_field(&r.url);
    for (region, hours) in &r.regions {
        let region = csv_field(region);
        for (hour, s) in hours {
            let figures = if s.ok > 0 {
                format!(
                    "{},{},{},{},{},{}",
                    Ms(s.min_us),
                    Ms(s.p50_us),
                    Ms(s.p95_us),
                    Ms(s.p99_us),
                    Ms(s.max_us),
                    Ms(s.mean_us)
                )
            } else {
                ",,,,,".to_owned()
            };
            out.push_str(&format!(
                "{url},{region},{},{},{},{figures}\r\n",
                crate::clock::rfc3339(hour * crate::latency::HOUR_MS),
                s.ok,
                s.failed
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::{HOUR_MS, Summary};

    #[test]
    fn latency_is_one_csv_line_per_region_and_hour_and_null_figures_without_a_passing_probe() {
        let mut regions = crate::store::LatencyHours::new();
        regions.insert("eu-west".into(), vec![(494_000, Summary::of(&mut [1_500, 2_250, 90_000], 1))]);
        regions.insert("us,east".into(), vec![(494_001, Summary { failed: 4, ..Summary::default() })]);
        let report = crate::hub::LatencyReport {
            url: "https://a.test/?q=1,2".into(),
            window: crate::uptime::parse_windows(&["30d".into()]).unwrap().remove(0),
            from_ms: 0,
            to_ms: 494_002 * HOUR_MS,
            regions,
        };
        assert_eq!(
            latency_csv(&report),
            "url,region,hour,count,failed,min_ms,p50_ms,p95_ms,p99_ms,max_ms,mean_ms\r\n\
             \"https://a.test/?q=1,2\",eu-west,2026-05-10T08:00:00Z,3,1,1.500,2.250,90.000,90.000,90.000,31.250\r\n\
             \"https://a.test/?q=1,2\",\"us,east\",2026-05-10T09:00:00Z,0,4,,,,,,\r\n"
        );
        let json = latency_json(&report);
        let eu = &json["regions"][0]["hours"][0];
        assert_eq!(
            (eu["count"].as_u64(), eu["p50_ms"].as_f64(), eu["mean_ms"].as_f64()),
            (Some(3), Some(2.25), Some(31.25))
        );
        let us = &json["regions"][1]["hours"][0];
        assert_eq!((us["failed"].as_u64(), us["p95_ms"].is_null()), (Some(4), true));
        assert_eq!(json["window"], "30d");
    }
}
