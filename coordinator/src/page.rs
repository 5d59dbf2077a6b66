//! The status page on the HTTP port: `GET /` (the consolidated table) and `GET /target?url=…`
//! (one target: regions × backends, certificate, recent results, incidents and alerts).
//! Server-rendered HTML with inline CSS; a small inline script, allowed by its hash in the
//! Content-Security-Policy, swaps in a fresh fragment (`part=live`) every 2 s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use hyper::StatusCode;
use vantage_proto::v1::{
    Certificate, HistoryEntry, Incident, ProbeResult, ProbeStatus, RegionStatus, Stage, TargetStatus,
};

use crate::alert::health::Failing;
use crate::alert::{AlertRecord, DeliveryState};
use crate::hub::Hub;
use crate::status::{opinion_name, verdict_name};

/// Rows of the table per page: a coordinator may hold 100,000 targets.
pub const PAGE_SIZE: usize = 200;
/// Results shown per region on a target's page.
const RESULTS_PER_REGION: usize = 5;
/// Backend columns shown in the matrix (the rest are counted).
const MAX_BACKENDS: usize = 16;
/// Characters of a failure detail shown (details come from hostile servers too).
const MAX_DETAIL: usize = 300;
/// Subject alternative names shown.
const MAX_SANS: usize = 50;
const MAX_INCIDENTS: usize = 20;
const MAX_ALERTS: usize = 10;

/// Fetches the fragment named by `#live`'s `data-src` every 2 s (not while the tab is hidden)
/// and swaps it in; `#state` says whether that works (the server's text says it does not, for
/// when the script never runs).
const SCRIPT: &str = r#"(function () {
  var live = document.getElementById("live"), state = document.getElementById("state");
  if (!live || !state) return;
  var src = live.getAttribute("data-src");
  function show(text, ok) { state.textContent = text; state.className = ok ? "ok" : "bad"; }
  show("live", true);
  function tick() {
    if (document.hidden) { setTimeout(tick, 2000); return; }
    fetch(src, { cache: "no-store" })
      .then(function (r) {
        if (r.status === 404) throw new Error("this target no longer exists");
        if (!r.ok) throw new Error("HTTP " + r.status + ", retrying");
        return r.text();
      })
      .then(function (html) { live.innerHTML = html; show("live", true); },
            function (e) { show(e instanceof TypeError ? "offline, retrying" : e.message, false); })
      .then(function () { setTimeout(tick, 2000); });
  }
  setTimeout(tick, 2000);
})();"#;

const STYLE: &str = r#"
:root { --fg: #1b1f24; --muted: #5b6570; --line: #d8dee4; --bg: #ffffff; --soft: #f5f7f9;
  --up: #1a7f37; --degraded: #9a6700; --down: #cf222e; --unknown: #6e7781; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: baseline; padding: .75rem 1rem;
  border-bottom: 1px solid var(--line); background: var(--soft); }
header a.home { font-weight: 700; color: var(--fg); text-decoration: none; font-size: 1.1rem; }
#state { font-size: .85rem; color: var(--muted); }
#state.ok::before { content: "\25CF  "; color: var(--up); }
#state.bad { color: var(--down); font-weight: 600; }
main { padding: .75rem 1rem 2rem; max-width: 1200px; }
h1 { font-size: 1.2rem; margin: .25rem 0 .5rem; overflow-wrap: anywhere; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
a { color: #0969da; }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
.meta, .note { color: var(--muted); font-size: .85rem; }
.counts span { margin-right: .75rem; white-space: nowrap; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 1rem; font-weight: 700; font-size: .8rem;
  color: #fff; letter-spacing: .02em; }
.v-UP { background: var(--up); } .v-DEGRADED { background: var(--degraded); }
.v-DOWN { background: var(--down); } .v-UNKNOWN { background: var(--unknown); }
.silenced { background: #8250df; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: .8rem; color: var(--muted); font-weight: 600; }
td.url, .url { overflow-wrap: anywhere; }
td.num { text-align: right; white-space: nowrap; }
.scroll { overflow-x: auto; }
.matrix th[scope=row] { color: var(--fg); font-size: .95rem; white-space: nowrap; }
.matrix td { white-space: nowrap; }
.o-up { color: var(--up); font-weight: 600; } .o-down { color: var(--down); font-weight: 600; }
.o-partial { color: var(--degraded); font-weight: 600; } .o-unknown { color: var(--unknown); font-weight: 600; }
.cause { border-left: 4px solid var(--down); background: var(--soft); padding: .5rem .75rem; margin: .5rem 0; }
.alarm { border: 2px solid var(--down); border-radius: .5rem; background: #ffebe9; padding: .5rem .75rem;
  margin: .5rem 0; overflow-wrap: anywhere; }
.alarm strong { color: var(--down); }
.facts th { width: 11rem; }
.facts td { overflow-wrap: anywhere; }
ul.timeline { padding-left: 1.1rem; } ul.timeline li { margin: .25rem 0; }
nav.pages a { margin-right: 1rem; }
@media (max-width: 640px) {
  main { padding: .5rem .6rem 2rem; }
  table.cards thead { display: none; }
  table.cards, table.cards tbody, table.cards tr, table.cards td { display: block; width: 100%; }
  table.cards tr { border: 1px solid var(--line); border-radius: .5rem; margin: .5rem 0; padding: .25rem .5rem; }
  table.cards td { border: 0; padding: .15rem 0; text-align: left; }
  table.cards td::before { content: attr(data-label) ": "; color: var(--muted); font-size: .8rem; }
  table.cards td.url::before { content: ""; }
  table.cards td.none { display: none; }
  .facts th { width: 7rem; }
}
"#;

/// The Content-Security-Policy of every page: nothing but the page's own script and style (by
/// hash) and fetches from the coordinator itself.
pub static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        sha256_source(SCRIPT),
        sha256_source(STYLE)
    )
});

/// `sha256-<base64>`, a CSP hash source.
fn sha256_source(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("sha256-{}", base64(digest.as_ref()))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Text made safe for HTML content and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

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
            let body = channel_banner(&hub.channel_health.failing(), now)
                + &table_fragment(&statuses, total, &counts, page, now);
            let src = if page == 1 { "/?part=live".to_owned() } else { format!("/?page={page}&part=live") };
            Some((StatusCode::OK, if fragment { body } else { document("Vantage status", &src, &body) }))
        }
        "/target" => {
            let asked = query_value(query, "url").unwrap_or_default();
            let url = vantage_shared::TargetUrl::parse(&asked).map(|u| u.to_string()).unwrap_or(asked);
            let Some(status) = hub.statuses(std::slice::from_ref(&url)).pop() else {
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
            let body = channel_banner(&hub.channel_health.failing(), now)
                + &target_fragment(&status, &latest, &history, &incidents, &alerts, now);
            let title = format!("{} · {} · Vantage", verdict_name(status.verdict), url);
            let src = format!("{}&part=live", target_href(&url));
            Some((StatusCode::OK, if fragment { body } else { document(&title, &src, &body) }))
        }
        _ => None,
    }
}

/// A banner per alert channel whose receiver says it is misconfigured: alerts are not reaching
/// people, which the page must not hide behind a calm table.
pub fn channel_banner(failing: &BTreeMap<String, Failing>, now: i64) -> String {
    let mut out = String::new();
    for (channel, f) in failing {
        let _ = write!(
            out,
            "<div class=\"alarm\" role=\"alert\" data-failing-channel=\"{name}\"><strong>Alert channel {name} is \
             failing</strong> since {since}: <code>{error}</code>. Its alerts are not being delivered (they are \
             retried); fix the channel's URL or credentials.{told}</div>",
            name = escape(channel),
            since = when(Some(f.since_ms), now),
            error = escape(&clip(&f.error, MAX_DETAIL)),
            told = if f.alerted { " The other channels were told." } else { "" },
        );
    }
    out
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n",
        escape(title)
    )
}

/// A whole page whose `#live` part the script refreshes from `src`.
fn document(title: &str, src: &str, live: &str) -> String {
    format!(
        "{}<body><header><a class=\"home\" href=\"/\">Vantage</a><span id=\"state\" class=\"bad\">not updating: this page needs JavaScript for that</span></header>\
         <main id=\"live\" data-src=\"{}\">{live}</main><script>{SCRIPT}</script></body></html>\n",
        head(title),
        escape(src)
    )
}

/// A whole page that does not refresh (the not-found page).
fn static_document(title: &str, body: &str) -> String {
    format!(
        "{}<body><header><a class=\"home\" href=\"/\">Vantage</a></header><main>{body}</main></body></html>\n",
        head(title)
    )
}

fn badge(verdict: &str) -> String {
    format!("<span class=\"badge v-{verdict}\">{verdict}</span>")
}

fn ms_of(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(crate::clock::ms)
}

/// "2026-05-01T10:00:00Z (3 min ago)".
fn when(ms: Option<i64>, now: i64) -> String {
    match ms {
        Some(ms) if ms > 0 => {
            format!("<time>{}</time> <span class=\"meta\">({} ago)</span>", crate::clock::rfc3339(ms), span(now - ms))
        }
        _ => "never".to_owned(),
    }
}

/// A duration in words: "4 s", "12 min", "3 h 5 min", "2 d 4 h".
fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

fn failing_cell(s: &TargetStatus) -> String {
    if s.failing_regions.is_empty() {
        format!("0/{}", s.regions.len())
    } else {
        format!("{}/{} {}", s.failing_regions.len(), s.regions.len(), s.failing_regions.join(", "))
    }
}

fn latency(s: &TargetStatus) -> String {
    s.regions
        .iter()
        .filter(|r| r.last_result_time.is_some())
        .map(|r| r.latency_ms)
        .fold(None, |max: Option<f64>, l| Some(max.map_or(l, |m| m.max(l))))
        .map_or("-".to_owned(), |l| format!("{l:.0} ms"))
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
    let _ = write!(out, "<h1>Targets</h1><p class=\"counts\">");
    for verdict in ["UP", "DEGRADED", "DOWN", "UNKNOWN"] {
        let _ = write!(out, "<span>{} {}</span>", badge(verdict), counts.get(verdict).copied().unwrap_or(0));
    }
    let _ = write!(out, "</p><p class=\"meta\">as of {} UTC</p>", crate::clock::rfc3339(now));
    if total == 0 {
        out.push_str(
            "<p>No targets yet: add some with <code>vantage-coordinator targets add</code> or the config file.</p>",
        );
        return out;
    }
    out.push_str(
        "<table class=\"cards targets\"><thead><tr><th>Target</th><th>Verdict</th><th>Failing regions</th>\
         <th>Cause</th><th>Certificate</th><th>Latency</th></tr></thead><tbody>",
    );
    for s in statuses {
        let verdict = verdict_name(s.verdict);
        let silenced = if s.silence.is_some() { " <span class=\"badge silenced\">silenced</span>" } else { "" };
        let cause = s
            .cause
            .as_ref()
            .map_or("-".to_owned(), |c| format!("<code title=\"{}\">{}</code>", escape(&c.message), escape(&c.code)));
        let cert = s
            .cert
            .as_ref()
            .map_or("-".to_owned(), |c| format!("{} d {}", c.days_remaining, crate::status::health_name(c.health)));
        let _ = write!(
            out,
            "<tr data-url=\"{url}\" data-verdict=\"{verdict}\"><td class=\"url\" data-label=\"Target\">\
             <a href=\"{href}\">{url}</a>{silenced}</td><td class=\"verdict\" data-label=\"Verdict\">{badge}</td>\
             <td class=\"failing\" data-label=\"Failing regions\">{failing}</td><td data-label=\"Cause\">{cause}</td>\
             <td data-label=\"Certificate\">{cert}</td><td class=\"num\" data-label=\"Latency\">{latency}</td></tr>",
            url = escape(&s.url),
            href = escape(&target_href(&s.url)),
            badge = badge(verdict),
            failing = escape(&failing_cell(s)),
            latency = latency(s),
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
            let silence = s.silence.as_ref().map(crate::status::describe_silence).unwrap_or_default();
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

fn stage_name(stage: i32) -> &'static str {
    match Stage::try_from(stage).unwrap_or(Stage::Unspecified) {
        Stage::Dns => "dns",
        Stage::Connect => "connect",
        Stage::Tls => "tls",
        Stage::Certificate => "certificate",
        Stage::Http => "http",
        Stage::Unspecified => "-",
    }
}

fn passed(status: i32) -> bool {
    status == ProbeStatus::Up as i32
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
    now: i64,
) -> String {
    let mut out = String::new();
    let verdict = verdict_name(s.verdict);
    let _ = write!(
        out,
        "<p class=\"meta\"><a href=\"/\">← all targets</a> · as of {} UTC</p><h1 class=\"url\">{}</h1>\
         <p class=\"summary\" data-verdict=\"{verdict}\">{} since {} · quorum {} of {} regions · failing: {}</p>",
        crate::clock::rfc3339(now),
        escape(&s.url),
        badge(verdict),
        when(ms_of(s.since.as_ref()), now),
        s.quorum,
        s.regions.len(),
        escape(&failing_cell(s)),
    );
    if let Some(c) = &s.cause {
        let _ = write!(
            out,
            "<div class=\"cause\"><code>{}</code>: {}<br><span class=\"meta\">Fix: {}</span></div>",
            escape(&c.code),
            escape(&c.message),
            escape(&c.hint)
        );
    }
    if let Some(silence) = &s.silence {
        let _ = write!(
            out,
            "<p><span class=\"badge silenced\">silenced</span> notifications held back by {}</p>",
            escape(&crate::status::describe_silence(silence))
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
        let opinion = opinion_name(r.opinion);
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

    // The certificate closest to expiry that any region saw, as the status reports it.
    let certs: Vec<(&str, &Certificate)> =
        latest.iter().filter_map(|e| Some((e.region.as_str(), e.result.as_ref()?.cert.as_ref()?))).collect();
    out.push_str("<h2>Certificate</h2>");
    match certs.iter().min_by_key(|(_, c)| c.days_remaining) {
        None => out.push_str("<p class=\"note\">No region has received a certificate.</p>"),
        Some((region, c)) => {
            out.push_str(&cert_facts(c));
            let mut fingerprints: Vec<&str> = certs.iter().map(|(_, c)| c.sha256.as_str()).collect();
            fingerprints.sort_unstable();
            fingerprints.dedup();
            if fingerprints.len() > 1 {
                let seen: Vec<String> =
                    certs.iter().map(|(r, c)| format!("{}: {}", escape(r), escape(&clip(&c.sha256, 16)))).collect();
                let _ = write!(
                    out,
                    "<p class=\"note\">Regions see {} different certificates ({}); shown: {}'s.</p>",
                    fingerprints.len(),
                    seen.join(", "),
                    escape(region)
                );
            }
        }
    }

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
        let state = match ProbeStatus::try_from(r.status).unwrap_or(ProbeStatus::Unspecified) {
            ProbeStatus::Up => "up",
            ProbeStatus::Degraded => "partial",
            ProbeStatus::Down => "down",
            ProbeStatus::Unspecified => "unknown",
        };
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
            stage = f.map_or("-", |f| stage_name(f.stage)),
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
            let _ = write!(out, "<li>{} DOWN {state}{cause}{regions}</li>", badge("DOWN"));
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
                    let state = match d.state {
                        DeliveryState::Pending => "pending",
                        DeliveryState::Delivered => "delivered",
                        DeliveryState::Failed => "failed",
                        DeliveryState::Silenced => "silenced",
                    };
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

/// The certificate's facts as a two-column table.
fn cert_facts(c: &Certificate) -> String {
    let mut rows: Vec<(&str, String)> = vec![("Subject", escape(&c.subject)), ("Issuer", escape(&c.issuer))];
    let mut sans: Vec<String> = c.sans.iter().take(MAX_SANS).map(|s| format!("<code>{}</code>", escape(s))).collect();
    if c.sans.len() > MAX_SANS {
        sans.push(format!("and {} more", c.sans.len() - MAX_SANS));
    }
    rows.push(("SANs", sans.join(", ")));
    rows.push(("Not before", ms_of(c.not_before.as_ref()).map_or("-".to_owned(), crate::clock::rfc3339)));
    rows.push(("Not after", ms_of(c.not_after.as_ref()).map_or("-".to_owned(), crate::clock::rfc3339)));
    rows.push(("Days left", format!("{} ({})", c.days_remaining, crate::status::health_name(c.health))));
    if let Some(earliest) = ms_of(c.earliest_expiry.as_ref()) {
        rows.push(("Chain expires", crate::clock::rfc3339(earliest)));
    }
    rows.push(("SHA-256", format!("<code>{}</code>", escape(&c.sha256))));
    if !c.key.is_empty() {
        rows.push(("Key", escape(&c.key)));
    }
    if !c.signature_algorithm.is_empty() {
        rows.push(("Signature", escape(&c.signature_algorithm)));
    }
    if !c.chain.is_empty() {
        let chain: Vec<String> = c
            .chain
            .iter()
            .take(10)
            .map(|x| {
                let until = ms_of(x.not_after.as_ref()).map_or("-".to_owned(), crate::clock::rfc3339);
                format!(
                    "{} <span class=\"meta\">(issuer {}, until {until})</span>",
                    escape(&x.subject),
                    escape(&x.issuer)
                )
            })
            .collect();
        rows.push(("Chain", chain.join("<br>")));
    }
    let mut out = String::from("<table class=\"facts\"><tbody>");
    for (name, value) in rows {
        let _ = write!(out, "<tr><th scope=\"row\">{name}</th><td>{value}</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::v1::{Backend, Cause, CertSummary, Failure, Timings};

    const HOSTILE: &str = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>&amp;";

    fn hostile_status() -> TargetStatus {
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

    fn hostile_entry() -> HistoryEntry {
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
    fn assert_inert(html: &str) {
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("\"'>"), "{html}");
        assert!(html.contains(
            "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&gt;&lt;img src=x onerror=alert(2)&gt;&amp;amp;"
        ));
    }

    #[test]
    fn escape_replaces_every_markup_character() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain é text"), "plain é text");
    }

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
    fn the_target_page_escapes_results_certificates_and_alerts() {
        let entry = hostile_entry();
        let incident = Incident {
            url: HOSTILE.into(),
            opened: Some(crate::clock::timestamp(500)),
            cause: Some(Cause { code: HOSTILE.into(), ..Default::default() }),
            regions: vec![HOSTILE.into()],
            ..Default::default()
        };
        let html = target_fragment(
            &hostile_status(),
            std::slice::from_ref(&entry),
            std::slice::from_ref(&entry),
            &[incident],
            &[],
            2_000,
        );
        assert_inert(&html);
        assert!(html.contains("<h2>Regions × backends</h2>"));
        assert!(html.contains("<strong>open</strong>"));
    }

    #[test]
    fn a_failing_channel_shows_a_banner_with_its_name_and_error_escaped() {
        let failing =
            BTreeMap::from([(HOSTILE.to_owned(), Failing { since_ms: 1_000, error: HOSTILE.into(), alerted: true })]);
        let html = channel_banner(&failing, 61_000);
        assert_inert(&html);
        assert!(html.contains("is failing</strong> since <time>1970-01-01T00:00:01Z</time>"), "{html}");
        assert!(html.contains("The other channels were told."), "{html}");
        assert!(channel_banner(&BTreeMap::new(), 0).is_empty(), "no banner while every channel works");
        let page = document("t", "/?part=live", &html);
        assert_eq!(page.matches("<script>").count(), 1, "only the page's own script");
        assert!(!page.contains(" style="), "no inline style attribute: the policy allows only the page's style");
    }

    #[test]
    fn details_are_clipped() {
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("ééé", 3), "ééé");
        assert_eq!(clip("éééé", 3), "ééé…");
    }

    #[test]
    fn the_policy_allows_exactly_the_page_script_and_style() {
        // The digest of "abc" from FIPS 180-2, in base64.
        assert_eq!(sha256_source("abc"), "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        let page = document("t", "/?part=live", "");
        let script = page.split("<script>").nth(1).and_then(|s| s.split("</script>").next()).unwrap();
        assert!(CSP.contains(&sha256_source(script)));
        let style = page.split("<style>").nth(1).and_then(|s| s.split("</style>").next()).unwrap();
        assert!(CSP.contains(&sha256_source(style)));
        assert!(!CSP.contains("unsafe"));
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
