//! SMS through Twilio's Messages API: one form-encoded `POST` per recipient, a terse text that
//! fits one SMS segment (160 GSM-7 characters) with the status page's link, and per alert a
//! memory of the recipients already texted, so a retry after a partial failure texts only the
//! others.
//! <https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource>

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{Channel, Http, Secret, SendError, Sending, Settings, basic_auth};
use crate::alert::{Alert, AlertKind};

pub const TWILIO_URL: &str = "https://api.twilio.com";
/// One SMS segment: 160 septets of the GSM 03.38 alphabet (one more character, or one outside
/// it, and the carrier splits or re-encodes the message).
pub const SMS_MAX: usize = 160;
/// Alerts whose recipients are remembered at once; beyond it the memory is dropped, and a retry
/// may text someone twice.
const REMEMBERED: usize = 1024;

#[derive(Debug)]
pub struct Twilio {
    /// The API's base, without a trailing `/`.
    pub url: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// An E.164 number or an alphanumeric sender ID.
    pub from: String,
    /// E.164 numbers.
    pub to: Vec<String>,
    /// Per alert id, which of `to` have their text.
    texted: Mutex<HashMap<String, Vec<bool>>>,
}

/// `type = "twilio"`: `account_sid`, `auth_token_file`, `from`, `to`, and `url` when not
/// Twilio's own.
pub fn build(settings: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    let name = &settings.name;
    let account_sid =
        settings.account_sid.clone().ok_or_else(|| format!("channel {name}: account_sid: missing (AC…)"))?;
    let hex = account_sid.strip_prefix("AC").unwrap_or_default();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("channel {name}: account_sid: {account_sid:?} is not AC and 32 hex digits"));
    }
    let token =
        settings.auth_token_file.as_deref().ok_or_else(|| format!("channel {name}: auth_token_file: missing"))?;
    let auth_token = Secret::read(token, dir).map_err(|e| format!("channel {name}: auth_token_file: {e}"))?;
    let from = settings.from.clone().ok_or_else(|| format!("channel {name}: from: missing"))?;
    if !e164(&from) && !sender_id(&from) {
        return Err(format!(
            "channel {name}: from: {from:?} is neither an E.164 number (+ and up to 15 digits) nor an alphanumeric sender ID"
        ));
    }
    if settings.to.is_empty() {
        return Err(format!("channel {name}: to: name at least one number"));
    }
    if let Some(bad) = settings.to.iter().find(|n| !e164(n)) {
        return Err(format!(
            "channel {name}: to: {bad:?} is not an E.164 number (+ and up to 15 digits, as +14155550100)"
        ));
    }
    Ok(Arc::new(Twilio {
        url: settings.credential_url(TWILIO_URL)?,
        account_sid,
        auth_token,
        from,
        to: settings.to.clone(),
        texted: Mutex::default(),
    }))
}

/// `+`, a non-zero digit, and at most 14 more: E.164.
fn e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
    })
}

/// Twilio's alphanumeric sender ID: up to 11 letters, digits and spaces, at least one letter.
fn sender_id(from: &str) -> bool {
    (1..=11).contains(&from.len())
        && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && from.bytes().any(|b| b.is_ascii_alphabetic())
}

impl Channel for Twilio {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(send(self, http, alert))
    }
}

async fn send(twilio: &Twilio, http: &Http, alert: &Alert) -> Result<(), SendError> {
    let url = format!("{}/2010-04-01/Accounts/{}/Messages.json", twilio.url, twilio.account_sid);
    let auth = [("authorization", basic_auth(&twilio.account_sid, &twilio.auth_token))];
    let text = sms(alert);
    let texted = twilio.remembered(&alert.id);
    let mut worst: Option<SendError> = None;
    for (i, to) in twilio.to.iter().enumerate().filter(|(i, _)| !texted[*i]) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("To", to)
            .append_pair("From", &twilio.from)
            .append_pair("Body", &text)
            .finish();
        match http.post(&url, "application/x-www-form-urlencoded", body.into_bytes(), &auth, false).await {
            // Written down at once: a send cut short by its time limit keeps what it did.
            Ok(_) => twilio.mark_texted(&alert.id, i),
            Err(e) => {
                let e = match e {
                    SendError::Transient(m) => SendError::Transient(format!("to {to}: {m}")),
                    SendError::Rejected(m) => SendError::Rejected(format!("to {to}: {m}")),
                    SendError::Misconfigured(m) => SendError::Misconfigured(format!("to {to}: {m}")),
                };
                // What a retry can mend outranks a refusal of this alert.
                if !matches!(worst, Some(SendError::Misconfigured(_)))
                    && (worst.is_none() || !matches!(e, SendError::Rejected(_)))
                {
                    worst = Some(e);
                }
            }
        }
    }
    match worst {
        Some(e) => Err(e),
        None => {
            twilio.forget(&alert.id);
            Ok(())
        }
    }
}

impl Twilio {
    /// Which recipients already have `id`'s text.
    fn remembered(&self, id: &str) -> Vec<bool> {
        let texted = self.texted.lock().unwrap_or_else(|p| p.into_inner());
        texted.get(id).cloned().unwrap_or_else(|| vec![false; self.to.len()])
    }

    /// Recipient `i` has `id`'s text.
    fn mark_texted(&self, id: &str, i: usize) {
        let mut texted = self.texted.lock().unwrap_or_else(|p| p.into_inner());
        if texted.len() >= REMEMBERED && !texted.contains_key(id) {
            texted.clear();
        }
        texted.entry(id.to_owned()).or_insert_with(|| vec![false; self.to.len()])[i] = true;
    }

    /// Every recipient has `id`'s text.
    fn forget(&self, id: &str) {
        self.texted.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// The SMS: `DOWN shop.example: tls_expired in 3/3 regions https://status…`, at most `SMS_MAX`
/// GSM-7 septets. When too long, the description is cut (ending in `...`) and the link kept
/// whole; a link too long to leave room for the description is dropped.
pub fn sms(alert: &Alert) -> String {
    let about = alert.about();
    let subject = about.strip_prefix("https://").unwrap_or(&about);
    let subject = subject.strip_suffix('/').filter(|s| !s.contains('/')).unwrap_or(subject);
    let mut text = format!("{} {subject}", alert.kind.title());
    if let Some(cause) = &alert.cause {
        text.push_str(&format!(": {}", cause.code));
    }
    match alert.kind {
        AlertKind::Down | AlertKind::Degraded if !alert.regions.is_empty() => {
            text.push_str(&format!(" in {}/{} regions", alert.regions.len(), alert.of_regions));
        }
        _ if alert.kind.resolves() => {
            if let Some(d) = alert.duration_ms {
                text.push_str(&format!(" after {}", crate::clock::human_duration(d)));
            }
        }
        AlertKind::CertWarning | AlertKind::CertCritical => {
            if let Some(not_after) = &alert.not_after {
                text.push_str(&format!(", expires {not_after}"));
            }
        }
        _ => {}
    }
    let text = gsm(&text);
    let link = gsm(&alert.link);
    // Room for at least the title and most of a host beside the link.
    if link.is_empty() || septets(&link) > SMS_MAX - 40 {
        return cut_septets(&text, SMS_MAX);
    }
    let room = SMS_MAX - 1 - septets(&link);
    format!("{} {link}", cut_septets(&text, room))
}

/// `text` in the GSM 03.38 alphabet: printable ASCII but the backtick stays, line breaks become
/// spaces, and anything else becomes `?` (so the message is never re-encoded as UCS-2, which
/// holds only 70 characters a segment).
fn gsm(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '`' => '\'',
            ' '..='~' => c,
            '\n' | '\r' | '\t' => ' ',
            _ => '?',
        })
        .collect()
}

/// GSM-7 septets of text that `gsm` made: the extension table's characters take two.
fn septets(text: &str) -> usize {
    text.chars().map(|c| if "^{}\\[~]|".contains(c) { 2 } else { 1 }).sum()
}

/// `text` cut to at most `max` septets, on a character, ending in `...` when cut.
fn cut_septets(text: &str, max: usize) -> String {
    if septets(text) <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let n = septets(c.encode_utf8(&mut [0; 4]));
        if used + n > max.saturating_sub(3) {
            break;
        }
        out.push(c);
        used += n;
    }
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertCause;

    fn down(subject: &str, link: &str) -> Alert {
        let mut a = Alert::new(AlertKind::Down, subject, 0, "vantage/target/x".into());
        a.regions = vec!["eu-west".into(), "us-east".into(), "ap-south".into()];
        a.of_regions = 3;
        a.cause = Some(AlertCause { code: "tls_expired".into(), message: String::new(), hint: String::new() });
        a.link = link.into();
        a
    }

    #[test]
    fn an_sms_is_terse_and_carries_the_link() {
        assert_eq!(
            sms(&down("https://example.com/", "https://status.example.net/")),
            "DOWN example.com: tls_expired in 3/3 regions https://status.example.net/"
        );
        let mut up = Alert::new(AlertKind::Recovered, "https://example.com/shop", 0, "k".into());
        up.duration_ms = Some(372_000);
        assert_eq!(sms(&up), "RECOVERED example.com/shop after 6m 12s");
    }

    #[test]
    fn an_sms_fits_one_segment_whatever_the_url_and_keeps_the_link_whole() {
        let link = "https://status.example.net/";
        let long = format!("https://{}.example.com/{}", "a".repeat(60), "é~".repeat(300));
        let text = sms(&down(&long, link));
        assert!(septets(&text) <= SMS_MAX, "{} septets: {text}", septets(&text));
        assert!(text.ends_with(&format!("... {link}")), "{text}");
        assert!(text.starts_with("DOWN aaaa"), "{text}");
        assert!(text.is_ascii(), "GSM-7 only: {text}");
        // Every length of subject around the limit: never over, always on a character.
        for n in 60..200 {
            let text = sms(&down(&format!("https://x.example/{}", "~".repeat(n)), link));
            assert!(septets(&text) <= SMS_MAX && text.ends_with(link), "{n}: {text}");
        }
        // A link that leaves no room for the news is dropped, not cut.
        let huge = format!("https://status.example.net/{}", "p".repeat(150));
        let text = sms(&down("https://example.com/", &huge));
        assert_eq!(text, "DOWN example.com: tls_expired in 3/3 regions");
        let text = sms(&down(&long, &huge));
        assert!((SMS_MAX - 1..=SMS_MAX).contains(&septets(&text)), "{text}");
        assert!(!text.contains("status.example.net"), "{text}");
    }

    fn settings(extra: &str) -> Settings {
        toml::from_str(&format!("name = \"sms\"\ntype = \"twilio\"\n{extra}")).unwrap()
    }

    #[test]
    fn config_errors_name_the_key_and_never_the_token() {
        let dir = std::env::temp_dir().join(format!("vantage-twilio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("twilio.token"), "tw1l10-t0ken\n").unwrap();
        let sid = format!("account_sid = \"AC{}\"\n", "0123456789abcdef".repeat(2));
        let good =
            format!("{sid}auth_token_file = \"twilio.token\"\nfrom = \"+14155550100\"\nto = [\"+442071838750\"]\n");
        let built = build(&settings(&good), &dir).unwrap();
        let twilio = (&*built as &dyn std::any::Any).downcast_ref::<Twilio>().unwrap();
        assert_eq!((twilio.url.as_str(), twilio.auth_token.0.as_str()), (TWILIO_URL, "tw1l10-t0ken"));
        assert!(!format!("{twilio:?}").contains("t0ken"));
        let sender = good.replace("+14155550100", "Vantage");
        assert!(build(&settings(&sender), &dir).is_ok());
        for (bad, expected) in [
            (good.replace(&sid, ""), "channel sms: account_sid: missing"),
            (good.replace("AC0123", "XX0123"), "channel sms: account_sid: \"XX0123"),
            (good.replace("auth_token_file = \"twilio.token\"\n", ""), "channel sms: auth_token_file: missing"),
            (good.replace("twilio.token", "missing.token"), "channel sms: auth_token_file: cannot read"),
            (good.replace("from = \"+14155550100\"\n", ""), "channel sms: from: missing"),
            (good.replace("[\"+442071838750\"]", "[]"), "channel sms: to: name at least one number"),
            (good.replace("+442071838750", "020 7183 8750"), "channel sms: to: \"020 7183 8750\" is not an E.164"),
            (good.replace("+442071838750", "+0442071838750"), "channel sms: to: \"+0442071838750\""),
            (good.replace("+442071838750", "+4420718387501234"), "channel sms: to: \"+4420718387501234\""),
            (good.replace("+14155550100", "Vantage Alerts"), "channel sms: from: \"Vantage Alerts\" is neither"),
            (format!("{good}url = \"http://api.example.net\"\n"), "channel sms: url: must be https"),
        ] {
            let e = build(&settings(&bad), &dir).unwrap_err();
            assert!(e.starts_with(expected), "{e}");
            assert!(!e.contains("t0ken"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
