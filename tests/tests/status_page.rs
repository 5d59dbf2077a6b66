//! The status page in a real headless Chromium (Debian's, driven by Selenium through
//! `tests/browser/drive.py`) against a real coordinator and three agent processes in network
//! namespaces: the table shows each target's verdict (the counts in their badges, certificates in
//! their alerts' colours, one time-zone marker), a target's page shows its regions and
//! backends, its 90-day bar and latency chart, a verdict change arrives without a reload, the page
//! fits a phone, both read in a dark colour scheme, and screenshots at desktop and phone widths
//! (and dark) are saved under `target/artifacts/status-page/`.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};
use vantage_e2e::browser::{Browser, artifacts};
use vantage_e2e::cluster::Cluster;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// A JS expression: the text a user sees in the table row of `url`'s cell `cell` (a CSS
/// selector within the row), or null while there is no such row.
fn row_text(url: &str, cell: &str) -> String {
    format!(
        "(function () {{ var row = Array.from(document.querySelectorAll('tr[data-url]'))\
         .find(function (r) {{ return r.getAttribute('data-url') === {url}; }}); \
         var c = row && row.querySelector({cell}); return c ? c.innerText.trim() : null; }})()",
        url = serde_json::to_string(url).unwrap(),
        cell = serde_json::to_string(cell).unwrap(),
    )
}

/// Waits until `url`'s row shows `verdict`.
fn wait_verdict(browser: &mut Browser, url: &str, verdict: &str) {
    let js = format!("{} === {}", row_text(url, "td.verdict"), serde_json::to_string(verdict).unwrap());
    browser.wait(&format!("{url} as {verdict}"), &js, 120);
}

/// One GET over a plain TCP connection: the status line, the headers (names lowercased) and the body.
fn get(addr: std::net::SocketAddr, target: &str) -> (String, Vec<(String, String)>, String) {
    let mut tcp = std::net::TcpStream::connect(addr).expect("the HTTP port answers");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).expect("a whole response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

#[test]
fn the_status_page_shows_verdicts_regions_and_live_changes_in_chromium() {
    let mut c = Cluster::new(&REGIONS);
    let healthy = c.add_target("healthy", false);
    let expired = c.add_target("expired", true);
    let regional = c.add_target("regional", false);
    let flaky = c.add_target("flaky", false);
    // Cut off before the agents start: ap-south must never reach the regional target, or its
    // latency chart would draw the results it got before the cut.
    c.cut_off(2, regional);
    c.start_coordinator("2s", "1s");
    c.start_agents();
    let http = c.http_addr.expect("the coordinator printed its HTTP address");
    let url = |i: usize| c.targets[i].url.clone();
    let (healthy_url, expired_url, regional_url, flaky_url) = (url(healthy), url(expired), url(regional), url(flaky));

    // What the browser is sent: HTML under a policy that allows the page's own script by hash.
    let (status, headers, body) = get(http, "/");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    let csp = header(&headers, "content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(body.contains("name=\"viewport\""), "{body}");
    let (status, _, body) =
        get(http, "/target?url=https%3A%2F%2Fnowhere.e2e.test%2F%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert!(status.contains(" 404 "), "an unknown target is a 404 page: {status}");
    assert!(body.contains("No such target") && !body.contains("<script>alert"), "{body}");

    let mut browser = Browser::start();
    let base = format!("http://{http}");

    // (1) The table: every target with the verdict its regions agree on.
    browser.open(&format!("{base}/"));
    wait_verdict(&mut browser, &healthy_url, "UP");
    wait_verdict(&mut browser, &flaky_url, "UP");
    wait_verdict(&mut browser, &expired_url, "DOWN");
    // The region cut off reports only after its timed-out probe and retry, so the region may
    // briefly count as silent and the verdict read UP; wait for the row as a whole.
    let degraded = format!(
        "{} === 'DEGRADED' && {} === '1/3 ap-south'",
        row_text(&regional_url, "td.verdict"),
        row_text(&regional_url, "td.failing")
    );
    browser.wait("the regional target DEGRADED, named ap-south", &degraded, 120);
    let cause = browser.eval(&row_text(&expired_url, "td:nth-child(4)"));
    assert_eq!(cause, "cert_expired");
    let cert = browser.eval(&row_text(&expired_url, "td:nth-child(5)"));
    assert!(cert.as_str().is_some_and(|c| c.contains("expired")), "{cert}");
    let colour = browser.eval(&format!(
        "getComputedStyle(document.querySelector('tr[data-url=\"{expired_url}\"] .badge')).backgroundColor"
    ));
    assert_eq!(colour, "rgb(207, 34, 46)", "DOWN is red");
    // Problems first: down, degraded, then up.
    browser.wait(
        "the rows in the order DOWN, DEGRADED, UP, UP",
        "Array.from(document.querySelectorAll('tr[data-url] td.verdict')).map(function (td) { \
         return td.textContent.trim(); }).join(' ') === 'DOWN DEGRADED UP UP'",
        30,
    );

    // The counts read one way only: each number inside its verdict's badge, nothing between.
    browser.wait(
        "the counts UP 2, DEGRADED 1, DOWN 1, UNKNOWN 0, each in its badge",
        "Array.from(document.querySelectorAll('p.counts .badge')).map(function (b) { return b.innerText.trim(); }) \
         .join('|') === 'UP 2|DEGRADED 1|DOWN 1|UNKNOWN 0'",
        30,
    );
    let loose = browser.eval(
        "Array.from(document.querySelector('p.counts').childNodes).filter(function (n) { \
         return !(n.nodeType === 1 && n.classList.contains('badge')); }).length",
    );
    assert_eq!(loose, 0, "nothing in the counts outside a badge");
    let mut background = |verdict: &str| {
        browser.eval(&format!(
            "getComputedStyle(document.querySelector('p.counts [data-count=\"{verdict}\"]')).backgroundColor"
        ))
    };
    assert_eq!(background("DOWN"), "rgb(207, 34, 46)", "the DOWN count in DOWN's red");
    assert_eq!(background("UNKNOWN"), "rgba(0, 0, 0, 0)", "a zero count is quiet");
    // The certificate in the colours of its alerts: the expired one red, the healthy one green.
    let mut cert_colour = |url: &str| {
        browser.eval(&format!("getComputedStyle(document.querySelector('tr[data-url=\"{url}\"] td.cert')).color"))
    };
    assert_eq!(cert_colour(&expired_url), "rgb(207, 34, 46)", "an expired certificate is red");
    assert_eq!(cert_colour(&healthy_url), "rgb(26, 127, 55)", "a fine certificate is green");
    assert!(browser.eval(&row_text(&healthy_url, "td.cert")).as_str().is_some_and(|c| c.ends_with(" d ok")));
    // The page's time, with one time-zone marker.
    let as_of = browser.eval("document.querySelector('#live p.meta').innerText");
    let as_of = as_of.as_str().unwrap_or_default();
    let time = as_of.strip_prefix("as of ").unwrap_or_default();
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.matches('Z').count() == 1 && !as_of.contains("UTC"),
        "{as_of:?}"
    );

    // (3) A verdict change arrives in the open page, with no reload: the marker set on this
    // document is still there when the row turns DOWN.
    browser.eval("(window.vantageMarker = 'set before the outage')");
    c.stop_target(flaky);
    wait_verdict(&mut browser, &flaky_url, "DOWN");
    assert_eq!(browser.eval(&row_text(&flaky_url, "td:nth-child(4)")), "tcp_refused");
    assert_eq!(browser.eval("window.vantageMarker"), "set before the outage", "the page was reloaded");
    assert_eq!(browser.eval("document.getElementById('state').textContent"), "live");
    let dir = artifacts();
    browser.screenshot(&dir.join("table-desktop.png"));

    // (2) A target's page, reached by its link: the region × backend matrix and the certificate.
    browser.must(json!({"cmd": "click", "css": format!("tr[data-url=\"{regional_url}\"] a")}));
    browser.wait(
        "the three regions, ap-south down",
        "Array.from(document.querySelectorAll('table.matrix tr[data-region]')).map(function (r) { \
         return r.getAttribute('data-region') + '=' + r.getAttribute('data-opinion'); }).sort().join(' ') \
         === 'ap-south=down eu-west=up us-east=up'",
        60,
    );
    let backend = format!("{}:{}", c.bridge_ip, c.targets[regional].port);
    let columns = browser.eval("Array.from(document.querySelectorAll('table.matrix thead th')).map(function (t) { return t.innerText; }).join('|')");
    assert!(columns.as_str().is_some_and(|c| c.contains(&backend)), "a column for the backend {backend}: {columns}");
    let cells = browser.eval(
        "Array.from(document.querySelectorAll('table.matrix tr[data-region]')).map(function (r) { \
         return r.getAttribute('data-region') + '=' + r.querySelector('td:nth-child(5)').innerText; }).sort().join('|')",
    );
    let cells = cells.as_str().unwrap_or_default();
    assert!(
        cells.starts_with("ap-south=down") && cells.ends_with("eu-west=up|us-east=up"),
        "{backend} as each region found it: {cells}"
    );
    let facts = browser.eval("document.querySelector('table.facts').innerText");
    assert!(facts.as_str().is_some_and(|f| f.contains("regional.e2e.test") && f.contains("SHA-256")), "{facts}");
    browser.wait(
        "results from every region",
        "new Set(Array.from(document.querySelectorAll('table.results tbody tr td:nth-child(2)')).map(function (t) { return t.innerText; })).size === 3",
        60,
    );
    // The 90-day bar: one cell a day, today's (the last) in the colour of its worst verdict
    // (DEGRADED: ap-south fails), its figures on hover, and days before the target existed grey.
    let cells = browser.eval("document.querySelectorAll('.bar svg rect.d').length");
    assert_eq!(cells, 90, "one cell per day for 90 days");
    let today = "document.querySelector('.bar svg rect.d:last-of-type')";
    assert_eq!(browser.eval(&format!("{today}.getAttribute('class')")), "d d-DEGRADED");
    assert_eq!(browser.eval(&format!("getComputedStyle({today}).fill")), "rgb(154, 103, 0)", "DEGRADED's amber");
    let hover = browser.eval(&format!("{today}.querySelector('title').textContent"));
    assert!(hover.as_str().is_some_and(|t| t.contains("% available, ") && t.contains(" degraded")), "{hover}");
    assert_eq!(browser.eval("document.querySelectorAll('.bar svg rect.d-none').length"), 89, "no days before it");
    let listed = browser.eval("document.querySelector('.bar ul.days li').innerText");
    assert!(listed.as_str().is_some_and(|l| l.starts_with("DEGRADED: ")), "today in words, for a phone: {listed}");
    // The latency chart: a small chart per region; the two regions that reach the target draw
    // their p50 and p95, ap-south (cut off) has no successful result to draw.
    let regions = browser.eval(
        "Array.from(document.querySelectorAll('.latency figure')).map(function (f) { \
         return f.getAttribute('data-region') + '=' + (f.querySelector('path.p50').getAttribute('d') !== '') + \
         '/' + (f.querySelector('path.p95').getAttribute('d') !== ''); }).join(' ')",
    );
    assert_eq!(regions, "ap-south=false/false eu-west=true/true us-east=true/true", "one chart per region");
    let top = browser.eval("document.querySelector('.latency figure[data-region=\"eu-west\"] .axis').innerText");
    assert!(top.as_str().is_some_and(|t| t.contains(" ms at the top")), "{top}");
    // The target's page refreshes itself too: its "as of" time moves on.
    let as_of = "document.querySelector('#live p.meta').innerText";
    let first = browser.eval(as_of);
    browser.wait("a fresher target page", &format!("{as_of} !== {first}"), 30);
    let title = browser.eval("document.title");
    assert!(title.as_str().is_some_and(|t| t.ends_with(&format!(" · {regional_url} · Vantage"))), "{title}");
    browser.screenshot(&dir.join("target-desktop.png"));

    // (5) In a dark colour scheme (emulated prefers-color-scheme): a dark background, and the
    // text, the verdict badge, the bar's cells and the latency lines all stand out from it.
    browser.color_scheme("dark");
    let page = "getComputedStyle(document.body).backgroundColor";
    assert_eq!(browser.eval(page), "rgb(13, 17, 23)", "a dark background");
    let text = browser.contrast("h1", "color", page);
    assert!(text >= 7.0, "the text reads on the dark background: contrast {text:.2}");
    let badge = browser.contrast(
        ".summary .badge",
        "color",
        "getComputedStyle(document.querySelector('.summary .badge')).backgroundColor",
    );
    assert!(badge >= 4.5, "the verdict badge's text reads on its colour: contrast {badge:.2}");
    let cell = browser.contrast(".bar svg rect.d:last-of-type", "fill", page);
    assert!(cell >= 3.0, "today's cell stands out: contrast {cell:.2}");
    let line = browser.contrast(".latency figure[data-region=\"eu-west\"] path.p50", "stroke", page);
    assert!(line >= 3.0, "the p50 line stands out: contrast {line:.2}");
    browser.screenshot(&dir.join("target-desktop-dark.png"));
    browser.color_scheme("light");

    // (4) On a phone (390 px, device metrics as a phone reports them): nothing wider than the
    // screen; the table turns into cards.
    let width = browser.must(json!({"cmd": "viewport", "width": 390, "height": 844, "mobile": true, "scale": 2}));
    assert_eq!(width, 390, "the viewport meta makes the layout viewport the device's width");
    let fits = "document.documentElement.scrollWidth <= window.innerWidth";
    assert_eq!(browser.eval(fits), true, "the target page scrolls sideways at 390 px");
    let bar_width = browser.eval("document.querySelector('.bar svg').getBoundingClientRect().width");
    assert!(bar_width.as_f64().is_some_and(|w| w > 300.0 && w <= 390.0), "the bar fits the phone: {bar_width}");
    browser.screenshot(&dir.join("target-phone.png"));
    browser.open(&format!("{base}/"));
    wait_verdict(&mut browser, &flaky_url, "DOWN");
    assert_eq!(browser.eval(fits), true, "the table scrolls sideways at 390 px");
    assert_eq!(browser.eval("getComputedStyle(document.querySelector('table.targets thead')).display"), "none");
    browser.screenshot(&dir.join("table-phone.png"));
    browser.color_scheme("dark");
    let card = "getComputedStyle(document.body).backgroundColor";
    assert_eq!(browser.eval(card), "rgb(13, 17, 23)");
    let down = format!("tr[data-url=\"{flaky_url}\"] .badge");
    let badge = browser.contrast(
        &down,
        "color",
        &format!("getComputedStyle(document.querySelector({})).backgroundColor", serde_json::to_string(&down).unwrap()),
    );
    assert!(badge >= 4.5, "a DOWN badge reads in the dark: contrast {badge:.2}");
    let link = browser.contrast("td.url a", "color", card);
    assert!(link >= 4.5, "a target's link reads in the dark: contrast {link:.2}");
    browser.screenshot(&dir.join("table-phone-dark.png"));
    browser.color_scheme("");

    // An unknown target in the browser, and nothing refused by the policy along the way.
    browser.open(&format!("{base}/target?url=https%3A%2F%2Fnowhere.e2e.test%2F"));
    assert_eq!(browser.eval("document.querySelector('h1').innerText"), "No such target");
    let log = browser.must(json!({"cmd": "log"}));
    let refused: Vec<&Value> = log
        .as_array()
        .map(|l| l.iter().filter(|m| m.as_str().is_some_and(|m| m.contains("Content Security Policy"))).collect())
        .unwrap_or_default();
    assert!(refused.is_empty(), "the policy refused something the page needs: {refused:?}");
}
