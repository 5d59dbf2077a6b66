//! `GET /target?url=…`: one target: verdict and cause, regions × backends, the certificate
//! (`certificate`), availability and the 90-day bar (`bar`), the latency chart (`latency`), the
//! last results per region,
//! incidents and alerts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use vantage_proto::v1::{HistoryEntry, Incident, ProbeResult, ProbeStatus, RegionStatus, TargetStatus};

use super::certificate;
use super::html::{MAX_DETAIL, as_of, badge, clip, escape, failing_cell, ms_of, span, when};
use crate::alert::AlertRecord;
use crate::names;
use crate::view::{describe_flapping, describe_silence};

/// Results shown per region on a target's page.
pub const RESULTS_PER_REGION: usize = 5;
/// Backend columns shown in the matrix (the rest are counted).
const MAX_BACKENDS: usize = 16;
pub const MAX_INCIDENTS: usize = 20;
pub const MAX_ALERTS: usize = 10;

fn passed(status: i32) -> bool {
    status == ProbeStatus::Up as i32
}

/// What the page draws of the target's past: the 90-day bar's days (oldest first) and each
/// region's latency buckets over the span chosen (the last 24 hours, or 30 days).
#[derive(Debug, Default)]
pub struct Charts {
    pub days: Vec<(i64, crate::uptime::Figures)>,
    pub latency: BTreeMap<String, Vec<super::latency::Bucket>>,
    pub span: super::latency::Span,
}

/// One matrix cell: how one region found one address.
fn backend_cell(result: Option<&ProbeResult>, address: &str) -> String {
    let Some(result) = result else { return "<td class=\"o-unknown\">no result</td>".to_owned() };
    match result.backends.iter().find(|b| b.address == address) {
        Some(b) if passed(b.status) => "<td class=\"o-up\">up</td>".to_owned(),
        Some(b) => {
            let code = b.failure.as_ref().map_or(String::new(), |f| format!(" <code>{}</code>", escape(&f.code)));
            let title = b.failure.as_ref().map_or(String::new(), |f| escape(&clip(&f.detail, MAX_DETAIL)));
            format!("<td class=\"o-down\" title=\"{title}\">down{code}</td>")
        }
        None => "<td class=\"meta\">not probed</td>".to_owned(),
    }
}

/// One target's page (its `#live` part): verdict and cause, regions × backends, certificate,
/// the last results per region, incidents and alerts.
pub fn target_fragment(
    s: &TargetStatus,
    latest: &[HistoryEntry],
    history: &[HistoryEntry],
    incidents: &[Incident],
    alerts: &[AlertRecord],
    charts: &Charts,
    now: i64,
) -> String {
    let mut out = String::new();
    let verdict = names::verdict(s.verdict);
    // Impaired regions are shown, not counted: the quorum is over the others.
    let counted = s.regions.len().saturating_sub(s.discounted_regions.len());
    let of = if s.discounted_regions.is_empty() { "regions" } else { "counted regions" };
    let _ = write!(
        out,
        "<p class=\"meta\"><a href=\"/\">← all targets</a> · as of {}</p><h1 class=\"url\">{}</h1>\
         <p class=\"summary\" data-verdict=\"{verdict}\">{} since {} · quorum {} of {} {of} · failing: {}</p>",
        as_of(now),
        escape(&s.url),
        badge(verdict),
        when(ms_of(s.since.as_ref()), now),
        s.quorum,
        counted,
        escape(&failing_cell(s)),
    );
    if !s.uptime.is_empty() {
        out.push_str(&super::overview::uptime_line(&s.uptime));
    }
    if !charts.days.is_empty() {
        out.push_str(&super::bar::bar(&charts.days, super::bar::Wording::Operator));
    }
    if let Some(c) = &s.cause {
        let _ = write!(
            out,
            "<div class=\"cause\"><code>{}</code>: {}<br><span class=\"meta\">Fix: {}</span></div>",
            escape(&c.code),
            escape(&c.message),
            escape(&c.hint)
        );
    }
    if !s.discounted_reason.is_empty() {
        let _ = write!(out, "<p class=\"note\" data-discounted>{}</p>", escape(&s.discounted_reason));
    }
    if let Some(silence) = &s.silence {
        let _ = write!(
            out,
            "<p><span class=\"badge silenced\">silenced</span> notifications held back by {}</p>",
            escape(&describe_silence(silence))
        );
    }
    if let Some(flapping) = &s.flapping {
        let _ = write!(
            out,
            "<p><span class=\"badge flapping\">flapping</span> {}</p>",
            escape(&describe_flapping(flapping))
        );
    }

    // Regions × backends.
    let result_of = |region: &str| latest.iter().find(|e| e.region == region).and_then(|e| e.result.as_ref());
    let mut addresses: Vec<&str> = Vec::new();
    for r in &s.regions {
        for b in result_of(&r.region).map(|r| r.backends.as_slice()).unwrap_or_default() {
            if !addresses.contains(&b.address.as_str()) {
                addresses.push(&b.address);
            }
        }
    }
    let hidden = addresses.len().saturating_sub(MAX_BACKENDS);
    addresses.truncate(MAX_BACKENDS);
    out.push_str(
        "<h2>Regions × backends</h2><div class=\"scroll\"><table class=\"matrix\"><thead><tr><th>Region</th>\
         <th>Opinion</th><th>Last result</th><th>Latency</th>",
    );
    for a in &addresses {
        let _ = write!(out, "<th><code>{}</code></th>", escape(a));
    }
    out.push_str("</tr></thead><tbody>");
    for r in &s.regions {
        let opinion = names::opinion(r.opinion);
        let result = result_of(&r.region);
        let code = region_code(r);
        let _ = write!(
            out,
            "<tr data-region=\"{region}\" data-opinion=\"{opinion}\"><th scope=\"row\">{region}</th>\
             <td class=\"o-{opinion}\" title=\"{detail}\">{opinion}{code}</td><td>{age}</td><td class=\"num\">{latency}</td>",
            region = escape(&r.region),
            detail = escape(&clip(&r.detail, MAX_DETAIL)),
            age = ms_of(r.last_result_time.as_ref())
                .map_or("never".to_owned(), |ms| format!("{} ago", span(now.saturating_sub(ms)))),
            latency = if r.last_result_time.is_some() { format!("{:.0} ms", r.latency_ms) } else { "-".to_owned() },
        );
        for a in &addresses {
            out.push_str(&backend_cell(result, a));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    if addresses.is_empty() {
        out.push_str("<p class=\"note\">No region has reached an address yet (or DNS failed everywhere).</p>");
    }
    if hidden > 0 {
        let _ = write!(out, "<p class=\"note\">{hidden} more addresses not shown.</p>");
    }

    out.push_str(&certificate::section(latest));
    out.push_str(&super::latency::chart(&charts.latency, charts.span, &super::target_href(&s.url)));

    // The last results, newest first, a few per region.
    out.push_str(
        "<h2>Last results</h2><table class=\"cards results\"><thead><tr><th>Time</th><th>Region</th>\
         <th>Result</th><th>Stage</th><th>Code</th><th>Detail</th><th>HTTP</th><th>Latency</th></tr></thead><tbody>",
    );
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    for e in history {
        let n = shown.entry(e.region.as_str()).or_default();
        if *n >= RESULTS_PER_REGION {
            continue;
        }
        *n += 1;
        let Some(r) = &e.result else { continue };
        let state = names::probe_status(r.status);
        let retried = if e.retried { " (retry)" } else { "" };
        let f = r.failure.as_ref();
        let _ = write!(
            out,
            "<tr><td data-label=\"Time\">{time}</td><td data-label=\"Region\">{region}</td>\
             <td class=\"o-{state}\" data-label=\"Result\">{state}{retried}</td><td class=\"{failed}\" data-label=\"Stage\">{stage}</td>\
             <td class=\"{failed}\" data-label=\"Code\">{code}</td>\
             <td class=\"{failed}\" data-label=\"Detail\">{detail}</td>\
             <td class=\"{answered}\" data-label=\"HTTP\">{http}</td><td class=\"num\" data-label=\"Latency\">{latency:.0} ms</td></tr>",
            time = when(ms_of(r.checked_at.as_ref()), now),
            region = escape(&e.region),
            // Cells with nothing to say are dropped from the phone's cards.
            failed = if f.is_some() { "" } else { "none" },
            answered = if r.http_status == 0 { "none" } else { "" },
            stage = f.map_or("-", |f| names::stage(f.stage)),
            code = f.map_or("-".to_owned(), |f| format!("<code>{}</code>", escape(&f.code))),
            detail = f.map_or(String::new(), |f| escape(&clip(&f.detail, MAX_DETAIL))),
            http = if r.http_status == 0 { "-".to_owned() } else { r.http_status.to_string() },
            latency = r.timings.as_ref().map_or(0.0, |t| t.total_ms),
        );
    }
    out.push_str("</tbody></table>");
    if history.is_empty() {
        out.push_str("<p class=\"note\">No results stored yet.</p>");
    }

    // Incidents, newest first, and the alerts about this target.
    out.push_str("<h2>Incidents</h2>");
    if incidents.is_empty() {
        out.push_str("<p class=\"note\">None recorded.</p>");
    } else {
        out.push_str("<ul class=\"timeline incidents\">");
        for i in incidents.iter().take(MAX_INCIDENTS) {
            let opened = ms_of(i.opened.as_ref());
            let closed = ms_of(i.closed.as_ref());
            let state = match (opened, closed) {
                (Some(o), Some(c)) => format!("{}, closed after {}", when(Some(o), now), span(c - o)),
                _ => format!("{}, <strong>open</strong>", when(opened, now)),
            };
            let cause = i.cause.as_ref().map_or(String::new(), |c| format!(" · <code>{}</code>", escape(&c.code)));
            let regions =
                if i.regions.is_empty() { String::new() } else { format!(" · {}", escape(&i.regions.join(", "))) };
            // One of an incident group: paged once with the others that share its cause.
            let group = if i.group.is_empty() {
                String::new()
            } else {
                format!(
                    " · <span class=\"group\" title=\"{}\">one of {} targets {}: {}</span>",
                    escape(&i.group),
                    i.members.len(),
                    escape(&i.shared_cause),
                    escape(&i.members.join(", "))
                )
            };
            let _ = write!(out, "<li>{} DOWN {state}{cause}{regions}{group}</li>", badge("DOWN"));
        }
        out.push_str("</ul>");
        if incidents.len() > MAX_INCIDENTS {
            out.push_str("<p class=\"note\">Older incidents are not shown (<code>ListIncidents</code> has them).</p>");
        }
    }
    out.push_str("<h2>Alerts</h2>");
    if alerts.is_empty() {
        out.push_str("<p class=\"note\">None sent.</p>");
    } else {
        out.push_str("<ul class=\"timeline alerts\">");
        for a in alerts {
            let deliveries: Vec<String> = a
                .deliveries
                .iter()
                .map(|d| {
                    let state = names::delivery_state(d.state);
                    format!("{} {state}", escape(&d.channel))
                })
                .collect();
            let deliveries = if deliveries.is_empty() { "no channel".to_owned() } else { deliveries.join(", ") };
            let _ = write!(
                out,
                "<li>{} {} <span class=\"meta\">({deliveries})</span></li>",
                when(Some(a.alert.at_ms), now),
                escape(&a.alert.summary())
            );
        }
        out.push_str("</ul>");
    }
    out
}

fn region_code(r: &RegionStatus) -> String {
    if r.failure_code.is_empty() { String::new() } else { format!(" <code>{}</code>", escape(&r.failure_code)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::support::*;
    use vantage_proto::v1::Cause;

    #[test]
    fn the_target_page_escapes_results_certificates_and_alerts() {
        let entry = hostile_entry();
        let incident = Incident {
            url: HOSTILE.into(),
            opened: Some(crate::clock::timestamp(500)),
            cause: Some(Cause { code: HOSTILE.into(), ..Default::default() }),
            regions: vec![HOSTILE.into()],
            group: HOSTILE.into(),
            members: vec![HOSTILE.into(), "https://b.example/".into()],
            shared_cause: HOSTILE.into(),
            ..Default::default()
        };
        let html = target_fragment(
            &hostile_status(),
            std::slice::from_ref(&entry),
            std::slice::from_ref(&entry),
            &[incident],
            &[],
            &Charts::default(),
            2_000,
        );
        assert_inert(&html);
        assert!(html.contains("<h2>Regions × backends</h2>"));
        assert!(html.contains("<strong>open</strong>"));
        assert!(html.contains("one of 2 targets "), "its incident group and members are shown");
    }

    #[test]
    fn an_impaired_region_is_shown_not_counted_and_the_page_says_why() {
        let region = |name: &str, opinion: vantage_proto::v1::Opinion| RegionStatus {
            region: name.into(),
            opinion: opinion as i32,
            ..Default::default()
        };
        use vantage_proto::v1::Opinion::{Down, Up};
        let status = TargetStatus {
            url: "https://a.test/".into(),
            verdict: vantage_proto::v1::Verdict::Up as i32,
            regions: vec![region("ap-south", Down), region("eu-west", Up), region("us-east", Up)],
            quorum: 2,
            discounted_regions: vec!["ap-south".into()],
            discounted_reason: "ap-south is impaired <b>".into(),
            ..Default::default()
        };
        let html = target_fragment(&status, &[], &[], &[], &[], &Charts::default(), 2_000);
        assert!(
            html.contains("quorum 2 of 2 counted regions · failing: 0/3 (ap-south impaired, not counted)"),
            "{html}"
        );
        assert!(html.contains("<p class=\"note\" data-discounted>ap-south is impaired &lt;b&gt;</p>"), "{html}");
    }
}
