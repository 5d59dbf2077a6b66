//! Alerts reach people, with real processes and real receivers: a coordinator and three agents
//! (one per region) on loopback, TLS sites made at test time, an HTTP receiver standing in for a
//! webhook endpoint, Slack and PagerDuty, and a real SMTP server (aiosmtpd). One `DOWN` and one
//! `RECOVERED` per outage on every channel, the webhook signature checked with openssl, a
//! certificate warning once, nothing sent during a silence, a silent region; and an alert queued
//! while its receiver is down survives a SIGKILLed coordinator and is delivered exactly once.

use std::path::Path;
use std::process::Command;

use vantage_e2e::alert_world::{World, kind};
use vantage_e2e::receiver::{Received, Receiver};
use vantage_e2e::{Process, grpcurl};

const SECRET: &str = "webhook-secret-for-the-e2e-test";

fn about(r: &Received, kind_: &str, url: &str) -> bool {
    r.path == "/hook" && kind(r) == kind_ && r.json()["subject"] == url
}

/// Checks the webhook's signature the way a receiver would, with openssl.
fn assert_signed(r: &Received) {
    let timestamp = r.header("x-vantage-timestamp").expect("timestamp header");
    let signature = r.header("x-vantage-signature").expect("signature header");
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend(&r.body);
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &signed).unwrap();
    let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let expected = out.split("= ").nth(1).unwrap().trim();
    assert_eq!(signature, format!("v1={expected}"));
    assert_eq!(r.header("x-vantage-event-id"), r.json()["id"].as_str());
}

/// A real SMTP server (aiosmtpd) that requires STARTTLS (with the certificate `pki init` made for
/// 127.0.0.1 in `pki`) and AUTH as vantage/SMTP_PASSWORD, and prints every message it receives.
fn smtp_server(pki: &Path) -> (Process, u16) {
    const SERVER: &str = r#"
import ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
class Handler:
    async def handle_DATA(self, server, session, envelope):
        print("MESSAGE authenticated=%s" % session.authenticated, flush=True)
        print(envelope.content.decode("utf-8", "replace"), flush=True)
        return "250 OK"
def check(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"vantage" and data.password == sys.argv[4].encode()
    return AuthResult(success=ok)
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(sys.argv[2], sys.argv[3])
Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]), tls_context=tls, require_starttls=True,
           authenticator=check, auth_required=True).start()
print("READY", flush=True)
threading.Event().wait()
"#;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new("python3");
    command.args(["-u", "-c", SERVER, &port.to_string()]);
    command.args([pki.join("coordinator.pem"), pki.join("coordinator.key")]).arg(SMTP_PASSWORD);
    let process = Process::start_with(&mut command, "aiosmtpd");
    process.wait_for_line(|l| l == "READY");
    (process, port)
}

const SMTP_PASSWORD: &str = "smtp-password-0123";

#[test]
fn every_channel_hears_one_down_and_one_recovered_and_nothing_during_a_silence() {
    let receiver = Receiver::start();
    let mut w = World::new("channels");
    let pki = w.dir.join("smtp-pki");
    let out = vantage_e2e::run(
        "vantage-coordinator",
        &["pki", "init", "--dir", pki.to_str().unwrap(), "--name", "127.0.0.1"],
    );
    assert!(out.status.success());
    let (smtp, smtp_port) = smtp_server(&pki);
    let shop = w.add_site("shop", 90);
    let expiring = w.add_site("expiring", 20);
    let quiet = w.add_site("quiet", 90);
    w.write("hook.secret", SECRET);
    w.write("pd.key", "R0UTINGKEY0123456789");
    w.write("smtp.password", SMTP_PASSWORD);
    let config = format!(
        r#"[alerts]
status_url = "http://vantage.alerts.test/"
region_silent_after = "3s"

[[channel]]
name = "hook"
type = "webhook"
url = "{hook}"
secret_file = "hook.secret"

[[channel]]
name = "slack"
type = "slack"
url = "{slack}"

[[channel]]
name = "pager"
type = "pagerduty"
url = "{pd}"
routing_key_file = "pd.key"

[[channel]]
name = "mail"
type = "email"
smtp = "127.0.0.1:{smtp_port}"
tls = "starttls"
ca_file = "smtp-pki/ca.pem"
username = "vantage"
password_file = "smtp.password"
from = "Vantage <vantage@alerts.test>"
to = ["oncall@alerts.test"]

[[route]]
channels = ["hook", "slack", "pager", "mail"]

{targets}"#,
        hook = receiver.url("/hook"),
        slack = receiver.url("/slack"),
        pd = receiver.url("/pd"),
        targets = w.targets_toml(&[(quiet, "env = \"staging\"")]),
    );
    let config = w.write("vantage.toml", &config);
    w.start_coordinator(&config);
    for i in 0..3 {
        w.start_agent(i);
    }
    let (shop_url, expiring_url, quiet_url) =
        (w.sites[shop].url.clone(), w.sites[expiring].url.clone(), w.sites[quiet].url.clone());

    // The 20-day certificate: one warning.
    let warning = receiver.wait_for("cert_warning", |r| about(r, "cert_warning", &expiring_url));
    assert_signed(&warning);
    assert!(warning.json()["summary"].as_str().unwrap().starts_with("CERTIFICATE WARNING"), "{:?}", warning.json());

    // A silence for the staging site, through the API.
    let end = vantage_shared::report::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(2));
    let body = format!(r#"{{"silence": {{"labels": {{"env": "staging"}}, "end": "{end}", "comment": "migration"}}}}"#);
    let out =
        grpcurl(&["-plaintext", "-d", &body, &w.addr.unwrap().to_string(), "vantage.v1.Coordinator/CreateSilence"]);
    assert!(out.contains("\"comment\": \"migration\""), "{out}");

    // An outage of the shop: DOWN on every channel, then RECOVERED. ap-south's agent is held
    // (SIGSTOP) through the outage's start, so only two regions can see it: the DOWN must go out
    // on their word alone, before ap-south has anything to say.
    let ap_south = w.agents[2].as_ref().unwrap().pid().to_string();
    signal("-STOP", &ap_south);
    w.stop_site(shop);
    let broken = std::time::SystemTime::now();
    w.stop_site(quiet);
    let down = receiver.wait_for("webhook DOWN", |r| about(r, "down", &shop_url));
    let d = down.json();
    signal("-CONT", &ap_south);
    // Sent as soon as a quorum (2 of 3) agrees: the two regions that saw it, of three.
    let mut regions: Vec<&str> = d["regions"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    regions.sort_unstable();
    assert_eq!((regions, &d["of_regions"]), (vec!["eu-west", "us-east"], &serde_json::json!(3)), "{d}");
    // Timing promises: each region's next run starts within an interval, fails, its retry fails a
    // pause and a timeout later, and the result waits at most a batch period; the alert is handed
    // to its channels as soon as the verdict change is committed.
    let at = rfc3339(d["at"].as_str().unwrap());
    within(
        "site broken to DOWN",
        at.duration_since(broken).unwrap_or_default(),
        1.0 + 1.0 + 0.5 + 1.0,
        "interval 1 s + 1 s retry pause + timeout 0.5 s + 1 s batch period",
    );
    within(
        "DOWN to the webhook's receiver",
        down.at.duration_since(at).unwrap_or_default(),
        1.0,
        "1 s: the dispatcher is woken by the commit",
    );
    // The held region's own failing results come after the alert (GetHistory: when each ran).
    let query = format!("{{\"url\": \"{shop_url}\", \"region\": \"ap-south\", \"limit\": 1000}}");
    let (first_down, history) = eventually(|| {
        let history = w.call("GetHistory", &query);
        let first = history["results"].as_array().and_then(|rs| {
            rs.iter()
                .filter(|r| r["result"]["status"] == "PROBE_STATUS_DOWN")
                .filter_map(|r| r["result"]["checkedAt"].as_str().map(rfc3339))
                .min()
        });
        first.map(|f| (f, history))
    });
    assert!(
        first_down > at,
        "ap-south's first failing result ({first_down:?}) came after the DOWN ({at:?}): {history}"
    );
    assert_signed(&down);
    assert_eq!(d["cause"]["code"], "tcp_refused", "{d}");
    assert!(d["text"].as_str().unwrap().contains("Fix:"), "{d}");
    let slack = receiver.wait_for("Slack DOWN", |r| {
        r.path == "/slack" && r.json()["text"].as_str().is_some_and(|t| t.starts_with("DOWN") && t.contains(&shop_url))
    });
    assert!(slack.json()["blocks"].is_array());
    let trigger = receiver.wait_for("PagerDuty trigger", |r| {
        r.path == "/pd" && r.json()["event_action"] == "trigger" && r.json()["payload"]["source"] == shop_url.as_str()
    });
    assert_eq!(trigger.json()["routing_key"], "R0UTINGKEY0123456789");
    assert_eq!(trigger.json()["payload"]["severity"], "critical");
    smtp.wait_for_line(|l| l == "MESSAGE authenticated=True");
    smtp.wait_for_line(|l| l.starts_with("Subject: DOWN") && l.contains(&shop_url));

    w.start_site(shop);
    receiver.wait_for("webhook RECOVERED", |r| about(r, "recovered", &shop_url));
    receiver.wait_for("Slack RECOVERED", |r| {
        r.path == "/slack" && r.json()["text"].as_str().is_some_and(|t| t.starts_with("RECOVERED"))
    });
    let resolve = receiver.wait_for("PagerDuty resolve", |r| r.path == "/pd" && r.json()["event_action"] == "resolve");
    assert_eq!(resolve.json()["dedup_key"], trigger.json()["dedup_key"]);
    smtp.wait_for_line(|l| l.starts_with("Subject: RECOVERED") && l.contains(&shop_url));

    // The silenced site is DOWN in the status, with its silence, and its alert was held back.
    let status = w.call("ListStatus", &format!("{{\"urls\": [\"{quiet_url}\"]}}"));
    assert_eq!(status["targets"][0]["verdict"], "VERDICT_DOWN", "{status}");
    assert_eq!(status["targets"][0]["silence"]["comment"], "migration", "{status}");
    let alerts = w.call("ListAlerts", &format!("{{\"subject\": \"{quiet_url}\"}}"));
    let down = alerts["alerts"].as_array().unwrap().iter().find(|a| a["kind"] == "down").expect("a down alert").clone();
    assert!(down["deliveries"].as_array().unwrap().iter().all(|d| d["state"] == "silenced"), "{alerts}");

    // A region without its agent for 3 s: region_silent, then region_recovered.
    let killed = std::time::SystemTime::now();
    w.agents[2] = None;
    let silent = receiver.wait_for("region_silent", |r| {
        r.path == "/hook" && kind(r) == "region_silent" && r.json()["subject"] == "ap-south"
    });
    // Silence counts from the kill, or from the end of the coordinator's first 15 s (regions
    // count as connected until then, README "How regions decide"), whichever is later.
    let listening = w.coordinator().printed().into_iter().find(|l| l.contains("coordinator listening")).unwrap();
    let grace_end = rfc3339(listening.split_whitespace().next().unwrap()) + std::time::Duration::from_secs(15);
    let from = killed.max(grace_end);
    within(
        "agent killed (or start-up grace over) to region_silent received",
        silent.at.duration_since(from).unwrap_or_default(),
        3.0 + 1.0,
        "region_silent_after 3 s + 1 s sweep",
    );
    w.start_agent(2);
    receiver.wait_for("region_recovered", |r| r.path == "/hook" && kind(r) == "region_recovered");

    // Exactly one of each per outage on every channel, one certificate warning, nothing about
    // the silenced site.
    let count = |path: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        receiver.matching(|r| r.path == path && pred(&r.json())).len()
    };
    let is = |k: &'static str, url: &str| {
        let url = url.to_owned();
        move |j: &serde_json::Value| j["kind"] == k && j["subject"] == url.as_str()
    };
    assert_eq!(count("/hook", &is("down", &shop_url)), 1);
    assert_eq!(count("/hook", &is("recovered", &shop_url)), 1);
    assert_eq!(count("/hook", &is("cert_warning", &expiring_url)), 1);
    assert_eq!(count("/hook", &|j| j["subject"] == quiet_url.as_str()), 0);
    assert_eq!(count("/slack", &|j| j["text"].as_str().is_some_and(|t| t.starts_with("DOWN https://shop"))), 1);
    assert_eq!(count("/pd", &|j| j["event_action"] == "trigger" && j["payload"]["source"] == shop_url.as_str()), 1);
    assert_eq!(count("/pd", &|j| j["event_action"] == "resolve" && j["dedup_key"] == trigger.json()["dedup_key"]), 1);
    assert!(receiver.matching(|r| r.body.windows(quiet_url.len()).any(|w| w == quiet_url.as_bytes())).is_empty());

    // The silence ends while the staging site is still down: now its DOWN goes out, once.
    let silence_id = status["targets"][0]["silence"]["id"].as_str().unwrap().to_owned();
    let deleted = w.call("DeleteSilence", &format!("{{\"id\": \"{silence_id}\"}}"));
    assert_eq!(deleted["deleted"], true, "{deleted}");
    let late = receiver.wait_for("the DOWN held back by the silence", |r| about(r, "down", &quiet_url));
    assert!(
        late.json()["detail"].as_str().unwrap().contains("held back by a silence that has ended"),
        "{:?}",
        late.json()
    );
    assert_eq!(receiver.matching(|r| about(r, "down", &quiet_url)).len(), 1);
}

#[test]
fn an_alert_queued_while_the_receiver_is_down_survives_a_killed_coordinator_and_arrives_once() {
    let mut receiver = Receiver::start();
    let mut w = World::new("outbox");
    let shop = w.add_site("shop", 90);
    w.write("hook.secret", SECRET);
    let config = format!(
        "[[channel]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\nsecret_file = \"hook.secret\"\n\n[[route]]\nchannels = [\"hook\"]\n\n{}",
        receiver.url("/hook"),
        w.targets_toml(&[]),
    );
    let config = w.write("vantage.toml", &config);
    w.start_coordinator(&config);
    for i in 0..3 {
        w.start_agent(i);
    }
    let url = w.sites[shop].url.clone();
    w.coordinator().wait_for_line(|l| l.contains("verdict changed") && l.contains("\"UP\""));

    receiver.stop();
    w.stop_site(shop);
    let failed = w.coordinator().wait_for_line(|l| l.contains("alert delivery failed"));
    assert!(failed.contains("cannot deliver"), "{failed}");
    let alerts = w.call("ListAlerts", "{}");
    let pending = alerts["alerts"].as_array().unwrap().iter().find(|a| a["kind"] == "down").expect("a down alert");
    assert_eq!(
        (pending["subject"].as_str(), pending["deliveries"][0]["channel"].as_str()),
        (Some(url.as_str()), Some("hook")),
        "{alerts}"
    );
    assert!(pending["deliveries"][0]["attempts"].as_u64().is_some_and(|n| n >= 1), "tried, and failed: {alerts}");
    assert_eq!(pending["deliveries"][0]["state"], "pending", "{alerts}");
    assert!(!pending["deliveries"][0]["lastError"].as_str().unwrap_or_default().is_empty(), "{alerts}");
    let id = pending["id"].as_str().unwrap().to_owned();

    // SIGKILL, receiver back, coordinator back on the same data: the alert goes out once.
    w.coordinator = None;
    receiver.restart();
    w.start_coordinator(&config);
    let down = receiver.wait_for("the queued DOWN", |r| about(r, "down", &url));
    assert_eq!(down.json()["id"], id.as_str());
    assert_signed(&down);
    // Each channel's alerts go in order: once RECOVERED is in, any second DOWN would be too.
    w.start_site(shop);
    receiver.wait_for("RECOVERED", |r| about(r, "recovered", &url));
    assert_eq!(receiver.matching(|r| about(r, "down", &url)).len(), 1);
    let alerts = w.call("ListAlerts", "{}");
    let delivered = alerts["alerts"].as_array().unwrap().iter().find(|a| a["id"] == id.as_str()).unwrap().clone();
    assert_eq!(delivered["deliveries"][0]["state"], "delivered", "{alerts}");
}

/// Sends `signal` (`-STOP`, `-CONT`) to process `pid`.
fn signal(signal: &str, pid: &str) {
    let status = Command::new("kill").args([signal, pid]).status().expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Prints a measured latency beside its documented bound (in seconds) and holds it to the bound
/// plus a second of slack for a busy machine; a threefold slowdown still breaks it.
fn within(what: &str, took: std::time::Duration, bound: f64, formula: &str) {
    let bound = bound + 1.0;
    println!("latency: {what}: {:.2}s (bound {bound:.1}s = {formula} + 1 s slack)", took.as_secs_f64());
    assert!(took.as_secs_f64() <= bound, "{what} took {took:.2?}, over its bound of {bound}s ({formula})");
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

fn rfc3339(text: &str) -> std::time::SystemTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .into()
}

#[test]
fn a_channel_answering_401_is_loud_and_wedges_nothing() {
    let receiver = Receiver::start();
    let mut w = World::new("failing-channel");
    let shop = w.add_site("shop", 90);
    let blog = w.add_site("blog", 90);
    let (shop_url, blog_url) = (w.sites[shop].url.clone(), w.sites[blog].url.clone());
    // The "bad" channel's receiver refuses the credentials; on the "good" one, alerts about the
    // shop are stuck (503) while the others go through.
    receiver.answer(401, |r| r.path == "/bad");
    let stuck = shop_url.clone();
    receiver.answer(503, move |r| r.path == "/good" && r.json()["subject"] == stuck.as_str());
    let config = format!(
        "[alerts]\nchannel_failing_after = \"3s\"\n\n\
         [[channel]]\nname = \"good\"\ntype = \"webhook\"\nurl = \"{}\"\n\n\
         [[channel]]\nname = \"bad\"\ntype = \"webhook\"\nurl = \"{}\"\n\n\
         [[route]]\nchannels = [\"good\", \"bad\"]\n\n{}",
        receiver.url("/good"),
        receiver.url("/bad"),
        w.targets_toml(&[]),
    );
    let config = w.write("vantage.toml", &config);
    w.start_coordinator(&config);
    w.start_agent(0);
    let mut up = std::collections::HashSet::new();
    w.coordinator().wait_for_line(|l| {
        if l.contains("verdict changed") && l.contains("\"UP\"") {
            up.extend([&shop_url, &blog_url].into_iter().filter(|u| l.contains(u.as_str())).cloned());
        }
        up.len() == 2
    });

    // Both sites go down: the blog's DOWN reaches the good channel although the shop's is stuck
    // there, and although the bad channel refuses both.
    w.stop_site(shop);
    w.stop_site(blog);
    receiver.wait_for("the blog's DOWN on the good channel", |r| r.path == "/good" && about_(r, "down", &blog_url));
    let error = w.coordinator().wait_for_line(|l| l.contains("ERROR") && l.contains("alert channel failing"));
    assert!(error.contains("bad") && error.contains("401"), "{error}");

    // The metric, the alert's deliveries, `status` and the page all say so.
    let http = w.http.clone().unwrap();
    let metrics = curl(&format!("{http}/metrics"));
    assert!(metrics.contains("vantage_alert_channel_failing{channel=\"bad\"} 1"), "{metrics}");
    assert!(metrics.contains("vantage_alert_channel_failing{channel=\"good\"} 0"), "{metrics}");
    let alerts = w.call("ListAlerts", &format!("{{\"subject\": \"{blog_url}\"}}"));
    let down = alerts["alerts"].as_array().unwrap().iter().find(|a| a["kind"] == "down").expect("a down alert").clone();
    let delivery = |channel: &str| {
        down["deliveries"].as_array().unwrap().iter().find(|d| d["channel"] == channel).unwrap().clone()
    };
    assert_eq!(delivery("good")["state"], "delivered", "{down}");
    let bad = delivery("bad");
    assert_eq!(bad["state"], "pending", "retried, not dropped: {down}");
    let last_error = bad["lastError"].as_str().unwrap_or_default();
    assert!(last_error.starts_with("HTTP 401 Unauthorized") && last_error.contains("misconfigured"), "{down}");
    let status = vantage_e2e::run("vantage-coordinator", &["status", "--addr", &format!("http://{}", w.addr.unwrap())]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.starts_with("ALERT CHANNEL FAILING: bad since "), "{status}");
    assert!(status.contains("HTTP 401 Unauthorized") && status.contains("TARGET"), "{status}");
    let page = curl(&format!("{http}/"));
    assert!(page.contains("data-failing-channel=\"bad\"><strong>Alert channel bad is failing</strong>"), "{page}");

    // After 3 s the good channel hears channel_failing; the bad one keeps being retried.
    let raised = receiver.wait_for("channel_failing", |r| r.path == "/good" && kind(r) == "channel_failing");
    assert_eq!(raised.json()["subject"], "bad");
    assert!(raised.json()["text"].as_str().unwrap().contains("HTTP 401"), "{:?}", raised.json());
    assert!(receiver.refused(|r| r.path == "/bad" && about_(r, "down", &blog_url)).len() >= 2, "retried with backoff");
    assert!(receiver.refused(|r| r.path == "/bad" && kind(r) == "channel_failing").is_empty(), "told elsewhere");

    // The blog recovers: its RECOVERED goes out on the good channel, still past the stuck shop.
    w.start_site(blog);
    receiver.wait_for("the blog's RECOVERED", |r| r.path == "/good" && about_(r, "recovered", &blog_url));
    assert!(receiver.matching(|r| r.path == "/good" && r.json()["subject"] == shop_url.as_str()).is_empty());

    // The shop recovers while its DOWN is still stuck; then both receivers work again: the shop's
    // DOWN arrives before its RECOVERED, the bad channel gets its alerts, and its recovery is told.
    w.start_site(shop);
    w.coordinator().wait_for_line(|l| l.contains("verdict changed") && l.contains(&shop_url) && l.contains("\"UP\""));
    receiver.answer_all_ok();
    let recovered =
        receiver.wait_for("the shop's RECOVERED", |r| r.path == "/good" && about_(r, "recovered", &shop_url));
    let shop_alerts: Vec<String> =
        receiver.matching(|r| r.path == "/good" && r.json()["subject"] == shop_url.as_str()).iter().map(kind).collect();
    assert_eq!(shop_alerts, ["down", "recovered"], "a resolve never before its trigger");
    assert_eq!(recovered.json()["subject"], shop_url.as_str());
    receiver.wait_for("the blog's DOWN on the bad channel", |r| r.path == "/bad" && about_(r, "down", &blog_url));
    receiver.wait_for("channel_recovered", |r| r.path == "/good" && kind(r) == "channel_recovered");
    let metrics = curl(&format!("{http}/metrics"));
    assert!(metrics.contains("vantage_alert_channel_failing{channel=\"bad\"} 0"), "{metrics}");
    assert!(!curl(&format!("{http}/")).contains("data-failing-channel"), "the banner is gone");
}

/// An alert of `kind_` about `subject`, on any path.
fn about_(r: &Received, kind_: &str, subject: &str) -> bool {
    kind(r) == kind_ && r.json()["subject"] == subject
}

fn curl(url: &str) -> String {
    let out = Command::new("curl").args(["-s", "--max-time", "10", url]).output().expect("curl runs");
    assert!(out.status.success(), "curl {url}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn webhook_and_pager(receiver: &Receiver) -> String {
    format!(
        "[[channel]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n\n[[channel]]\nname = \"pager\"\ntype = \"pagerduty\"\n\
         url = \"{}\"\nrouting_key_file = \"pd.key\"\n\n[[route]]\nchannels = [\"hook\", \"pager\"]\n\n",
        receiver.url("/hook"),
        receiver.url("/pd"),
    )
}

fn pd(r: &Received, action: &str, url: &str) -> bool {
    r.path == "/pd"
        && r.json()["event_action"] == action
        && (action == "resolve" || r.json()["payload"]["source"] == url)
        && (action != "resolve" || r.json()["dedup_key"].as_str().is_some_and(|k| k.contains(url)))
}

#[test]
fn a_target_nobody_can_judge_raises_unknown_and_clears_it_once_judged() {
    let receiver = Receiver::start();
    let mut w = World::new("unknown");
    let shop = w.add_site("shop", 90);
    w.write("pd.key", "R0UTINGKEY0123456789");
    let config = format!("[alerts]\nunknown_after = \"2s\"\n\n{}{}", webhook_and_pager(&receiver), w.targets_toml(&[]));
    let config = w.write("vantage.toml", &config);
    w.start_coordinator(&config);
    for i in 0..3 {
        w.start_agent(i);
    }
    let url = w.sites[shop].url.clone();
    w.coordinator().wait_for_line(|l| l.contains("verdict changed") && l.contains("\"UP\""));
    assert!(receiver.matching(|r| kind(r) == "unknown").is_empty(), "judged: nothing to say");

    // Every agent of the target's regions is gone: nobody can judge it.
    for agent in &mut w.agents {
        *agent = None;
    }
    let unknown = receiver.wait_for("unknown", |r| about(r, "unknown", &url));
    let u = unknown.json();
    assert_eq!(u["cause"]["code"], "no_quorum", "{u}");
    assert_eq!((u["regions"].as_array().map(Vec::len), &u["of_regions"]), (Some(3), &serde_json::json!(3)), "{u}");
    assert!(u["summary"].as_str().unwrap().starts_with("UNKNOWN"), "{u}");
    let trigger = receiver.wait_for("PagerDuty trigger of unknown", |r| pd(r, "trigger", &url));
    assert_eq!(trigger.json()["payload"]["severity"], "warning");

    for i in 0..3 {
        w.start_agent(i);
    }
    let cleared = receiver.wait_for("unknown_cleared", |r| about(r, "unknown_cleared", &url));
    let c = cleared.json();
    assert_eq!(c["dedup_key"], u["dedup_key"], "the resolve names its trigger: {c}");
    assert_eq!(c["detail"], "judged UP again", "{c}");
    let resolve = receiver.wait_for("PagerDuty resolve", |r| r.path == "/pd" && r.json()["event_action"] == "resolve");
    assert_eq!(resolve.json()["dedup_key"], trigger.json()["dedup_key"]);
    assert_eq!(receiver.matching(|r| about(r, "unknown", &url)).len(), 1, "raised once");
}

#[test]
fn deleting_a_down_target_resolves_its_alerts_and_a_re_added_one_starts_afresh() {
    let receiver = Receiver::start();
    let mut w = World::new("removal");
    let shop = w.add_site("shop", 90);
    let legacy = w.add_site("legacy", 90);
    w.write("pd.key", "R0UTINGKEY0123456789");
    let channels = webhook_and_pager(&receiver);
    let config = w.write("vantage.toml", &format!("{channels}{}", w.targets_toml(&[])));
    w.start_coordinator(&config);
    for i in 0..3 {
        w.start_agent(i);
    }
    let (url, legacy_url) = (w.sites[shop].url.clone(), w.sites[legacy].url.clone());
    w.stop_site(shop);
    w.stop_site(legacy);
    let down = receiver.wait_for("DOWN", |r| about(r, "down", &url)).json();
    let trigger = receiver.wait_for("PagerDuty trigger", |r| pd(r, "trigger", &url)).json();
    assert_eq!(trigger["dedup_key"], down["dedup_key"]);

    // Deleted while DOWN: the pager's incident is resolved, with the reason.
    let deleted = w.call("DeleteTarget", &format!("{{\"url\": \"{url}\"}}"));
    assert_eq!(deleted["deleted"], true, "{deleted}");
    let resolved = receiver.wait_for("recovered (removed)", |r| about(r, "recovered", &url)).json();
    assert_eq!(resolved["cause"]["code"], "removed", "{resolved}");
    assert_eq!(resolved["dedup_key"], down["dedup_key"], "{resolved}");
    let resolve = receiver.wait_for("PagerDuty resolve", |r| {
        r.path == "/pd" && r.json()["event_action"] == "resolve" && r.json()["dedup_key"] == trigger["dedup_key"]
    });
    assert_eq!(resolve.json()["routing_key"], "R0UTINGKEY0123456789");
    let incidents = w.call("ListIncidents", &format!("{{\"url\": \"{url}\"}}"));
    let incident = &incidents["incidents"][0];
    assert!(incident.get("closed").is_some(), "{incidents}");
    assert_eq!(incident["closedReason"], "removed", "{incidents}");

    // Added again (still down): a new incident, a new dedup key.
    let body = format!(r#"{{"target": {{"url": "{url}", "interval": "1s", "timeout": "0.5s"}}}}"#);
    let added = w.call("UpsertTarget", &body);
    assert_eq!(added["created"], true, "{added}");
    let again = receiver.wait_for("the second DOWN", |r| about(r, "down", &url) && r.json()["id"] != down["id"]).json();
    assert_ne!(again["dedup_key"], down["dedup_key"], "a re-added target is a fresh incident: {again}");
    let second = receiver
        .wait_for("the second trigger", |r| pd(r, "trigger", &url) && r.json()["dedup_key"] != trigger["dedup_key"]);
    assert_eq!(second.json()["dedup_key"], again["dedup_key"]);

    // A start-up whose config no longer holds a target resolves it too.
    let legacy_down = receiver.wait_for("legacy DOWN", |r| about(r, "down", &legacy_url)).json();
    w.coordinator = None;
    w.sites.remove(legacy);
    let config = w.write("vantage.toml", &format!("{channels}{}", w.targets_toml(&[])));
    w.start_coordinator(&config);
    let resolved = receiver.wait_for("legacy recovered (removed)", |r| about(r, "recovered", &legacy_url)).json();
    assert_eq!(resolved["cause"]["code"], "removed", "{resolved}");
    assert_eq!(resolved["dedup_key"], legacy_down["dedup_key"]);
    assert!(resolved["cause"]["message"].as_str().unwrap().contains("no longer in the config file"), "{resolved}");
    let incidents = w.call("ListIncidents", &format!("{{\"url\": \"{legacy_url}\"}}"));
    assert_eq!(incidents["incidents"][0]["closedReason"], "removed", "{incidents}");
    // The re-added target is the API's: it stays.
    let targets = w.call("ListTargets", "{}");
    assert_eq!(targets["targets"].as_array().map(Vec::len), Some(1), "{targets}");
    assert_eq!(targets["targets"][0]["url"], url.as_str());
}
