//! Scale benchmark (figures, not pass/fail): the real `vantage-coordinator serve` process with N
//! configured targets, fed three regions of results over real gRPC streams at the rate of a 60 s
//! interval, for several N side by side, beside the goals of issue 12 at 100,000 targets.
//!
//! Per N it measures: start-up (spawn to `/healthz` answering 200), the coordinator's CPU per
//! acked result over a steady window (utime + stime from `/proc/<pid>/stat`), its memory after
//! the feed (VmRSS, VmHWM), `GET /metrics` and `GET /` (size, time), the real `status` CLI and a
//! `ListStatus` call for every target, and restart (SIGTERM, exit, start on the same data to
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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;
use vantage_proto::v1::agent_service_client::AgentServiceClient;
use vantage_proto::v1::coordinator_client::CoordinatorClient;
use vantage_proto::v1::*;

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

/// Two distinct free loopback addresses (both held until both are known).
fn free_addrs() -> Result<(SocketAddr, SocketAddr)> {
    let bind = || io("binding a free loopback port", std::net::TcpListener::bind("127.0.0.1:0"));
    let (a, b) = (bind()?, bind()?);
    Ok((io("reading its port", a.local_addr())?, io("reading its port", b.local_addr())?))
}

/// The coordinator under test: its files, ports and (while it runs) its process.
struct Coordinator {
    dir: PathBuf,
    grpc: SocketAddr,
    http: SocketAddr,
    process: Option<Proc>,
}

impl Coordinator {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("coordinator.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn fail(&self, what: impl Into<String>) -> BenchError {
        BenchError::Coordinator(what.into(), self.log_tail())
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, |p| p.0.id())
    }

    /// Spawns `serve` and waits for `/healthz` to answer 200; returns how long that took.
    async fn start(&mut self, timeout: Duration) -> Result<Duration> {
        let log = io(
            "opening the coordinator log",
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("coordinator.log")),
        )?;
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--insecure")
            .args(["--listen", &self.grpc.to_string(), "--http-listen", &self.http.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--config")
            .arg(self.dir.join("targets.toml"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl only, between fork and exec. The coordinator dies with the bench even when
        // the bench itself is killed (Ctrl-C), not only when it ends normally.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        self.process = Some(Proc(io("starting vantage-coordinator serve", command.spawn())?));
        let mut progress = started;
        loop {
            let exited = self.process.as_mut().and_then(|Proc(child)| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(self.fail(format!("exited during start-up ({status})")));
            }
            if let Ok((200, _)) = get(self.http, "/healthz", Duration::from_secs(2)).await {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(self.fail(format!("did not answer /healthz within {} s", timeout.as_secs())));
            }
            if progress.elapsed() >= Duration::from_secs(15) {
                progress = Instant::now();
                eprintln!("    still starting after {:.0} s…", started.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the process to exit; returns how long it took.
    async fn stop(&mut self) -> Result<Duration> {
        let Some(Proc(child)) = self.process.as_mut() else { return Ok(Duration::ZERO) };
        let started = Instant::now();
        // SAFETY: kill(2) on the PID of our own child, which has not been waited for yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if started.elapsed() < Duration::from_secs(120) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                _ => return Err(self.fail("did not exit within 120 s of SIGTERM")),
            }
        }
        let took = started.elapsed();
        self.process = None;
        Ok(took)
    }
}

/// `GET path` over HTTP/1.0 (so the body is never chunked); the status code and body length.
async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, usize)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or(std::io::ErrorKind::InvalidData)?;
        let head = String::from_utf8_lossy(&answer[..split]);
        let status =
            head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
        Ok((status, answer.len() - split - 4))
    };
    tokio::time::timeout(timeout, fetch).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// `GET path` timed: how long until the whole body arrived, and its size.
async fn http_read(addr: SocketAddr, path: &str) -> Read {
    let started = Instant::now();
    match get(addr, path, CALL_TIMEOUT).await {
        Ok((200, bytes)) => Ok((started.elapsed(), bytes)),
        Ok((code, _)) => Err(format!("HTTP {code}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the real `vantage-coordinator status` (its table into a file); how long it took and how
/// many lines it printed.
async fn status_cli(dir: &std::path::Path, grpc_url: &str) -> Read {
    let out = dir.join("status.txt");
    let file = std::fs::File::create(&out).map_err(|e| format!("creating status.txt: {e}"))?;
    let started = Instant::now();
    let child = Command::new(BIN).args(["status", "--addr", grpc_url]).stdout(file).stderr(Stdio::piped()).spawn();
    let mut child = Proc(child.map_err(|e| format!("running vantage-coordinator status: {e}"))?);
    let status = loop {
        if let Some(status) = child.0.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > CALL_TIMEOUT {
            return Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let took = started.elapsed();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut e) = child.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        return Err(format!("{status}: {}", stderr.trim()));
    }
    let text = std::fs::read(&out).map_err(|e| format!("reading status.txt: {e}"))?;
    Ok((took, text.iter().filter(|b| **b == b'\n').count()))
}

/// One `ListStatus` call for every target, on a fresh connection.
async fn list_status(grpc_url: &str) -> Read {
    let call = async {
        let channel = tonic::transport::Endpoint::from_shared(grpc_url.to_owned())?.connect().await?;
        let mut client = CoordinatorClient::new(channel).max_decoding_message_size(MAX_DECODE);
        let started = Instant::now();
        let listed = client.list_status(ListStatusRequest::default()).await?.into_inner();
        Ok::<_, BenchError>((started.elapsed(), listed.targets.len()))
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())),
    }
}

/// The coordinator's CPU time so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = io("reading /proc/<pid>/stat", std::fs::read_to_string(format!("/proc/{pid}/stat")))?;
    // Fields after the command name (which may hold spaces) start with field 3, the state:
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64(fields.iter().sum::<u64>() as f64 / ticks))
}

/// VmRSS and VmHWM of a process, in MiB.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let status = io("reading /proc/<pid>/status", std::fs::read_to_string(format!("/proc/{pid}/status")))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0))
}

fn now() -> prost_types::Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    prost_types::Timestamp { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// A healthy HTTPS probe's result, as an agent reports it.
fn result(url: &str) -> TargetResult {
    TargetResult {
        target_url: url.to_owned(),
        result: Some(ProbeResult {
            url: url.to_owned(),
            status: ProbeStatus::Up as i32,
            tls_version: "TLSv1.3".into(),
            http_status: 200,
            timings: Some(Timings {
                dns_ms: Some(2.0),
                connect_ms: Some(11.0),
                tls_ms: Some(23.0),
                ttfb_ms: Some(31.0),
                total_ms: 68.0,
            }),
            checked_at: Some(now()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What one simulated agent has sent and had acked.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    /// Assignment changes after the first assignment (none are expected: one agent per region).
    changes: AtomicU64,
}

/// One simulated agent: hello, its assignment, then the results of its targets once per
/// interval, spread evenly, until `stop`; acks are counted as they come.
struct Agent {
    counters: Arc<Counters>,
    sender: tokio::task::JoinHandle<Result<()>>,
    reader: tokio::task::JoinHandle<()>,
}

async fn connect_agent(grpc: SocketAddr, region: &str) -> Result<(Vec<String>, AgentStream)> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?.connect().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let hello = Hello {
        name: format!("scale-{region}"),
        region: region.into(),
        version: "scale-bench".into(),
        sent_at: Some(now()),
    };
    let _ = tx.send(AgentMessage { kind: Some(agent_message::Kind::Hello(hello)) }).await;
    let mut inbound = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_DECODE)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        match inbound.message().await?.and_then(|m| m.kind) {
            Some(coordinator_message::Kind::Assignment(a)) => {
                let urls = a.targets.into_iter().map(|t| t.url).collect();
                return Ok((urls, AgentStream { tx, inbound, sequence: a.last_sequence }));
            }
            Some(_) => continue,
            None => return Err(BenchError::Feed(format!("{region}: the stream ended before an assignment"))),
        }
    }
}

struct AgentStream {
    tx: tokio::sync::mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
    sequence: u64,
}

impl Agent {
    fn feed(urls: Vec<String>, stream: AgentStream, start: Instant, stop: tokio::sync::watch::Receiver<bool>) -> Agent {
        let counters = Arc::new(Counters::default());
        let pending: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
        let AgentStream { tx, mut inbound, mut sequence } = stream;
        let (count, waiting) = (counters.clone(), pending.clone());
        let reader = tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                match message.kind {
                    Some(coordinator_message::Kind::Ack(ack)) => {
                        let size = waiting.lock().unwrap().remove(&ack.sequence).unwrap_or(0);
                        let refused = ack.refused.len() as u64;
                        count.acked.fetch_add(size.saturating_sub(refused), Ordering::Relaxed);
                        count.refused.fetch_add(refused, Ordering::Relaxed);
                    }
                    Some(coordinator_message::Kind::Assignment(_) | coordinator_message::Kind::Change(_)) => {
                        count.changes.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        let count = counters.clone();
        let sender = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = 0u128;
            while !*stop.borrow() {
                tick.tick().await;
                // Every target is due once per interval: by now, this many results in all.
                let due = start.elapsed().as_millis() * urls.len() as u128 / INTERVAL.as_millis();
                while next < due {
                    let take = (due - next).min(BATCH as u128) as usize;
                    let results: Vec<TargetResult> =
                        (0..take).map(|i| result(&urls[(next as usize + i) % urls.len()])).collect();
                    next += take as u128;
                    sequence += 1;
                    pending.lock().unwrap().insert(sequence, take as u64);
                    let batch = ResultBatch { sequence, results };
                    if tx.send(AgentMessage { kind: Some(agent_message::Kind::Batch(batch)) }).await.is_err() {
                        return Err(BenchError::Feed("an agent stream ended during the feed".into()));
                    }
                    count.sent.fetch_add(take as u64, Ordering::Relaxed);
                }
            }
            Ok(())
        });
        Agent { counters, sender, reader }
    }
}

fn acked(agents: &[Agent]) -> u64 {
    agents.iter().map(|a| a.counters.acked.load(Ordering::Relaxed)).sum()
}

/// A read of every target's state: how long it took and how large the answer was (bytes,
/// lines or targets), or why it failed (shown in the table instead of ending the run).
type Read = std::result::Result<(Duration, usize), String>;

/// Every figure measured at one size.
#[derive(Default)]
struct Figures {
    targets: usize,
    startup: Duration,
    offered: f64,
    acked_rate: f64,
    cpu_per_result_us: f64,
    cores: f64,
    rss_mib: f64,
    hwm_mib: f64,
    hwm_after_mib: f64,
    metrics: Option<Read>,
    page: Option<Read>,
    status: Option<Read>,
    list_status: Option<Read>,
    stop: Duration,
    restart: Duration,
    refused: u64,
    changes: u64,
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
        let (urls, stream) = tokio::time::timeout(settings.startup_timeout, connect_agent(c.grpc, region))
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
    f.metrics = Some(http_read(c.http, "/metrics").await);
    f.page = Some(http_read(c.http, "/").await);
    let grpc_url = format!("http://{}", c.grpc);
    f.status = Some(status_cli(&c.dir, &grpc_url).await);
    f.list_status = Some(list_status(&grpc_url).await);
    f.hwm_after_mib = memory(pid)?.1;

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

/// The figures as a table, one column per size, and the goal of issue 12 judged at the largest
/// size measured.
fn table(all: &[Figures]) -> String {
    let largest = all.iter().max_by_key(|f| f.targets).expect("at least one size");
    let mb = |b: usize| b as f64 / 1e6;
    type Row<'a> = (&'a str, Box<dyn Fn(&Figures) -> String>, Option<(&'a str, Box<dyn Fn(&Figures) -> bool>)>);
    let rows: Vec<Row> = vec![
        (
            "start-up (spawn to `/healthz` 200)",
            Box::new(|f| format!("{:.2} s", f.startup.as_secs_f64())),
            Some(("≤ 10 s", Box::new(|f| f.startup <= Duration::from_secs(10)))),
        ),
        (
            "restart (SIGTERM to `/healthz` 200 on the same data)",
            Box::new(|f| format!("{:.2} s (stop {:.2} s)", f.restart.as_secs_f64(), f.stop.as_secs_f64())),
            Some(("≤ 10 s", Box::new(|f| f.restart <= Duration::from_secs(10)))),
        ),
        (
            "results offered / acked in the window",
            Box::new(|f| format!("{:.0}/s / {:.0}/s", f.offered, f.acked_rate)),
            None,
        ),
        (
            "coordinator CPU per acked result",
            Box::new(|f| format!("{:.1} µs ({:.2} cores)", f.cpu_per_result_us, f.cores)),
            Some(("≤ 50 µs", Box::new(|f| f.cpu_per_result_us <= 50.0))),
        ),
        (
            "RSS after the feed (VmRSS)",
            Box::new(|f| format!("{:.0} MiB", f.rss_mib)),
            Some(("≤ 256 MiB", Box::new(|f| f.rss_mib <= 256.0))),
        ),
        (
            "peak RSS (VmHWM) after the feed / after the reads below",
            Box::new(|f| format!("{:.0} / {:.0} MiB", f.hwm_mib, f.hwm_after_mib)),
            Some(("≤ 256 MiB", Box::new(|f| f.hwm_after_mib <= 256.0))),
        ),
        (
            "`GET /metrics` size, time",
            Box::new(move |f| shown(&f.metrics, |t, b| format!("{:.2} MB, {:.2} s", mb(b), t))),
            Some(("≤ 25 MB, ≤ 1 s", Box::new(move |f| within(&f.metrics, |t, b| mb(b) <= 25.0 && t <= 1.0)))),
        ),
        (
            "status page `GET /` size, time",
            Box::new(move |f| shown(&f.page, |t, b| format!("{:.2} MB, {:.2} s", mb(b), t))),
            Some(("≤ 2 s", Box::new(|f| within(&f.page, |t, _| t <= 2.0)))),
        ),
        (
            "`vantage-coordinator status` (every target)",
            Box::new(|f| shown(&f.status, |t, n| format!("{t:.2} s ({n} lines)"))),
            Some(("≤ 2 s", Box::new(|f| within(&f.status, |t, _| t <= 2.0)))),
        ),
        (
            "`ListStatus` over gRPC (every target)",
            Box::new(|f| shown(&f.list_status, |t, n| format!("{t:.2} s ({n} targets)"))),
            Some(("≤ 2 s", Box::new(|f| within(&f.list_status, |t, _| t <= 2.0)))),
        ),
    ];
    let mut out = String::from("|");
    for f in all {
        let _ = write!(out, " | {} targets", thousands(f.targets));
    }
    let _ = writeln!(out, " | goal at 100,000 (✓/✗ at {}) |", thousands(largest.targets));
    let _ = writeln!(out, "|---{}|---|", "|---".repeat(all.len()));
    for (name, value, goal) in &rows {
        let _ = write!(out, "| {name}");
        for f in all {
            let _ = write!(out, " | {}", value(f));
        }
        match goal {
            Some((text, met)) => {
                let _ = writeln!(out, " | {text} {} |", if met(largest) { "✓" } else { "✗" });
            }
            None => out.push_str(" | |\n"),
        }
    }
    out
}

/// A read as the table shows it: its figures, or why it failed.
fn shown(read: &Option<Read>, show: impl Fn(f64, usize) -> String) -> String {
    match read {
        Some(Ok((took, size))) => show(took.as_secs_f64(), *size),
        Some(Err(e)) => format!("failed: {}", e.replace('|', "/").lines().next().unwrap_or_default()),
        None => "not measured".into(),
    }
}

/// Whether a read succeeded within its goal (seconds, size).
fn within(read: &Option<Read>, goal: impl Fn(f64, usize) -> bool) -> bool {
    matches!(read, Some(Ok((took, size))) if goal(took.as_secs_f64(), *size))
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
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
    print!("{}", table(&all));
    let _ = std::io::stdout().flush();
    std::process::ExitCode::SUCCESS
}
