//! The real `prometheus-blackbox-exporter` (Debian's package) probing the same site through
//! `/probe`, the way Prometheus drives it: one HTTP GET per probe over kept-alive connections.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use vantage_e2e::Process;

use crate::measure::{cpu_time, memory};
use crate::{Figures, Site};

const BIN: &str = "prometheus-blackbox-exporter";

/// The exporter's version line (`blackbox_exporter, version 0.23.0 …`), shortened to the number.
pub fn version() -> String {
    let out = Command::new(BIN)
        .arg("--version")
        .output()
        .expect("prometheus-blackbox-exporter runs (apt install prometheus-blackbox-exporter)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.split_whitespace().skip_while(|w| *w != "version").nth(1).unwrap_or("?").to_owned()
}

/// Starts the exporter with a module probing `site` like the agent does (its CA, its name, no
/// redirects needed), probes at `rate` for `warmup`, then measures `window`.
pub fn window(site: &Site, work: &Path, rate: u32, warmup: Duration, window: Duration) -> Figures {
    let config = work.join("blackbox.yml");
    std::fs::write(
        &config,
        format!(
            "modules:\n  https:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      \
             valid_status_codes: [200]\n      tls_config:\n        ca_file: {}\n        server_name: {}\n",
            site.ca_file.display(),
            site.host
        ),
    )
    .expect("the exporter's config");
    let listen = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let exporter = Process::start_with(
        Command::new(BIN)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={listen}")),
        "blackbox_exporter",
    );
    exporter.wait_for_line(|l| l.contains("Listening on"));
    let pid = exporter.pid();
    let path = format!("/probe?module=https&target=https://127.0.0.1:{}/", site.port);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let figures = runtime.block_on(async move {
        let pool: Arc<Mutex<Vec<SendRequest<Empty<Bytes>>>>> = Arc::default();
        let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Instant::now();
        let mut measuring: Option<(Duration, u64, Instant)> = None;
        loop {
            tick.tick().await;
            if measuring.is_none() && start.elapsed() >= warmup {
                measuring = Some((cpu_time(pid), ok.load(std::sync::atomic::Ordering::Relaxed), Instant::now()));
            }
            if let Some((cpu, done, since)) = measuring {
                if since.elapsed() >= window {
                    let probes = ok.load(std::sync::atomic::Ordering::Relaxed) - done;
                    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
                    assert_eq!(failed, 0, "the exporter's probes failed {failed} times");
                    return Figures { cpu: cpu_time(pid) - cpu, probes, peak_rss_kib: Some(memory(pid).1) };
                }
            }
            let (pool, ok, failed, path) = (pool.clone(), ok.clone(), failed.clone(), path.clone());
            tokio::spawn(async move {
                let passed = probe(&pool, listen, &path).await;
                let counter = if passed { &ok } else { &failed };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    drop(exporter);
    figures
}

/// One `/probe` request on a pooled connection (a new one when none is free): whether the
/// exporter's probe passed.
async fn probe(pool: &Mutex<Vec<SendRequest<Empty<Bytes>>>>, exporter: std::net::SocketAddr, path: &str) -> bool {
    let pooled = pool.lock().expect("the pool").pop();
    let mut sender = match pooled {
        Some(sender) => sender,
        None => {
            let Ok(tcp) = tokio::net::TcpStream::connect(exporter).await else { return false };
            let Ok((sender, connection)) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await
            else {
                return false;
            };
            tokio::spawn(connection);
            sender
        }
    };
    let request = hyper::Request::get(path).header("host", exporter.to_string()).body(Empty::new()).expect("a request");
    let Ok(response) = sender.send_request(request).await else { return false };
    let Ok(body) = response.into_body().collect().await else { return false };
    pool.lock().expect("the pool").push(sender);
    String::from_utf8_lossy(&body.to_bytes()).lines().any(|l| l == "probe_success 1")
}
