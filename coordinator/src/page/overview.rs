//! `GET /`: the consolidated table of targets, a page at a time (problems first), with the
//! verdict counts and the silences in force.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use vantage_proto::v1::TargetStatus;

use super::html::{as_of, badge, cert_cell, escape, failing_cell};
use super::target_href;
use crate::names;
use crate::view::{describe_silence, percent};

/// Rows of the table per page: a coordinator may hold 100,000 targets.
pub const PAGE_SIZE: usize = 200;

fn latency(s: &TargetStatus) -> String {
    s.regions
        .iter()
        .filter(|r| r.last_result_time.is_some())
        .map(|r| r.latency_ms)
        .fold(None, |max: Option<f64>, l| Some(max.map_or(l, |m| m.max(l))))
        .map_or("-".to_owned(), |l| format!("{l:.0} ms"))
}

/// The 30-day availability cell; its title holds every window's figure.
fn uptime_cell(s: &TargetStatus) -> String {
    let Some(month) = s.uptime.iter().find(|a| a.window == "30d") else { return "-".to_owned() };
    let title: Vec<String> = s.uptime.iter().map(|a| format!("{} {}", a.window, percent(a))).collect();
    format!("<span title=\"{}\">{}</span>", escape(&title.join(" · ")), escape(&percent(month)))
}

/// "Availability: 24h 100% · 7d 99.931% · …" with each window's down time and incidents, for the
/// target's page and a public status page.
pub fn uptime_line(uptime: &[vantage_proto::v1::Availability]) -> String {
    let parts: Vec<String> = uptime
        .iter()
        .map(|a| {
            let down = if a.down_seconds > 0.0 {
                format!(
                    " ({} down, {} incident{})",
                    crate::clock::human_duration((a.down_seconds * 1000.0) as i64),
                    a.incidents,
                    if a.incidents == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            };
            format!(
                "<span data-window=\"{}\">{} <b>{}</b>{}</span>",
                escape(&a.window),
                escape(&a.window),
                escape(&percent(a)),
                escape(&down)
            )
        })
        .collect();
    format!("<p class=\"uptime\">Availability: {}</p>", parts.join(" · "))
}

/// The table of `statuses` (page `page` of `total` targets), the verdict counts and the silences.
pub fn table_fragment(
    statuses: &[TargetStatus],
    total: usize,
    counts: &BTreeMap<&'static str, usize>,
    page: usize,
    now: i64,
) -> String {
    let mut out = String::new();
    out.push_str("<h1>Targets</h1><p class=\"counts\">");
    // Each count inside its own badge ("DOWN 1"), so no number sits between two verdicts.
    for verdict in names::VERDICTS.map(|v| names::verdict(v as i32)) {
        let n = counts.get(verdict).copied().unwrap_or(0);
        let class = if n == 0 { "zero" } else { verdict };
        let _ = write!(out, "<span class=\"badge v-{class}\" data-count=\"{verdict}\">{verdict} {n}</span>");
    }
    let _ = write!(out, "</p><p class=\"meta\">as of {}</p>", as_of(now));
    if total == 0 {
        out.push_str(
            "<p>No targets yet: add some with <code>vantage-coordinator targets add</code> or the config file.</p>",
        );
        return out;
    }
    out.push_str(
        "<table class=\"cards targets\"><thead><tr><th>Target</th><th>Verdict</th><th>Failing regions</th>\
         <th>Cause</th><th>Certificate</th><th>Latency</th><th>Uptime 30 d</th></tr></thead><tbody>",
    );
    for s in statuses {
        let verdict = names::verdict(s.verdict);
        let silenced = if s.silence.is_some() { " <span class=\"badge silenced\">silenced</span>" } else { "" };
        let flapping = if s.flapping.is_some() { " <span class=\"badge flapping\">flapping</span>" } else { "" };
        let cause = s
            .cause
            .as_ref()
            .map_or("-".to_owned(), |c| format!("<code title=\"{}\">{}</code>", escape(&c.message), escape(&c.code)));
        let cert = cert_cell(s);
        let _ = write!(
            out,
            "<tr data-url=\"{url}\" data-verdict=\"{verdict}\"><td class=\"url\" data-label=\"Target\">\
             <a href=\"{href}\">{url}</a>{silenced}{flapping}</td><td class=\"verdict\" data-label=\"Verdict\">{badge}</td>\
             <td class=\"failing\" data-label=\"Failing regions\">{failing}</td><td data-label=\"Cause\">{cause}</td>\
             {cert}<td class=\"num\" data-label=\"Latency\">{latency}</td>\
             <td class=\"num uptime\" data-label=\"Uptime 30 d\">{uptime}</td></tr>",
            url = escape(&s.url),
            href = escape(&target_href(&s.url)),
            badge = badge(verdict),
            failing = escape(&failing_cell(s)),
            latency = latency(s),
            uptime = uptime_cell(s),
        );
    }
    out.push_str("</tbody></table>");
    let pages = total.div_ceil(PAGE_SIZE);
    let first = (page - 1).saturating_mul(PAGE_SIZE);
    if statuses.is_empty() {
        let _ = write!(out, "<p class=\"note\">Page {page} is past the last ({pages}).</p>");
    } else if pages > 1 {
        let _ = write!(
            out,
            "<p class=\"note\">Targets {}–{} of {total}, problems first.</p>",
            first + 1,
            first + statuses.len()
        );
    }
    if pages > 1 {
        out.push_str("<nav class=\"pages\">");
        if page > 1 {
            let _ = write!(out, "<a href=\"/?page={}\">← previous</a>", (page - 1).min(pages));
        }
        if page < pages {
            let _ = write!(out, "<a href=\"/?page={}\">next →</a>", page + 1);
        }
        out.push_str("</nav>");
    }
    let silenced: Vec<&TargetStatus> = statuses.iter().filter(|s| s.silence.is_some()).collect();
    if !silenced.is_empty() {
        out.push_str("<h2>Silences</h2><ul class=\"timeline\">");
        for s in silenced {
            let silence = s.silence.as_ref().map(describe_silence).unwrap_or_default();
            let _ = write!(
                out,
                "<li><span class=\"url\">{}</span>: notifications held back by {}</li>",
                escape(&s.url),
                escape(&silence)
            );
        }
        out.push_str("</ul>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::html::document;
    use crate::page::support::*;

    #[test]
    fn the_table_escapes_what_targets_and_results_carry() {
        let mut status = hostile_status();
        status.silence =
            Some(vantage_proto::v1::Silence { id: HOSTILE.into(), comment: HOSTILE.into(), ..Default::default() });
        let counts = BTreeMap::from([("DOWN", 1)]);
        let html = table_fragment(&[status.clone()], 1, &counts, 1, 2_000);
        assert_inert(&html);
        // The link carries the URL percent-encoded.
        assert!(html.contains("href=\"/target?url=https%3A%2F%2Fevil.test%2F%3Fq%3D%3Cscript%3E"), "{html}");
        assert!(html.contains("data-verdict=\"DOWN\""));
        let page = document(&status.url, &target_href(&status.url), &html);
        assert_eq!(page.matches("<script>").count(), 1, "only the page's own script");
    }

    #[test]
    fn counts_sit_inside_their_badges_and_the_time_has_one_zone_marker() {
        let counts = BTreeMap::from([("DEGRADED", 2), ("DOWN", 1)]);
        let html = table_fragment(&[], 0, &counts, 1, 1_764_115_200_000);
        assert!(html.contains("<span class=\"badge v-DEGRADED\" data-count=\"DEGRADED\">DEGRADED 2</span>"), "{html}");
        assert!(html.contains(">DOWN 1</span>") && html.contains(">UP 0</span>"), "{html}");
        assert!(html.contains("class=\"badge v-zero\" data-count=\"UP\""), "a zero count is quiet: {html}");
        assert!(html.contains("as of <time>2025-11-26T00:00:00Z</time></p>"), "{html}");
        assert!(!html.contains("UTC"), "{html}");
    }

    #[test]
    fn the_certificate_is_coloured_like_the_alerts_it_raises() {
        use vantage_proto::v1::{Cause, CertHealth, CertSummary};
        let with = |days: i64, health: CertHealth, cause: Option<&str>| TargetStatus {
            url: "https://t.test/".into(),
            cert: Some(CertSummary { days_remaining: days, health: health as i32, not_after: String::new() }),
            cause: cause.map(|c| Cause { code: c.into(), message: "why".into(), ..Default::default() }),
            ..Default::default()
        };
        for (status, class, text) in [
            (with(90, CertHealth::Ok, None), "c-ok", "90 d ok"),
            (with(20, CertHealth::Warning, None), "c-warning", "20 d warning"),
            (with(3, CertHealth::Critical, None), "c-critical", "3 d critical"),
            (with(-2, CertHealth::Expired, Some("cert_expired")), "c-expired", "-2 d expired"),
            (with(90, CertHealth::Ok, Some("cert_hostname_mismatch")), "c-invalid", "90 d invalid"),
            (with(90, CertHealth::Ok, Some("cert_untrusted_root")), "c-invalid", "90 d invalid"),
            (with(90, CertHealth::Ok, Some("http_5xx")), "c-ok", "90 d ok"),
        ] {
            let html = table_fragment(std::slice::from_ref(&status), 1, &BTreeMap::new(), 1, 0);
            let cell = html.split("<td class=\"cert ").nth(1).and_then(|c| c.split("</td>").next()).unwrap();
            assert!(cell.starts_with(class) && cell.ends_with(&format!(">{text}")), "{cell}");
        }
        let css = crate::page::html::head("t");
        for class in ["c-ok", "c-warning", "c-critical", "c-expired", "c-invalid"] {
            assert!(css.contains(&format!(".{class}")), "the style colours {class}");
        }
    }

    #[test]
    fn a_large_table_is_paged() {
        let statuses: Vec<TargetStatus> =
            (0..PAGE_SIZE).map(|i| TargetStatus { url: format!("https://t{i}.test/"), ..Default::default() }).collect();
        let html = table_fragment(&statuses, 100_000, &BTreeMap::new(), 2, 0);
        assert!(html.contains("Targets 201–400 of 100000"), "{html}");
        assert!(html.contains("href=\"/?page=1\"") && html.contains("href=\"/?page=3\""));
        let past = table_fragment(&[], 100_000, &BTreeMap::new(), 9_999, 0);
        assert!(past.contains("past the last (500)"), "{past}");
        let far = table_fragment(&[], 100_000, &BTreeMap::new(), usize::MAX, 0);
        assert!(far.contains("past the last (500)"), "a page number near usize::MAX is just past the last: {far}");
    }
}
