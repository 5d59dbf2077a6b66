//! Telegram through the Bot API's `sendMessage`: the alert as HTML (the summary in bold, every
//! piece of target-provided text escaped), link previews off. The bot's token is a path segment
//! of the URL, so neither the URL nor the token ever appears in an error. Success is the
//! answer's `"ok": true`, not only its status.
//! <https://core.telegram.org/bots/api#sendmessage>, <https://core.telegram.org/bots/api#formatting-options>,
//! <https://core.telegram.org/bots/api#making-requests>

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::{Channel, Http, Secret, SendError, Sending, Settings, json};
use crate::alert::Alert;

pub const TELEGRAM_URL: &str = "https://api.telegram.org";
/// Telegram's limit on a message's text.
pub const TEXT_MAX: usize = 4096;

/// A chat: its number (groups and channels are negative), or a public channel's `@name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ChatId {
    Id(i64),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telegram {
    /// The API's base, without a trailing `/`.
    pub url: String,
    pub token: Secret,
    pub chat_id: ChatId,
}

/// `type = "telegram"`: `bot_token_file`, `chat_id`, and `url` when not Telegram's own.
pub fn build(settings: &Settings, dir: &Path) -> Result<Arc<dyn Channel>, String> {
    let name = &settings.name;
    let path = settings.bot_token_file.as_deref().ok_or_else(|| format!("channel {name}: bot_token_file: missing"))?;
    let token = Secret::read(path, dir).map_err(|e| format!("channel {name}: bot_token_file: {e}"))?;
    // As BotFather gives it: the bot's number, `:`, and letters, digits, `_` or `-` (so it is
    // one path segment as it stands).
    let well_formed = token.0.split_once(':').is_some_and(|(bot, key)| {
        !bot.is_empty()
            && bot.bytes().all(|b| b.is_ascii_digit())
            && !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !well_formed {
        return Err(format!("channel {name}: bot_token_file: not a bot token (123456:ABC-DEF…, from BotFather)"));
    }
    let chat_id = match settings.chat_id.clone() {
        None => return Err(format!("channel {name}: chat_id: missing (a chat's number, or @channelname)")),
        Some(ChatId::Name(n)) if n.parse::<i64>().is_ok() => ChatId::Id(n.parse().unwrap_or_default()),
        Some(ChatId::Name(n)) => {
            let channel = n.strip_prefix('@').unwrap_or_default();
            if !(5..=32).contains(&channel.len()) || !channel.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("channel {name}: chat_id: {n:?} is neither a chat's number nor @channelname"));
            }
            ChatId::Name(n)
        }
        Some(id) => id,
    };
    Ok(Arc::new(Telegram { url: settings.credential_url(TELEGRAM_URL)?, token, chat_id }))
}

impl Channel for Telegram {
    fn send<'a>(&'a self, http: &'a Http, alert: &'a Alert) -> Sending<'a> {
        Box::pin(async move {
            let url = format!("{}/bot{}/sendMessage", self.url, self.token.0);
            let answer = http.post(&url, "application/json", json(&body(alert, &self.chat_id))?, &[], true).await?;
            outcome(&answer)
        })
    }
}

/// What a 2xx answer says: `{"ok":true,…}` is a delivery; `{"ok":false,…}` an error classified
/// by its `error_code`; anything else is not the Bot API (a wrong `url`).
fn outcome(answer: &[u8]) -> Result<(), SendError> {
    #[derive(Deserialize)]
    struct Answer {
        ok: bool,
        error_code: Option<u16>,
        description: Option<String>,
    }
    match serde_json::from_slice::<Answer>(answer) {
        Ok(Answer { ok: true, .. }) => Ok(()),
        Ok(Answer { error_code, description, .. }) => {
            let code = error_code.unwrap_or(400);
            let reason = description.unwrap_or_default();
            Err(SendError::from_status(code, format!("Telegram: ok=false, error {code}: {}", super::cut(&reason, 200))))
        }
        Err(_) => Err(SendError::Misconfigured("the answer is not the Bot API's (no \"ok\")".into())),
    }
}

/// `sendMessage`'s JSON: HTML text of at most `TEXT_MAX` characters.
pub fn body(alert: &Alert, chat_id: &ChatId) -> serde_json::Value {
    let chat_id = match chat_id {
        ChatId::Id(id) => json!(id),
        ChatId::Name(name) => json!(name),
    };
    json!({
        "chat_id": chat_id,
        "text": html(alert),
        "parse_mode": "HTML",
        // Bot API 7.0 calls it `link_preview_options`; this older name is still honoured.
        "disable_web_page_preview": true,
    })
}

/// The summary in bold and the rest of the message as it is, escaped, cut to `TEXT_MAX`
/// characters without splitting an escape or leaving a tag open.
pub fn html(alert: &Alert) -> String {
    let text = alert.text();
    let (summary, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let mut out = String::from("<b>");
    // Room for the closing tag.
    let mut left = TEXT_MAX - "<b></b>".len();
    push_escaped(&mut out, summary, &mut left);
    out.push_str("</b>\n");
    left = left.saturating_sub(1);
    push_escaped(&mut out, rest.trim_end(), &mut left);
    out
}

/// Appends `text` with `<`, `>` and `&` escaped, while `left` characters remain.
fn push_escaped(out: &mut String, text: &str, left: &mut usize) {
    for c in text.chars() {
        let escaped = match c {
            '<' => "&lt;",
            '>' => "&gt;",
            '&' => "&amp;",
            _ => "",
        };
        let n = if escaped.is_empty() { 1 } else { escaped.len() };
        if n > *left {
            return;
        }
        *left -= n;
        if escaped.is_empty() {
            out.push(c);
        } else {
            out.push_str(escaped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertCause, AlertKind};

    #[test]
    fn target_text_is_escaped_and_the_text_fits() {
        let mut down = Alert::new(AlertKind::Down, "https://a.example/<b>&amp;", 0, "k".into());
        down.cause = Some(AlertCause { code: "http_status".into(), message: "<script>".into(), hint: "a & b".into() });
        let text = html(&down);
        assert!(text.starts_with("<b>DOWN https://a.example/&lt;b&gt;&amp;amp;: http_status</b>\n"), "{text}");
        assert!(text.contains("What:   &lt;script&gt;\n") && text.contains("Fix:    a &amp; b"), "{text}");
        down.detail = "&".repeat(5000);
        let text = html(&down);
        assert!(text.chars().count() <= TEXT_MAX, "{}", text.chars().count());
        assert!(text.ends_with("&amp;") && text.contains("</b>"), "never half an escape: {}", &text[text.len() - 20..]);
    }

    #[test]
    fn the_answer_decides() {
        assert_eq!(outcome(br#"{"ok":true,"result":{"message_id":7}}"#), Ok(()));
        let refused = outcome(br#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#);
        assert_eq!(
            refused,
            Err(SendError::Rejected("Telegram: ok=false, error 400: Bad Request: chat not found".into()))
        );
        assert!(
            outcome(br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#).unwrap_err().is_misconfigured()
        );
        assert!(outcome(b"<html>a login page</html>").unwrap_err().is_misconfigured());
    }

    #[test]
    fn config_errors_name_the_key_and_never_the_token() {
        let dir = std::env::temp_dir().join(format!("vantage-telegram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bot.token"), "123456:ABC-DEF_s3cr3t\n").unwrap();
        std::fs::write(dir.join("bad.token"), "s3cr3t/../x\n").unwrap();
        let settings = |extra: &str| -> Settings {
            toml::from_str(&format!("name = \"tg\"\ntype = \"telegram\"\n{extra}")).unwrap()
        };
        let built = build(&settings("bot_token_file = \"bot.token\"\nchat_id = -1001234567890"), &dir).unwrap();
        let telegram = (&*built as &dyn std::any::Any).downcast_ref::<Telegram>().unwrap();
        assert_eq!(telegram.chat_id, ChatId::Id(-1001234567890));
        assert!(!format!("{built:?}").contains("s3cr3t"));
        let named = build(&settings("bot_token_file = \"bot.token\"\nchat_id = \"@vantage_alerts\""), &dir).unwrap();
        let telegram = (&*named as &dyn std::any::Any).downcast_ref::<Telegram>().unwrap();
        assert_eq!(telegram.chat_id, ChatId::Name("@vantage_alerts".into()));
        for (extra, expected) in [
            ("chat_id = 1", "channel tg: bot_token_file: missing"),
            ("bot_token_file = \"missing.token\"\nchat_id = 1", "channel tg: bot_token_file: cannot read"),
            ("bot_token_file = \"bad.token\"\nchat_id = 1", "channel tg: bot_token_file: not a bot token"),
            ("bot_token_file = \"bot.token\"", "channel tg: chat_id: missing"),
            ("bot_token_file = \"bot.token\"\nchat_id = \"alerts\"", "channel tg: chat_id: \"alerts\" is neither"),
        ] {
            let e = build(&settings(extra), &dir).unwrap_err();
            assert!(e.starts_with(expected) && !e.contains("s3cr3t"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
