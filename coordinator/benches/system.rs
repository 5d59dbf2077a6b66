//! System benchmarks (figures, not pass/fail): coordinator ingest through the real gRPC stream
//! into redb beside a bare redb write of the same records; detection latency from breaking a
//! target to DOWN with 10 s intervals; the agent's memory with 10,000 assigned targets.
//!
//! Run: `cargo bench -p vantage-coordinator --bench system`

use std::time::{Duration, Instant};

use prost::Message;
use redb::{Database, TableDefinition};
use tokio_stream::wrappers::ReceiverStream;
use vantage_coordinator::hub::HubOptions;
use vantage_coordinator::serve::{self, ServeOptions};
use vantage_proto::v1::agent_service_client::AgentServiceClient;
use vantage_proto::v1::*;
use vantage_shared::lab::pki::{Ca, LeafSpec};
use vantage_shared::lab::server::{self, Reply};

const BATCH: usize = 500;

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(dir: std::path::PathBuf) -> ServeOptions {
    ServeOptions {
        hub: HubOptions { reconnect_grace: Duration::from_secs(1), ..HubOptions::default() },
        // Capacity is measured here, not the per-agent pace (`--agent-rate`, `--agent-bytes`).
        agent_rate: u32::MAX,
        agent_bytes: u64::MAX,
        ..ServeOptions::local("127.0.0.1:0".parse().unwrap(), dir)
    }
}

fn result(target: usize, at_ms: i64) -> TargetResult {
    TargetResult {
        target_url: format!("https://t{target}.bench.test/"),
        result: Some(ProbeResult {
            url: format!("https://t{target}.bench.test/"),
            status: ProbeStatus::Up as i32,
            tls_version: "TLSv1.3".into(),
            http_status: 200,
            timings: Some(Timings {
                connect_ms: Some(1.0),
                tls_ms: Some(3.0),
                ttfb_ms: Some(1.0),
                total_ms: 5.0,
                dns_ms: None,
            }),
            checked_at: Some(prost_types::Timestamp {
                seconds: at_ms / 1000,
                nanos: ((at_ms % 1000) * 1_000_000) as i32,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn batches(count: usize, targets: usize) -> Vec<ResultBatch> {
    let base = 1_700_000_000_000i64;
    (0..count)
        .map(|b| ResultBatch {
            sequence: b as u64 + 1,
            results: (0..BATCH).map(|i| result((b * BATCH + i) % targets, base + (b * BATCH + i) as i64)).collect(),
        })
        .collect()
}

async fn ingest_via_grpc(batches: Vec<ResultBatch>, targets: usize) -> f64 {
    let dir = temp("ingest");
    // The coordinator keeps results only for targets it knows.
    std::fs::create_dir_all(&dir).unwrap();
    let config: String = (0..targets).map(|t| format!("[[target]]\nurl = \"https://t{t}.bench.test/\"\n")).collect();
    std::fs::write(dir.join("targets.toml"), config).unwrap();
    let mut opts = options(dir.join("data"));
    opts.config = Some(dir.join("targets.toml"));
    let running = serve::start(opts).await.unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr)).unwrap().connect().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let hello = Hello { name: "bench".into(), region: "bench".into(), version: "0".into(), ..Default::default() };
    tx.send(AgentMessage { kind: Some(agent_message::Kind::Hello(hello)) }).await.unwrap();
    let mut inbound = AgentServiceClient::new(channel).connect(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let total: usize = batches.iter().map(|b| b.results.len()).sum();
    let last = batches.last().unwrap().sequence;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for batch in batches {
            tx.send(AgentMessage { kind: Some(agent_message::Kind::Batch(batch)) }).await.unwrap();
        }
        tx
    });
    while let Some(message) = inbound.message().await.unwrap() {
        if let Some(coordinator_message::Kind::Ack(ack)) = message.kind {
            if ack.sequence == last {
                break;
            }
        }
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    drop(sender);
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// The same rows the store writes (history row, newest row, sequence), straight into redb, one
/// write transaction per batch.
fn ingest_bare(batches: &[ResultBatch]) -> f64 {
    const RESULTS: TableDefinition<(&str, i64, &str, u64, u32), &[u8]> = TableDefinition::new("results");
    const LATEST: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("latest");
    const SEQ: TableDefinition<&str, u64> = TableDefinition::new("seq");
    let dir = temp("bare");
    std::fs::create_dir_all(&dir).unwrap();
    let db = Database::create(dir.join("bare.redb")).unwrap();
    let total: usize = batches.iter().map(|b| b.results.len()).sum();
    let started = Instant::now();
    for batch in batches {
        let txn = db.begin_write().unwrap();
        {
            let mut results = txn.open_table(RESULTS).unwrap();
            let mut latest = txn.open_table(LATEST).unwrap();
            txn.open_table(SEQ).unwrap().insert("bench", batch.sequence).unwrap();
            for (i, r) in batch.results.iter().enumerate() {
                let entry = HistoryEntry {
                    region: "bench".into(),
                    agent: "bench".into(),
                    result: r.result.clone(),
                    ..Default::default()
                };
                let bytes = entry.encode_to_vec();
                let at = r.result.as_ref().and_then(|p| p.checked_at).map_or(0, |t| t.seconds * 1000);
                results
                    .insert((r.target_url.as_str(), at, "bench", batch.sequence, i as u32), bytes.as_slice())
                    .unwrap();
                latest.insert((r.target_url.as_str(), "bench"), bytes.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// Breaks a target (stops its server) and times how long until the coordinator says DOWN.
async fn detection_latency(trials: usize) -> Vec<Duration> {
    let ca = Ca::root("Bench CA").unwrap();
    let dir = temp("detect");
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let identity = ca.identity(&LeafSpec::new(&["detect.bench.test"]), &[]).unwrap();
    let running = serve::start(options(dir.join("data"))).await.unwrap();
    let hub = running.hub.clone();
    let mut agents = Vec::new();
    for region in ["eu-west", "us-east", "ap-south"] {
        let mut prober = vantage_agent::probe::ProberConfig::default();
        prober.pinned.insert("detect.bench.test".into(), vec![[127, 0, 0, 1].into()]);
        prober.ca_files.push(ca_file.clone());
        let config = vantage_agent::run::AgentConfig {
            coordinators: vec![format!("http://{}", running.addr)],
            region: region.into(),
            name: format!("agent-{region}"),
            tls: None,
            prober,
            concurrency: 8,
            outbox_limit: 1000,
            probe_threads: 1,
        };
        agents.push(tokio::spawn(vantage_agent::run::run(config)));
    }
    let mut latencies = Vec::new();
    for trial in 0..trials {
        let listener = server::bind("127.0.0.1", 0).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(server::serve_tls(
            listener,
            server::server_config(&identity),
            Reply::Page { status: 200, body: "ok" },
        ));
        let url = format!("https://detect.bench.test:{port}/");
        let spec = TargetSpec {
            url: url.clone(),
            interval: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
            timeout: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
            ..Default::default()
        };
        let mut changes = hub.subscribe();
        hub.upsert_target(spec).await.unwrap();
        let verdict =
            |v: Verdict| hub.statuses(std::slice::from_ref(&url)).first().is_some_and(|s| s.verdict == v as i32);
        while !verdict(Verdict::Up) {
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.recv()).await;
        }
        // Break it at a different point of the interval each time, as outages happen.
        tokio::time::sleep(Duration::from_millis(1000 + (trial as u64 * 3700) % 9000)).await;
        task.abort();
        let broken = Instant::now();
        while !verdict(Verdict::Down) {
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.recv()).await;
        }
        latencies.push(broken.elapsed());
        hub.delete_target(&url).await.unwrap();
    }
    for a in agents {
        a.abort();
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    latencies
}

/// RSS of a real `vantage-agent run` process with `targets` assigned and probing.
async fn agent_rss(targets: usize) -> (f64, f64) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--locked", "--bin", "vantage-agent"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .unwrap();
    assert!(status.success());
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/vantage-agent");
    let ca = Ca::root("Bench CA").unwrap();
    let dir = temp("rss");
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let identity = ca.identity(&LeafSpec::new(&["rss.bench.test"]), &[]).unwrap();
    let listener = server::bind("127.0.0.1", 0).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(server::serve_tls(
        listener,
        server::server_config(&identity),
        Reply::Page { status: 200, body: "ok" },
    ));
    let config: String = (0..targets)
        .map(|i| format!("[[target]]\nurl = \"https://rss.bench.test:{port}/t{i}\"\ninterval = \"60s\"\n"))
        .collect();
    std::fs::write(dir.join("targets.toml"), config).unwrap();
    let mut opts = options(dir.join("data"));
    opts.config = Some(dir.join("targets.toml"));
    let running = serve::start(opts).await.unwrap();
    let mut child = std::process::Command::new(bin)
        .args(["run", "--insecure", "--coordinator", &format!("http://{}", running.addr)])
        .args(["--region", "bench", "--name", "rss"])
        .args(["--resolve", "rss.bench.test:127.0.0.1", "--ca-file", ca_file.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it take the assignment and probe for a while (about a third of every target).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (rss, peak) = (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0);
    let assigned: u32 = running.hub.agents().iter().map(|a| a.assigned_targets).sum();
    assert_eq!(assigned as usize, targets, "every target was assigned to the agent");
    let _ = child.kill();
    let _ = child.wait();
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    (rss, peak)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let count = std::env::var("VANTAGE_BENCH_BATCHES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let targets = 10_000;
    let data = batches(count, targets);
    let total = count * BATCH;
    let grpc = runtime.block_on(ingest_via_grpc(data.clone(), targets));
    let bare = ingest_bare(&data);
    println!("ingest, {total} results in batches of {BATCH} (one redb write transaction per batch):");
    println!("  coordinator, over the gRPC stream, acked after commit: {grpc:>9.0} results/s");
    println!("  bare redb writes of the same rows:                     {bare:>9.0} results/s");
    println!("  ratio coordinator/bare:                                {:>9.2}", grpc / bare);

    let latencies = runtime.block_on(detection_latency(3));
    let shown: Vec<String> = latencies.iter().map(|d| format!("{:.1}s", d.as_secs_f64())).collect();
    let worst = latencies.iter().max().copied().unwrap_or_default();
    println!(
        "detection latency, 10s interval, 2s timeout, 3 regions, target broken to DOWN: {} (worst {:.1}s; budget 13s)",
        shown.join(", "),
        worst.as_secs_f64()
    );

    let (rss, peak) = runtime.block_on(agent_rss(10_000));
    println!(
        "agent with 10,000 assigned targets (60s interval), after 20s of probing: RSS {rss:.1} MiB, peak {peak:.1} MiB"
    );
}
