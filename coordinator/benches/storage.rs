//! Storage per result (figures, not pass/fail): a fleet's results written through the real store
//! the way ingest commits them (one batch per region and minute, at most `MAX_BATCH_RESULTS` a
//! batch), with the real housekeeping pass (pruning and sealing closed hours into blocks) every
//! ten minutes of the simulated day, then the file compacted. Prints, per run: results written,
//! the file's size before and after compaction, bytes per result, the compaction's pause, and the
//! process's resident size with the page cache it was given.
//!
//! Runs (each in a child process of its own, so its resident size is its own):
//! - a day of 1,000 targets × 3 regions every 60 s (4.32 M results), all healthy, with the default
//!   cache (64 MiB) and with 256 MiB;
//! - the same with 1 % of the targets failing all day (the same failure text each time), and a
//!   run where every result fails, once with the same text and once with a text of its own;
//! - for the capacity table: a day of 100 targets, an hour of 10,000 and ten minutes of 100,000
//!   targets, sealed at the end (disk per day extrapolated from bytes per result: marked so).
//!
//! Run: `cargo bench -p vantage-coordinator --bench storage` (all), or one run:
//! `cargo bench -p vantage-coordinator --bench storage -- --run TARGETS MINUTES CACHE_MIB FAILING_PERMILLE UNIQUE`.
//! The store is written to the system's temporary directory and removed afterwards.

use std::process::Command;
use std::time::{Duration, Instant};

use vantage_coordinator::clock::timestamp;
use vantage_coordinator::store::{PRUNE_STEP_ROWS, PRUNE_STEP_TIME, Pruning, Store, StoredResult};
use vantage_proto::v1::{Certificate, ChainCertificate, Failure, HistoryEntry, ProbeResult, ProbeStatus, Timings};
use vantage_shared::limits::MAX_BATCH_RESULTS;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// Housekeeping runs this often (as `serve` does).
const HOUSEKEEPING_EVERY: i64 = 10 * MINUTE;

fn url(target: usize) -> String {
    format!("https://t{target}.bench.test/")
}

/// A result as an agent sends it: an HTTPS probe with its certificate, chain and timings; a
/// failing one with its failure (`unique`: a text of its own each time).
fn result(target: usize, region: usize, at_ms: i64, failing: bool, unique: bool) -> StoredResult {
    let host = format!("t{target}.bench.test");
    let jitter = (at_ms / MINUTE * 7919 + target as i64 * 31 + region as i64 * 17) % 1_000;
    let entry = HistoryEntry {
        region: REGIONS[region].into(),
        agent: format!("agent-{}", REGIONS[region]),
        result: Some(ProbeResult {
            url: url(target),
            status: if failing { ProbeStatus::Down } else { ProbeStatus::Up } as i32,
            failure: failing.then(|| Failure {
                stage: 2,
                code: "connect_refused".into(),
                message: if unique {
                    format!("connection to 192.0.2.{}:443 refused after {} ms", target % 250, jitter)
                } else {
                    format!("connection to 192.0.2.{}:443 refused", target % 250)
                },
                hint: "Nothing listens on the port, or a firewall rejects the connection: check the server and \
                       the firewall."
                    .into(),
                detail: "Connection refused (os error 111)".into(),
            }),
            cert: (!failing).then(|| Certificate {
                subject: format!("CN={host}"),
                issuer: "CN=R11,O=Let's Encrypt,C=US".into(),
                sans: vec![host.clone(), format!("www.{host}")],
                not_before: Some(timestamp(1_760_000_000_000)),
                not_after: Some(timestamp(1_767_776_000_000)),
                days_remaining: 40,
                health: 1,
                sha256: format!("{:064x}", target * 7 + 1),
                earliest_expiry: Some(timestamp(1_767_776_000_000)),
                key: "EC P-256".into(),
                signature_algorithm: "ecdsa-with-SHA256".into(),
                chain: vec![ChainCertificate {
                    subject: "CN=R11,O=Let's Encrypt,C=US".into(),
                    issuer: "CN=ISRG Root X1,O=Internet Security Research Group,C=US".into(),
                    not_after: Some(timestamp(1_772_000_000_000)),
                    sha256: format!("{:064x}", 11),
                }],
            }),
            tls_version: if failing { String::new() } else { "TLSv1.3".into() },
            tls_cipher: if failing { String::new() } else { "TLS13_AES_128_GCM_SHA256".into() },
            alpn: if failing { String::new() } else { "h2".into() },
            http_status: if failing { 0 } else { 200 },
            timings: Some(Timings {
                dns_ms: Some(0.8 + jitter as f64 / 997.0),
                connect_ms: Some(12.0 + jitter as f64 / 101.0),
                tls_ms: (!failing).then_some(25.0 + jitter as f64 / 53.0),
                ttfb_ms: (!failing).then_some(48.0 + jitter as f64 / 7.0),
                total_ms: 90.0 + jitter as f64 / 5.0,
            }),
            backends: vec![],
            checked_at: Some(timestamp(at_ms)),
        }),
        ..Default::default()
    };
    StoredResult { url: url(target), at_ms, entry }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A whole housekeeping pass as the hub runs it (steps bounded by rows and time), sealing the
/// hours that closed by `now`; returns the longest step.
fn housekeeping(store: &Store, now: i64, retention: i64) -> Duration {
    let mut pruning = Pruning::new(now - retention, i64::MIN, now - retention);
    pruning.seal_before = (now - HOUSEKEEPING_EVERY).div_euclid(HOUR) * HOUR;
    let mut longest = Duration::ZERO;
    while !store.prune_step(&mut pruning, PRUNE_STEP_ROWS, PRUNE_STEP_TIME).unwrap() {
        longest = longest.max(pruning.last_step);
    }
    store.sync().unwrap();
    longest.max(pruning.last_step)
}

/// One run: `targets` for `minutes`, `failing_permille` of them failing all along.
fn run(targets: usize, minutes: i64, cache_mib: usize, failing_permille: usize, unique: bool) {
    let dir = std::env::temp_dir().join(format!("vantage-bench-storage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open_with_cache(&dir, cache_mib << 20).unwrap();
    let failing_targets = (targets * failing_permille).div_ceil(1000);
    let start = (vantage_coordinator::clock::now_ms() - minutes * MINUTE - HOUR).div_euclid(HOUR) * HOUR;
    let (mut written, mut failing, mut sequences) = (0u64, 0u64, [0u64; 3]);
    let mut longest_step = Duration::ZERO;
    let began = Instant::now();
    for minute in 0..minutes {
        for (region, sequence) in sequences.iter_mut().enumerate() {
            // Regions probe a target at different moments of its minute.
            let at = start + minute * MINUTE + region as i64 * 17_000;
            for chunk in (0..targets).collect::<Vec<_>>().chunks(MAX_BATCH_RESULTS) {
                let batch: Vec<StoredResult> = chunk
                    .iter()
                    .map(|t| result(*t, region, at + (*t as i64 % 1000) * 13, *t < failing_targets, unique))
                    .collect();
                *sequence += 1;
                store.record_batch(&format!("agent-{}", REGIONS[region]), *sequence, &batch).unwrap();
                written += batch.len() as u64;
                failing += batch.iter().filter(|r| r.entry.result.as_ref().is_some_and(|x| x.failure.is_some())).count()
                    as u64;
            }
        }
        let now = start + (minute + 1) * MINUTE;
        if (minute + 1) * MINUTE % HOUSEKEEPING_EVERY == 0 {
            longest_step = longest_step.max(housekeeping(&store, now, 7 * 24 * HOUR));
        }
    }
    let sealed_all = minutes < 24 * 60;
    if sealed_all {
        // A short run (for the capacity table) ends sealed, as housekeeping leaves its hour once it
        // closed: what nearly all of a longer history looks like.
        let mut pruning = Pruning::new(i64::MIN, i64::MIN, i64::MIN);
        pruning.seal_before = (start + minutes * MINUTE + HOUR).div_euclid(HOUR) * HOUR;
        while !store.prune_step(&mut pruning, PRUNE_STEP_ROWS, PRUNE_STEP_TIME).unwrap() {
            longest_step = longest_step.max(pruning.last_step);
        }
        store.sync().unwrap();
    }
    let wrote_in = began.elapsed();
    let rss = rss_bytes();
    let before = store.file_bytes();
    let compacted = store.compact().unwrap().expect("no transaction under way");
    let after = store.file_bytes();
    // Read back: the newest hour of one target, every region (what a target's page shows).
    let read = Instant::now();
    let history = store.history(&url(targets - 1), None, i64::MIN, i64::MAX, 180).unwrap();
    let read_in = read.elapsed();
    assert_eq!(history.len(), 180.min(written as usize / targets));
    println!(
        "RESULT targets={targets} minutes={minutes} sealed_all={sealed_all} cache_mib={cache_mib} failing_permille={failing_permille} \
         unique={unique} results={written} failing={failing} file_before={before} file_after={after} \
         bytes_per_result={:.1} compaction_ms={} rss={rss} longest_step_ms={} wrote_s={:.1} read_ms={:.1}",
        after as f64 / written as f64,
        compacted.paused.as_millis(),
        longest_step.as_millis(),
        wrote_in.as_secs_f64(),
        read_in.as_secs_f64() * 1000.0,
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One run in a child process; its `RESULT` line as (key, value) pairs.
fn child(
    targets: usize,
    minutes: i64,
    cache_mib: usize,
    failing_permille: usize,
    unique: bool,
) -> Vec<(String, String)> {
    let exe = std::env::current_exe().unwrap();
    let args = [
        targets.to_string(),
        minutes.to_string(),
        cache_mib.to_string(),
        failing_permille.to_string(),
        unique.to_string(),
    ];
    let out = Command::new(exe).arg("--run").args(args).output().expect("run the benchmark's child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("RESULT ")).unwrap_or_else(|| {
        panic!("the run printed no result: {text}{}", String::from_utf8_lossy(&out.stderr));
    });
    eprintln!("{line}");
    line[7..].split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

fn get(run: &[(String, String)], key: &str) -> f64 {
    run.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse().ok()).unwrap_or(f64::NAN)
}

fn mib(bytes: f64) -> String {
    format!("{:.0} MiB", bytes / f64::from(1 << 20))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--run") {
        let p = |n: usize| {
            args.get(i + n).unwrap_or_else(|| panic!("--run TARGETS MINUTES CACHE_MIB FAILING_PERMILLE UNIQUE"))
        };
        run(
            p(1).parse().unwrap(),
            p(2).parse().unwrap(),
            p(3).parse().unwrap(),
            p(4).parse().unwrap(),
            p(5).parse().unwrap(),
        );
        return;
    }
    let per_day = |targets: f64| targets * 3.0 * 1440.0;
    println!("Storage: results written through the real store and housekeeping, 3 regions every 60 s");
    const DAY: i64 = 24 * 60;
    let healthy = child(1_000, DAY, 64, 0, false);
    let healthy_256 = child(1_000, DAY, 256, 0, false);
    let mixed = child(1_000, DAY, 64, 10, false);
    let failing_same = child(100, DAY, 64, 1000, false);
    let failing_unique = child(100, DAY, 64, 1000, true);
    println!("\nbytes per result on disk after compaction (a day of 1,000 targets, 4.32 M results):");
    println!("  healthy:                          {:>6.1} B", get(&healthy, "bytes_per_result"));
    println!("  1 % of targets failing:           {:>6.1} B", get(&mixed, "bytes_per_result"));
    println!(
        "  failing, the same text each time: {:>6.1} B  (100 targets, all failing)",
        get(&failing_same, "bytes_per_result")
    );
    println!(
        "  failing, a text of its own:       {:>6.1} B  (100 targets, all failing)",
        get(&failing_unique, "bytes_per_result")
    );
    println!(
        "  file: {} before compaction, {} after (compaction paused transactions {} ms)",
        mib(get(&healthy, "file_before")),
        mib(get(&healthy, "file_after")),
        get(&healthy, "compaction_ms")
    );
    println!(
        "  longest housekeeping step: {} ms; wrote the day in {:.0} s",
        get(&healthy, "longest_step_ms"),
        get(&healthy, "wrote_s")
    );
    println!("\ncapacity at 60 s × 3 regions (disk per day = bytes per result × results per day):");
    println!("  {:>8}  {:>12}  {:>14}  {:>14}  measured", "targets", "disk/day", "RSS 64 MiB", "RSS 256 MiB");
    let small = child(100, DAY, 64, 0, false);
    let ten = child(10_000, 60, 64, 0, false);
    let hundred = child(100_000, 10, 64, 0, false);
    let hundred_256 = child(100_000, 10, 256, 0, false);
    let rows: [(usize, &[(String, String)], Option<&[(String, String)]>, &str); 4] = [
        (100, &small, None, "a day"),
        (1_000, &healthy, Some(&healthy_256), "a day"),
        (10_000, &ten, None, "an hour, sealed; disk/day extrapolated"),
        (100_000, &hundred, Some(&hundred_256), "10 minutes, sealed; disk/day extrapolated"),
    ];
    for (targets, run, run_256, measured) in rows {
        println!(
            "  {:>8}  {:>12}  {:>14}  {:>14}  {measured}",
            targets,
            mib(get(run, "bytes_per_result") * per_day(targets as f64)),
            mib(get(run, "rss")),
            run_256.map_or("-".into(), |r| mib(get(r, "rss"))),
        );
    }
}
