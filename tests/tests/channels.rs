//! The chat, SMS and paging channels, through a real coordinator and agent: one outage of a TLS
//! site made at test time, and each service's request checked against a real HTTP receiver as the
//! service documents it (method, path, query, authentication, content type and body), with the
//! service's own answers (Twilio's 201, Opsgenie's and Teams' 202, Discord's 204 and its 429,
//! Telegram's `{"ok":…}`). Every secret stays out of the coordinator's output.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use vantage_e2e::alert_world::World;
use vantage_e2e::receiver::{Received, Receiver};

const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "tw1l10-auth-t0ken";
/// `printf '%s' "$TWILIO_SID:$TWILIO_TOKEN" | base64`: HTTP basic authentication.
const TWILIO_BASIC: &str = "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0dzFsMTAtYXV0aC10MGtlbg==";
const OPSGENIE_KEY: &str = "0psg3n1e-api-key-5f1c";
const TEAMS_SIG: &str = "T3AMS-SIG-d41d8cd98f00b204";
const DISCORD_TOKEN: &str = "D1SC0RD-T0KEN-e9800998ecf8427e";
const BOT_TOKEN: &str = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11";
const NTFY_TOKEN: &str = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2";
const STATUS: &str = "http://vantage.alerts.test/";

/// The fields of a form-encoded body (`application/x-www-form-urlencoded`), decoded.
fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("a percent escape"));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).expect("UTF-8")
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn field(body: &[u8], name: &str) -> String {
    form(body).into_iter().find(|(k, _)| k == name).map(|(_, v)| v).unwrap_or_default()
}

/// `text` percent-encoded as one path segment (as Opsgenie wants an alias in a path).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The first alert of `kind` the coordinator recorded about `url` (ListAlerts).
fn alert(w: &World, kind: &str, url: &str) -> Value {
    let alerts = w.call("ListAlerts", &format!("{{\"subject\": \"{url}\"}}"));
    alerts["alerts"].as_array().unwrap().iter().find(|a| a["kind"] == kind).cloned().unwrap_or(Value::Null)
}

fn delivery(alert: &Value, channel: &str) -> Value {
    alert["deliveries"].as_array().unwrap().iter().find(|d| d["channel"] == channel).cloned().unwrap_or(Value::Null)
}

#[test]
fn each_service_gets_its_documented_request_for_one_outage() {
    let receiver = Receiver::start();
    let mut w = World::new("six-channels");
    let shop = w.add_site("shop", 90);
    let (url, port) = (w.sites[shop].url.clone(), w.sites[shop].port);
    w.write("twilio.token", TWILIO_TOKEN);
    w.write("opsgenie.key", OPSGENIE_KEY);
    w.write("bot.token", BOT_TOKEN);
    w.write("ntfy.token", NTFY_TOKEN);
    let teams_url = format!(
        "{}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIG}",
        receiver.url("/teams/workflows/4f2a9c/triggers/manual/paths/invoke")
    );
    w.write("teams.url", &teams_url);

    // The services' answers (the first rule that matches decides). Twilio: the first text to the
    // second number meets a 503, so the retry must text only that number; then 201 and the message.
    let failed_once = Arc::new(AtomicBool::new(false));
    let failed = failed_once.clone();
    receiver.answer(503, move |r| {
        r.path.starts_with("/twilio/")
            && field(&r.body, "To") == "+442071838750"
            && !failed.swap(true, Ordering::SeqCst)
    });
    let accepted =
        r#"{"result":"Request will be processed","took":0.302,"requestId":"43a29c5c-3dbf-4fa4-9c26-f4f71023e120"}"#;
    receiver.answer_with(202, accepted, |r| r.path.starts_with("/opsgenie/"));
    receiver.answer_with(202, "", |r| r.path.starts_with("/teams/"));
    // Discord: rate limited once (the 429 its docs show), then 204 No Content.
    let limited_once = Arc::new(AtomicBool::new(false));
    let limited = limited_once.clone();
    receiver.answer_with(
        429,
        r#"{"message": "You are being rate limited.", "retry_after": 0.3, "global": false}"#,
        move |r| r.path.starts_with("/discord/") && !limited.swap(true, Ordering::SeqCst),
    );
    receiver.answer_with(204, "", |r| r.path.starts_with("/discord/"));
    receiver.answer_with(
        200,
        r#"{"ok":true,"result":{"message_id":42,"chat":{"id":-1001234567890,"type":"channel"},"date":1795635848}}"#,
        |r| r.path.starts_with("/telegram/"),
    );
    // A chat the bot is not in (Telegram's 400), and a URL that is not the Bot API (200, "ok").
    receiver.answer_with(400, r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#, |r| {
        r.path.starts_with("/telegram-lost/")
    });
    receiver.answer_with(200, r#"{"id":"hwQ2YpKdmg","event":"message","topic":"vantage-ops"}"#, |r| {
        r.path.starts_with("/ntfy/")
    });

    let config = format!(
        r#"[alerts]
status_url = "{STATUS}"

[[channel]]
name = "sms"
type = "twilio"
url = "{twilio}"
account_sid = "{TWILIO_SID}"
auth_token_file = "twilio.token"
from = "+14155550100"
to = ["+14155550101", "+442071838750"]

[[channel]]
name = "opsgenie"
type = "opsgenie"
url = "{opsgenie}"
api_key_file = "opsgenie.key"

[[channel]]
name = "teams"
type = "teams"
url_file = "teams.url"

[[channel]]
name = "discord"
type = "discord"
url = "{discord}"

[[channel]]
name = "telegram"
type = "telegram"
url = "{telegram}"
bot_token_file = "bot.token"
chat_id = -1001234567890

[[channel]]
name = "telegram-lost"
type = "telegram"
url = "{telegram_lost}"
bot_token_file = "bot.token"
chat_id = "@no_such_channel"

[[channel]]
name = "not-telegram"
type = "telegram"
url = "{not_telegram}"
bot_token_file = "bot.token"
chat_id = 7

[[channel]]
name = "ntfy"
type = "ntfy"
url = "{ntfy}"
topic = "vantage-ops"
token_file = "ntfy.token"

[[route]]
channels = ["sms", "opsgenie", "teams", "discord", "telegram", "telegram-lost", "not-telegram", "ntfy"]

{targets}"#,
        twilio = receiver.url("/twilio"),
        opsgenie = receiver.url("/opsgenie/"),
        discord = receiver.url(&format!("/discord/api/webhooks/1234567890/{DISCORD_TOKEN}")),
        telegram = receiver.url("/telegram"),
        telegram_lost = receiver.url("/telegram-lost"),
        not_telegram = receiver.url("/not-telegram"),
        ntfy = receiver.url("/ntfy"),
        targets = w.targets_toml(&[]),
    );
    let config = w.write("vantage.toml", &config);
    w.start_coordinator(&config);
    w.start_agent(0);
    w.coordinator().wait_for_line(|l| l.contains("verdict changed") && l.contains("\"UP\""));
    w.stop_site(shop);

    // Twilio: one form POST per number to the account's Messages.json, basic authentication,
    // a one-segment text with the link.
    let sms = format!("DOWN shop.alerts.test:{port}: tcp_refused in 1/1 regions {STATUS}");
    let twilio_path = format!("/twilio/2010-04-01/Accounts/{TWILIO_SID}/Messages.json");
    let texts = |to: &str| {
        let (path, to) = (twilio_path.clone(), to.to_owned());
        move |r: &Received| r.path == path && field(&r.body, "To") == to && field(&r.body, "Body").starts_with("DOWN")
    };
    for to in ["+14155550101", "+442071838750"] {
        let r = receiver.wait_for(&format!("Twilio's text to {to}"), texts(to));
        assert_eq!((r.method.as_str(), r.query.as_str()), ("POST", ""));
        assert_eq!(r.header("authorization"), Some(TWILIO_BASIC));
        assert_eq!(r.header("content-type"), Some("application/x-www-form-urlencoded"));
        let fields = form(&r.body);
        assert_eq!(
            fields,
            [("To".into(), to.into()), ("From".into(), "+14155550100".into()), ("Body".into(), sms.clone())]
        );
        assert!(sms.len() <= 160);
    }
    assert!(failed_once.load(Ordering::SeqCst), "the second number's first text met a 503");
    assert_eq!(receiver.all(texts("+14155550101")).len(), 1, "the retry texted only the number it had missed");
    assert_eq!(receiver.all(texts("+442071838750")).len(), 2, "refused once, then accepted");

    let down = alert(&w, "down", &url);
    let (summary, text, dedup_key) =
        (down["summary"].as_str().unwrap(), down["text"].as_str().unwrap(), down["dedupKey"].as_str().unwrap());
    assert_eq!(summary, format!("DOWN {url}: tcp_refused in eu-west (1 of 1 regions)"));

    // Opsgenie: create, GenieKey authentication, the dedup key as the alias, P1.
    let r = receiver.wait_for("Opsgenie's create", |r| r.path == "/opsgenie/v2/alerts");
    assert_eq!((r.method.as_str(), r.query.as_str()), ("POST", ""));
    assert_eq!(r.header("authorization"), Some(format!("GenieKey {OPSGENIE_KEY}").as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({
            "message": summary,
            "alias": dedup_key,
            "description": text,
            "tags": ["vantage", "down"],
            "details": {
                "kind": "down",
                "subject": url,
                "regions": "eu-west",
                "cause": "tcp_refused",
                "event_id": down["id"],
                "link": STATUS,
            },
            "entity": url,
            "source": "Vantage",
            "priority": "P1",
        })
    );

    // Teams: the workflow's URL as written (its query is its signature), an Adaptive Card.
    let r = receiver.wait_for("Teams' card", |r| r.path.starts_with("/teams/"));
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/teams/workflows/4f2a9c/triggers/manual/paths/invoke");
    assert_eq!(r.query, format!("api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIG}"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let message = r.json();
    assert_eq!(message["type"], "message");
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(attachment["contentUrl"], Value::Null);
    let card = &attachment["content"];
    assert_eq!(
        (&card["$schema"], &card["type"], &card["version"]),
        (&json!("http://adaptivecards.io/schemas/adaptive-card.json"), &json!("AdaptiveCard"), &json!("1.4"))
    );
    assert_eq!(
        card["body"][0],
        json!({"type": "TextBlock", "text": "DOWN", "weight": "Bolder", "size": "Medium", "color": "Attention"})
    );
    assert_eq!(card["body"][1], json!({"type": "TextBlock", "text": summary, "wrap": true}));
    assert_eq!(card["body"][2]["type"], "FactSet");
    assert!(card["body"][2]["facts"].as_array().unwrap().contains(&json!({"title": "Status", "value": STATUS})));
    assert_eq!(card["actions"], json!([{"type": "Action.OpenUrl", "title": "Open the status page", "url": STATUS}]));

    // Discord: content, one embed, no mentions; the 429 was retried.
    let discord_path = format!("/discord/api/webhooks/1234567890/{DISCORD_TOKEN}");
    let r = receiver.wait_for("Discord's message", |r| r.path == discord_path);
    assert_eq!((r.method.as_str(), r.query.as_str()), ("POST", ""));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["content"], summary);
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
    let embed = &body["embeds"][0];
    assert_eq!((&embed["title"], &embed["description"]), (&json!(format!("DOWN {url}")), &json!(summary)));
    assert_eq!((&embed["color"], &embed["url"]), (&json!(0xD93025), &json!(STATUS)));
    assert!(embed["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{embed}");
    assert!(embed["fields"].as_array().unwrap().contains(&json!({"name": "Status", "value": STATUS, "inline": false})));
    assert_eq!(receiver.refused(|r| r.path == discord_path).len(), 1, "rate limited once, then accepted");

    // Telegram: sendMessage under the bot's token, HTML with the summary in bold, no preview.
    let r = receiver.wait_for("Telegram's message", |r| r.path.starts_with("/telegram/"));
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", format!("/telegram/bot{BOT_TOKEN}/sendMessage").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let rest = text.split_once('\n').unwrap().1.trim_end();
    assert_eq!(
        r.json(),
        json!({
            "chat_id": -1001234567890_i64,
            "text": format!("<b>{summary}</b>\n{rest}"),
            "parse_mode": "HTML",
            "disable_web_page_preview": true,
        })
    );

    // ntfy: the message to the topic, its headers, the bearer token.
    let r = receiver.wait_for("ntfy's message", |r| r.path == "/ntfy/vantage-ops");
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("authorization"), Some(format!("Bearer {NTFY_TOKEN}").as_str()));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!((r.header("title"), r.header("priority")), (Some(summary), Some("5")));
    assert_eq!((r.header("tags"), r.header("click")), (Some("rotating_light,down"), Some(STATUS)));
    assert_eq!(String::from_utf8_lossy(&r.body), text);

    // What the coordinator says of each delivery: the refused chat failed at once, the URL that
    // is not the Bot API is a misconfigured channel (retried), the rest were delivered.
    let settled = eventually(|| {
        let down = alert(&w, "down", &url);
        let states: Vec<String> = ["sms", "opsgenie", "teams", "discord", "telegram", "ntfy", "telegram-lost"]
            .iter()
            .map(|c| delivery(&down, c)["state"].as_str().unwrap_or_default().to_owned())
            .collect();
        let not_telegram = delivery(&down, "not-telegram");
        (states == ["delivered", "delivered", "delivered", "delivered", "delivered", "delivered", "failed"]
            && not_telegram["lastError"].as_str().is_some_and(|e| !e.is_empty()))
        .then_some(down)
    });
    let lost = delivery(&settled, "telegram-lost");
    assert_eq!(
        lost["lastError"],
        "HTTP 400 Bad Request: {\"ok\":false,\"error_code\":400,\"description\":\"Bad Request: chat not found\"} (this alert is refused: not retried)",
        "{settled}"
    );
    let fake = delivery(&settled, "not-telegram");
    assert_eq!(fake["state"], "pending", "{settled}");
    assert!(fake["lastError"].as_str().unwrap().starts_with("the answer is not the Bot API's"), "{settled}");
    assert!(delivery(&settled, "discord")["attempts"].as_u64() >= Some(2), "{settled}");

    // The site is back: Opsgenie's alias is closed, every other service hears RECOVERED.
    w.start_site(shop);
    let close_path = format!("/opsgenie/v2/alerts/{}/close", segment(dedup_key));
    let r = receiver.wait_for("Opsgenie's close", |r| r.path == close_path);
    assert_eq!((r.method.as_str(), r.query.as_str()), ("POST", "identifierType=alias"));
    assert_eq!(r.header("authorization"), Some(format!("GenieKey {OPSGENIE_KEY}").as_str()));
    let recovered = alert(&w, "recovered", &url);
    let recovered_summary = recovered["summary"].as_str().unwrap();
    assert_eq!(r.json(), json!({"source": "Vantage", "note": recovered_summary}));
    for to in ["+14155550101", "+442071838750"] {
        let r = receiver.wait_for("Twilio's RECOVERED", |r| {
            r.path == twilio_path && field(&r.body, "To") == to && field(&r.body, "Body").starts_with("RECOVERED")
        });
        let body = field(&r.body, "Body");
        assert!(body.starts_with(&format!("RECOVERED shop.alerts.test:{port} after ")), "{body}");
        assert!(body.ends_with(&format!(" {STATUS}")) && body.len() <= 160, "{body}");
    }
    let r = receiver
        .wait_for("Teams' RECOVERED", |r| r.path.starts_with("/teams/") && r.json().to_string().contains("RECOVERED"));
    assert_eq!(r.json()["attachments"][0]["content"]["body"][0]["color"], "Good");
    let r = receiver
        .wait_for("Discord's RECOVERED", |r| r.path == discord_path && r.json()["content"] == recovered_summary);
    assert_eq!(r.json()["embeds"][0]["color"], 0x1E8E3E);
    receiver.wait_for("Telegram's RECOVERED", |r| {
        r.path.starts_with("/telegram/")
            && r.json()["text"].as_str().is_some_and(|t| t.starts_with(&format!("<b>{recovered_summary}</b>")))
    });
    let r = receiver.wait_for("ntfy's RECOVERED", |r| {
        r.path == "/ntfy/vantage-ops" && r.header("title") == Some(recovered_summary)
    });
    assert_eq!((r.header("priority"), r.header("tags")), (Some("2"), Some("white_check_mark,recovered")));

    // No secret in anything the coordinator printed.
    let printed = w.coordinator().printed().join("\n");
    for secret in [TWILIO_TOKEN, OPSGENIE_KEY, TEAMS_SIG, DISCORD_TOKEN, BOT_TOKEN, NTFY_TOKEN] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert!(printed.contains("not-telegram"), "the misconfigured channel is named in the log:\n{printed}");
}

/// Polls `f` (every 100 ms, up to a minute) until it has an answer: for a state only a query
/// shows.
fn eventually<T>(f: impl Fn() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(found) = f() {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "not within a minute");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
