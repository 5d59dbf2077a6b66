//! Scale benchmark (figures, not pass/fail): the real `vantage-coordinator serve` process with N
//! configured targets, fed three regions of results over real gRPC streams at the rate of a 60 s
//! interval, for several N side by side, beside the goals at 100,000 targets (README: "Scale
//! benchmark").
//!
//! Per N it measures: start-up (spawn to `/healthz` answering 200), the coordinator's CPU per
//! acked result over a steady window (utime + stime from `/proc/<pid>/stat`), its memory after
//! the feed (VmRSS, VmHWM), `GET /metrics` and `GET /` (size, time), the real `status` CLI and a
//! `ListStatus` call for every target, the peak memory of each of those reads (VmHWM reset
//! before each through `/proc/<pid>/clear_refs`), and restart (SIGTERM, exit, start on the same data to
//! `/healthz`). The three simulated agents say hello like real ones, take their assignment and
//! send each assigned target's result once per 60 s, spread evenly, in batches of at most 500.
//! Everything runs on loopback; nothing is probed.
//!
//! Run: `cargo bench -p vantage-coordinator --bench scale`
//!
//! Environment:
//! - `VANTAGE_SCALE_TARGETS=1000,20000` the sizes (default `1000,100000`);
//! - `VANTAGE_SCALE_SECONDS=30` the measured window (default 60);
//! - `VANTAGE_SCALE_WARMUP=60` feeding before the window (default 60: one interval, so every
//!   target has a verdict from all three regions before anything is measured);
//! - `VANTAGE_SCALE_STARTUP_TIMEOUT=600` how long a start-up may take before the run fails;
//! - `VANTAGE_SCALE_PERF=DIR` records the coordinator with `perf record` during each window into
//!   `DIR/scale-N.perf.data` (perf's sampling costs a little of the CPU figure).

mod feed;
mod process;
mod table;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use feed::{Agent, acked, connect_agent};
use process::{Coordinator, cpu_time, free_addrs, http_read, list_status, memory, reset_peak, status_cli};
use table::Figures;

const BIN: &str = env!("CARGO_BIN_EXE_vantage-coordinator");
/// The probe interval the feed simulates (and the targets are configured with).
const INTERVAL: Duration = Duration::from_secs(60);
/// How often an agent sends what became due; a batch holds at most `BATCH` results.
const TICK: Duration = Duration::from_millis(100);
const BATCH: usize = 500;
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// Largest message the bench accepts (a full assignment, a ListStatus of every target).
const MAX_DECODE: usize = 512 << 20;
/// A single HTTP answer or CLI run taking longer than this fails the run.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("environment: {0}")]
    Env(String),
    #[error("the coordinator {0}; the tail of its log:\n{1}")]
    Coordinator(String, String),
    #[error("gRPC connection: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC call: {0}")]
    Grpc(#[from] tonic::Status),
    #[error("{0}")]
    Feed(String),
}

type Result<T> = std::result::Result<T, BenchError>;

fn io<T>(what: impl Into<String>, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| BenchError::Io(what.into(), e))
}

struct Settings {
    sizes: Vec<usize>,
    window: Duration,
    warmup: Duration,
    startup_timeout: Duration,
    perf: Option<PathBuf>,
}

fn seconds(name: &str, default: u64) -> Result<Duration> {
    match std::env::var(name) {
        Err(_) => Ok(Duration::from_secs(default)),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| BenchError::Env(format!("{name}={v:?}: give a whole number of seconds above 0"))),
    }
}

fn settings() -> Result<Settings> {
    let sizes = std::env::var("VANTAGE_SCALE_TARGETS").unwrap_or_else(|_| "1000,100000".into());
    let sizes = sizes
        .split(',')
        .map(|s| s.trim().replace('_', "").parse::<usize>().ok().filter(|n| *n > 0))
        .collect::<Option<Vec<_>>>()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            BenchError::Env(format!("VANTAGE_SCALE_TARGETS={sizes:?}: give target counts like 1000,100000"))
        })?;
    Ok(Settings {
        sizes,
        window: seconds("VANTAGE_SCALE_SECONDS", 60)?,
        warmup: seconds("VANTAGE_SCALE_WARMUP", 60)?,
        startup_timeout: seconds("VANTAGE_SCALE_STARTUP_TIMEOUT", 600)?,
        perf: std::env::var_os("VANTAGE_SCALE_PERF").map(PathBuf::from),
    })
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process (the coordinator, perf), killed by its PID on drop unless it already ended.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn measure(targets: usize, settings: &Settings) -> Result<Figures> {
    let mut f = Figures { targets, ..Figures::default() };
    let dir = std::env::temp_dir().join(format!("vantage-scale-{}-{targets}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    io("creating the temp dir", std::fs::create_dir_all(&dir))?;
    let _cleanup = TempDir(dir.clone());
    let mut config = String::with_capacity(targets * 48);
    for t in 0..targets {
        let _ = writeln!(config, "[[target]]\nurl = \"https://t{t}.scale.test/\"\ninterval = \"60s\"");
    }
    io("writing the targets file", std::fs::write(dir.join("targets.toml"), config))?;
    let (grpc, http) = free_addrs()?;
    let mut c = Coordinator { dir, grpc, http, process: None };

    eprintln!("{targets} targets: starting the coordinator");
    f.startup = c.start(settings.startup_timeout).await?;
    eprintln!("  up in {:.2} s; connecting three agents", f.startup.as_secs_f64());
    let mut streams = Vec::new();
    for region in REGIONS {
        let (urls, stream) = tokio::time::timeout(settings.startup_timeout, connect_agent(c.grpc, region, targets))
            .await
            .map_err(|_| BenchError::Feed(format!("{region}: no assignment within the start-up timeout")))??;
        if urls.len() != targets {
            return Err(BenchError::Feed(format!("{region}: assigned {} of {targets} targets", urls.len())));
        }
        streams.push((urls, stream));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let agents: Vec<Agent> =
        streams.into_iter().map(|(urls, stream)| Agent::feed(urls, stream, start, stopped.clone())).collect();
    let offered = 3.0 * targets as f64 / INTERVAL.as_secs_f64();
    eprintln!("  feeding {offered:.0} results/s; warm-up {} s", settings.warmup.as_secs());
    tokio::time::sleep(settings.warmup).await;

    let pid = c.pid();
    let perf = match &settings.perf {
        Some(perf_dir) => {
            io("creating the perf dir", std::fs::create_dir_all(perf_dir))?;
            let out = perf_dir.join(format!("scale-{targets}.perf.data"));
            let child = Command::new("perf")
                .args(["record", "-F", "99", "--call-graph", "dwarf,16384", "-p", &pid.to_string(), "-o"])
                .arg(&out)
                .args(["--", "sleep", &settings.window.as_secs().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            Some(Proc(io("starting perf record (apt-get install linux-perf)", child)?))
        }
        None => None,
    };
    eprintln!("  measuring for {} s", settings.window.as_secs());
    let (cpu0, acked0, t0) = (cpu_time(pid)?, acked(&agents), Instant::now());
    tokio::time::sleep(settings.window).await;
    let (cpu1, acked1, elapsed) = (cpu_time(pid)?, acked(&agents), t0.elapsed());
    let window_acked = acked1.saturating_sub(acked0);
    f.offered = offered;
    f.acked_rate = window_acked as f64 / elapsed.as_secs_f64();
    f.cores = (cpu1 - cpu0).as_secs_f64() / elapsed.as_secs_f64();
    f.cpu_per_result_us = (cpu1 - cpu0).as_secs_f64() * 1e6 / window_acked.max(1) as f64;
    (f.rss_mib, f.hwm_mib) = memory(pid)?;
    if let Some(mut perf) = perf {
        let _ = tokio::task::spawn_blocking(move || perf.0.wait()).await;
    }

    eprintln!("  GET /metrics, GET /, status, ListStatus (the feed goes on)");
    // The peak of each read on its own (the start-up's is in `hwm_mib`).
    let peak_of = |pid| -> Result<f64> {
        let peak = memory(pid)?.1;
        reset_peak(pid)?;
        Ok(peak)
    };
    reset_peak(pid)?;
    f.metrics = Some(http_read(c.http, "/metrics").await);
    let metrics_peak = peak_of(pid)?;
    f.page = Some(http_read(c.http, "/").await);
    let page_peak = peak_of(pid)?;
    let grpc_url = format!("http://{}", c.grpc);
    f.status = Some(status_cli(&c.dir, &grpc_url).await);
    let status_peak = peak_of(pid)?;
    f.list_status = Some(list_status(&grpc_url).await);
    let list_peak = peak_of(pid)?;
    f.read_peaks_mib = [metrics_peak, page_peak, status_peak, list_peak];
    f.hwm_after_mib = f.read_peaks_mib.into_iter().fold(f.hwm_mib, f64::max);

    let _ = stop.send(true);
    for agent in agents {
        f.refused += agent.counters.refused.load(Ordering::Relaxed);
        f.changes += agent.counters.changes.load(Ordering::Relaxed);
        // A sender still waiting for the coordinator to read its batch is not waited for.
        if agent.sender.is_finished() {
            match agent.sender.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(BenchError::Feed(format!("an agent task failed: {e}"))),
            }
        } else {
            agent.sender.abort();
        }
        agent.reader.abort();
    }
    eprintln!("  restarting (SIGTERM, exit, start on the same data)");
    f.stop = c.stop().await?;
    f.restart = f.stop + c.start(settings.startup_timeout).await?;
    c.stop().await?;
    eprintln!("  done");
    Ok(f)
}

fn main() -> std::process::ExitCode {
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scale bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("scale bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut all = Vec::new();
    for &targets in &settings.sizes {
        match runtime.block_on(measure(targets, &settings)) {
            Ok(f) => {
                if f.refused > 0 || f.changes > 0 {
                    eprintln!(
                        "  note: {} results refused, {} assignment changes during the feed",
                        f.refused, f.changes
                    );
                }
                all.push(f);
            }
            Err(e) => {
                eprintln!("scale bench, {targets} targets: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    println!(
        "\nscale: the real coordinator, 3 regions feeding every target once per {} s (batches of ≤ {BATCH}), {} s \
         warm-up, {} s window\n",
        INTERVAL.as_secs(),
        settings.warmup.as_secs(),
        settings.window.as_secs()
    );
    print!("{}", table::table(&all));
    let _ = std::io::stdout().flush();
    std::process::ExitCode::SUCCESS
}
