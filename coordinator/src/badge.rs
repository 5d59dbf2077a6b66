//! Badges for READMEs and wikis: `GET /badge/status.svg?target=URL` (the verdict) and
//! `GET /badge/uptime.svg?target=URL&window=30d` (the availability over a window), drawn as
//! shields.io's flat badge: a grey label and a coloured value, each as wide as its text.
//! The SVG is pure (`svg`); `answer` reads the hub and says what to serve (README: "Status page").

use std::fmt::Write as _;

use crate::hub::{Hub, HubError};

/// How long a client or proxy may reuse a status badge: a verdict changes within an interval,
/// so a short time; an availability figure moves slowly.
pub const STATUS_MAX_AGE: u32 = 30;
pub const UPTIME_MAX_AGE: u32 = 300;
/// The window of an uptime badge that names none.
pub const DEFAULT_WINDOW: &str = "30d";

/// shields.io's colours.
const GREY: &str = "#555";
const BRIGHTGREEN: &str = "#4c1";
const GREEN: &str = "#97ca00";
const YELLOW: &str = "#dfb317";
const ORANGE: &str = "#fe7d37";
const RED: &str = "#e05d44";
const LIGHTGREY: &str = "#9f9f9f";

/// Why no badge is served.
#[derive(Debug, thiserror::Error)]
pub enum BadgeError {
    #[error("no badge {0:?}: the badges are /badge/status.svg and /badge/uptime.svg")]
    NoBadge(String),
    #[error("name the target: ?target=<URL>")]
    NoTargetGiven,
    #[error("the coordinator does not watch {0}")]
    UnknownTarget(String),
    #[error("{0}")]
    BadWindow(String),
    #[error("reading availability failed; see the coordinator's log")]
    Store,
}

impl BadgeError {
    pub fn http_status(&self) -> u16 {
        match self {
            BadgeError::NoBadge(_) | BadgeError::UnknownTarget(_) => 404,
            BadgeError::NoTargetGiven | BadgeError::BadWindow(_) => 400,
            BadgeError::Store => 500,
        }
    }
}

/// A badge to serve: its SVG and how long it may be cached.
#[derive(Debug, Clone, PartialEq)]
pub struct Badge {
    pub svg: String,
    pub max_age: u32,
}

impl Badge {
    /// A strong validator: the badge's content, hashed (a badge that did not change is a 304).
    pub fn etag(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.svg.as_bytes());
        let hex: String = digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    }
}

/// The badge at `path` (`/badge/…`) for `query`.
pub async fn answer(hub: &Hub, path: &str, query: &str) -> Result<Badge, BadgeError> {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    };
    let kind = path.strip_prefix("/badge/").unwrap_or(path);
    if kind != "status.svg" && kind != "uptime.svg" {
        return Err(BadgeError::NoBadge(kind.to_owned()));
    }
    let url = target_of(query).ok_or(BadgeError::NoTargetGiven)?;
    if kind == "status.svg" {
        let status = hub.statuses(std::slice::from_ref(&url)).pop().ok_or(BadgeError::UnknownTarget(url))?;
        let (value, color) = status_value(crate::names::verdict(status.verdict));
        return Ok(Badge { svg: svg("status", value, color), max_age: STATUS_MAX_AGE });
    }
    let window = param("window").unwrap_or_else(|| DEFAULT_WINDOW.to_owned());
    let figures = hub.uptime(&url, std::slice::from_ref(&window)).await.map_err(|e| match e {
        HubError::NoTarget(url) => BadgeError::UnknownTarget(url),
        HubError::Refused(why) => BadgeError::BadWindow(why),
        e => {
            tracing::error!(error = %e, "an uptime badge failed");
            BadgeError::Store
        }
    })?;
    let percent = figures.first().and_then(|t| t.windows.first()).and_then(|w| w.percent);
    let (value, color) = uptime_value(percent);
    Ok(Badge { svg: svg(&format!("uptime {window}"), &value, color), max_age: UPTIME_MAX_AGE })
}

/// The target a badge request names (`target=URL`, the first if repeated), normalized: the one
/// both the badge and the gate's public-badge check read, so they cannot disagree.
pub fn target_of(query: &str) -> Option<String> {
    let asked = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "target")
        .map(|(_, v)| v.into_owned())
        .filter(|t| !t.is_empty())?;
    Some(vantage_shared::TargetUrl::parse(&asked).map(|u| u.to_string()).unwrap_or(asked))
}

/// A verdict's word and colour.
pub fn status_value(verdict: &str) -> (&'static str, &'static str) {
    match verdict {
        "UP" => ("up", BRIGHTGREEN),
        "DEGRADED" => ("degraded", YELLOW),
        "DOWN" => ("down", RED),
        _ => ("unknown", LIGHTGREY),
    }
}

/// An availability as the badge shows it: two decimals, rounded down (99.999 % is not 100 %),
/// coloured as shields.io's uptime badges are; "no data" when nothing was judged.
pub fn uptime_value(percent: Option<f64>) -> (String, &'static str) {
    let Some(p) = percent else { return ("no data".to_owned(), LIGHTGREY) };
    let text = if p >= 100.0 { "100%".to_owned() } else { format!("{:.2}%", (p * 100.0).floor() / 100.0) };
    let color = match p {
        p if p >= 99.9 => BRIGHTGREEN,
        p if p >= 99.0 => GREEN,
        p if p >= 97.0 => YELLOW,
        p if p >= 95.0 => ORANGE,
        _ => RED,
    };
    (text, color)
}

/// Width in pixels of `text` in 11 px Verdana (shields.io's font), close enough to size the
/// badge: per-character advances, wide characters wider.
fn text_width(text: &str) -> f64 {
    text.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '\'' | '!' | '|' => 3.3,
            ' ' | 'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '/' | '-' => 4.6,
            'm' | 'w' | 'M' | 'W' | '%' | '@' => 10.5,
            'A'..='Z' => 7.6,
            _ => 6.8,
        })
        .sum()
}

/// Text made safe inside SVG's text and attributes.
fn escape(text: &str) -> String {
    crate::page::escape(text)
}

/// shields.io's flat badge: `label` on grey, `value` on `color`, with the shadowed white text
/// and rounded corners; `aria-label` and `<title>` carry both for screen readers and hover.
pub fn svg(label: &str, value: &str, color: &str) -> String {
    const PAD: f64 = 10.0;
    let (lw, vw) = ((text_width(label) + PAD).round(), (text_width(value) + PAD).round());
    let width = lw + vw;
    let (lx, vx) = (lw / 2.0, lw + vw / 2.0);
    let (label, value) = (escape(label), escape(value));
    let mut out = String::with_capacity(1200);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"20\" role=\"img\" \
         aria-label=\"{label}: {value}\"><title>{label}: {value}</title>\
         <linearGradient id=\"s\" x2=\"0\" y2=\"100%\"><stop offset=\"0\" stop-color=\"#bbb\" stop-opacity=\".1\"/>\
         <stop offset=\"1\" stop-opacity=\".1\"/></linearGradient>\
         <clipPath id=\"r\"><rect width=\"{width}\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>\
         <g clip-path=\"url(#r)\"><rect width=\"{lw}\" height=\"20\" fill=\"{GREY}\"/>\
         <rect x=\"{lw}\" width=\"{vw}\" height=\"20\" fill=\"{color}\"/>\
         <rect width=\"{width}\" height=\"20\" fill=\"url(#s)\"/></g>\
         <g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\" \
         font-size=\"11\">\
         <text x=\"{lx}\" y=\"15\" fill=\"#010101\" fill-opacity=\".3\">{label}</text>\
         <text x=\"{lx}\" y=\"14\">{label}</text>\
         <text x=\"{vx}\" y=\"15\" fill=\"#010101\" fill-opacity=\".3\">{value}</text>\
         <text x=\"{vx}\" y=\"14\">{value}</text></g></svg>",
    );
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small XML well-formedness check: every tag closed in order, attributes quoted, no raw
    /// `<` or `&` in text. Returns the elements' names in document order.
    pub(crate) fn well_formed(xml: &str) -> Result<Vec<String>, String> {
        let (mut stack, mut seen, mut rest) = (Vec::<String>::new(), Vec::new(), xml);
        let check_text = |t: &str| -> Result<(), String> {
            if t.contains('>') {
                return Err(format!("raw > in text {t:?}"));
            }
            let mut parts = t.split('&').skip(1);
            parts.try_for_each(|p| {
                let ok = ["amp;", "lt;", "gt;", "quot;", "#39;"].iter().any(|e| p.starts_with(e));
                if ok { Ok(()) } else { Err(format!("bad entity in {t:?}")) }
            })
        };
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("</{name}> closes nothing open"));
                }
                continue;
            }
            let empty = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().ok_or("an empty tag")?.to_owned();
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':') {
                return Err(format!("bad element name {name:?}"));
            }
            // Attributes: name="value" pairs, nothing else.
            let mut attrs = tag[name.len()..].trim();
            while !attrs.is_empty() {
                let eq = attrs.find("=\"").ok_or(format!("unquoted attribute in <{tag}>"))?;
                let end = attrs[eq + 2..].find('"').ok_or("unterminated attribute")? + eq + 2;
                check_text(&attrs[eq + 2..end])?;
                if attrs[eq + 2..end].contains('<') {
                    return Err(format!("raw < in an attribute of <{name}>"));
                }
                attrs = attrs[end + 1..].trim_start();
            }
            seen.push(name.clone());
            if !empty {
                stack.push(name);
            }
        }
        check_text(rest)?;
        if stack.is_empty() && !seen.is_empty() { Ok(seen) } else { Err(format!("unclosed {stack:?}")) }
    }

    #[test]
    fn a_badge_is_well_formed_svg_with_both_texts_and_the_colour() {
        let (value, color) = status_value("DOWN");
        let svg = svg("status", value, color);
        let elements = well_formed(&svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert_eq!(elements[0], "svg");
        assert_eq!(elements.iter().filter(|e| *e == "text").count(), 4, "label and value, each with its shadow");
        assert!(svg.contains("aria-label=\"status: down\""), "{svg}");
        assert!(svg.contains(&format!("fill=\"{RED}\"")), "{svg}");
    }

    #[test]
    fn the_badge_is_as_wide_as_its_texts() {
        let short = svg("status", "up", BRIGHTGREEN);
        let long = svg("status", "degraded", YELLOW);
        let width = |s: &str| -> f64 {
            s.split("width=\"").nth(1).and_then(|w| w.split('"').next()).and_then(|w| w.parse().ok()).unwrap()
        };
        assert!(width(&long) > width(&short) + 25.0, "{} vs {}", width(&long), width(&short));
        // About shields.io's own: "status | up" is 64 px wide there.
        assert!((55.0..75.0).contains(&width(&short)), "{}", width(&short));
    }

    #[test]
    fn markup_in_a_label_is_escaped() {
        let svg = svg("<b>&\"", "up", BRIGHTGREEN);
        well_formed(&svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert!(!svg.contains("<b>"));
    }

    #[test]
    fn availability_is_rounded_down_and_coloured_by_threshold() {
        assert_eq!(uptime_value(Some(100.0)), ("100%".to_owned(), BRIGHTGREEN));
        assert_eq!(uptime_value(Some(99.999)), ("99.99%".to_owned(), BRIGHTGREEN));
        assert_eq!(uptime_value(Some(99.5)), ("99.50%".to_owned(), GREEN));
        assert_eq!(uptime_value(Some(96.0)).1, ORANGE);
        assert_eq!(uptime_value(Some(78.8087)), ("78.80%".to_owned(), RED));
        assert_eq!(uptime_value(None), ("no data".to_owned(), LIGHTGREY));
    }

    #[test]
    fn the_etag_follows_the_content() {
        let a = Badge { svg: svg("status", "up", BRIGHTGREEN), max_age: 30 };
        let b = Badge { svg: svg("status", "down", RED), max_age: 30 };
        assert_eq!(a.etag(), a.clone().etag());
        assert_ne!(a.etag(), b.etag());
        assert!(a.etag().starts_with('"') && a.etag().ends_with('"'));
    }
}
