//! Vantage's alerts in the real Alertmanager (Debian's `prometheus-alertmanager`, started by the
//! test over https with basic auth, clustering off), with a real coordinator and three agents:
//! two sites go down, their DOWNs appear in Alertmanager's API with Vantage's labels and
//! annotations, Alertmanager groups them into one notification to its webhook receiver, they are
//! re-posted while they last (also by a restarted coordinator), and after recovery Alertmanager
//! resolves them and they are not posted again. A second Alertmanager channel, pointed at a
//! plain receiver, shows the bearer token and the request itself.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use vantage_e2e::Process;
use vantage_e2e::alert_world::World;
use vantage_e2e::receiver::{Received, Receiver};

const PASSWORD: &str = "alertmanager-password-0123";
const TOKEN: &str = "alertmanager-token-4567";
const STATUS_URL: &str = "http://vantage.alerts.test/";
/// The channels' `resend_delay`: firing alerts are valid for four of them.
const RESEND: Duration = Duration::from_secs(2);

/// A bcrypt hash of `password`, as Alertmanager's web config wants it.
fn bcrypt(password: &str) -> String {
    let script = "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024)))";
    let out = Command::new("python3").args(["-W", "ignore", "-c", script, password]).output().expect("python3 runs");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$2"), "a bcrypt hash: {hash:?} {}", String::from_utf8_lossy(&out.stderr));
    hash
}

/// Starts Alertmanager on a free port, serving https with `pki`'s certificate for 127.0.0.1 and
/// basic auth (vantage/PASSWORD), grouping by alertname and notifying `webhook`, resolves too.
fn alertmanager(dir: &Path, pki: &Path, webhook: &str) -> (Process, u16) {
    let config = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 2s\n  group_interval: 2s\n  \
         repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {webhook}\n        \
         send_resolved: true\n"
    );
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  vantage: '{}'\n",
        pki.join("coordinator.pem").display(),
        pki.join("coordinator.key").display(),
        bcrypt(PASSWORD),
    );
    vantage_e2e::alertmanager::start(dir, &config, Some(&web))
}

/// GET from Alertmanager's API, as an operator would with curl.
fn api(pki: &Path, port: u16, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(pki.join("ca.pem"))
        .args(["-u", &format!("vantage:{PASSWORD}"), &format!("https://127.0.0.1:{port}{path}")])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The active alerts Alertmanager holds, by target.
fn active(pki: &Path, port: u16) -> Vec<Value> {
    api(pki, port, "/api/v2/alerts?active=true").as_array().cloned().unwrap_or_default()
}

fn of<'a>(alerts: &'a [Value], url: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["target"] == url)
}

/// Polls `f` (every 200 ms, up to a minute) until it has an answer: for a state only a query
/// shows.
fn eventually<T>(what: &str, f: impl Fn() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = f() {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: not within a minute");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rfc3339(text: &str) -> SystemTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .into()
}

/// A request of the token channel that posts `url`'s DOWN as firing (`endsAt` ahead of when it
/// was sent) or as resolved.
fn posts_down(r: &Received, url: &str, firing: bool) -> bool {
    r.path == "/token/api/v2/alerts"
        && r.json().as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "down"
                    && a["labels"]["target"] == url
                    && a["endsAt"].as_str().is_some_and(|e| (rfc3339(e) > r.at) == firing)
            })
        })
}

#[test]
fn the_real_alertmanager_receives_groups_and_resolves_vantages_alerts() {
    let receiver = Receiver::start();
    let mut w = World::new("alertmanager");
    let pki = w.dir.join("am-pki");
    let out = vantage_e2e::run(
        "vantage-coordinator",
        &["pki", "init", "--dir", pki.to_str().unwrap(), "--name", "127.0.0.1"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_am, port) = alertmanager(&w.dir, &pki, &receiver.url("/webhook"));
    assert_eq!(api(&pki, port, "/api/v2/status")["cluster"]["status"], "disabled", "clustering is off");

    let shop = w.add_site("shop", 90);
    let blog = w.add_site("blog", 90);
    w.write("am.password", PASSWORD);
    w.write("am.token", TOKEN);
    let config = format!(
        r#"[alerts]
status_url = "{STATUS_URL}"

[[channel]]
name = "am"
type = "alertmanager"
url = "https://127.0.0.1:{port}/"
ca_file = "am-pki/ca.pem"
username = "vantage"
password_file = "am.password"
resend_delay = "{resend}s"

[[channel]]
name = "am-token"
type = "alertmanager"
url = "{token_url}"
token_file = "am.token"
resend_delay = "{resend}s"

[[route]]
channels = ["am", "am-token"]

{targets}"#,
        resend = RESEND.as_secs(),
        token_url = receiver.url("/token"),
        targets = w.targets_toml(&[(shop, "team = \"shop\""), (blog, "team = \"blog\", \"k8s.namespace\" = \"web\"")]),
    );
    let config = w.write("vantage.toml", &config);
    w.start_coordinator(&config);
    for i in 0..3 {
        w.start_agent(i);
    }
    let (shop_url, blog_url) = (w.sites[shop].url.clone(), w.sites[blog].url.clone());
    w.coordinator().wait_for_line(|l| l.contains("verdict changed") && l.contains("\"UP\""));

    // Both sites go down: two DOWNs in Alertmanager, with Vantage's labels and annotations.
    w.stop_site(shop);
    w.stop_site(blog);
    let alerts = eventually("both DOWNs in Alertmanager", || {
        let alerts = active(&pki, port);
        (of(&alerts, &shop_url).is_some() && of(&alerts, &blog_url).is_some()).then_some(alerts)
    });
    let down = of(&alerts, &shop_url).unwrap();
    assert_eq!(
        down["labels"],
        json!({"alertname": "down", "target": shop_url, "severity": "critical", "team": "shop"}),
        "{down}"
    );
    assert_eq!(
        of(&alerts, &blog_url).unwrap()["labels"],
        json!({"alertname": "down", "target": blog_url, "severity": "critical", "team": "blog", "k8s_namespace": "web"})
    );
    let annotations = &down["annotations"];
    assert!(annotations["summary"].as_str().unwrap().starts_with(&format!("DOWN {shop_url}: tcp_refused")), "{down}");
    assert_eq!(annotations["failure"], "tcp_refused", "{down}");
    assert!(!annotations["cause"].as_str().unwrap_or_default().is_empty(), "{down}");
    assert!(!annotations["hint"].as_str().unwrap_or_default().is_empty(), "{down}");
    assert_eq!(annotations["link"], STATUS_URL, "{down}");
    assert_eq!(down["generatorURL"], STATUS_URL, "{down}");
    assert_eq!(down["status"]["state"], "active", "{down}");
    let regions: Vec<&str> = annotations["regions"].as_str().unwrap().split(", ").collect();
    assert!(regions.len() >= 2 && regions.iter().all(|r| ["eu-west", "us-east", "ap-south"].contains(r)), "{down}");

    // Alertmanager groups them by alertname: one notification carries both.
    let grouped = receiver.wait_for("one notification with both DOWNs", |r| {
        let n = r.json();
        r.path == "/webhook" && n["status"] == "firing" && n["alerts"].as_array().is_some_and(|a| a.len() == 2)
    });
    let n = grouped.json();
    assert_eq!(n["groupLabels"], json!({"alertname": "down"}), "{n}");
    let mut targets: Vec<&str> =
        n["alerts"].as_array().unwrap().iter().filter_map(|a| a["labels"]["target"].as_str()).collect();
    targets.sort_unstable();
    let mut expected = vec![blog_url.as_str(), shop_url.as_str()];
    expected.sort_unstable();
    assert_eq!(targets, expected, "{n}");

    // The same request to the second channel: `/api/v2/alerts` below its URL, the bearer token.
    let posted = receiver.wait_for("the DOWN to the token channel", |r| posts_down(r, &shop_url, true));
    assert_eq!(posted.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(posted.header("content-type"), Some("application/json"));
    // For the README: what is posted, and what Alertmanager then holds.
    println!("POST {}\n{}", posted.path, String::from_utf8_lossy(&posted.body));
    println!("GET /api/v2/alerts?active=true\n{}", serde_json::to_string_pretty(down).unwrap());

    // Re-posted while it lasts, by a restarted coordinator too: its endsAt keeps moving ahead of
    // the time Alertmanager would expire it (four resend delays).
    let before = rfc3339(down["endsAt"].as_str().unwrap());
    w.coordinator = None;
    let restarted = SystemTime::now();
    w.start_coordinator(&config);
    let again = receiver
        .wait_for("a re-post from the restarted coordinator", |r| r.at > restarted && posts_down(r, &shop_url, true));
    let later = eventually("Alertmanager holding the re-posted DOWN", || {
        let alerts = active(&pki, port);
        let down = of(&alerts, &shop_url)?;
        (rfc3339(down["endsAt"].as_str()?) > before && rfc3339(down["updatedAt"].as_str()?) > restarted)
            .then(|| down.clone())
    });
    assert_eq!(later["labels"], down["labels"], "the same alert: the same labels after a restart");
    assert_eq!(later["startsAt"], down["startsAt"], "{later}");
    assert!(
        receiver.matching(|r| r.path == "/webhook" && r.json()["status"] == "resolved").is_empty(),
        "nothing expired meanwhile"
    );
    println!("re-posted {:?} after the restart", again.at.duration_since(restarted).unwrap_or_default());

    // Recovery: Alertmanager resolves both and tells its receiver so.
    w.start_site(shop);
    w.start_site(blog);
    let resolved =
        receiver.wait_for("the resolved notification", |r| r.path == "/webhook" && r.json()["status"] == "resolved");
    let n = resolved.json();
    assert_eq!(n["groupLabels"], json!({"alertname": "down"}), "{n}");
    assert!(n["alerts"].as_array().unwrap().iter().all(|a| a["status"] == "resolved"), "{n}");
    eventually("no active alert in Alertmanager", || active(&pki, port).is_empty().then_some(()));
    let resolves = [&shop_url, &blog_url]
        .map(|url| receiver.wait_for("the resolves to the token channel", |r| posts_down(r, url, false)).at);
    let resolved_at = resolves.into_iter().max().unwrap();

    // And it stays resolved: no re-post fires it again (three resend delays, a bounded wait for
    // something that must not happen).
    std::thread::sleep(RESEND * 3);
    assert!(active(&pki, port).is_empty(), "{:?}", active(&pki, port));
    let reposted =
        receiver.matching(|r| r.at > resolved_at && (posts_down(r, &shop_url, true) || posts_down(r, &blog_url, true)));
    assert!(
        reposted.is_empty(),
        "posted as firing after the resolve: {:?}",
        reposted.iter().map(Received::json).collect::<Vec<_>>()
    );
}
