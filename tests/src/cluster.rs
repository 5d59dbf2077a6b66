//! A multi-region Vantage on one machine: a private bridge, one network namespace per region
//! (each with its own agent process), the coordinator as a real process on the bridge with mTLS
//! (certificates from the real `vantage-coordinator pki`), and TLS targets served on the bridge
//! address. Regions can be cut off from a target with nftables (and restored),
//! agents and the coordinator can be killed and restarted. A twin coordinator (the same config,
//! certificate and CA, its own data) makes a pair. Everything is removed on drop.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use vantage_shared::lab::pki::{Ca, LeafSpec};
use vantage_shared::lab::server::{self, Reply};

use crate::{Process, binary, run};

/// The admin token the cluster's coordinator accepts (`--admin-token-file`).
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
/// Its read-only token (`--read-token-file`).
pub const READ_TOKEN: &str = "e2e-read-token-0123456789";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command that must succeed (ip, nft).
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{} runs: {e}", args[0]));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A target served on the bridge, which the test can stop and start again.
pub struct Target {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// TOML added to this target's `[[target]]` only (`labels = { … }`, say).
    pub extra: String,
    identity: vantage_shared::lab::pki::Identity,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Cluster {
    pub id: String,
    pub regions: Vec<String>,
    bridge: String,
    pub bridge_ip: IpAddr,
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    ca: Ca,
    ca_file: PathBuf,
    pub targets: Vec<Target>,
    pub coordinator: Option<Process>,
    pub coordinator_addr: SocketAddr,
    /// The coordinator's HTTP port (metrics, status page), once it runs.
    pub http_addr: Option<SocketAddr>,
    /// The pair's second coordinator, once started ([`Cluster::start_twin`]).
    pub twin: Option<Process>,
    pub twin_addr: SocketAddr,
    agents: Vec<Option<Process>>,
    /// `pki init` output: `ca.pem`, `coordinator.pem`, `agent-agent-<region>.pem`, `admin-admin.pem`.
    pub pki: PathBuf,
    /// Environment variables for the coordinator and agents started from now on.
    pub env: Vec<(String, String)>,
    /// TOML appended to the coordinator's config file after the targets (`[quorum]`, channels…).
    pub config_extra: String,
    /// TOML added to every `[[target]]` (`quorum = 3`, say).
    pub target_extra: String,
}

/// Runs `vantage-coordinator pki …`, which must succeed.
pub fn pki(args: &[&str]) {
    let out = run("vantage-coordinator", &[&["pki"], args].concat());
    assert!(out.status.success(), "pki {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Cluster {
    /// Builds the network: a bridge with a private /24, and a namespace per region.
    pub fn new(regions: &[&str]) -> Cluster {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("{:04x}", (pid.wrapping_mul(31).wrapping_add(n * 7919)) & 0xffff);
        let net = format!("10.{}.{}", 100 + (n % 100), pid % 250);
        let bridge = format!("vtbr{id}");
        let bridge_ip: IpAddr = format!("{net}.1").parse().expect("literal");
        sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
        sh(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", &bridge]);
        sh(&["ip", "link", "set", &bridge, "up"]);
        for (i, _) in regions.iter().enumerate() {
            let ns = format!("vt{id}r{i}");
            let (outer, inner) = (format!("vt{id}r{i}a"), format!("vt{id}r{i}b"));
            sh(&["ip", "netns", "add", &ns]);
            sh(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            sh(&["ip", "link", "set", &inner, "netns", &ns]);
            sh(&["ip", "link", "set", &outer, "master", &bridge]);
            sh(&["ip", "link", "set", &outer, "up"]);
            sh(&["ip", "-n", &ns, "addr", "add", &format!("{net}.{}/24", 10 + i), "dev", &inner]);
            sh(&["ip", "-n", &ns, "link", "set", &inner, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let dir = std::env::temp_dir().join(format!("vantage-cluster-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = Ca::root("Vantage E2E Root CA").expect("CA");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).expect("CA file");
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let pki_dir = dir.join("pki");
        pki(&["init", "--dir", path(&pki_dir), "--name", &bridge_ip.to_string()]);
        for region in regions {
            pki(&["issue-agent", "--dir", path(&pki_dir), "--region", region, "--name", &format!("agent-{region}")]);
        }
        pki(&["issue-admin", "--dir", path(&pki_dir)]);
        for (file, token) in [("admin.token", ADMIN_TOKEN), ("read.token", READ_TOKEN)] {
            std::fs::write(pki_dir.join(file), token).expect("token file");
            std::fs::set_permissions(pki_dir.join(file), std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
        }
        Cluster {
            id,
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            bridge,
            bridge_ip,
            dir,
            runtime,
            ca,
            ca_file,
            targets: Vec::new(),
            coordinator: None,
            coordinator_addr: SocketAddr::new(bridge_ip, 0),
            http_addr: None,
            twin: None,
            twin_addr: SocketAddr::new(bridge_ip, 0),
            agents: regions.iter().map(|_| None).collect(),
            pki: pki_dir,
            env: Vec::new(),
            config_extra: String::new(),
            target_extra: String::new(),
        }
    }

    fn namespace(&self, region: usize) -> String {
        format!("vt{}r{region}", self.id)
    }

    /// Serves `https://NAME.e2e.test:PORT/` on the bridge; `expired` picks an expired certificate.
    pub fn add_target(&mut self, name: &str, expired: bool) -> usize {
        let host = format!("{name}.e2e.test");
        let names = [host.as_str()];
        let spec = LeafSpec::new(&names);
        let spec = if expired { spec.valid(-92, -2) } else { spec };
        let identity = self.ca.identity(&spec, &[]).expect("leaf");
        let listener = self.runtime.block_on(server::bind(&self.bridge_ip.to_string(), 0)).expect("bind on the bridge");
        let port = listener.local_addr().expect("addr").port();
        let config = server::server_config(&identity);
        let task = self.runtime.spawn(server::serve_tls(listener, config, Reply::Page { status: 200, body: "ok" }));
        let url = format!("https://{host}:{port}/");
        self.targets.push(Target { url, host, port, extra: String::new(), identity, task: Some(task) });
        self.targets.len() - 1
    }

    /// Stops serving a target: its port refuses connections.
    pub fn stop_target(&mut self, i: usize) {
        if let Some(task) = self.targets[i].task.take() {
            task.abort();
            // Wait until the listener is really gone.
            let _ = self.runtime.block_on(task);
        }
    }

    /// Serves a stopped target again, on the same port.
    pub fn start_target(&mut self, i: usize) {
        let t = &self.targets[i];
        let listener = self.runtime.block_on(server::bind(&self.bridge_ip.to_string(), t.port)).expect("rebind");
        let config = server::server_config(&t.identity);
        let task = self.runtime.spawn(server::serve_tls(listener, config, Reply::Page { status: 200, body: "ok" }));
        self.targets[i].task = Some(task);
    }

    /// Writes the targets file and starts the coordinator on the bridge.
    pub fn start_coordinator(&mut self, interval: &str, timeout: &str) {
        let mut config = String::new();
        for t in &self.targets {
            config.push_str(&format!(
                "[[target]]\nurl = \"{}\"\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\n{}\n{}\n",
                t.url, self.target_extra, t.extra
            ));
        }
        config.push_str(&self.config_extra);
        let config_file = self.dir.join("vantage.toml");
        std::fs::write(&config_file, config).expect("config");
        // A port below the ephemeral range, free again when the coordinator restarts on it.
        let port = server::free_port(&self.bridge_ip.to_string()).expect("a free port on the bridge");
        self.launch_coordinator(SocketAddr::new(self.bridge_ip, port));
    }

    fn launch_coordinator(&mut self, listen: SocketAddr) {
        let (process, addr, http) = self.launch(listen, &self.data_dir());
        self.coordinator_addr = addr;
        self.http_addr = http;
        self.coordinator = Some(process);
    }

    /// Starts a coordinator process on `listen` with the cluster's config and certificates and
    /// the data directory `data`; returns it with its gRPC and HTTP addresses.
    fn launch(&self, listen: SocketAddr, data: &std::path::Path) -> (Process, SocketAddr, Option<SocketAddr>) {
        let config_file = self.dir.join("vantage.toml");
        let mut command = Command::new(binary("vantage-coordinator"));
        command.envs(self.env.iter().cloned()).args([
            "serve",
            "--listen",
            &listen.to_string(),
            "--http-listen",
            &SocketAddr::new(self.bridge_ip, 0).to_string(),
            "--data-dir",
            path(data),
            "--config",
            path(&config_file),
            "--tls-cert",
            path(&self.pki.join("coordinator.pem")),
            "--tls-key",
            path(&self.pki.join("coordinator.key")),
            "--client-ca",
            path(&self.pki.join("ca.pem")),
            "--admin-token-file",
            path(&self.pki.join("admin.token")),
            "--read-token-file",
            path(&self.pki.join("read.token")),
        ]);
        let name = if *data == self.data_dir() { "vantage-coordinator" } else { "vantage-coordinator (twin)" };
        let process = Process::start_with(&mut command, name);
        let (addr, http) = crate::listening(&process);
        let addr = addr.parse().unwrap_or_else(|_| panic!("no address in {addr:?}"));
        (process, addr, http.parse().ok())
    }

    /// Starts (or, after [`Cluster::kill_twin`], restarts on the same address and data) the
    /// pair's second coordinator: the same config file, certificate and CA, its own data.
    pub fn start_twin(&mut self) {
        let (process, addr, _) = self.launch(self.twin_addr, &self.dir.join("data-twin"));
        self.twin_addr = addr;
        self.twin = Some(process);
    }

    /// SIGKILLs the twin.
    pub fn kill_twin(&mut self) {
        if let Some(mut p) = self.twin.take() {
            p.kill();
        }
    }

    pub fn twin_url(&self) -> String {
        format!("https://{}", self.twin_addr)
    }

    /// SIGKILLs the coordinator.
    pub fn kill_coordinator(&mut self) {
        if let Some(mut p) = self.coordinator.take() {
            p.kill();
        }
    }

    /// Starts the coordinator again on the same address and data.
    pub fn restart_coordinator(&mut self) {
        self.launch_coordinator(self.coordinator_addr);
    }

    /// Starts the agent of region `i` in its namespace, with its own certificate.
    pub fn start_agent(&mut self, i: usize) {
        let (cert, key) = self.agent_cert(i);
        let process = self.spawn_agent(i, &cert, &key, &[]);
        process.wait_for_line(|l| l.contains("assignment received"));
        self.agents[i] = Some(process);
    }

    /// The certificate and key `pki issue-agent` made for region `i`'s agent.
    pub fn agent_cert(&self, i: usize) -> (PathBuf, PathBuf) {
        let stem = format!("agent-agent-{}", self.regions[i]);
        (self.pki.join(format!("{stem}.pem")), self.pki.join(format!("{stem}.key")))
    }

    /// Starts an agent in region `i`'s namespace with the given certificate and extra arguments,
    /// without waiting for anything.
    pub fn spawn_agent(&self, i: usize, cert: &std::path::Path, key: &std::path::Path, extra: &[&str]) -> Process {
        let ns = self.namespace(i);
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &ns]).arg(binary("vantage-agent")).args([
            "run",
            "--coordinator",
            &self.coordinator_url(),
            "--cert",
            path(cert),
            "--key",
            path(key),
            "--coordinator-ca",
            path(&self.pki.join("ca.pem")),
            "--ca-file",
            path(&self.ca_file),
        ]);
        command.args(extra).envs(self.env.iter().cloned());
        for t in &self.targets {
            command.args(["--resolve", &format!("{}:{}", t.host, self.bridge_ip)]);
        }
        Process::start_with(&mut command, &format!("agent-{}", self.regions[i]))
    }

    pub fn start_agents(&mut self) {
        for i in 0..self.regions.len() {
            self.start_agent(i);
        }
    }

    /// SIGKILLs the agent of region `i` (`ip netns exec` execs it, so the pid is the agent's).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut p) = self.agents[i].take() {
            p.kill();
        }
    }

    /// Drops every packet from region `i` to target `t` (an outage seen from one region only).
    pub fn cut_off(&self, i: usize, t: usize) {
        let ns = self.namespace(i);
        let port = self.targets[t].port.to_string();
        sh(&["ip", "netns", "exec", &ns, "nft", "add", "table", "inet", "vantage_e2e"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "add",
            "chain",
            "inet",
            "vantage_e2e",
            "out",
            "{ type filter hook output priority 0 ; }",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "add",
            "rule",
            "inet",
            "vantage_e2e",
            "out",
            "tcp",
            "dport",
            &port,
            "drop",
        ]);
    }

    /// Lets region `i` reach every target again (undoes [`Cluster::cut_off`]).
    pub fn restore(&self, i: usize) {
        sh(&["ip", "netns", "exec", &self.namespace(i), "nft", "delete", "table", "inet", "vantage_e2e"]);
    }

    /// The coordinator's config file (written by [`Cluster::start_coordinator`]).
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("vantage.toml")
    }

    /// Where the coordinator keeps its database (created when it first starts).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn coordinator_url(&self) -> String {
        format!("https://{}", self.coordinator_addr)
    }

    /// grpcurl's TLS arguments: the CA, and the admin certificate.
    pub fn admin_tls(&self) -> Vec<String> {
        ["-cacert", "ca.pem", "-cert", "admin-admin.pem", "-key", "admin-admin.key"]
            .iter()
            .map(|a| if a.contains('.') { path(&self.pki.join(a)).to_owned() } else { (*a).to_owned() })
            .collect()
    }

    /// `grpcurl` (as admin) `… vantage.v1.Coordinator/METHOD` with `body`, as JSON.
    pub fn call(&self, method: &str, body: &str) -> serde_json::Value {
        self.call_at(self.coordinator_addr, method, body)
    }

    /// `call`, to the coordinator at `addr` (the twin's, say).
    pub fn call_at(&self, addr: SocketAddr, method: &str, body: &str) -> serde_json::Value {
        let mut args = self.admin_tls();
        args.extend(["-d".into(), body.into(), addr.to_string()]);
        args.push(format!("vantage.v1.Coordinator/{method}"));
        let out = crate::grpcurl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: {e}: {out}"))
    }

    /// The operator CLI's credentials: the CA and the admin certificate.
    pub fn cli_credentials(&self) -> Vec<String> {
        let mut args = vec!["--addr".to_owned(), self.coordinator_url()];
        for (flag, file) in [("--ca", "ca.pem"), ("--cert", "admin-admin.pem"), ("--key", "admin-admin.key")] {
            args.extend([flag.to_owned(), path(&self.pki.join(file)).to_owned()]);
        }
        args
    }

    /// A `status --watch --json` process: one JSON line per status change.
    pub fn watch(&self) -> Process {
        let mut args = vec!["status".to_owned(), "--watch".into(), "--json".into()];
        args.extend(self.cli_credentials());
        Process::start("vantage-coordinator", &args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            if let Some(mut p) = agent.take() {
                p.kill();
            }
        }
        self.kill_coordinator();
        self.kill_twin();
        for i in 0..self.regions.len() {
            let _ = Command::new("ip").args(["netns", "delete", &self.namespace(i)]).status();
        }
        let _ = Command::new("ip").args(["link", "delete", &self.bridge]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
