//! The certificate part of a target's page: the certificate closest to expiry that any region
//! saw, its facts, and whether regions see different ones.

use std::fmt::Write as _;

use vantage_proto::v1::{Certificate, HistoryEntry};

use super::html::{clip, escape, ms_of};
use crate::names;

/// Subject alternative names shown.
const MAX_SANS: usize = 50;

/// The certificate closest to expiry that any region saw (as the status reports it), and a
/// note when regions see different ones.
pub fn section(latest: &[HistoryEntry]) -> String {
    let mut out = String::new();
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
    out
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
    let health = names::cert_health(c.health);
    rows.push(("Days left", format!("<span class=\"c-{health}\">{} ({health})</span>", c.days_remaining)));
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
