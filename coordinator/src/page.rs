//! The status page on the HTTP port: `GET /` (the consolidated table, `overview`) and
//! `GET /target?url=…` (one target, `target`, with its `certificate`). Server-rendered HTML with
//! inline CSS; a small inline script, allowed by its hash in the Content-Security-Policy, swaps
//! in a fresh fragment (`part=live`) every 2 s (`html`: the document, the policy, escaping).
//! A public status page (`/s/{slug}`, `public`) is drawn from public facts only, without script.

mod bar;
mod certificate;
mod html;
mod latency;
mod overview;
pub mod public;
mod target;

use hyper::StatusCode;

pub use html::{CSP, channel_banner, escape, public_csp, region_banner};
pub use overview::{PAGE_SIZE, table_fragment};
pub use target::target_fragment;

use crate::hub::Hub;
use crate::names;
use html::{clip, document, static_document};
use target::{Charts, MAX_ALERTS, MAX_INCIDENTS, RESULTS_PER_REGION};

fn query_value(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The link to a target's page.
pub fn target_href(url: &str) -> String {
    format!("/target?url={}", encode(url))
}

/// Serves the page at `path`, if it is one: the status and the HTML (a whole page, or with
/// `part=live` only the fragment the script swaps in).
pub async fn route(hub: &Hub, path: &str, query: &str) -> Option<(StatusCode, String)> {
    let fragment = query_value(query, "part").is_some_and(|p| p == "live");
    let now = crate::clock::now_ms();
    match path {
        "/" => {
            let page = query_value(query, "page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).max(1);
            let offset = (page - 1).saturating_mul(PAGE_SIZE);
            let (statuses, total, counts) = hub.status_page(offset, PAGE_SIZE);
            let statuses = hub.with_uptime(statuses).await;
            let body = channel_banner(&hub.channel_health.failing(), now)
                + &region_banner(&hub.regions(), now)
                + &table_fragment(&statuses, total, &counts, page, now);
            let src = if page == 1 { "/?part=live".to_owned() } else { format!("/?page={page}&part=live") };
            Some((StatusCode::OK, if fragment { body } else { document("Vantage status", &src, &body) }))
        }
        "/target" => {
            let asked = query_value(query, "url").unwrap_or_default();
            let url = vantage_shared::TargetUrl::parse(&asked).map(|u| u.to_string()).unwrap_or(asked);
            let Some(status) = hub.with_uptime(hub.statuses(std::slice::from_ref(&url))).await.pop() else {
                let body = format!(
                    "<h1>No such target</h1><p>The coordinator does not watch <code>{}</code>.</p>\
                     <p><a href=\"/\">All targets</a></p>",
                    escape(&clip(&url, 2000))
                );
                return Some((
                    StatusCode::NOT_FOUND,
                    if fragment { body } else { static_document("Not found", &body) },
                ));
            };
            let latest = hub.latest_of(&url);
            // The newest few of each region: a busy region does not crowd out the others.
            let mut history = Vec::new();
            for region in &status.regions {
                let region = Some(region.region.clone());
                history.extend(
                    hub.history(&url, region, i64::MIN, i64::MAX, RESULTS_PER_REGION).await.unwrap_or_default(),
                );
            }
            history.sort_by_key(|e| std::cmp::Reverse(crate::clock::entry_ms(e)));
            // One more than is shown: then the page says older ones exist.
            let incidents = hub.incidents(&url, false, MAX_INCIDENTS + 1).await.unwrap_or_default();
            let alerts = hub.alerts(&url, MAX_ALERTS).await.unwrap_or_default();
            let span = latency::Span::from_query(query_value(query, "latency").as_deref());
            let regions: Vec<String> = status.regions.iter().map(|r| r.region.clone()).collect();
            let latency = latency::read(hub, &url, &regions, span, now).await;
            let charts = Charts { days: hub.daily(&url, bar::BAR_DAYS).await.unwrap_or_default(), latency, span };
            let body = channel_banner(&hub.channel_health.failing(), now)
                + &target_fragment(&status, &latest, &history, &incidents, &alerts, &charts, now);
            let title = format!("{} · {} · Vantage", names::verdict(status.verdict), url);
            let src = format!("{}{}&part=live", target_href(&url), span.param());
            Some((StatusCode::OK, if fragment { body } else { document(&title, &src, &body) }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod support {
    //! Values carrying markup from hostile servers and users, for the views' escaping tests.

    use vantage_proto::v1::{
        Backend, Cause, CertSummary, Certificate, Failure, HistoryEntry, ProbeResult, ProbeStatus, RegionStatus, Stage,
        TargetStatus, Timings,
    };

    pub const HOSTILE: &str = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>&amp;";

    pub fn hostile_status() -> TargetStatus {
        TargetStatus {
            url: format!("https://evil.test/?q={HOSTILE}"),
            verdict: vantage_proto::v1::Verdict::Down as i32,
            cause: Some(Cause { code: HOSTILE.into(), message: HOSTILE.into(), hint: HOSTILE.into() }),
            cert: Some(CertSummary { days_remaining: 3, health: 3, not_after: HOSTILE.into() }),
            regions: vec![RegionStatus {
                region: HOSTILE.into(),
                opinion: vantage_proto::v1::Opinion::Down as i32,
                failure_code: HOSTILE.into(),
                detail: HOSTILE.into(),
                last_result_time: Some(crate::clock::timestamp(1_000)),
                ..Default::default()
            }],
            failing_regions: vec![HOSTILE.into()],
            quorum: 1,
            ..Default::default()
        }
    }

    pub fn hostile_entry() -> HistoryEntry {
        let failure =
            Failure { stage: Stage::Http as i32, code: HOSTILE.into(), detail: HOSTILE.into(), ..Default::default() };
        HistoryEntry {
            region: HOSTILE.into(),
            agent: HOSTILE.into(),
            result: Some(ProbeResult {
                url: HOSTILE.into(),
                status: ProbeStatus::Down as i32,
                failure: Some(failure.clone()),
                cert: Some(Certificate {
                    subject: HOSTILE.into(),
                    issuer: HOSTILE.into(),
                    sans: vec![HOSTILE.into()],
                    sha256: HOSTILE.into(),
                    key: HOSTILE.into(),
                    ..Default::default()
                }),
                backends: vec![Backend {
                    address: HOSTILE.into(),
                    status: ProbeStatus::Down as i32,
                    failure: Some(failure),
                    cert_sha256: HOSTILE.into(),
                }],
                timings: Some(Timings { total_ms: 12.0, ..Default::default() }),
                checked_at: Some(crate::clock::timestamp(1_000)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// No markup but the page's own survives: the hostile strings appear only escaped.
    pub fn assert_inert(html: &str) {
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("\"'>"), "{html}");
        assert!(html.contains(
            "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&gt;&lt;img src=x onerror=alert(2)&gt;&amp;amp;"
        ));
    }
}
