//! Housekeeping beside ingest (figures, not pass/fail): a store holding many history rows (10M by
//! default) written through the real store in big batches, then the real housekeeping pass
//! (`Hub::prune`) removing most of them while a writer commits result batches the way ingest does.
//! Reports how long those commits took (they include any wait for the write lock) with and without
//! the pass running, against the goal of 50 ms, and the pass's throughput. Then the hourly latency
//! roll-ups of a day of `--rollup-targets` targets (1,000 by default) beside the same writer.
//!
//! Run: `cargo bench -p vantage-coordinator --bench prune [-- --rows N --targets N]` (or
//! `VANTAGE_BENCH_ROWS`, `VANTAGE_BENCH_TARGETS`). The store is written to the system's temporary
//! directory, which should be a disk (redb syncs every commit), and removed afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vantage_coordinator::clock::now_ms;
use vantage_coordinator::hub::{Hub, HubOptions, Retention};
use vantage_coordinator::store::{Store, StoredResult};
use vantage_proto::v1::{HistoryEntry, ProbeResult, ProbeStatus, TargetSpec, Timings};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// The history spans this many days, up to now; the pass keeps the newest `KEPT_DAYS`.
const SPAN_DAYS: i64 = 10;
const KEPT_DAYS: i64 = 3;
/// Rows per write transaction while building the store.
const BUILD_BATCH: usize = 100_000;
/// The writer's batches: as many results as an agent's batch holds at most, one every
/// `WRITE_EVERY` (25,000 results a second, beyond most deployments' whole ingest).
const WRITE_BATCH: usize = 500;
const WRITE_EVERY: Duration = Duration::from_millis(20);
const GOAL: Duration = Duration::from_millis(50);
const DAY_MS: i64 = 86_400_000;

fn parameter(flag: &str, env: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    let given = args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    given
        .or_else(|| std::env::var(env).ok())
        .map(|v| v.replace('_', "").parse().unwrap_or_else(|_| panic!("{flag}/{env}: not a number: {v}")))
        .unwrap_or(default)
}

fn url(target: usize) -> String {
    format!("https://t{target}.bench.test/")
}

/// A result as agents send them (a healthy HTTPS probe with its timings).
fn row(target: usize, region: &str, at_ms: i64) -> StoredResult {
    let entry = HistoryEntry {
        region: region.into(),
        agent: format!("agent-{region}"),
        result: Some(ProbeResult {
            url: url(target),
            status: ProbeStatus::Up as i32,
            tls_version: "TLSv1.3".into(),
            http_status: 200,
            timings: Some(Timings {
                dns_ms: Some(1.0),
                connect_ms: Some(1.0),
                tls_ms: Some(3.0),
                ttfb_ms: Some(1.0),
                total_ms: 6.0,
            }),
            checked_at: Some(vantage_coordinator::clock::timestamp(at_ms)),
            ..Default::default()
        }),
        ..Default::default()
    };
    StoredResult { url: url(target), at_ms, entry }
}

/// Writes `rows` history rows: every target probed from every region at an even pace over
/// `span_days` up to `now`, oldest first, as ingest would have written them.
fn build(store: &Store, rows: usize, targets: usize, now: i64, span_days: i64) {
    let probes = (rows / (targets * REGIONS.len())).max(1) as i64;
    let step = span_days * DAY_MS / probes;
    let mut batch = Vec::with_capacity(BUILD_BATCH);
    let mut sequence = 0;
    let mut written = 0;
    let started = Instant::now();
    'rows: for probe in 0..probes {
        let at = now - span_days * DAY_MS + probe * step;
        for target in 0..targets {
            for region in REGIONS {
                batch.push(row(target, region, at + target as i64 % step.max(1)));
                written += 1;
                if batch.len() == BUILD_BATCH || written == rows {
                    sequence += 1;
                    store.record_batch("build", sequence, &batch).unwrap();
                    batch.clear();
                    if sequence % 10 == 0 {
                        eprintln!("  {written} rows written, {:.0} s", started.elapsed().as_secs_f64());
                    }
                    if written == rows {
                        break 'rows;
                    }
                }
            }
        }
    }
    if !batch.is_empty() {
        store.record_batch("build", sequence + 1, &batch).unwrap();
    }
}

/// Commits a batch of fresh results every `WRITE_EVERY` until `stop`, each through the store as
/// ingest commits them (off the async threads); returns how long each commit took.
async fn write_while(store: Arc<Store>, targets: usize, stop: tokio::sync::watch::Receiver<bool>) -> Vec<Duration> {
    let mut took = Vec::new();
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sequence = 0u64;
    while !*stop.borrow() {
        tick.tick().await;
        sequence += 1;
        let at = now_ms();
        let batch: Vec<StoredResult> = (0..WRITE_BATCH)
            .map(|i| {
                let n = sequence as usize * WRITE_BATCH + i;
                row(n / REGIONS.len() % targets, REGIONS[n % REGIONS.len()], at)
            })
            .collect();
        let store = store.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || store.record_batch("writer", sequence, &batch).unwrap()).await.unwrap();
        took.push(started.elapsed());
    }
    took
}

fn summary(took: &mut [Duration]) -> String {
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:>5} commits  p50 {:>6.1} ms  p99 {:>6.1} ms  worst {:>6.1} ms",
        took.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(took[took.len() - 1])
    )
}

fn main() {
    let rows = parameter("--rows", "VANTAGE_BENCH_ROWS", 10_000_000);
    let targets = parameter("--targets", "VANTAGE_BENCH_TARGETS", 10_000);
    let dir = std::env::temp_dir().join(format!("vantage-bench-prune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let store = Arc::new(Store::open(&dir).unwrap());
    let now = now_ms();
    eprintln!("building the store: {rows} rows …");
    let started = Instant::now();
    build(&store, rows, targets, now, SPAN_DAYS);
    let built = started.elapsed();
    let bytes = std::fs::metadata(dir.join("vantage.redb")).map(|m| m.len()).unwrap_or(0);

    runtime.block_on(async {
        let hub = Hub::open(store.clone(), Vec::new(), HubOptions::default()).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(write_while(store.clone(), targets, stopped));
        let retention = Retention { results: Duration::from_secs(KEPT_DAYS as u64 * 86_400), ..Retention::default() };
        let started = Instant::now();
        let done = hub.prune(&retention).await.unwrap();
        let pruning = started.elapsed();
        stop.send(true).unwrap();
        let mut beside = writer.await.unwrap();
        let over = beside.iter().filter(|d| **d > GOAL).count();
        // The same writer without the pass, afterwards (right after the build, the system is still
        // writing the store's pages back, and commits would look slower than they are).
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(write_while(store.clone(), targets, stopped));
        tokio::time::sleep(pruning.clamp(Duration::from_secs(10), Duration::from_secs(60))).await;
        stop.send(true).unwrap();
        let mut alone = writer.await.unwrap();

        println!(
            "store: {rows} history rows ({targets} targets x {} regions over {SPAN_DAYS} days), written in {:.0} s \
             ({:.0} rows/s, batches of {BUILD_BATCH}); file {:.1} GiB",
            REGIONS.len(),
            built.as_secs_f64(),
            rows as f64 / built.as_secs_f64(),
            bytes as f64 / f64::from(1 << 30)
        );
        println!(
            "pruning to {KEPT_DAYS} days: {} rows removed in {} steps (sized to hold the write lock {} ms at most), \
             {:.1} s: {:.0} rows/s",
            done.results,
            done.steps,
            vantage_coordinator::hub::PRUNE_STEP_TARGET.as_millis(),
            pruning.as_secs_f64(),
            done.results as f64 / pruning.as_secs_f64()
        );
        println!("ingest commits of {WRITE_BATCH} results, one every {} ms:", WRITE_EVERY.as_millis());
        println!("  alone:         {}", summary(&mut alone));
        println!("  while pruning: {}", summary(&mut beside));
        println!("  goal: no commit over {} ms while pruning; over it: {over} of {}", GOAL.as_millis(), beside.len());
    });
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    rollups(&runtime, parameter("--rollup-targets", "VANTAGE_BENCH_ROLLUP_TARGETS", 1_000));
}

/// The hourly latency roll-ups: a store of its own holding the last day of `targets` targets
/// probed every minute from 3 regions (the targets known to the store), then the real pass, which
/// rolls the closed hours up (reading for at most `LATENCY_PASS_TIME`) beside the same writer.
fn rollups(runtime: &tokio::runtime::Runtime, targets: usize) {
    let dir = std::env::temp_dir().join(format!("vantage-bench-rollups-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::open(&dir).unwrap());
    let specs: Vec<TargetSpec> = (0..targets).map(|t| TargetSpec { url: url(t), ..Default::default() }).collect();
    store.upsert_targets(&specs).unwrap();
    let rows = targets * REGIONS.len() * 24 * 60;
    eprintln!("building the roll-ups' store: {rows} rows …");
    build(&store, rows, targets, now_ms(), 1);
    runtime.block_on(async {
        let hub = Hub::open(store.clone(), Vec::new(), HubOptions::default()).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(write_while(store.clone(), targets, stopped));
        let started = Instant::now();
        let done = hub.prune(&Retention::default()).await.unwrap();
        let rolling = started.elapsed();
        stop.send(true).unwrap();
        let mut during = writer.await.unwrap();
        let per_hour = (REGIONS.len() * 60) as f64;
        println!(
            "latency roll-ups: the last day of {targets} targets probed every minute from {} regions ({rows} rows): \
             {} target-hours of {per_hour:.0} results rolled up in {:.1} s (wall, with the pauses between steps; \
             at most {} s of reading a pass): {:.1} µs per result",
            REGIONS.len(),
            done.latency_hours,
            rolling.as_secs_f64(),
            vantage_coordinator::store::LATENCY_PASS_TIME.as_secs(),
            rolling.as_secs_f64() * 1e6 / (done.latency_hours as f64 * per_hour).max(1.0)
        );
        println!("  ingest commits while rolling up: {}", summary(&mut during));
    });
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
