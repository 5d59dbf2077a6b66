//! No batch can wedge an agent, with real processes: a coordinator and an agent on loopback, a
//! plain HTTP site, and targets added with the real grpcurl, one of them 70 bytes long and one of
//! exactly the URL limit. `CheckNow` on the long ones answers, and afterwards the agent's results
//! keep being committed for every target, none ever `UNKNOWN` (a run-now id made of the URL used
//! to exceed the id limit, ending the agent's stream on every resend and blinding it for good).
//! A URL over the limit is refused by `UpsertTarget`, naming the field.

use std::process::Command;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vantage_e2e::{Process, binary, grpcurl, grpcurl_output, now_ms};
use vantage_shared::lab::server::{self, Reply};
use vantage_shared::limits::{MAX_ID, MAX_URL};

/// How long the agent must keep every target fresh after the `CheckNow`s: longer than the 15 s
/// after which a wedged agent's targets used to turn `UNKNOWN`.
const WATCH: Duration = Duration::from_secs(20);

fn ms(rfc3339: &serde_json::Value) -> i64 {
    let text = rfc3339.as_str().unwrap_or_else(|| panic!("not a time: {rfc3339}"));
    (OffsetDateTime::parse(text, &Rfc3339).unwrap().unix_timestamp_nanos() / 1_000_000) as i64
}

#[test]
fn a_check_now_on_a_long_url_leaves_the_agent_reporting_every_target() {
    let dir = std::env::temp_dir().join(format!("vantage-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(server::bind("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(server::serve_plain(listener, Reply::Page { status: 200, body: "ok" }));

    let data = dir.join("data");
    let coordinator = vantage_e2e::serve_on_loopback(&data, &[]);
    let (addr, _) = vantage_e2e::listening(&coordinator);
    let call = |method: &str, body: &str| -> serde_json::Value {
        let out = grpcurl(&["-plaintext", "-d", body, &addr, &format!("vantage.v1.Coordinator/{method}")]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: {e}: {out}"))
    };
    let upsert = |url: &str| format!(r#"{{"target": {{"url": "{url}", "interval": "1s", "timeout": "500ms"}}}}"#);

    let base = format!("http://127.0.0.1:{port}/");
    let short = format!("{base}s");
    let long = format!("{base}{}", "l".repeat(70 - base.len()));
    let longest = format!("{base}{}", "x".repeat(MAX_URL - base.len()));
    for url in [&short, &long, &longest] {
        call("UpsertTarget", &upsert(url));
    }
    // One byte more, and no agent could report on it: refused, naming the field.
    let over = grpcurl_output(&[
        "-plaintext",
        "-d",
        &upsert(&format!("{longest}x")),
        &addr,
        "vantage.v1.Coordinator/UpsertTarget",
    ]);
    assert!(over.contains("InvalidArgument") && over.contains("url: at most 2048 bytes, got 2049"), "{over}");

    let mut command = Command::new(binary("vantage-agent"));
    command.args([
        "run",
        "--insecure",
        "--coordinator",
        &format!("http://{addr}"),
        "--region",
        "r1",
        "--name",
        "agent-r1",
    ]);
    let agent = Process::start_with(&mut command, "agent-r1");
    agent.wait_for_line(|l| l.contains("assignment received"));

    let status = || call("ListStatus", "{}")["targets"].as_array().cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let targets = status();
        if targets.len() == 3 && targets.iter().all(|t| t["verdict"] == "VERDICT_UP") {
            break;
        }
        assert!(Instant::now() < deadline, "the targets never all came up: {targets:#?}");
        std::thread::sleep(Duration::from_millis(200)); // the agent's first results
    }

    for url in [&long, &longest] {
        let check = call("CheckNow", &format!(r#"{{"url": "{url}"}}"#));
        assert_eq!(check["status"]["verdict"], "VERDICT_UP", "{check}");
        let results = check["results"].as_array().cloned().unwrap_or_default();
        assert_eq!(results.len(), 1, "the agent answered: {check}");
        let id = results[0]["runNowId"].as_str().unwrap();
        assert!(!id.is_empty() && id.len() <= MAX_ID, "run-now id {id:?}");
        assert!(check.get("missingRegions").is_none(), "{check}");
    }
    let checked = now_ms();

    // Watched for a real, bounded span: every target stays judged, and its newest result keeps
    // moving on past the CheckNow.
    let until = Instant::now() + WATCH;
    let mut newest = Vec::new();
    while Instant::now() < until {
        newest.clear();
        for target in status() {
            assert_eq!(target["verdict"], "VERDICT_UP", "a target of the agent stopped being judged: {target:#}");
            newest.push((target["url"].as_str().unwrap().to_owned(), ms(&target["regions"][0]["lastResultTime"])));
        }
        std::thread::sleep(Duration::from_millis(500)); // the pace of an operator's ListStatus
    }
    assert_eq!(newest.len(), 3);
    for (url, at) in &newest {
        assert!(
            *at >= checked + (WATCH.as_millis() as i64) - 10_000,
            "{url}: newest result {} ms after the CheckNow, the watch lasted {} ms",
            at - checked,
            WATCH.as_millis()
        );
    }
    // Every run committed, not only the newest: about one a second for the short target.
    let since =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(checked) * 1_000_000).unwrap().format(&Rfc3339).unwrap();
    let history = call("GetHistory", &format!(r#"{{"url": "{short}", "since": "{since}", "limit": 1000}}"#));
    let committed = history["results"].as_array().map_or(0, Vec::len);
    assert!(committed >= 10, "{committed} results of {short} committed in {} s after the CheckNow", WATCH.as_secs());

    // The stream was never ended: no reconnection on the agent's side, no error on the coordinator's.
    let agent_log = agent.drain();
    assert!(
        !agent_log.iter().any(|l| l.contains("reconnecting") || l.contains("session to the coordinator failed")),
        "the agent lost its stream:\n{}",
        agent_log.join("\n")
    );
    let coordinator_log = coordinator.drain();
    assert!(
        !coordinator_log
            .iter()
            .any(|l| l.contains("agent stream ended with an error") || l.contains("results refused")),
        "{}",
        coordinator_log.join("\n")
    );
    drop(agent);
    drop(coordinator);
    let _ = std::fs::remove_dir_all(&dir);
}
