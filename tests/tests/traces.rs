//! OpenTelemetry traces over OTLP, received by a real OTLP/gRPC receiver (the OpenTelemetry
//! project's protocol definitions with grpcio, `tests/otlp/receiver.py`): a `CheckNow` sent with a
//! caller's `traceparent` is one trace, from the coordinator's CheckNow span through each region's
//! agent run, probe and stage spans, back to the coordinator's ingest and verdict.

use std::collections::HashMap;
use std::process::Command;

use vantage_e2e::Process;
use vantage_e2e::cluster::Cluster;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// The caller's trace and span, sent as `traceparent`.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    id: String,
    parent: String,
    attributes: serde_json::Value,
    start_ns: u64,
    end_ns: u64,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attributes[key].as_str().unwrap_or_default()
    }
}

#[test]
fn a_check_now_is_one_trace_through_every_region() {
    let mut cluster = Cluster::new(&REGIONS);
    let receiver = Process::start_with(
        Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/otlp/receiver.py"))
            .arg(format!("{}:0", cluster.bridge_ip)),
        "otlp-receiver",
    );
    let port = receiver.wait_for_line(|l| l.starts_with("listening ")).trim_start_matches("listening ").to_owned();
    cluster.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("http://{}:{port}", cluster.bridge_ip)),
        // Export within 100 ms instead of 5 s, so the test is not kept waiting.
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ];
    let site = cluster.add_target("traced", false);
    // Scheduled runs every hour: the traces the test reads come from its CheckNow.
    cluster.start_coordinator("1h", "5s");
    cluster.start_agents();
    let url = cluster.targets[site].url.clone();

    let mut args = cluster.admin_tls();
    args.extend([
        "-H".into(),
        format!("traceparent: 00-{TRACE_ID}-{CALLER_SPAN}-01"),
        "-d".into(),
        serde_json::json!({ "url": url }).to_string(),
        cluster.coordinator_addr.to_string(),
        "vantage.v1.Coordinator/CheckNow".into(),
    ]);
    let answer = vantage_e2e::grpcurl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["status"]["verdict"], "VERDICT_UP", "{answer}");
    assert_eq!(answer["results"].as_array().map(Vec::len), Some(3), "every region answered: {answer}");

    // Collect the trace's spans until every region's whole path has arrived.
    let mut spans: HashMap<String, Span> = HashMap::new();
    let complete = |spans: &HashMap<String, Span>| {
        let names =
            |service: &str, name: &str| spans.values().filter(|s| s.service == service && s.name == name).count();
        names("vantage-coordinator", "CheckNow") == 1
            && ["run", "probe", "dns", "connect", "tls", "certificate", "http"]
                .iter()
                .all(|n| names("vantage-agent", n) >= 3)
            && names("vantage-coordinator", "ingest") >= 3
            && names("vantage-coordinator", "verdict") >= 4
    };
    receiver.wait_for_line(|line| {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else { return false };
        if json["trace_id"] == TRACE_ID {
            let text = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
            let span = Span {
                service: text("service"),
                name: text("name"),
                id: text("span_id"),
                parent: text("parent_span_id"),
                attributes: json["attributes"].clone(),
                start_ns: json["start_ns"].as_u64().unwrap_or_default(),
                end_ns: json["end_ns"].as_u64().unwrap_or_default(),
            };
            spans.insert(span.id.clone(), span);
        }
        complete(&spans)
    });

    // The trace as a tree, for the README (`cargo test --test traces -- --nocapture`).
    fn print(spans: &HashMap<String, Span>, parent: &str, depth: usize) {
        let mut children: Vec<&Span> = spans.values().filter(|s| s.parent == parent).collect();
        children.sort_by_key(|s| (s.attr("region").to_owned(), s.start_ns));
        for s in children {
            let region = Some(s.attr("region")).filter(|r| !r.is_empty()).map(|r| format!(" region={r}"));
            let ms = s.end_ns.saturating_sub(s.start_ns) as f64 / 1e6;
            let name = format!("{}{}{}", "  ".repeat(depth), s.name, region.unwrap_or_default());
            println!("{name:<34} {:<20} {ms:>8.1} ms", s.service);
            print(spans, &s.id, depth + 1);
        }
    }
    println!("trace {TRACE_ID}");
    print(&spans, CALLER_SPAN, 1);

    // The shape: caller → CheckNow → each region's run → probe → stages; run → ingest → verdict.
    let check = spans.values().find(|s| s.name == "CheckNow").unwrap();
    assert_eq!(check.parent, CALLER_SPAN, "CheckNow continues the caller's trace");
    assert_eq!(check.attr("url"), url);
    let parent_of = |s: &Span| spans.get(&s.parent).cloned();
    let runs: Vec<&Span> = spans.values().filter(|s| s.name == "run").collect();
    let mut regions: Vec<&str> = runs.iter().map(|r| r.attr("region")).collect();
    regions.sort();
    assert_eq!(regions, ["ap-south", "eu-west", "us-east"], "one run per region");
    for run in &runs {
        assert_eq!(run.parent, check.id, "the {} run is the CheckNow's child", run.attr("region"));
        let probes: Vec<&Span> = spans.values().filter(|s| s.name == "probe" && s.parent == run.id).collect();
        assert_eq!(probes.len(), 1, "one probe (it passed, no retry) in {}", run.attr("region"));
        assert_eq!(probes[0].attr("status"), "Up");
        for stage in ["dns", "connect", "tls", "certificate", "http"] {
            assert!(
                spans.values().any(|s| s.name == stage && s.parent == probes[0].id),
                "the {} probe has a {stage} span",
                run.attr("region")
            );
        }
        let ingest = spans
            .values()
            .find(|s| s.name == "ingest" && s.parent == run.id)
            .unwrap_or_else(|| panic!("the coordinator's ingest of the {} result joins the trace", run.attr("region")));
        assert_eq!(ingest.service, "vantage-coordinator");
        assert_eq!(ingest.attr("region"), run.attr("region"));
        assert!(spans.values().any(|s| s.name == "commit" && s.parent == ingest.id));
        assert!(spans.values().any(|s| s.name == "verdict" && s.parent == ingest.id));
    }
    let final_verdict = spans.values().filter(|s| s.name == "verdict").filter_map(parent_of).any(|p| p.id == check.id);
    assert!(final_verdict, "the CheckNow decides the verdict in its own span");
}
