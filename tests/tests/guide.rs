//! The README's guide "Deploy agents to cloud VMs in different regions", run as written: every
//! `sh` block of that section, in order, with `bash -euo pipefail`, on the host its marker
//! (`<!-- guide: coordinator -->`, `vm`, `, background`, `, check`) names. The hosts are network
//! namespaces on a private bridge: the coordinator and one VM per region, each in a directory of
//! its own (its `/etc/vantage`). The guide's names resolve there through a DNS server on the
//! bridge, `scp` copies into a VM's directory, and the binaries come first on PATH. Blocks marked
//! `background` are started with `exec` and awaited by their log lines; before the first `check`
//! block every target is awaited, judged by every region; what the checks print is then asserted.
//! The watched site is `openssl s_server` with a certificate from the guide's own CA, which the
//! agents trust through the guide's `--ca-file ca.pem` (they know no other private root).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use vantage_e2e::lan::Lan;
use vantage_e2e::{Process, binary};
use vantage_shared::lab::dns::{self, Answer};

const SECTION: &str = "### Deploy agents to cloud VMs in different regions";
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// The repository's README.md, or the file `GUIDE_README` names (to see an edited guide fail).
fn readme() -> String {
    let path =
        std::env::var("GUIDE_README").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md").into());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    /// The names the other blocks use; run before each of them.
    Vars,
    Coordinator,
    /// Every agent VM, with `REGION` set to its region.
    Vm,
}

#[derive(Debug)]
struct Block {
    host: Host,
    background: bool,
    check: bool,
    /// README.md's line number of the block's first command.
    line: usize,
    text: String,
}

fn parse_marker(spec: &str, line: usize) -> (Host, bool, bool) {
    let mut words = spec.split(',').map(str::trim);
    let host = match words.next() {
        Some("vars") => Host::Vars,
        Some("coordinator") => Host::Coordinator,
        Some("vm") => Host::Vm,
        other => panic!("README.md:{line}: unknown guide host {other:?}"),
    };
    let (mut background, mut check) = (false, false);
    for word in words {
        match word {
            "background" => background = true,
            "check" => check = true,
            other => panic!("README.md:{line}: unknown guide flag {other:?}"),
        }
    }
    (host, background, check)
}

/// The guide's blocks, in order. Every `sh` block in the section must carry a marker: no command
/// the guide shows escapes this test.
fn guide_blocks(readme: &str) -> Vec<Block> {
    let mut lines = readme.lines().enumerate().skip_while(|(_, l)| *l != SECTION);
    assert!(lines.next().is_some(), "README.md has the section {SECTION:?}");
    let mut blocks = Vec::new();
    let mut marker: Option<(Host, bool, bool)> = None;
    let mut open: Option<Block> = None;
    let mut other_fence = false;
    for (i, line) in lines {
        let n = i + 1;
        if let Some(block) = open.as_mut() {
            if line.starts_with("```") {
                blocks.extend(open.take());
            } else {
                block.text.push_str(line);
                block.text.push('\n');
            }
            continue;
        }
        if other_fence {
            other_fence = !line.starts_with("```");
            continue;
        }
        if line.starts_with("## ") || line.starts_with("### ") {
            break;
        }
        if let Some(spec) = line.strip_prefix("<!-- guide:").and_then(|r| r.strip_suffix("-->")) {
            marker = Some(parse_marker(spec.trim(), n));
        } else if line.starts_with("```") {
            match marker.take() {
                Some((host, background, check)) => {
                    assert_eq!(line, "```sh", "README.md:{n}: a guide block is a ```sh block");
                    open = Some(Block { host, background, check, line: n + 1, text: String::new() });
                }
                None => {
                    assert_ne!(line, "```sh", "README.md:{n}: this sh block has no <!-- guide: … --> marker");
                    other_fence = true;
                }
            }
        } else {
            assert!(marker.is_none() || line.trim().is_empty(), "README.md:{n}: a guide marker must precede its block");
        }
    }
    assert!(open.is_none() && marker.is_none(), "the guide ends inside a block or after a marker");
    blocks
}

/// `scp` on the test's hosts: `[USER@]HOST:/etc/vantage/DIR/` is DIR in the directory of the VM
/// called HOST. The directory must exist, as for the real scp.
const SCP: &str = r#"#!/bin/bash
set -euo pipefail
files=()
for a in "$@"; do case "$a" in -*) ;; *) files+=("$a") ;; esac; done
dest=${files[-1]}; unset 'files[-1]'
host=${dest%%:*}; host=${host#*@}; path=${dest#*:}
[ -d "$GUIDE_VMS/$host" ] || { echo "ssh: Could not resolve hostname $host" >&2; exit 255; }
case "$path" in /etc/vantage/*) ;; *) echo "scp (test): only /etc/vantage/ exists on $host" >&2; exit 1 ;; esac
cp -- "${files[@]}" "$GUIDE_VMS/$host/${path#/etc/vantage/}"
"#;

/// The machine the guide runs on: host 0 is the coordinator, host 1 + i the VM of `REGIONS[i]`.
struct World {
    lan: Lan,
    dir: PathBuf,
    path: String,
    vars: String,
}

impl World {
    fn host_dir(&self, host: usize) -> PathBuf {
        match host {
            0 => self.dir.join("coordinator"),
            _ => self.dir.join("vms").join(format!("{}-vm", REGIONS[host - 1])),
        }
    }

    fn name(host: usize) -> String {
        match host {
            0 => "the coordinator".into(),
            _ => format!("{}-vm", REGIONS[host - 1]),
        }
    }

    /// `bash -euo pipefail` on `host`, in its directory, with the guide's names set first.
    fn bash(&self, host: usize, text: &str) -> Command {
        let region = if host == 0 { String::new() } else { format!("REGION={}\n", REGIONS[host - 1]) };
        let script = format!("{}{region}{text}", self.vars);
        let mut command = self.lan.command(host, "bash");
        command
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(self.host_dir(host))
            .env("PATH", &self.path)
            .env("GUIDE_VMS", self.dir.join("vms"))
            .env("NO_COLOR", "1");
        command
    }

    /// Runs a block to completion; prints it and what it printed, as a transcript.
    fn run(&self, host: usize, block: &Block) -> String {
        let out = self.bash(host, &block.text).output().expect("bash runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("--- on {} (README.md:{})", World::name(host), block.line);
        for line in block.text.lines() {
            println!("$ {line}");
        }
        print!("{stdout}{stderr}");
        assert!(
            out.status.success(),
            "README.md:{}: the guide's block failed on {}:\n{}\n{stdout}{stderr}",
            block.line,
            World::name(host),
            block.text
        );
        stdout.into_owned()
    }

    /// Starts a long-running block (`exec`, so stopping it stops the program) and waits for its
    /// log line saying it is ready.
    fn start(&self, host: usize, block: &Block, ready: &str) -> Process {
        let text = format!("exec {}", block.text.trim_start());
        let process = Process::start_with(&mut self.bash(host, &text), &World::name(host));
        let line = process.wait_for_line(|l| l.contains(ready));
        println!("--- on {} (README.md:{}), in the background\n{}\n{line}", World::name(host), block.line, text);
        process
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_checked(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `https://HOST[:PORT]/…` as host and port.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("https://").unwrap_or_else(|| panic!("SITE is an https URL: {url}"));
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().expect("a port")),
        None => (authority.to_owned(), 443),
    }
}

/// The watched site: a certificate from the guide's CA (made with openssl, as a site's admin
/// would), served by `openssl s_server` on the bridge.
fn serve_site(world: &World, host: &str, port: u16) -> Process {
    let ca = world.host_dir(0).join("pki");
    let (cert, key) = (world.dir.join("site.pem"), world.dir.join("site.key"));
    let san = format!("subjectAltName=DNS:{host}");
    run_checked(
        Command::new("openssl")
            .args(["req", "-new", "-x509", "-days", "90", "-nodes"])
            .args([
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-subj",
                &format!("/CN={host}"),
                "-addext",
                &san,
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ])
            .arg("-CA")
            .arg(ca.join("ca.pem"))
            .arg("-CAkey")
            .arg(ca.join("ca.key"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let mut command = Command::new("openssl");
    command.args(["s_server", "-www", "-accept", &format!("{}:{port}", world.lan.gateway)]).arg("-cert").arg(&cert);
    command.arg("-key").arg(&key);
    let site = Process::start_with(&mut command, host);
    site.wait_for_line(|l| l.starts_with("ACCEPT"));
    site
}

#[test]
fn the_deployment_guide_brings_three_regions_to_report() {
    let blocks = guide_blocks(&readme());
    let vars: Vec<&Block> = blocks.iter().filter(|b| b.host == Host::Vars).collect();
    assert_eq!(vars.len(), 1, "the guide names its variables in one block");
    for line in vars[0].text.lines() {
        let code = line.split('#').next().unwrap_or_default().trim();
        assert!(code.is_empty() || code.split_once('=').is_some_and(|(k, _)| !k.contains(' ')), "not a name: {line}");
    }

    let lan = Lan::new(1 + REGIONS.len());
    let dir = std::env::temp_dir().join(format!("vantage-guide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let shims = dir.join("bin");
    std::fs::create_dir_all(&shims).expect("temp dir");
    std::fs::write(shims.join("scp"), SCP).expect("scp");
    std::fs::set_permissions(shims.join("scp"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let bin = binary("vantage-coordinator").parent().expect("target dir").to_path_buf();
    assert!(binary("vantage-agent").starts_with(&bin));
    let path = format!("{}:{}:{}", shims.display(), bin.display(), std::env::var("PATH").unwrap_or_default());
    let world = World { lan, dir, path, vars: vars[0].text.clone() };
    for host in 0..=REGIONS.len() {
        std::fs::create_dir_all(world.host_dir(host)).expect("host dir");
    }

    // The guide's names resolve on every host: the coordinator's to host 0, the site's to the bridge.
    let names = run_checked(&mut world.bash(0, "printf '%s\\n' \"$COORDINATOR\" \"$SITE\""));
    let (coordinator, site_url) = names.trim().split_once('\n').expect("COORDINATOR and SITE");
    let (site_host, site_port) = host_port(site_url);
    let fqdn = |name: &str| format!("{}.", name.to_ascii_lowercase());
    let zone = HashMap::from([
        (fqdn(coordinator), Answer::Addresses(vec![world.lan.addr(0)])),
        (fqdn(&site_host), Answer::Addresses(vec![IpAddr::V4(world.lan.gateway)])),
    ]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let socket = runtime.block_on(tokio::net::UdpSocket::bind((world.lan.gateway, 53))).expect("DNS on the bridge");
    runtime.spawn(dns::serve(socket, Arc::new(zone)));
    world.lan.set_nameserver(IpAddr::V4(world.lan.gateway));

    let mut running: Vec<Process> = Vec::new();
    let mut site: Option<Process> = None;
    let mut watch: Option<Process> = None;
    let (mut agents_listed, mut status_shown) = (None, None);
    let (mut coordinators, mut agents) = (0, 0);
    for block in blocks.iter().filter(|b| b.host != Host::Vars) {
        let hosts: Vec<usize> = match block.host {
            Host::Coordinator => vec![0],
            _ => (1..=REGIONS.len()).collect(),
        };
        if block.background {
            for host in hosts {
                if host == 0 {
                    coordinators += 1;
                    running.push(world.start(host, block, "coordinator listening"));
                } else {
                    if site.is_none() {
                        site = Some(serve_site(&world, &site_host, site_port));
                    }
                    agents += 1;
                    running.push(world.start(host, block, "assignment received"));
                }
            }
            continue;
        }
        if block.check && watch.is_none() {
            watch = Some(wait_until_every_region_judges(&world));
        }
        for host in hosts {
            let out = world.run(host, block);
            if block.check && block.text.contains("ListAgents") {
                agents_listed = Some(out);
            } else if block.check && block.text.contains("vantage-coordinator status") {
                status_shown = Some(out);
            }
        }
    }
    assert_eq!((coordinators, agents), (1, REGIONS.len()), "the guide starts one coordinator and an agent per VM");

    // What the guide says the checks show: three agents in three regions...
    let listed = agents_listed.expect("the guide checks ListAgents");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap_or_else(|e| panic!("{e}: {listed}"));
    let list = listed["agents"].as_array().cloned().unwrap_or_default();
    let regions: BTreeSet<&str> = list.iter().filter_map(|a| a["region"].as_str()).collect();
    assert_eq!(regions, BTreeSet::from(REGIONS), "{listed}");
    assert_eq!(list.len(), REGIONS.len(), "{listed}");
    assert!(list.iter().all(|a| a["connected"] == true), "{listed}");
    // ...and every target of the guide's vantage.toml (the site, the coordinator) up in all three.
    let shown = status_shown.expect("the guide checks the status");
    let rows: Vec<Vec<&str>> = shown.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), targets(&world), "{shown}");
    assert!(rows.iter().any(|r| r[0] == site_url), "{shown}");
    assert!(rows.iter().any(|r| r[0] == format!("https://{coordinator}:7700/")), "{shown}");
    for row in &rows {
        assert_eq!(row[1..3], ["UP", "0/3"], "{shown}");
    }
    drop((watch, running, site));
}

/// How many targets the guide's `vantage.toml` names.
fn targets(world: &World) -> usize {
    let config = std::fs::read_to_string(world.host_dir(0).join("vantage.toml")).expect("the guide wrote vantage.toml");
    config.lines().filter(|l| l.trim() == "[[target]]").count()
}

/// Waits (with `status --watch --json` on the coordinator, using the guide's CA and read token)
/// until every target of the guide's `vantage.toml` has an opinion from every region.
fn wait_until_every_region_judges(world: &World) -> Process {
    let targets = targets(world);
    let text = "exec vantage-coordinator status --watch --json --addr \"https://$COORDINATOR:7700\" \
                --ca pki/ca.pem --token-file pki/read.token";
    let watch = Process::start_with(&mut world.bash(0, text), "status --watch");
    let judged = std::cell::RefCell::new(HashMap::new());
    watch.wait_for_line(|l| {
        let Ok(status) = serde_json::from_str::<serde_json::Value>(l) else { return false };
        let known =
            status["regions"].as_array().map_or(0, |rs| rs.iter().filter(|r| r["opinion"] != "unknown").count());
        let mut judged = judged.borrow_mut();
        judged.insert(status["url"].as_str().unwrap_or_default().to_owned(), known);
        judged.len() == targets && judged.values().all(|&n| n == REGIONS.len())
    });
    watch
}

#[test]
#[should_panic(expected = "has no <!-- guide: … --> marker")]
fn a_shell_block_without_a_host_in_the_guide_is_refused() {
    let readme = format!("{SECTION}\n\n<!-- guide: vars -->\n```sh\nA=1\n```\n\n```sh\nrm -rf pki\n```\n## Next\n");
    guide_blocks(&readme);
}
