//! A public status page (`/s/{slug}`), for a site's customers: each service under its public
//! name, its state in public words, its availability and 90-day bar, and the incidents of the
//! last 90 days by cause category and time. It is drawn only from what `Service` carries, which
//! holds nothing an operator keeps to themselves (URLs, addresses, hints, agents, regions,
//! labels), so a page cannot show what it was never given. No script: the page reloads itself
//! every minute (`<meta http-equiv="refresh">`).

use std::fmt::Write as _;

use vantage_proto::v1::Availability;
use vantage_shared::{FailureCode, Stage};

use super::bar::{self, Wording, public_state};
use super::html::{as_of, escape, head_refreshing};
use crate::config::status_page::StatusPage;
use crate::uptime::{Figures, State};

/// Days of each service's bar, today included.
pub const BAR_DAYS: i64 = bar::BAR_DAYS;
/// Services one page shows (the first by name; the rest are counted).
pub const MAX_SERVICES: usize = 100;
/// Incidents listed, newest first over every service, and how far back.
pub const MAX_INCIDENTS: usize = 50;
pub const INCIDENT_DAYS: i64 = 90;
/// How often the page reloads itself, in seconds.
pub const REFRESH_SECONDS: u32 = 60;

/// One incident as the public sees it: when, for how long, and the kind of cause.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicIncident {
    pub opened_ms: i64,
    pub closed_ms: Option<i64>,
    pub category: &'static str,
}

/// One service on the page: its public name and what may be said of it.
#[derive(Debug, Clone, Default)]
pub struct Service {
    pub name: String,
    /// The verdict's name (`UP`, `DOWN`, …).
    pub verdict: &'static str,
    pub uptime: Vec<Availability>,
    pub days: Vec<(i64, Figures)>,
    pub incidents: Vec<PublicIncident>,
}

/// A failure code's category in public words: what kind of trouble, not where or why exactly.
pub fn category(code: &str) -> &'static str {
    let Some(code) = FailureCode::from_code(code) else { return "Other" };
    match code {
        FailureCode::DnsTimeout
        | FailureCode::TcpTimeout
        | FailureCode::TlsHandshakeTimeout
        | FailureCode::HttpTimeout => "Timeout",
        FailureCode::TargetDenied => "Network",
        c => match c.stage() {
            Stage::Dns => "DNS",
            Stage::Connect => "Network",
            Stage::Tls | Stage::Certificate => "TLS/certificate",
            Stage::Http => "HTTP error",
        },
    }
}

/// A verdict's name in public words.
pub fn state_words(verdict: &str) -> &'static str {
    public_state(match verdict {
        "UP" => State::Up,
        "DEGRADED" => State::Degraded,
        "DOWN" => State::Down,
        _ => State::Unknown,
    })
}

/// The line over the services: the worst news first.
fn overall(services: &[Service]) -> (&'static str, String) {
    let count = |v: &str| services.iter().filter(|s| s.verdict == v).count();
    let n = services.len();
    let (down, degraded, unknown) = (count("DOWN"), count("DEGRADED"), count("UNKNOWN"));
    if n == 0 {
        ("UNKNOWN", "No services are listed on this page yet.".into())
    } else if down > 0 {
        ("DOWN", format!("Outage: {down} of {n} services down"))
    } else if degraded > 0 {
        ("DEGRADED", format!("Degraded performance: {degraded} of {n} services"))
    } else if unknown > 0 {
        ("UNKNOWN", format!("Status unknown for {unknown} of {n} services"))
    } else {
        ("UP", "All systems operational".into())
    }
}

/// The page's `<body>` content for `services` (sorted by name); `more` services were left out.
pub fn fragment(page: &StatusPage, services: &[Service], more: usize, now: i64) -> String {
    let mut out = String::with_capacity(2_000 + services.len() * 12_000);
    out.push_str("<header class=\"public\">");
    if let Some(logo) = &page.logo {
        let _ = write!(out, "<img class=\"logo\" src=\"{}\" alt=\"\">", escape(&logo.url));
    }
    let _ = write!(out, "<h1>{}</h1></header><main>", escape(&page.title));
    if !page.description.is_empty() {
        let _ = write!(out, "<p class=\"description\">{}</p>", escape(&page.description));
    }
    let (verdict, line) = overall(services);
    let _ = write!(
        out,
        "<p class=\"overall o-{verdict}\" data-overall=\"{verdict}\">{}</p><p class=\"meta\">as of {} · this \
         page refreshes every minute</p>",
        escape(&line),
        as_of(now)
    );
    for s in services {
        let _ = write!(
            out,
            "<section class=\"service\" data-service=\"{name}\" data-state=\"{v}\"><h2><span>{name}</span> \
             <span class=\"badge v-{v}\">{words}</span></h2>",
            name = escape(&s.name),
            v = s.verdict,
            words = state_words(s.verdict),
        );
        if !s.uptime.is_empty() {
            out.push_str(&super::overview::uptime_line(&s.uptime));
        }
        if !s.days.is_empty() {
            out.push_str(&bar::bar(&s.days, Wording::Public));
        }
        out.push_str("</section>");
    }
    if more > 0 {
        let _ = write!(out, "<p class=\"note\">{more} more services are not shown.</p>");
    }
    let mut incidents: Vec<(&str, &PublicIncident)> =
        services.iter().flat_map(|s| s.incidents.iter().map(move |i| (s.name.as_str(), i))).collect();
    incidents.sort_by_key(|(_, i)| std::cmp::Reverse(i.opened_ms));
    let _ = write!(out, "<h2>Incidents, last {INCIDENT_DAYS} days</h2>");
    if incidents.is_empty() {
        out.push_str("<p class=\"note\">No incidents.</p>");
    } else {
        out.push_str("<ul class=\"timeline incidents\">");
        for (name, i) in incidents.iter().take(MAX_INCIDENTS) {
            let time = |ms: i64| format!("<time>{}</time>", crate::clock::rfc3339(ms));
            let end = match i.closed_ms {
                Some(closed) => format!(
                    "resolved {} after {}",
                    time(closed),
                    crate::clock::human_duration(closed.saturating_sub(i.opened_ms))
                ),
                None => "<strong>ongoing</strong>".to_owned(),
            };
            let _ = write!(
                out,
                "<li data-service=\"{n}\"><span class=\"badge v-DOWN\">Outage</span> <b>{n}</b>: {cause} · \
                 began {began}, {end}</li>",
                n = escape(name),
                cause = escape(i.category),
                began = time(i.opened_ms),
            );
        }
        out.push_str("</ul>");
        if incidents.len() > MAX_INCIDENTS {
            out.push_str("<p class=\"note\">Older incidents are not shown.</p>");
        }
    }
    out.push_str("</main><footer class=\"meta\">Checked from several regions by Vantage.</footer>");
    out
}

/// The whole page: no script, its style by hash, reloading itself every minute.
pub fn document(page: &StatusPage, body: &str) -> String {
    format!("{}<body class=\"public\">{body}</body></html>\n", head_refreshing(&page.title, REFRESH_SECONDS))
}

/// The page for a slug no `[[status_page]]` has.
pub fn not_found() -> String {
    format!(
        "{}<body class=\"public\"><main><h1>No such status page</h1><p>There is no status page here.</p></main>\
         </body></html>\n",
        super::html::head("Not found")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::support::HOSTILE;

    fn page() -> StatusPage {
        StatusPage {
            slug: "shop".into(),
            title: format!("Shop {HOSTILE}"),
            description: HOSTILE.into(),
            logo: Some(crate::config::status_page::Logo {
                url: "https://cdn.example.com/l.png?a=\"><script>".into(),
                csp_source: "https://cdn.example.com/l.png".into(),
            }),
            labels: Default::default(),
            names: Default::default(),
        }
    }

    #[test]
    fn causes_are_told_by_category() {
        for (code, words) in [
            ("dns_nxdomain", "DNS"),
            ("dns_timeout", "Timeout"),
            ("tcp_refused", "Network"),
            ("tcp_timeout", "Timeout"),
            ("tls_handshake_failed", "TLS/certificate"),
            ("cert_expired", "TLS/certificate"),
            ("http_5xx", "HTTP error"),
            ("http_timeout", "Timeout"),
            ("target_denied", "Network"),
            ("", "Other"),
        ] {
            assert_eq!(category(code), words, "{code}");
        }
    }

    #[test]
    fn the_page_says_states_in_public_words_and_escapes_what_it_is_given() {
        let services = vec![
            Service {
                name: HOSTILE.into(),
                verdict: "DOWN",
                uptime: vec![Availability { window: "24h".into(), percent: Some(99.5), ..Default::default() }],
                days: vec![(20_000, Figures { ms: [1000, 0, 10, 0], incidents: 1 })],
                incidents: vec![
                    PublicIncident { opened_ms: 1_000, closed_ms: Some(61_000), category: "TLS/certificate" },
                    PublicIncident { opened_ms: 90_000, closed_ms: None, category: "Network" },
                ],
            },
            Service { name: "API".into(), verdict: "UP", ..Default::default() },
        ];
        let html = fragment(&page(), &services, 2, 100_000);
        crate::page::support::assert_inert(&html.replace("<img class=\"logo\"", "<logo"));
        assert!(html.contains("<p class=\"overall o-DOWN\" data-overall=\"DOWN\">Outage: 1 of 2 services down</p>"));
        assert!(html.contains("<span class=\"badge v-DOWN\">Outage</span>"), "{html}");
        assert!(html.contains("<span class=\"badge v-UP\">Operational</span>"), "{html}");
        assert!(html.contains("src=\"https://cdn.example.com/l.png?a=&quot;&gt;&lt;script&gt;\""), "{html}");
        // Newest first: the ongoing one, then the one resolved after a minute.
        let network = html.find(": Network · began").unwrap();
        let tls = html.find(": TLS/certificate · began <time>1970-01-01T00:00:01Z</time>, resolved").unwrap();
        assert!(network < tls, "{html}");
        assert!(html.contains("resolved <time>1970-01-01T00:01:01Z</time> after 1m 0s</li>"), "{html}");
        assert!(html.contains("<strong>ongoing</strong>"));
        assert!(html.contains("2 more services are not shown."));
        assert!(html.contains(">Outage: 2024-10-04: "), "the bar in public words: {html}");
        let all_up = fragment(&page(), &services[1..], 0, 0);
        assert!(all_up.contains(">All systems operational</p>") && all_up.contains("No incidents."), "{all_up}");
        let doc = document(&page(), &html);
        assert!(!doc.contains("<script>") && doc.contains("http-equiv=\"refresh\" content=\"60\""), "{doc}");
    }
}
