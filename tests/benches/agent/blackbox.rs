//! The real `prometheus-blackbox-exporter` (Debian's package) probing the same site through
//! `/probe`, the way Prometheus drives it: one HTTP GET per probe over kept-alive connections.

use std::cell::RefCell;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use vantage_e2e::Process;

use crate::measure::{cpu_time, memory};
use crate::pace::paced;
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
    let pool: Rc<RefCell<Vec<SendRequest<Empty<Bytes>>>>> = Rc::default();
    let measured = paced(
        rate,
        warmup,
        window,
        || cpu_time(pid),
        || {
            let (pool, path) = (pool.clone(), path.clone());
            async move { probe(&pool, listen, &path).await }
        },
    );
    assert_eq!(measured.failed, 0, "the exporter's probes failed {} times", measured.failed);
    let figures = Figures { cpu: measured.cpu, probes: measured.passed, peak_rss_kib: Some(memory(pid).1) };
    drop(exporter);
    figures
}

/// One `/probe` request on a pooled connection (a new one when none is free): whether the
/// exporter's probe passed.
async fn probe(pool: &RefCell<Vec<SendRequest<Empty<Bytes>>>>, exporter: std::net::SocketAddr, path: &str) -> bool {
    let pooled = pool.borrow_mut().pop();
    let mut sender = match pooled {
        Some(sender) => sender,
        None => {
            let Ok(tcp) = tokio::net::TcpStream::connect(exporter).await else { return false };
            let Ok((sender, connection)) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await
            else {
                return false;
            };
            tokio::task::spawn_local(connection);
            sender
        }
    };
    let request = hyper::Request::get(path).header("host", exporter.to_string()).body(Empty::new()).expect("a request");
    let Ok(response) = sender.send_request(request).await else { return false };
    let Ok(body) = response.into_body().collect().await else { return false };
    pool.borrow_mut().push(sender);
    String::from_utf8_lossy(&body.to_bytes()).lines().any(|l| l == "probe_success 1")
}
