//! The status page in a real headless Chromium (Debian's, driven by Selenium through
//! `tests/browser/drive.py`) against a real coordinator and three agent processes in network
//! namespaces: the table shows each target's verdict (the counts in their badges, certificates in
//! their alerts' colours, one time-zone marker), a target's page shows its regions and
//! backends, its 90-day bar and latency chart, a verdict change arrives without a reload, the page fits a phone, and screenshots at
//! desktop and phone widths are saved under `target/artifacts/status-page/`.

use std::io::{BufRead, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vantage_e2e::cluster::Cluster;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// Headless Chromium behind `drive.py`: one JSON command per line, one JSON answer per line.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Browser {
    fn start() -> Browser {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/drive.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("python3 runs drive.py (.ci/setup installs selenium, chromium and chromium-driver)");
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut browser = Browser { child, stdin, answers };
        let version = browser.answer(Duration::from_secs(90)).unwrap_or_else(|e| panic!("Chromium did not start: {e}"));
        eprintln!("headless Chromium {version}");
        browser
    }

    fn answer(&mut self, within: Duration) -> Result<Value, String> {
        let line =
            self.answers.recv_timeout(within).map_err(|_| format!("no answer from drive.py within {within:?}"))?;
        let answer: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        if answer["ok"] == true { Ok(answer["value"].clone()) } else { Err(answer["error"].to_string()) }
    }

    fn call(&mut self, command: Value) -> Result<Value, String> {
        let within = Duration::from_secs(command["timeout"].as_u64().unwrap_or(30) + 60);
        writeln!(self.stdin, "{command}").map_err(|e| format!("drive.py is gone: {e}"))?;
        self.stdin.flush().map_err(|e| format!("drive.py is gone: {e}"))?;
        self.answer(within)
    }

    fn must(&mut self, command: Value) -> Value {
        self.call(command.clone()).unwrap_or_else(|e| panic!("{command}: {e}"))
    }

    fn open(&mut self, url: &str) {
        self.must(json!({"cmd": "open", "url": url}));
    }

    /// Waits (up to `seconds`) until the JS expression is truthy; returns its value.
    fn wait(&mut self, what: &str, js: &str, seconds: u64) -> Value {
        self.call(json!({"cmd": "wait", "js": js, "timeout": seconds}))
            .unwrap_or_else(|e| panic!("the page never showed {what} within {seconds}s: {e}"))
    }

    fn eval(&mut self, js: &str) -> Value {
        self.must(json!({"cmd": "eval", "js": js}))
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        self.must(json!({"cmd": "screenshot", "path": path.to_str().expect("utf-8 path")}));
        let png = std::fs::read(path).expect("the screenshot was written");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} is not a real screenshot", path.display());
        println!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    /// drive.py quits chromedriver and Chromium before it exits; if it does not exit in time,
    /// its whole process group goes (Chromium outlives a killed chromedriver otherwise).
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

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

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/artifacts/status-page"));
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir.canonicalize().expect("artifacts dir")
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
