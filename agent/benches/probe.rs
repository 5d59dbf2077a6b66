//! Probe throughput: the full pipeline (fresh TCP, full TLS 1.3 handshake, certificate facts and
//! verdict, HTTP GET, classification) against a bare tokio-rustls connect + handshake + GET loop
//! with the same crypto provider, side by side in one run. Rates are probes per CPU-second of
//! the probing thread (the servers run on other threads), so a noisy machine skews both alike.
//! Also reports the peak RSS of one `vantage-agent check` process.
//!
//! Run: `cargo bench -p vantage-agent --bench probe` (VANTAGE_BENCH_PROBES sets probes per
//! round; 5 rounds alternate the two loops).

use std::io::Read;
use std::time::{Duration, Instant};

use clap::Parser;
use vantage_agent::check::CheckArgs;
use vantage_shared::lab::{self, Lab};

#[derive(Parser)]
struct Line {
    #[command(flatten)]
    args: CheckArgs,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let probes: usize = std::env::var("VANTAGE_BENCH_PROBES").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let rounds = 5;
    let lab = Lab::start().expect("lab starts");
    let scenario = lab.scenario("healthy");
    let line = Line::try_parse_from(std::iter::once("check".to_owned()).chain(scenario.check_args())).expect("args");
    let (prober, target) = line.args.build().expect("prober");
    let url = target.url.clone();
    let host = url.host_str();
    let addr = std::net::SocketAddr::new([127, 0, 0, 1].into(), url.port());

    let bare_config = lab::bare::client_config(&lab.ca_file).expect("bare client config");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (mut pipeline_cpu, mut bare_cpu) = (Duration::ZERO, Duration::ZERO);
    let (mut pipeline_wall, mut bare_wall) = (Duration::ZERO, Duration::ZERO);
    // Warm up both paths.
    runtime.block_on(async {
        for _ in 0..20 {
            assert!(prober.probe(&target).await.failure.is_none());
            assert_eq!(lab::bare::probe(bare_config.clone(), addr, &host).await.expect("bare probe"), 200);
        }
    });
    for _ in 0..rounds {
        let (cpu, wall) = (thread_cpu(), Instant::now());
        runtime.block_on(async {
            for _ in 0..probes {
                let report = prober.probe(&target).await;
                assert!(report.failure.is_none(), "{:?}", report.failure);
            }
        });
        pipeline_cpu += thread_cpu() - cpu;
        pipeline_wall += wall.elapsed();

        let (cpu, wall) = (thread_cpu(), Instant::now());
        runtime.block_on(async {
            for _ in 0..probes {
                assert_eq!(lab::bare::probe(bare_config.clone(), addr, &host).await.expect("bare probe"), 200);
            }
        });
        bare_cpu += thread_cpu() - cpu;
        bare_wall += wall.elapsed();
    }
    let total = (probes * rounds) as f64;
    let pipeline_rate = total / pipeline_cpu.as_secs_f64();
    let bare_rate = total / bare_cpu.as_secs_f64();
    println!("probes per CPU-second, {} probes each, {rounds} alternating rounds:", probes * rounds);
    println!(
        "  full pipeline (vantage probe):       {pipeline_rate:>8.0}/s  ({:.0}/s wall)",
        total / pipeline_wall.as_secs_f64()
    );
    println!(
        "  bare tokio-rustls connect+TLS+GET:   {bare_rate:>8.0}/s  ({:.0}/s wall)",
        total / bare_wall.as_secs_f64()
    );
    println!("  ratio pipeline/bare:                 {:>8.2}", pipeline_rate / bare_rate);

    // Peak RSS of one real `check` process.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vantage-agent"))
        .arg("check")
        .args(scenario.check_args())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("vantage-agent runs");
    let mut out = String::new();
    child.stdout.take().expect("piped").read_to_string(&mut out).ok();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data filled by wait4 for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    std::mem::forget(child);
    println!("peak RSS of `vantage-agent check` (healthy target): {:.1} MiB", usage.ru_maxrss as f64 / 1024.0);
}
