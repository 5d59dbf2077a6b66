//! Probe throughput: the full pipeline (fresh TCP, full TLS 1.3 handshake, certificate facts and
//! verdict, HTTP GET, classification) against a bare tokio-rustls connect + handshake + GET loop
//! with the same crypto provider, side by side in one run. Rates are probes per CPU-second of
//! the probing thread (the servers run on other threads), so a noisy machine skews both alike.
//! Also reports the peak RSS of one `vantage-agent check` process.
//!
//! Run: `cargo bench -p vantage-agent --bench probe` (VANTAGE_BENCH_PROBES sets probes per
//! round; 5 rounds alternate the two loops).

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_agent::check::CheckArgs;
use vantage_shared::lab::Lab;

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

async fn bare_probe(config: Arc<rustls::ClientConfig>, addr: std::net::SocketAddr, host: &str) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).ok();
    let name = ServerName::try_from(host.to_owned()).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("handshake");
    let request = format!("GET / HTTP/1.1\r\nhost: {host}:{}\r\nuser-agent: bare\r\naccept: */*\r\n\r\n", addr.port());
    tls.write_all(request.as_bytes()).await.expect("write");
    // Read the head, then the body its content-length announces (the lab keeps connections alive).
    let mut response = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let body_len = loop {
        let n = tls.read(&mut buf).await.expect("read");
        assert!(n > 0, "the server closed early");
        response.extend_from_slice(&buf[..n]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&response[..end]).expect("ascii head");
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("content-length");
            break end + 4 + length;
        }
    };
    while response.len() < body_len {
        let n = tls.read(&mut buf).await.expect("read");
        assert!(n > 0, "the server closed early");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"), "bare GET failed");
    200
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

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&lab.ca_file).expect("ca file") {
        roots.add(cert.expect("pem")).expect("root");
    }
    let mut bare_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    bare_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    bare_config.resumption = rustls::client::Resumption::disabled();
    let bare_config = Arc::new(bare_config);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (mut pipeline_cpu, mut bare_cpu) = (Duration::ZERO, Duration::ZERO);
    let (mut pipeline_wall, mut bare_wall) = (Duration::ZERO, Duration::ZERO);
    // Warm up both paths.
    runtime.block_on(async {
        for _ in 0..20 {
            assert!(prober.probe(&target).await.failure.is_none());
            bare_probe(bare_config.clone(), addr, &host).await;
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
                bare_probe(bare_config.clone(), addr, &host).await;
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
