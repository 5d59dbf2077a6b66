//! A public status page against a real coordinator under `--http-auth` and three agent processes
//! in network namespaces: `/s/{slug}` is served without credentials while `/` still needs them,
//! shows only public names and states in public words, the 90-day bars, availability and the
//! incidents by cause category, and leaks nothing an operator keeps (addresses, ports, URLs, host
//! names, hints, failure codes, agents, regions, label values, targets not on the page); the
//! badges of its targets need no token while the others' do; in headless Chromium it fits a
//! phone and reads in a dark colour scheme (screenshots under `target/artifacts/status-page/`);
//! and a reload adds, refuses (a duplicate slug) and removes pages (README: "Status page").

use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_e2e::browser::{Browser, artifacts};
use vantage_e2e::cluster::{ADMIN_TOKEN, Cluster};
use vantage_e2e::reload::{Got, curl, curl_get};
use vantage_e2e::watch::Watch;
use vantage_e2e::{badge_texts, query_encode};
use vantage_shared::FailureCode;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// The selector's label value and another label's: neither may appear on the page.
const SELECTOR: &str = "pub-sel-7f3a";
const SECRET_TEAM: &str = "team-internal-42";

/// GET `path` with real curl and no credentials, as the public does.
fn get(c: &Cluster, path: &str) -> Got {
    let url = format!("http://{}{path}", c.http_addr.expect("the HTTP port"));
    curl_get(&url, &[])
}

/// Fetches `path` until `done` holds for its body (the page is drawn at most every 5 s).
fn wait_page(c: &Cluster, path: &str, what: &str, done: impl Fn(&str) -> bool) -> Got {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = get(c, path);
        if got.code == 200 && done(&got.body) {
            return got;
        }
        assert!(Instant::now() < deadline, "{path} never showed {what}: {} {}", got.code, got.body);
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn status_page(slug: &str, title: &str, extra: &str) -> String {
    format!(
        "\n[[status_page]]\nslug = \"{slug}\"\ntitle = \"{title}\"\nlabels = {{ public = \"{SELECTOR}\" }}\n{extra}\n"
    )
}

#[test]
fn a_public_status_page_shows_public_names_and_states_and_leaks_nothing() {
    let mut c = Cluster::new(&REGIONS);
    c.env.push(("VANTAGE_HTTP_AUTH".into(), "true".into()));
    let shop = c.add_target("shop", false);
    let api = c.add_target("api", false);
    let blog = c.add_target("blog", true);
    let flaky = c.add_target("flaky", false);
    let internal = c.add_target("internal", false);
    c.targets[shop].extra = format!("labels = {{ public = \"{SELECTOR}\", team = \"{SECRET_TEAM}\" }}");
    c.targets[api].extra = format!("labels = {{ public = \"{SELECTOR}\", public_name = \"Public API\" }}");
    c.targets[blog].extra = format!("labels = {{ public = \"{SELECTOR}\" }}");
    c.targets[flaky].extra = format!("labels = {{ public = \"{SELECTOR}\" }}");
    c.targets[internal].extra = format!("labels = {{ public = \"no\", team = \"{SECRET_TEAM}\" }}");
    let url = |i: usize| c.targets[i].url.clone();
    let (shop_url, api_url, blog_url, flaky_url, internal_url) =
        (url(shop), url(api), url(blog), url(flaky), url(internal));
    let names = format!("names = {{ \"{shop_url}\" = \"Shop\" }}\ndescription = \"Live status of our services.\"");
    c.config_extra = status_page("status", "Example status", &names)
        + &status_page("brand", "Brand", "logo = \"https://cdn.example.net/img/logo.png?v=2\"");
    c.start_coordinator("2s", "1s");
    c.start_agents();
    let watch = Watch::new(&c);
    let verdict = |url: &str, verdict: &str| {
        watch.wait_for(url, |s| s["verdict"] == verdict);
    };
    for (u, v) in [(&shop_url, "UP"), (&api_url, "UP"), (&blog_url, "DOWN"), (&internal_url, "UP"), (&flaky_url, "UP")]
    {
        verdict(u, v);
    }
    // An outage that ends: a resolved incident, its cause a refused connection.
    c.stop_target(flaky);
    verdict(&flaky_url, "DOWN");
    c.start_target(flaky);
    verdict(&flaky_url, "UP");

    // Without credentials: the operator's page and a target's are refused, the public page is not.
    assert_eq!(get(&c, "/").code, 401, "the operator's page still needs the token");
    assert_eq!(get(&c, &format!("/target?url={}", query_encode(&shop_url))).code, 401);
    let page = wait_page(&c, "/s/status", "every service up but the blog, and a resolved incident", |b| {
        b.matches("data-state=\"UP\"").count() == 3 && b.contains("data-state=\"DOWN\"") && b.contains("resolved")
    });
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let csp = page.header("content-security-policy");
    assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
    assert!(!csp.contains("script-src") && !csp.contains("img-src") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    let body = &page.body;

    // What it shows: public names, states in public words, bars, availability, incidents by
    // cause category.
    for shown in [
        "<h1>Example status</h1>",
        "Live status of our services.",
        "Outage: 1 of 4 services down",
        "data-service=\"Public API\" data-state=\"UP\"",
        "data-service=\"Shop\" data-state=\"UP\"",
        "data-service=\"Service 1\" data-state=\"DOWN\"",
        "data-service=\"Service 2\" data-state=\"UP\"",
        "<span class=\"badge v-UP\">Operational</span>",
        "<span class=\"badge v-DOWN\">Outage</span>",
        "<b>Service 1</b>: TLS/certificate · began",
        "<b>Service 2</b>: Network · began",
        "Availability: <span data-window=\"24h\">",
    ] {
        assert!(body.contains(shown), "the page shows {shown:?}");
    }
    assert_eq!(body.matches("<rect class=\"d ").count(), 4 * 90, "a 90-day bar per service");
    assert!(body.contains("<strong>ongoing</strong>"), "the blog's outage goes on");

    // What it must not show.
    let mut secrets: Vec<String> =
        vec![c.bridge_ip.to_string(), "e2e.test".into(), SELECTOR.into(), SECRET_TEAM.into()];
    for t in &c.targets {
        secrets.extend([t.url.clone(), t.host.clone(), t.port.to_string()]);
    }
    secrets.extend(REGIONS.iter().map(|r| (*r).to_owned()));
    secrets.extend(REGIONS.iter().map(|r| format!("agent-{r}")));
    secrets.push("internal".into());
    for code in FailureCode::ALL {
        secrets.extend([code.as_str().to_owned(), code.hint().to_owned(), code.cause().to_owned()]);
    }
    secrets.extend(["/target".into(), "/badge/".into(), "Fix:".into(), "quorum".into()]);
    for secret in &secrets {
        assert!(!body.contains(secret.as_str()), "the public page leaks {secret:?}");
    }

    // Another page with a logo: its policy allows that one image, nothing else.
    let brand = get(&c, "/s/brand");
    assert_eq!(brand.code, 200);
    let csp = brand.header("content-security-policy");
    assert!(csp.contains("; img-src https://cdn.example.net/img/logo.png; "), "{csp}");
    assert!(brand.body.contains("<img class=\"logo\" src=\"https://cdn.example.net/img/logo.png?v=2\" alt=\"\">"));
    let missing = get(&c, "/s/nope");
    assert_eq!(missing.code, 404, "an unknown slug is a 404 page");
    assert!(missing.body.contains("No such status page") && !missing.body.contains("Example status"));

    // Badges: a public target's without credentials, valid SVG; any other target's is a 401, an
    // unknown one's too (nothing is learnt by asking).
    let public_badge = get(&c, &format!("/badge/status.svg?target={}", query_encode(&shop_url)));
    assert_eq!(public_badge.code, 200, "{}", public_badge.body);
    assert_eq!(public_badge.header("content-type"), "image/svg+xml");
    let svg = "{http://www.w3.org/2000/svg}svg".to_owned();
    assert_eq!(badge_texts(&public_badge.body), (svg.clone(), vec!["status".to_owned(), "up".to_owned()]));
    let uptime = get(&c, &format!("/badge/uptime.svg?target={}&window=24h", query_encode(&blog_url)));
    assert_eq!(uptime.code, 200, "{}", uptime.body);
    assert_eq!(badge_texts(&uptime.body), (svg, vec!["uptime 24h".to_owned(), "0.00%".to_owned()]));
    assert_eq!(get(&c, &format!("/badge/status.svg?target={}", query_encode(&internal_url))).code, 401);
    assert_eq!(get(&c, "/badge/status.svg?target=https%3A%2F%2Fnowhere.e2e.test%2F").code, 401);

    // In Chromium: desktop, phone, and both in a dark colour scheme.
    let mut browser = Browser::start();
    let base = format!("http://{}", c.http_addr.expect("the HTTP port"));
    browser.open(&format!("{base}/s/status"));
    let services = browser.eval(
        "Array.from(document.querySelectorAll('section.service')).map(function (s) { \
         return s.getAttribute('data-service') + '=' + s.querySelector('h2 .badge').innerText; }).join('|')",
    );
    assert_eq!(services, "Public API=Operational|Shop=Operational|Service 1=Outage|Service 2=Operational");
    assert_eq!(
        browser.eval("getComputedStyle(document.querySelector('.overall')).backgroundColor"),
        "rgb(207, 34, 46)"
    );
    let dir = artifacts();
    browser.screenshot(&dir.join("public-desktop.png"));
    let page_bg = "getComputedStyle(document.body).backgroundColor";
    browser.color_scheme("dark");
    assert_eq!(browser.eval(page_bg), "rgb(13, 17, 23)", "a dark background");
    for (what, css, property, background) in [
        ("the title", "h1", "color", page_bg.to_owned()),
        (
            "the overall line",
            ".overall",
            "color",
            "getComputedStyle(document.querySelector('.overall')).backgroundColor".to_owned(),
        ),
        (
            "a state",
            "section.service .badge",
            "color",
            "getComputedStyle(document.querySelector('section.service .badge')).backgroundColor".to_owned(),
        ),
    ] {
        let contrast = browser.contrast(css, property, &background);
        assert!(contrast >= 4.5, "{what} reads in the dark: contrast {contrast:.2}");
    }
    let cell = browser.contrast("section.service .bar rect.d:last-of-type", "fill", page_bg);
    assert!(cell >= 3.0, "today's cell stands out in the dark: contrast {cell:.2}");
    browser.screenshot(&dir.join("public-desktop-dark.png"));
    browser.color_scheme("light");
    let width =
        browser.must(serde_json::json!({"cmd": "viewport", "width": 390, "height": 844, "mobile": true, "scale": 2}));
    assert_eq!(width, 390);
    assert_eq!(browser.eval("document.documentElement.scrollWidth <= window.innerWidth"), true, "no sideways scroll");
    let bar = browser.eval("document.querySelector('section.service .bar svg').getBoundingClientRect().width");
    assert!(bar.as_f64().is_some_and(|w| w > 300.0 && w <= 390.0), "the bars fit the phone: {bar}");
    browser.screenshot(&dir.join("public-phone.png"));
    browser.color_scheme("dark");
    browser.screenshot(&dir.join("public-phone-dark.png"));
    let log = browser.must(serde_json::json!({"cmd": "log"}));
    let refused: Vec<&Value> = log
        .as_array()
        .map(|l| l.iter().filter(|m| m.as_str().is_some_and(|m| m.contains("Content Security Policy"))).collect())
        .unwrap_or_default();
    assert!(refused.is_empty(), "the policy refused something the page needs: {refused:?}");
    drop(browser);

    // A reload adds a page, refuses a config with a slug used twice (the pages stay), and
    // removes a page.
    let reload = format!("{base}/-/reload");
    let config = std::fs::read_to_string(c.config_file()).expect("the config");
    std::fs::write(c.config_file(), config.clone() + &status_page("second", "Second page", "")).expect("write");
    let (code, text) = curl("POST", &reload, Some(ADMIN_TOKEN));
    assert_eq!(code, 200, "{text}");
    assert!(text.contains(", 3 status pages"), "{text}");
    let second = get(&c, "/s/second");
    assert!(second.code == 200 && second.body.contains("<h1>Second page</h1>"), "{}", second.body);
    std::fs::write(c.config_file(), config.clone() + &status_page("status", "Again", "")).expect("write");
    let (code, text) = curl("POST", &reload, Some(ADMIN_TOKEN));
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("vantage.toml:") && text.contains("status_page status: the slug is used twice"), "{text}");
    assert_eq!(get(&c, "/s/second").code, 200, "a refused config changes nothing");
    std::fs::write(c.config_file(), config).expect("write");
    let (code, text) = curl("POST", &reload, Some(ADMIN_TOKEN));
    assert_eq!(code, 200, "{text}");
    assert_eq!(get(&c, "/s/second").code, 404, "a page removed from the config is gone at once");
}
