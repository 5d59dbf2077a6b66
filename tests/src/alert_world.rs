//! A small Vantage for alerting tests: TLS sites on loopback that can be stopped and started, a
//! coordinator (restartable on the same address and data) and one agent per region, each a real
//! process, plus helpers to call the API and write the config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use vantage_shared::lab::pki::{Ca, Identity, LeafSpec};
use vantage_shared::lab::server::{self, Reply};

use crate::receiver::Received;
use crate::{Process, binary, grpcurl};

/// The agents' regions, one agent each.
pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// A TLS site on loopback that can be stopped (its port then refuses) and started again.
pub struct Site {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub identity: Identity,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

pub struct World {
    pub dir: PathBuf,
    pub runtime: tokio::runtime::Runtime,
    pub ca: Ca,
    pub sites: Vec<Site>,
    pub coordinator: Option<Process>,
    pub addr: Option<SocketAddr>,
    pub http: Option<String>,
    pub agents: Vec<Option<Process>>,
}

impl World {
    pub fn new(name: &str) -> World {
        let dir = std::env::temp_dir().join(format!("vantage-alerts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::root("Vantage Alerts Test CA").unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        World {
            dir,
            runtime,
            ca,
            sites: Vec::new(),
            coordinator: None,
            addr: None,
            http: None,
            agents: vec![None, None, None],
        }
    }

    pub fn add_site(&mut self, name: &str, days: i64) -> usize {
        self.add_site_answering(name, days, Reply::Page { status: 200, body: "ok" })
    }

    /// A site answering as `reply` says from the start: no restart on its port (which, freed for
    /// a moment, another socket of the machine may take as its ephemeral port).
    pub fn add_site_answering(&mut self, name: &str, days: i64, reply: Reply) -> usize {
        let host = format!("{name}.alerts.test");
        let names = [host.as_str()];
        let identity = self.ca.identity(&LeafSpec::new(&names).valid(-10, days), &[]).unwrap();
        let listener = self.runtime.block_on(server::bind("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        self.sites.push(Site { url: format!("https://{host}:{port}/"), host, port, identity, task: None });
        let i = self.sites.len() - 1;
        self.serve_with(i, listener, reply);
        i
    }

    pub fn serve(&mut self, i: usize, listener: tokio::net::TcpListener) {
        self.serve_with(i, listener, Reply::Page { status: 200, body: "ok" });
    }

    fn serve_with(&mut self, i: usize, listener: tokio::net::TcpListener, reply: Reply) {
        let config = server::server_config(&self.sites[i].identity);
        self.sites[i].task = Some(self.runtime.spawn(server::serve_tls(listener, config, reply)));
    }

    /// Site `i` answers as `reply` says from now on (its server restarted on the same port).
    pub fn serve_reply(&mut self, i: usize, reply: Reply) {
        self.stop_site(i);
        let listener = self.runtime.block_on(server::bind("127.0.0.1", self.sites[i].port)).unwrap();
        self.serve_with(i, listener, reply);
    }

    pub fn stop_site(&mut self, i: usize) {
        if let Some(task) = self.sites[i].task.take() {
            task.abort();
            let _ = self.runtime.block_on(task);
        }
    }

    pub fn start_site(&mut self, i: usize) {
        let listener = self.runtime.block_on(server::bind("127.0.0.1", self.sites[i].port)).unwrap();
        self.serve(i, listener);
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        path
    }

    /// Starts (or restarts, on the same address and data) the coordinator with `config`.
    pub fn start_coordinator(&mut self, config: &Path) {
        // A port below the ephemeral range, free again when the coordinator restarts on it.
        let port = self.addr.map_or_else(|| server::free_port("127.0.0.1").expect("a free port"), |a| a.port());
        let listen = format!("127.0.0.1:{port}");
        let data = self.dir.join("data");
        let process = Process::start(
            "vantage-coordinator",
            &[
                "serve",
                "--insecure",
                "--listen",
                &listen,
                "--http-listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
        );
        let (addr, http) = crate::listening(&process);
        self.addr = Some(addr.parse().unwrap());
        self.http = Some(format!("http://{http}"));
        self.coordinator = Some(process);
    }

    pub fn coordinator(&self) -> &Process {
        self.coordinator.as_ref().unwrap()
    }

    pub fn start_agent(&mut self, i: usize) {
        let region = REGIONS[i];
        let mut command = Command::new(binary("vantage-agent"));
        command.args(["run", "--insecure", "--coordinator", &format!("http://{}", self.addr.unwrap())]);
        command.args(["--region", region, "--name", &format!("agent-{region}")]);
        command.args(["--ca-file", self.dir.join("ca.pem").to_str().unwrap()]);
        for site in &self.sites {
            command.args(["--resolve", &format!("{}:127.0.0.1", site.host)]);
        }
        let process = Process::start_with(&mut command, &format!("agent-{region}"));
        process.wait_for_line(|l| l.contains("assignment received"));
        self.agents[i] = Some(process);
    }

    pub fn call(&self, method: &str, body: &str) -> serde_json::Value {
        let addr = self.addr.unwrap().to_string();
        let out = grpcurl(&["-plaintext", "-d", body, &addr, &format!("vantage.v1.Coordinator/{method}")]);
        serde_json::from_str(&out).unwrap()
    }

    pub fn targets_toml(&self, labels: &[(usize, &str)]) -> String {
        let mut text = String::new();
        for (i, site) in self.sites.iter().enumerate() {
            text.push_str(&format!("[[target]]\nurl = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n", site.url));
            if let Some((_, l)) = labels.iter().find(|(n, _)| *n == i) {
                text.push_str(&format!("labels = {{ {l} }}\n"));
            }
            text.push('\n');
        }
        text
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An alert's kind, from a webhook's body.
pub fn kind(r: &Received) -> String {
    r.json()["kind"].as_str().unwrap_or_default().to_owned()
}
