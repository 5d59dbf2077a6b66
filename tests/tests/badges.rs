//! Badges against a real coordinator (under `--http-auth`) and three agent processes in network
//! namespaces: `/badge/status.svg` shows the verdict as it changes, `/badge/uptime.svg` the
//! availability `GetUptime` reports (real grpcurl) after a real outage; both are valid SVG (parsed
//! by python3's xml.etree), cacheable (max-age, ETag, 304), refused without the token, and a
//! clear 404/400 for an unknown target or a bad window (README: "Status page").

use vantage_e2e::cluster::{Cluster, READ_TOKEN};
use vantage_e2e::reload::{Got, curl_get, wait_for_verdict};
use vantage_e2e::{badge_texts, query_encode};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// GET `path` on the coordinator's HTTP port with real curl, with the read token if `token`.
fn get(c: &Cluster, path: &str, token: bool, extra: &[&str]) -> Got {
    let url = format!("http://{}{path}", c.http_addr.expect("the HTTP port"));
    let auth = format!("Authorization: Bearer {READ_TOKEN}");
    let mut headers = extra.to_vec();
    if token {
        headers.push(&auth);
    }
    curl_get(&url, &headers)
}

/// A badge served as a user embeds it: 200, SVG, cacheable, valid; its (label, value) texts.
fn badge(c: &Cluster, path: &str) -> (Vec<String>, Got) {
    let got = get(c, path, true, &[]);
    assert_eq!(got.code, 200, "GET {path}: {}", got.body);
    assert_eq!(got.header("content-type"), "image/svg+xml", "{path}");
    assert!(got.header("cache-control").starts_with("max-age="), "{path}: {:?}", got.headers);
    assert!(got.header("etag").starts_with('"'), "{path}: {:?}", got.headers);
    let (root, texts) = badge_texts(&got.body);
    assert_eq!(root, "{http://www.w3.org/2000/svg}svg", "{path}");
    assert_eq!(texts.len(), 2, "a label and a value: {texts:?}");
    (texts, got)
}

#[test]
fn badges_show_the_verdict_and_the_availability_the_rpc_reports() {
    let mut c = Cluster::new(&REGIONS);
    c.env.push(("VANTAGE_HTTP_AUTH".into(), "true".into()));
    let shop = c.add_target("shop", false);
    c.start_coordinator("2s", "1s");
    c.start_agents();
    let url = c.targets[shop].url.clone();
    let watch = c.watch();
    wait_for_verdict(&watch, &url, "UP");
    let status_path = format!("/badge/status.svg?target={}", query_encode(&url));

    // Up: "status | up", cacheable; the same badge again is a 304 by its ETag.
    let (texts, got) = badge(&c, &status_path);
    assert_eq!(texts, ["status", "up"]);
    let again = get(&c, &status_path, true, &[&format!("If-None-Match: {}", got.header("etag"))]);
    assert_eq!(again.code, 304, "an unchanged badge is not sent again");
    assert!(again.body.is_empty());
    // Behind --http-auth like the rest of the port.
    assert_eq!(get(&c, &status_path, false, &[]).code, 401, "a badge without the token");

    // Down, then up again: the badge follows the verdict, and the outage is in the figures.
    c.stop_target(shop);
    wait_for_verdict(&watch, &url, "DOWN");
    let (texts, down) = badge(&c, &status_path);
    assert_eq!(texts, ["status", "down"]);
    assert!(down.body.contains("fill=\"#e05d44\""), "DOWN in red: {}", down.body);
    assert_ne!(down.header("etag"), got.header("etag"), "a changed badge has a new ETag");
    c.start_target(shop);
    wait_for_verdict(&watch, &url, "UP");

    // The uptime badge shows GetUptime's figure, rounded down to two decimals. Up time grows
    // by the second in this short run, so the figure rises between reads: the badge's lies
    // between the RPC's just before and just after it.
    let uptime_path = format!("/badge/uptime.svg?target={}&window=24h", query_encode(&url));
    let rpc = || {
        let answer = c.call("GetUptime", &format!(r#"{{"url": "{url}", "windows": ["24h"]}}"#));
        answer["targets"][0]["windows"][0]["percent"].as_f64().expect("a figure")
    };
    let before = rpc();
    let (texts, _) = badge(&c, &uptime_path);
    let after = rpc();
    assert_eq!(texts[0], "uptime 24h");
    let shown: f64 = texts[1].trim_end_matches('%').parse().unwrap_or_else(|_| panic!("{texts:?}"));
    assert!(after < 100.0 && before > 0.0, "the outage shows: {before}% .. {after}%");
    assert!(
        (before * 100.0).floor() / 100.0 - 1e-9 <= shown && shown <= after,
        "the badge shows {shown}%, GetUptime {before}% before it and {after}% after"
    );
    // The default window is 30 days.
    let (texts, _) = badge(&c, &format!("/badge/uptime.svg?target={}", query_encode(&url)));
    assert_eq!(texts[0], "uptime 30d");

    // What is not there is said plainly.
    let unknown = get(&c, "/badge/status.svg?target=https%3A%2F%2Fnowhere.e2e.test%2F", true, &[]);
    assert_eq!(unknown.code, 404);
    assert!(unknown.body.contains("does not watch https://nowhere.e2e.test/"), "{}", unknown.body);
    let bad = get(&c, &format!("/badge/uptime.svg?target={}&window=500d", query_encode(&url)), true, &[]);
    assert_eq!(bad.code, 400);
    assert!(bad.body.contains("400 days"), "{}", bad.body);
    let bad = get(&c, &format!("/badge/uptime.svg?target={}&window=soon", query_encode(&url)), true, &[]);
    assert_eq!(bad.code, 400, "{}", bad.body);
    let none = get(&c, "/badge/status.svg", true, &[]);
    assert_eq!((none.code, none.body.as_str()), (400, "name the target: ?target=<URL>\n"));
    assert_eq!(get(&c, "/badge/other.svg?target=x", true, &[]).code, 404);
}
