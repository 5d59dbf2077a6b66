//! The README's main command: `vantage-coordinator demo` runs a coordinator and three regional
//! agents over real gRPC and brings every demo target to its expected verdict; grpcurl works
//! against it while it runs; on a terminal its banner of hints stays above the table, redrawn only
//! when a row changes in more than its latency, and `status --watch` prints whole tables whose
//! columns stay put. `demo --scenarios` diagnoses every lab scenario once.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use vantage_e2e::{Process, binary, grpcurl, run};

#[test]
fn demo_brings_every_target_to_its_verdict() {
    let out =
        run("vantage-coordinator", &["demo", "--once", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for (host, verdict, cause) in [
        ("healthy.", "UP", "-"),
        ("cert-warning.", "UP", "-"),
        ("expired.", "DOWN", "cert_expired"),
        ("mismatch.", "DOWN", "cert_hostname_mismatch"),
        ("http-5xx.", "DOWN", "http_5xx"),
        ("closed.", "DOWN", "tcp_refused"),
        ("regional.", "DEGRADED", "tcp_refused"),
    ] {
        let line = stdout.lines().find(|l| l.contains(host)).unwrap_or_else(|| panic!("no row for {host}:\n{stdout}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[1], verdict, "{line}");
        assert!(cells.contains(&cause), "{line}");
    }
    let regional = stdout.lines().find(|l| l.contains("regional.")).unwrap();
    assert!(regional.contains("1/3 ap-south"), "the one region that cannot reach it is named: {regional}");
    // `--once` is for scripts and docs: the table alone, no banner, no hints.
    assert!(stdout.starts_with("TARGET "), "only the table:\n{stdout}");
    assert_eq!(stdout.lines().count(), 1 + 7, "a header and seven rows:\n{stdout}");
}

/// A live demo on free ports, once every region has judged its expired site: the process, its
/// gRPC address and its HTTP address.
fn running_demo() -> (Process, String, String) {
    let demo =
        Process::start("vantage-coordinator", &["demo", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
    let first = demo.wait_for_line(|l| l.contains("a coordinator on"));
    let field = |after: &str, end: char| {
        first.split(after).nth(1).and_then(|r| r.split(end).next()).expect("addresses in the banner").to_owned()
    };
    let (addr, http) = (field("a coordinator on ", ' '), field("(HTTP ", ')'));
    // Wait, on the status stream, until every region has judged the expired site.
    let watch =
        Process::start("vantage-coordinator", &["status", "--watch", "--json", "--addr", &format!("http://{addr}")]);
    watch.wait_for_line(|l| {
        let Ok(status) = serde_json::from_str::<serde_json::Value>(l) else { return false };
        status["url"].as_str().is_some_and(|u| u.contains("expired."))
            && status["regions"].as_array().is_some_and(|r| r.len() == 3 && r.iter().all(|r| r["opinion"] == "down"))
    });
    (demo, addr, http)
}

#[test]
fn grpcurl_lists_describes_and_queries_the_running_demo() {
    let (_demo, addr, _) = running_demo();

    let list = grpcurl(&["-plaintext", &addr, "list"]);
    for service in ["vantage.v1.AgentService", "vantage.v1.Coordinator"] {
        assert!(list.contains(service), "{list}");
    }
    let describe = grpcurl(&["-plaintext", &addr, "describe", "vantage.v1.Coordinator"]);
    for rpc in [
        "UpsertTarget",
        "DeleteTarget",
        "ListTargets",
        "ListStatus",
        "WatchStatus",
        "GetHistory",
        "CheckNow",
        "ListAgents",
        "ListIncidents",
    ] {
        assert!(describe.contains(&format!("rpc {rpc}")), "{rpc} missing:\n{describe}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&grpcurl(&["-plaintext", "-d", "{}", &addr, "vantage.v1.Coordinator/ListStatus"]))
            .unwrap();
    let targets = status["targets"].as_array().unwrap();
    let expired = targets.iter().find(|t| t["url"].as_str().unwrap().contains("expired.")).unwrap();
    assert_eq!(expired["verdict"], "VERDICT_DOWN");
    assert_eq!(expired["cause"]["code"], "cert_expired");
    assert_eq!(expired["cert"]["health"], "CERT_HEALTH_EXPIRED");
    let regions = expired["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 3);
    assert!(regions.iter().all(|r| r["opinion"] == "OPINION_DOWN" && r["failureCode"] == "cert_expired"));

    let agents: serde_json::Value =
        serde_json::from_str(&grpcurl(&["-plaintext", "-d", "{}", &addr, "vantage.v1.Coordinator/ListAgents"]))
            .unwrap();
    assert_eq!(agents["agents"].as_array().unwrap().len(), 3);

    let url = expired["url"].as_str().unwrap();
    let check: serde_json::Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        "-d",
        &format!("{{\"url\": \"{url}\"}}"),
        &addr,
        "vantage.v1.Coordinator/CheckNow",
    ]))
    .unwrap();
    assert_eq!(check["status"]["verdict"], "VERDICT_DOWN");
    assert_eq!(check["results"].as_array().unwrap().len(), 3, "a fresh result from every region: {check}");
    assert!(check.get("missingRegions").is_none(), "{check}");

    let history: serde_json::Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        "-d",
        &format!("{{\"url\": \"{url}\", \"region\": \"eu-west\", \"limit\": 2}}"),
        &addr,
        "vantage.v1.Coordinator/GetHistory",
    ]))
    .unwrap();
    let results = history["results"].as_array().unwrap();
    assert!(!results.is_empty() && results.len() <= 2);
    assert!(results.iter().all(|r| r["region"] == "eu-west"));

    let incidents: serde_json::Value = serde_json::from_str(&grpcurl(&[
        "-plaintext",
        "-d",
        &format!("{{\"url\": \"{url}\", \"open_only\": true}}"),
        &addr,
        "vantage.v1.Coordinator/ListIncidents",
    ]))
    .unwrap();
    assert_eq!(incidents["incidents"][0]["cause"]["code"], "cert_expired");

    // The operator's commands against the same coordinator.
    let coordinator = format!("http://{addr}");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--addr", &coordinator]);
        let out = run("vantage-coordinator", &all);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (ok, text) =
        cli(&["targets", "add", "https://added.vantage.test/", "--interval", "30s", "--region", "eu-west"]);
    assert!(ok && text.contains("added https://added.vantage.test/"), "{text}");
    let (ok, text) = cli(&["targets", "ls"]);
    assert!(ok && text.contains("https://added.vantage.test/  every 30s") && text.contains("eu-west"), "{text}");
    let (ok, text) = cli(&["targets", "add", "https://added.vantage.test/", "--interval", "1s", "--timeout", "5s"]);
    assert!(!ok && text.contains("timeout"), "a bad field is named: {text}");
    let (ok, text) = cli(&["targets", "rm", "https://added.vantage.test/"]);
    assert!(ok && text.contains("removed"), "{text}");
    let (ok, text) = cli(&["targets", "rm", "https://added.vantage.test/"]);
    assert!(!ok && text.contains("no target"), "{text}");
    let (ok, text) = cli(&["status"]);
    assert!(ok && text.starts_with("TARGET") && text.contains("DEGRADED"), "{text}");
    let (ok, text) = cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(ok && json["targets"].as_array().unwrap().len() == 7, "{text}");

    let bad = vantage_e2e::grpcurl_output(&[
        "-plaintext",
        "-d",
        "{\"target\": {\"url\": \"ftp://x/\"}}",
        &addr,
        "vantage.v1.Coordinator/UpsertTarget",
    ]);
    assert!(bad.contains("InvalidArgument") && bad.contains("url:"), "{bad}");
}

#[test]
fn demo_scenarios_diagnoses_every_scenario() {
    let out = run("vantage-coordinator", &["demo", "--scenarios", "--show", "cert_expired"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Every scenario was diagnosed as expected."), "{stdout}");
    for (scenario, diagnosis) in [
        ("healthy ", "UP        -"),
        ("cert_expired ", "DOWN      cert_expired"),
        ("tcp_refused ", "DOWN      tcp_refused"),
        ("dns_nxdomain ", "DOWN      dns_nxdomain"),
        ("all_backends_one_bad ", "DEGRADED  cert_expired"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(scenario))
            .unwrap_or_else(|| panic!("no row for {scenario}:\n{stdout}"));
        assert!(line.contains(diagnosis), "{line}");
    }
    assert!(stdout.contains("$ vantage-agent check https://expired.vantage.test:"), "{stdout}");
    assert!(stdout.contains("fix:   Renew the certificate"), "{stdout}");
}

#[test]
fn demo_names_the_scenarios_when_asked_for_an_unknown_one() {
    let out = run("vantage-coordinator", &["demo", "--scenarios", "--show", "no_such_thing"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no scenario \"no_such_thing\"") && stderr.contains("cert_expired"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_help_and_version_exit_0() {
    for args in [&["--version"][..], &["check", "--help"][..]] {
        let out = run("vantage-agent", args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

/// `curl -sS URL`, which must succeed.
fn curl(url: &str) -> String {
    let out = std::process::Command::new("curl").args(["-sS", "--max-time", "10", url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `promtool check metrics` passes on `text`, with nothing to say.
fn promtool_check_metrics(text: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (.ci/setup installs Debian's prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
}

#[test]
fn metrics_and_probe_of_the_running_demo_pass_promtool() {
    let (_demo, _, http) = running_demo();
    let metrics = curl(&format!("http://{http}/metrics"));
    promtool_check_metrics(&metrics);
    let expired = metrics
        .lines()
        .find(|l| l.starts_with("vantage_target_verdict{") && l.contains("expired."))
        .expect("the expired site's verdict");
    assert!(expired.contains("verdict=\"DOWN\"") && expired.ends_with(" 1"), "{expired}");
    for family in [
        "vantage_failures_total{code=\"cert_expired\"}",
        "vantage_agents_connected{region=\"eu-west\"} 1",
        "vantage_ingested_results_total ",
    ] {
        assert!(metrics.contains(family), "{family} missing");
    }
    assert!(!metrics.contains("probe_success"), "per-region detail is on /probe");

    // The expired site's per-region detail, as Prometheus would scrape it for that target.
    let url = expired.split("target=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
    let probe = curl(&format!("http://{http}/probe?target={url}"));
    promtool_check_metrics(&probe);
    let regions = probe.lines().filter(|l| l.starts_with("probe_success{") && l.ends_with(" 0")).count();
    assert_eq!(regions, 3, "one failed probe_success per region:\n{probe}");
    for family in [
        "probe_duration_seconds{",
        "probe_http_duration_seconds{",
        "probe_ssl_earliest_cert_expiry{",
        "probe_tls_version_info{",
        "vantage_region_opinion{",
    ] {
        assert!(probe.contains(family), "{family} missing");
    }
}

/// Clears the screen and homes the cursor: where the live demo's frames start on a terminal.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// A program run on a pseudo-terminal (`script` from util-linux), as a person runs it; the
/// program itself is killed with `script`.
struct Terminal(Process);

impl Terminal {
    fn start(command: &str) -> Terminal {
        let mut script = Command::new("script");
        script.args(["-qfec", &format!("exec {command}"), "/dev/null"]).env("TERM", "xterm");
        Terminal(Process::start_with(&mut script, "a terminal"))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // The program is `script`'s child in a session of its own: killed by its pid.
        let pid = self.0.pid();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", child]).status();
        }
    }
}

/// A row of the demo's table (`TARGET VERDICT FAILING… CAUSE CERTIFICATE LATENCY`) for the lab
/// host `host`, without its latency: (verdict, failing regions, cause, certificate).
fn cells<'a>(frame: &'a [String], host: &str) -> Option<Vec<&'a str>> {
    let line = frame.iter().find(|l| l.starts_with(&format!("https://{host}.vantage.test:")))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    Some(words[1..words.len() - 2].to_vec())
}

/// Every region has judged every demo target as the demo means it to end up, in this frame.
fn settled(frame: &[String]) -> bool {
    let all = "3/3 ap-south,eu-west,us-east";
    [
        ("healthy", vec!["UP", "0/3", "-", "90d", "ok"]),
        ("cert-warning", vec!["UP", "0/3", "-", "20d", "warning"]),
        ("expired", vec!["DOWN", all, "cert_expired", "-2d", "expired"]),
        ("mismatch", vec!["DOWN", all, "cert_hostname_mismatch", "90d", "ok"]),
        ("http-5xx", vec!["DOWN", all, "http_5xx", "90d", "ok"]),
        ("closed", vec!["DOWN", all, "tcp_refused", "-"]),
        ("regional", vec!["DEGRADED", "1/3", "ap-south", "tcp_refused", "90d", "ok"]),
    ]
    .iter()
    .all(|(host, want)| {
        let want: Vec<&str> = want.iter().flat_map(|w| w.split(' ')).collect();
        cells(frame, host).is_some_and(|c| c == want)
    })
}

/// What the table shows of each target apart from latency, from `status --json`; and the
/// latencies.
fn judged(addr: &str) -> (BTreeMap<String, String>, Vec<f64>) {
    let out = run("vantage-coordinator", &["status", "--json", "--coordinator", &format!("http://{addr}")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut shown = BTreeMap::new();
    let mut latencies = Vec::new();
    for t in json["targets"].as_array().expect("targets") {
        let view = (&t["verdict"], &t["failing_regions"], &t["cause"]["code"], &t["cert"], &t["silence"]);
        shown.insert(t["url"].as_str().unwrap_or_default().to_owned(), format!("{view:?}"));
        latencies.extend(t["regions"].as_array().into_iter().flatten().filter_map(|r| r["latency_ms"].as_f64()));
    }
    (shown, latencies)
}

#[test]
fn the_live_demo_keeps_its_hints_above_the_table_and_redraws_only_on_changes() {
    let bin = binary("vantage-coordinator");
    let demo = Terminal::start(&format!("{} demo --listen 127.0.0.1:0 --http-listen 127.0.0.1:0", bin.display()));

    // Every frame: the screen cleared, the banner with real addresses and ports, then the table.
    let mut frames: Vec<Vec<String>> = Vec::new();
    demo.0.wait_for_line(|line| {
        let line = line.trim_end_matches('\r');
        match line.split_once(CLEAR) {
            Some((_, rest)) => frames.push(vec![rest.to_owned()]),
            None => frames.last_mut().map_or((), |f| f.push(line.to_owned())),
        }
        frames.last().is_some_and(|f| settled(f))
    });
    let banner = frames[0][..7].to_vec();
    let first = &banner[0];
    let field =
        |after: &str, end: char| first.split(after).nth(1).and_then(|r| r.split(end).next()).unwrap().to_owned();
    let (addr, http) = (field("a coordinator on ", ' '), field("(HTTP ", ')'));
    for frame in &frames {
        assert_eq!(frame[..7], banner[..], "each frame repeats the banner:\n{}", frame.join("\n"));
    }
    assert_eq!(banner[1], format!("Status page: http://{http}/"));
    let regional = frames.last().unwrap().iter().find(|l| l.starts_with("https://regional.")).unwrap();
    let regional_url = regional.split_whitespace().next().unwrap();
    let hints: Vec<&str> = banner[3..6].iter().map(|h| h.trim()).collect();
    assert_eq!(
        hints,
        [
            format!("cargo run -q -p vantage-coordinator -- status --watch --coordinator http://{addr}"),
            format!("grpcurl -plaintext {addr} list"),
            format!(
                "grpcurl -plaintext -d '{{\"urls\": [\"{regional_url}\"]}}' {addr} vantage.v1.Coordinator/ListStatus"
            ),
        ]
    );
    // The hints work as printed: the ListStatus one names a target the coordinator watches.
    let listed = Command::new("bash").args(["-c", hints[2]]).output().expect("bash");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("grpcurl's JSON");
    assert_eq!(listed["targets"][0]["verdict"], "VERDICT_DEGRADED", "{listed}");

    // Settled: over 12 s (more than two probe intervals) latencies change, the rest does not,
    // and no frame is drawn unless something else did change meanwhile.
    let (before, latencies_before) = judged(&addr);
    let span = demo.0.lines_for(Duration::from_secs(12));
    let (after, latencies_after) = judged(&addr);
    assert_ne!(latencies_before, latencies_after, "the probes ran again and took different times");
    let redrawn = span.iter().filter(|l| l.contains(CLEAR)).count();
    println!("frames drawn over 12 s of latency changes: {redrawn}");
    if before == after {
        assert_eq!(redrawn, 0, "redrawn on latencies alone:\n{}", span.join("\n"));
    }
}

/// A table of `status --watch` (its header and rows, until the blank line after it).
fn watch_frames(lines: &[String]) -> Vec<Vec<String>> {
    let mut frames: Vec<Vec<String>> = Vec::new();
    for line in lines {
        if line.starts_with("TARGET ") {
            frames.push(vec![line.clone()]);
        } else if !line.is_empty() {
            frames.last_mut().expect("a table starts with its header").push(line.clone());
        }
    }
    frames
}

#[test]
fn status_watch_prints_whole_tables_whose_columns_stay_put() {
    let demo =
        Process::start("vantage-coordinator", &["demo", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
    let first = demo.wait_for_line(|l| l.contains("a coordinator on"));
    let addr = first.split("a coordinator on ").nth(1).and_then(|r| r.split(' ').next()).unwrap().to_owned();
    let coordinator = format!("http://{addr}");
    // Once every region is known (the failing-regions column holds all three names from then on).
    let healthy = demo.wait_for_line(|l| l.contains("healthy.") && l.contains(" 0/3 "));
    let healthy = healthy.split_whitespace().next().unwrap().to_owned();

    let watch = Process::start("vantage-coordinator", &["status", "--watch", "--coordinator", &coordinator]);
    watch.wait_for_line(|l| l.starts_with("TARGET "));
    // A target added while watching: a frame with it unjudged, then with its verdict.
    let added = format!("{healthy}a");
    let out = run(
        "vantage-coordinator",
        &["targets", "add", &added, "--interval", "5s", "--timeout", "2s", "--coordinator", &coordinator],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    watch.wait_for_line(|l| l.starts_with(&added) && !l.contains("UNKNOWN"));
    // With anything still to come within a moment.
    watch.lines_for(Duration::from_secs(2));
    let lines = watch.printed();
    let frames = watch_frames(&lines);
    println!("{}", frames.iter().map(|f| f.join("\n")).collect::<Vec<_>>().join("\n\n"));
    assert!(frames.len() >= 2, "{frames:?}");
    let header = &frames[0][0];
    let starts: Vec<usize> = ["VERDICT", "FAILING REGIONS", "CAUSE", "CERTIFICATE"]
        .iter()
        .map(|h| header.find(h).expect("a column heading"))
        .collect();
    let mut with_added = false;
    for frame in &frames {
        assert_eq!(&frame[0], header, "the columns moved:\n{}", frame.join("\n"));
        // Whole tables: all seven demo targets, then all eight.
        with_added |= frame.iter().any(|l| l.starts_with(&added));
        assert_eq!(frame.len() - 1, if with_added { 8 } else { 7 }, "a partial table:\n{}", frame.join("\n"));
        for row in &frame[1..] {
            for &start in &starts {
                let before = row.get(start - 2..start);
                assert!(
                    before == Some("  ") && !row[start..].starts_with(' '),
                    "a cell out of its column at {start}:\n{}",
                    frame.join("\n")
                );
            }
        }
    }
    assert!(with_added);

    // Deleted while watching: the next whole table is the seven demo targets again.
    let out = run("vantage-coordinator", &["targets", "rm", &added, "--coordinator", &coordinator]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut frame: Vec<String> = Vec::new();
    watch.wait_for_line(|line| {
        if !line.trim().is_empty() {
            frame.push(line.to_owned());
            return false;
        }
        let without = frame.len() == 8 && !frame.iter().any(|row| row.starts_with(&added));
        frame.clear();
        without
    });
}
