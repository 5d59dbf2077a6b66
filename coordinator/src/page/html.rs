//! What every view of the page shares: the document around a view, its Content-Security-Policy
//! (the inline script and style allowed by hash), escaping, and the small pieces (badges, times,
//! the failing-channel banner).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use vantage_proto::v1::TargetStatus;
use vantage_shared::{FailureCode, Stage};

use crate::alert::health::Failing;
use crate::names;

/// Characters of a failure detail shown (details come from hostile servers too).
pub const MAX_DETAIL: usize = 300;

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
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #5b6570; --line: #d8dee4; --bg: #ffffff;
  --soft: #f5f7f9; --up: #1a7f37; --degraded: #9a6700; --down: #cf222e; --unknown: #6e7781;
  --on-state: #ffffff; --link: #0969da; --p50: #0969da; --alarm: #ffebe9; --empty: #d8dee4; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #9ea7b3; --line: #30363d; --bg: #0d1117; --soft: #161b22;
    --up: #3fb950; --degraded: #d29922; --down: #f85149; --unknown: #8b949e;
    --on-state: #0d1117; --link: #58a6ff; --p50: #58a6ff; --alarm: #3c1618; --empty: #3d444d; }
}
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
a { color: var(--link); }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
.meta, .note { color: var(--muted); font-size: .85rem; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 1rem; font-weight: 700; font-size: .8rem;
  color: var(--on-state); letter-spacing: .02em; }
.v-UP { background: var(--up); } .v-DEGRADED { background: var(--degraded); }
.v-DOWN { background: var(--down); } .v-UNKNOWN { background: var(--unknown); }
.v-zero { background: none; color: var(--muted); box-shadow: inset 0 0 0 1px var(--line); }
.counts .badge { margin: 0 .6rem .3rem 0; font-size: .85rem; }
.c-ok { color: var(--up); } .c-warning { color: var(--degraded); font-weight: 600; }
.c-critical, .c-expired, .c-invalid { color: var(--down); font-weight: 600; } .c-unknown { color: var(--muted); }
.silenced { background: #8250df; color: #fff; } .flapping { background: #bc4c00; color: #fff; }
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
.alarm { border: 2px solid var(--down); border-radius: .5rem; background: var(--alarm); padding: .5rem .75rem;
  margin: .5rem 0; overflow-wrap: anywhere; }
.alarm strong { color: var(--down); }
.facts th { width: 11rem; }
.facts td { overflow-wrap: anywhere; }
ul.timeline { padding-left: 1.1rem; } ul.timeline li { margin: .25rem 0; }
nav.pages a { margin-right: 1rem; }
.bar { margin: .25rem 0 .75rem; max-width: 56rem; }
.bar svg { display: block; width: 100%; height: 2.2rem; }
.bar .d { fill: var(--empty); } .bar .d-UP { fill: var(--up); } .bar .d-DEGRADED { fill: var(--degraded); }
.bar .d-DOWN { fill: var(--down); } .bar .d-UNKNOWN { fill: var(--unknown); }
.bar .d:hover { opacity: .7; }
.bar-ends { display: flex; justify-content: space-between; gap: .5rem; margin: .15rem 0; }
ul.days { margin: .2rem 0; padding-left: 1.1rem; }
.latency { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); gap: .5rem 1.25rem; }
.latency figure { margin: 0; } .latency figcaption { font-weight: 600; font-size: .9rem; }
.latency svg { display: block; width: 100%; height: 5.5rem; border-bottom: 1px solid var(--line); }
.latency path { fill: none; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
.latency .p50 { stroke: var(--p50); } .latency .p95 { stroke: var(--degraded); stroke-dasharray: 4 3; }
.latency .grid { stroke: var(--line); stroke-width: 1; vector-effect: non-scaling-stroke; }
.k50 { color: var(--p50); font-weight: 600; } .k95 { color: var(--degraded); font-weight: 600; }
.axis { display: flex; justify-content: space-between; margin: .1rem 0; }
header.public { display: flex; align-items: center; gap: .75rem; padding: 1rem; max-width: 56rem; margin: 0 auto;
  border-bottom: 1px solid var(--line); background: none; }
header.public h1 { margin: 0; font-size: 1.4rem; }
header.public .logo { max-height: 2.5rem; max-width: 10rem; }
body.public main { max-width: 56rem; margin: 0 auto; }
body.public footer { max-width: 56rem; margin: 0 auto; padding: 0 1rem 2rem; }
.overall { font-weight: 700; font-size: 1.1rem; padding: .6rem .9rem; border-radius: .5rem; margin: .75rem 0 .25rem;
  color: var(--on-state); }
.overall.o-UP { background: var(--up); } .overall.o-DEGRADED { background: var(--degraded); }
.overall.o-DOWN { background: var(--down); } .overall.o-UNKNOWN { background: var(--unknown); }
.service { border: 1px solid var(--line); border-radius: .5rem; padding: .5rem .9rem .25rem; margin: .75rem 0; }
.service h2 { display: flex; flex-wrap: wrap; justify-content: space-between; gap: .25rem .75rem; margin: .25rem 0;
  overflow-wrap: anywhere; }
@media (max-width: 640px) {
  main { padding: .5rem .6rem 2rem; }
  table.cards thead { display: none; }
  table.cards, table.cards tbody, table.cards tr, table.cards td { display: block; width: 100%; }
  table.cards tr { border: 1px solid var(--line); border-radius: .5rem; margin: .5rem 0; padding: .25rem .5rem; }
  table.cards td { border: 0; padding: .15rem 0; text-align: left; }
  table.cards td::before { content: attr(data-label) ": "; color: var(--muted); font-size: .8rem; font-weight: 400; }
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

/// The Content-Security-Policy of a public status page: no script at all, the page's style by
/// hash, and images only from the page's own logo (`img_src`: a CSP source naming that one image,
/// checked when the config was loaded), if it has one.
pub fn public_csp(img_src: Option<&str>) -> String {
    let img = img_src.map_or(String::new(), |src| format!("img-src {src}; "));
    format!(
        "default-src 'none'; style-src '{}'; {img}base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_source(STYLE)
    )
}

/// `sha256-<base64>`, a CSP hash source.
pub fn sha256_source(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("sha256-{}", base64(digest.as_ref()))
}

pub fn base64(bytes: &[u8]) -> String {
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
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
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

pub fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n",
        escape(title)
    )
}

/// `head`, for a page without script that reloads itself every `seconds` (a public status page).
pub fn head_refreshing(title: &str, seconds: u32) -> String {
    head(title).replacen("<title>", &format!("<meta http-equiv=\"refresh\" content=\"{seconds}\"><title>"), 1)
}

/// A whole page whose `#live` part the script refreshes from `src`.
pub fn document(title: &str, src: &str, live: &str) -> String {
    format!(
        "{}<body><header><a class=\"home\" href=\"/\">Vantage</a><span id=\"state\" class=\"bad\">not updating: this page needs JavaScript for that</span></header>\
         <main id=\"live\" data-src=\"{}\">{live}</main><script>{SCRIPT}</script></body></html>\n",
        head(title),
        escape(src)
    )
}

/// A whole page that does not refresh (the not-found page).
pub fn static_document(title: &str, body: &str) -> String {
    format!(
        "{}<body><header><a class=\"home\" href=\"/\">Vantage</a></header><main>{body}</main></body></html>\n",
        head(title)
    )
}

/// "as of <time>2026-05-01T10:00:00Z</time>": the `Z` is the one time-zone marker.
pub fn as_of(now: i64) -> String {
    format!("<time>{}</time>", crate::clock::rfc3339(now))
}

/// How healthy a target's certificate is, in the colours of the alerts it raises: red when it
/// has expired, is within its critical days, or fails validation (the target's cause is a
/// certificate failure such as a wrong host name); amber within its warning days; green when
/// fine. The thresholds are the target's own, applied by the agent that saw the certificate.
pub fn cert_health_class(s: &TargetStatus) -> &'static str {
    let invalid = s
        .cause
        .as_ref()
        .and_then(|c| FailureCode::from_code(&c.code))
        .is_some_and(|c| c.stage() == Stage::Certificate && c != FailureCode::CertExpired);
    match s.cert.as_ref().map(|c| names::cert_health(c.health)) {
        Some("expired") => "expired",
        _ if invalid => "invalid",
        Some(health) => health,
        None => "unknown",
    }
}

/// The table's certificate cell: days left and health, coloured (see `cert_health_class`).
pub fn cert_cell(s: &TargetStatus) -> String {
    let class = cert_health_class(s);
    match &s.cert {
        Some(c) => {
            let title = match &s.cause {
                Some(cause) if class == "invalid" => format!(" title=\"{}\"", escape(&cause.message)),
                _ => String::new(),
            };
            format!(
                "<td class=\"cert c-{class}\" data-label=\"Certificate\"{title}>{} d {class}</td>",
                c.days_remaining
            )
        }
        None => "<td class=\"cert\" data-label=\"Certificate\">-</td>".to_owned(),
    }
}

pub fn badge(verdict: &str) -> String {
    format!("<span class=\"badge v-{verdict}\">{verdict}</span>")
}

pub fn ms_of(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(crate::clock::ms)
}

/// "2026-05-01T10:00:00Z (3 min ago)".
pub fn when(ms: Option<i64>, now: i64) -> String {
    match ms {
        Some(ms) if ms > 0 => {
            format!("<time>{}</time> <span class=\"meta\">({} ago)</span>", crate::clock::rfc3339(ms), span(now - ms))
        }
        _ => "never".to_owned(),
    }
}

/// A duration in words: "4 s", "12 min", "3 h 5 min", "2 d 4 h".
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

pub fn failing_cell(s: &TargetStatus) -> String {
    let mut cell = if s.failing_regions.is_empty() {
        format!("0/{}", s.regions.len())
    } else {
        format!("{}/{} {}", s.failing_regions.len(), s.regions.len(), s.failing_regions.join(", "))
    };
    if !s.discounted_regions.is_empty() {
        cell.push_str(&format!(" ({} impaired, not counted)", s.discounted_regions.join(", ")));
    }
    cell
}

/// A banner per impaired region: its failures are the region's network, not the sites, and the
/// table below is judged without it (README: "Impaired regions").
pub fn region_banner(regions: &[vantage_proto::v1::RegionInfo], now: i64) -> String {
    let mut out = String::new();
    for r in regions.iter().filter(|r| r.impaired) {
        let _ = write!(
            out,
            "<div class=\"alarm\" role=\"status\" data-impaired-region=\"{name}\"><strong>Region {name} is \
             impaired</strong> since {since}: {reason}.</div>",
            name = escape(&r.region),
            since = when(ms_of(r.impaired_since.as_ref()), now),
            reason = escape(&r.impaired_reason),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::support::*;

    #[test]
    fn escape_replaces_every_markup_character() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain é text"), "plain é text");
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
        let region = |impaired: bool| vantage_proto::v1::RegionInfo {
            region: HOSTILE.into(),
            impaired,
            impaired_since: Some(crate::clock::timestamp(1_000)),
            impaired_reason: HOSTILE.into(),
            ..Default::default()
        };
        let html = region_banner(&[region(true)], 61_000);
        assert!(html.contains("data-impaired-region=") && html.contains("is impaired</strong>"), "{html}");
        assert!(!html.contains("<script>") && !html.contains("<img"), "escaped: {html}");
        assert!(region_banner(&[region(false)], 61_000).is_empty(), "no banner for a region that is not impaired");
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
        let public = public_csp(Some("https://cdn.example.com/logo.png"));
        assert!(public.contains(&sha256_source(style)) && !public.contains("script-src"), "{public}");
        assert!(public.contains("img-src https://cdn.example.com/logo.png; "), "{public}");
        assert!(!public_csp(None).contains("img-src"));
    }

    #[test]
    fn every_colour_has_a_dark_counterpart() {
        let css = head("t");
        let dark = css.split("prefers-color-scheme: dark").nth(1).expect("a dark scheme");
        let light = css.split("@media").next().unwrap();
        for var in [
            "--fg",
            "--muted",
            "--line",
            "--bg",
            "--soft",
            "--up",
            "--degraded",
            "--down",
            "--unknown",
            "--on-state",
            "--link",
            "--p50",
            "--alarm",
            "--empty",
        ] {
            assert!(light.contains(&format!("{var}: #")) && dark.contains(&format!("{var}: #")), "{var}");
        }
        // Colours outside the variables would not follow the scheme: only the silenced and
        // flapping badges keep theirs (white on purple and on orange read in both).
        let rules = css.split_once("@media (prefers-color-scheme: dark)").and_then(|(_, d)| d.split_once("\n}\n"));
        let rules = rules.map_or("", |(_, rest)| rest);
        assert_eq!(rules.matches(": #").count(), 4, "{rules}");
    }
}
