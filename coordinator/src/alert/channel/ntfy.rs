//! ntfy: the alert's plain-text message POSTed to a topic, with `Title`, `Priority` (1–5 by
//! kind), `Tags` (an emoji and the kind) and `Click` (the status page) as headers, and a bearer
//! token or basic credentials when the server needs them. Header values are built from target
//! text, so they are made single-line printable ASCII first.
//! <https://docs.ntfy.sh/publish/>, <https://docs.ntfy.sh/publish/#message-priority>,
//! <https://docs.ntfy.sh/publish/#authentication>

use std::path::Path;
use std::sync::Arc;

use super::{Channel, Http, Secret, Sending, Settings, basic_auth};
use crate::alert::{Alert, AlertKind, Severity};

/// ntfy's default limit on a message; a longer one would become an attachment.
const MESSAGE_MAX: usize = 4096;
/// A header value's length, well under any server's limit.
const HEADER_MAX: usize = 250;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NtfyAuth {
    None,
    Bearer(Secret),
    Basic(String, Secret),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ntfy {
    /// The topic's URL.
    pub url: String,
    pub auth: NtfyAuth,
}

/// `type = "ntfy"`: `url` (a server with `topic`, or the topic's URL), and optionally
/// `token_file`, or `username` with `password_file`.
pub fn build(settings: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    let name = &settings.name;
    let server = settings.url(true)?.unwrap_or_default();
    let url = match &settings.topic {
        Some(topic) => {
            if !(1..=64).contains(&topic.len())
                || !topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(format!("channel {name}: topic: {topic:?} is not 1 to 64 letters, digits, - or _"));
            }
            format!("{}/{topic}", server.trim_end_matches('/'))
        }
        None if url::Url::parse(&server).is_ok_and(|u| u.path().trim_matches('/').is_empty()) => {
            return Err(format!("channel {name}: topic: missing (or give the topic's URL as url)"));
        }
        None => server,
    };
    let secret = |path: &Path, key: &str| Secret::read(path, dir).map_err(|e| format!("channel {name}: {key}: {e}"));
    let auth = match (&settings.token_file, &settings.username, &settings.password_file) {
        (None, None, None) => NtfyAuth::None,
        (Some(token), None, None) => NtfyAuth::Bearer(secret(token, "token_file")?),
        (None, Some(user), Some(password)) => NtfyAuth::Basic(user.clone(), secret(password, "password_file")?),
        (Some(_), _, _) => {
            return Err(format!("channel {name}: give token_file or username and password_file, not both"));
        }
        (None, _, _) => return Err(format!("channel {name}: username and password_file go together")),
    };
    if auth != NtfyAuth::None {
        // The credential goes with every request: not in the clear beyond this host.
        super::only_tls(name, "url", &url)?;
    }
    Ok(Arc::new(Ntfy { url, auth }))
}

impl Channel for Ntfy {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(async move {
            let mut headers = headers(alert);
            match &self.auth {
                NtfyAuth::None => {}
                NtfyAuth::Bearer(token) => headers.push(("authorization", format!("Bearer {}", token.0))),
                NtfyAuth::Basic(user, password) => headers.push(("authorization", basic_auth(user, password))),
            }
            let body = message(alert).into_bytes();
            http.post(&self.url, "text/plain; charset=utf-8", body, &headers, false).await.map(drop)
        })
    }
}

/// ntfy's priority for `kind`: 5 (max) for a target down, 4 (high) for the other critical
/// kinds, 3 (default) for warnings, 2 (low) for the ends of problems.
pub fn priority(kind: AlertKind) -> u8 {
    match kind.severity() {
        _ if kind == AlertKind::Down => 5,
        Severity::Critical => 4,
        Severity::Warning => 3,
        Severity::Info => 2,
    }
}

/// `Title`, `Priority`, `Tags` (an emoji ntfy shows, and the kind) and `Click`.
pub fn headers(alert: &Alert) -> Vec<(&'static str, String)> {
    let emoji = match priority(alert.kind) {
        5 | 4 => "rotating_light",
        3 => "warning",
        _ => "white_check_mark",
    };
    let mut headers = vec![
        ("title", header_value(&alert.summary())),
        ("priority", priority(alert.kind).to_string()),
        ("tags", format!("{emoji},{}", alert.kind.as_str())),
    ];
    if !alert.link.is_empty() {
        headers.push(("click", header_value(&alert.link)));
    }
    headers
}

/// The message: the alert's plain text, at most `MESSAGE_MAX` bytes, cut on a character.
pub fn message(alert: &Alert) -> String {
    let mut text = alert.text();
    if text.len() > MESSAGE_MAX {
        let mut end = MESSAGE_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `text` as one header line: control characters (CR and LF above all: no header can be
/// injected) become spaces, anything beyond ASCII `?`, and it is cut to `HEADER_MAX`.
pub fn header_value(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c,
            c if c.is_control() => ' ',
            _ => '?',
        })
        .take(HEADER_MAX)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_from_target_text_are_one_printable_line() {
        let mut down = Alert::new(AlertKind::Down, "https://a.example/\r\nX-Injected: 1\u{7f}é", 0, "k".into());
        down.link = "https://status.example.net/\n".into();
        let headers = headers(&down);
        assert_eq!(headers[0], ("title", "DOWN https://a.example/  X-Injected: 1 ?".to_owned()));
        assert_eq!(headers[1], ("priority", "5".to_owned()));
        assert_eq!(headers[2], ("tags", "rotating_light,down".to_owned()));
        assert_eq!(headers[3], ("click", "https://status.example.net/".to_owned()));
        for (_, value) in &headers {
            assert!(hyper::header::HeaderValue::from_str(value).is_ok(), "{value:?}");
        }
        let long = Alert::new(AlertKind::Down, &"é".repeat(3000), 0, "k".into());
        assert!(message(&long).len() <= MESSAGE_MAX);
        assert_eq!(super::headers(&long)[0].1.len(), HEADER_MAX);
    }

    #[test]
    fn config_errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("vantage-ntfy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ntfy.token"), "tk_s3cr3t\n").unwrap();
        let settings = |extra: &str| -> Settings {
            toml::from_str(&format!("name = \"push\"\ntype = \"ntfy\"\n{extra}")).unwrap()
        };
        let built =
            build(&settings("url = \"https://ntfy.sh/\"\ntopic = \"vantage-ops\"\ntoken_file = \"ntfy.token\""), &dir)
                .unwrap();
        let ntfy = (&*built as &dyn std::any::Any).downcast_ref::<Ntfy>().unwrap();
        assert_eq!(ntfy.url, "https://ntfy.sh/vantage-ops");
        assert_eq!(ntfy.auth, NtfyAuth::Bearer(Secret("tk_s3cr3t".into())));
        let topic_url = build(&settings("url = \"http://ntfy.internal/vantage\""), &dir).unwrap();
        let ntfy = (&*topic_url as &dyn std::any::Any).downcast_ref::<Ntfy>().unwrap();
        assert_eq!((ntfy.url.as_str(), &ntfy.auth), ("http://ntfy.internal/vantage", &NtfyAuth::None));
        for (extra, expected) in [
            ("topic = \"x\"", "channel push: url: missing"),
            ("url = \"https://ntfy.sh\"", "channel push: topic: missing"),
            ("url = \"https://ntfy.sh\"\ntopic = \"a/b\"", "channel push: topic: \"a/b\" is not"),
            ("url = \"https://ntfy.sh/t\"\ntoken_file = \"missing.token\"", "channel push: token_file: cannot read"),
            ("url = \"https://ntfy.sh/t\"\nusername = \"me\"", "channel push: username and password_file go together"),
            (
                "url = \"https://ntfy.sh/t\"\ntoken_file = \"ntfy.token\"\nusername = \"me\"\npassword_file = \"ntfy.token\"",
                "channel push: give token_file or username and password_file, not both",
            ),
            ("url = \"http://ntfy.internal/t\"\ntoken_file = \"ntfy.token\"", "channel push: url: must be https"),
        ] {
            let e = build(&settings(extra), &dir).unwrap_err();
            assert!(e.starts_with(expected) && !e.contains("s3cr3t"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
