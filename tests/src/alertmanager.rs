//! The real Alertmanager (Debian's `prometheus-alertmanager`), for the tests that post to it.

use std::path::Path;
use std::process::Command;

use crate::Process;

/// Starts Alertmanager on a free loopback port with `config` (its YAML) and, when given,
/// `web_config` (TLS, basic auth) written into `dir`, clustering off; returns it once it listens,
/// and its port.
pub fn start(dir: &Path, config: &str, web_config: Option<&str>) -> (Process, u16) {
    let port = vantage_shared::lab::server::free_port("127.0.0.1").expect("a free port");
    let config_file = dir.join("alertmanager.yml");
    std::fs::write(&config_file, config).unwrap();
    let mut command = Command::new("prometheus-alertmanager");
    command.arg(format!("--config.file={}", config_file.display()));
    if let Some(web) = web_config {
        let web_file = dir.join("alertmanager-web.yml");
        std::fs::write(&web_file, web).unwrap();
        command.arg(format!("--web.config.file={}", web_file.display()));
    }
    command.arg(format!("--storage.path={}", dir.join("alertmanager-data").display()));
    command.arg(format!("--web.listen-address=127.0.0.1:{port}"));
    command.arg("--cluster.listen-address=");
    let process = Process::start_with(&mut command, "alertmanager");
    process.wait_for_line(|l| l.contains("Listening on"));
    (process, port)
}
