//! Agent benchmark (figures, not pass/fail): the real `vantage-agent run` serving a real
//! `vantage-coordinator serve`, probing the lab's TLS server on loopback at a fixed rate, beside
//! a bare tokio-rustls loop and the real `prometheus-blackbox-exporter` (Debian's package, driven
//! through `/probe`) at the same rate against the same server, in one run (README: "Agent
//! benchmark").
//!
//! Per contender it measures CPU per probe over a steady window: the agent's and the exporter's
//! process CPU (utime + stime from `/proc/<pid>/stat`, every thread) over the probes they made
//! (results the coordinator committed; probes the exporter answered with `probe_success 1`), and
//! the bare loop's thread CPU over its probes. Then memory: the agent's resident size with many
//! assigned targets (VmRSS and VmHWM from `/proc/<pid>/status`).
//!
//! Every probe is a fresh TCP connection, a full TLS 1.3 handshake (no resumption) and one GET;
//! none resolves a name (the agent takes `--resolve`, the exporter an IP target with the name as
//! its TLS server name, the bare loop connects to the address), so all three do the same work.
//!
//! Run: `cargo bench -p vantage-e2e --bench agent`
//!
//! Environment:
//! - `VANTAGE_BENCH_RATE=100` probes per second (the agent: that many targets at a 1 s interval);
//! - `VANTAGE_BENCH_SECONDS=30` each measured window, after `VANTAGE_BENCH_WARMUP=10` seconds;
//! - `VANTAGE_BENCH_MANY=100000` targets for the memory figure (0 skips it), at an interval of
//!   `VANTAGE_BENCH_MANY_INTERVAL=300` seconds, measured after one window of probing;
//! - `VANTAGE_BENCH_PERF=DIR` records the agent with `perf record -g` during its window into
//!   `DIR/agent.perf.data` (sampling costs a little of its CPU figure).

mod bare;
mod blackbox;
mod measure;
mod pace;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use measure::{cpu_time, memory};
use vantage_e2e::{Process, listening, serve_on_loopback};
use vantage_shared::lab::Lab;

/// The lab scenario every contender probes: a healthy site with a 90-day certificate.
const SCENARIO: &str = "healthy";

struct Settings {
    rate: u32,
    window: Duration,
    warmup: Duration,
    many: usize,
    many_interval: Duration,
    perf: Option<PathBuf>,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// What one contender did in its window.
struct Figures {
    cpu: Duration,
    probes: u64,
    /// Peak resident size, for the contenders that are processes of their own.
    peak_rss_kib: Option<u64>,
}

impl Figures {
    fn per_probe_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.probes.max(1) as f64
    }
}

/// The lab's healthy site: its URL's host and port, and the address it listens on.
struct Site {
    host: String,
    port: u16,
    addr: std::net::SocketAddr,
    ca_file: PathBuf,
}

fn main() {
    let settings = Settings {
        rate: env_number("VANTAGE_BENCH_RATE", 100).max(1) as u32,
        window: Duration::from_secs(env_number("VANTAGE_BENCH_SECONDS", 30).max(1)),
        warmup: Duration::from_secs(env_number("VANTAGE_BENCH_WARMUP", 10)),
        many: env_number("VANTAGE_BENCH_MANY", 100_000) as usize,
        many_interval: Duration::from_secs(env_number("VANTAGE_BENCH_MANY_INTERVAL", 300).max(1)),
        perf: std::env::var_os("VANTAGE_BENCH_PERF").map(PathBuf::from),
    };
    let lab = Lab::start().expect("the lab starts");
    let scenario = lab.scenario(SCENARIO);
    let url = url::Url::parse(&scenario.url).expect("the lab's URL");
    let port = url.port().expect("the lab's URL names its port");
    let site = Site {
        host: url.host_str().expect("a host").to_owned(),
        port,
        addr: ([127, 0, 0, 1], port).into(),
        ca_file: lab.ca_file.clone(),
    };
    let work = lab.dir().join("bench");
    std::fs::create_dir_all(&work).expect("a work directory");

    println!(
        "{} probes/s for {} s each (after {} s of warm-up): fresh TCP, full TLS 1.3 handshake, one GET, on loopback",
        settings.rate,
        settings.window.as_secs(),
        settings.warmup.as_secs()
    );
    let agent = agent_window(&settings, &site, &work);
    print_line("vantage-agent run", &agent);
    let bare = bare::window(&site, settings.rate, settings.warmup, settings.window);
    print_line("bare tokio-rustls loop", &bare);
    let exporter = blackbox::window(&site, &work, settings.rate, settings.warmup, settings.window);
    print_line(&format!("blackbox_exporter {}", blackbox::version()), &exporter);
    println!("  agent / bare loop:            {:>8.2}  (goal ≤ 1.3)", agent.per_probe_us() / bare.per_probe_us());
    println!("  blackbox_exporter / agent:    {:>8.2}  (goal ≥ 3)", exporter.per_probe_us() / agent.per_probe_us());

    if settings.many > 0 {
        let (rss, peak) = many_targets(&settings, &site, &work);
        println!(
            "agent with {} assigned targets ({} s interval), after {} s of probing: RSS {:.1} MiB, peak {:.1} MiB (goal < 64 MiB)",
            thousands(settings.many as u64),
            settings.many_interval.as_secs(),
            settings.window.as_secs(),
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
}

fn print_line(name: &str, f: &Figures) {
    let rss = f.peak_rss_kib.map_or(String::new(), |kib| format!("   peak RSS {:>5.1} MiB", kib as f64 / 1024.0));
    println!("  {name:<29} {:>8.0} µs CPU per probe   {:>7} probes{rss}", f.per_probe_us(), thousands(f.probes));
}

fn thousands(n: u64) -> String {
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

/// A coordinator configured with `targets` URLs on the lab's site at `interval`, and one agent
/// of region `bench` serving it; returns both once the agent has its assignment.
fn coordinator_and_agent(
    site: &Site,
    work: &Path,
    name: &str,
    targets: usize,
    interval: Duration,
) -> (Process, Process, String) {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).expect("a directory for the coordinator");
    let mut config = String::with_capacity(targets * 80);
    for n in 0..targets {
        config.push_str(&format!(
            "[[target]]\nurl = \"https://{}:{}/t/{n}\"\ninterval = \"{}s\"\n",
            site.host,
            site.port,
            interval.as_secs()
        ));
    }
    let config_file = dir.join("targets.toml");
    std::fs::write(&config_file, config).expect("the config file");
    let coordinator = serve_on_loopback(&dir.join("data"), &["--config", config_file.to_str().expect("UTF-8 path")]);
    let (grpc, http) = listening(&coordinator);
    let resolve = format!("{}:127.0.0.1", site.host);
    let agent = Process::start(
        "vantage-agent",
        &[
            "run",
            "--coordinator",
            &format!("http://{grpc}"),
            "--insecure",
            "--region",
            "bench",
            "--name",
            "bench-agent",
            "--resolve",
            &resolve,
            "--ca-file",
            site.ca_file.to_str().expect("UTF-8 path"),
        ],
    );
    // A large assignment arrives in slices: the last one brings the count to `targets`.
    agent.wait_for_line(|l| l.contains("assignment") && l.contains(&format!("assigned={targets} ")));
    (coordinator, agent, http)
}

/// The agent at `rate` targets a second, counted by the results its coordinator commits.
fn agent_window(settings: &Settings, site: &Site, work: &Path) -> Figures {
    let (coordinator, agent, http) =
        coordinator_and_agent(site, work, "rate", settings.rate as usize, Duration::from_secs(1));
    std::thread::sleep(settings.warmup);
    let pid = agent.pid();
    let perf = settings.perf.as_ref().map(|dir| {
        std::fs::create_dir_all(dir).expect("the perf directory");
        let out = dir.join("agent.perf.data");
        Process::start_with(
            Command::new("perf").args(["record", "-g", "-q", "-p", &pid.to_string(), "-o"]).arg(&out),
            "perf",
        )
    });
    let (cpu, results) = (cpu_time(pid), measure::committed(&http));
    let started = Instant::now();
    std::thread::sleep(settings.window);
    let (cpu, results) = (cpu_time(pid) - cpu, measure::committed(&http) - results);
    let elapsed = started.elapsed();
    if let Some(mut perf) = perf {
        // SIGINT makes perf write its file and stop.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(perf.pid() as libc::pid_t, libc::SIGINT) };
        perf.wait_exit();
    }
    let expected = settings.rate as f64 * elapsed.as_secs_f64();
    assert!(
        results as f64 > expected * 0.8,
        "the coordinator committed {results} results in {elapsed:?}, expected about {expected:.0}"
    );
    let figures = Figures { cpu, probes: results, peak_rss_kib: Some(memory(agent.pid()).1) };
    drop((agent, coordinator));
    figures
}

/// The agent's resident size (now, peak) with `settings.many` targets assigned.
fn many_targets(settings: &Settings, site: &Site, work: &Path) -> (u64, u64) {
    let (coordinator, agent, _) = coordinator_and_agent(site, work, "many", settings.many, settings.many_interval);
    std::thread::sleep(settings.window);
    let figures = memory(agent.pid());
    drop((agent, coordinator));
    figures
}
