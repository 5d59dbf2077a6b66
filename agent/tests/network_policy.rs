//! `--deny-network` / `--allow-network` through the real `vantage-agent check`: a metadata
//! address is refused before any packet leaves (counted by nftables in a network namespace of
//! its own), a denied lab server is `target_denied` while the same server answers when allowed,
//! and a redirect into a denied network is refused too.

mod support;

use std::process::Command;

use support::{agent_under, check, strings};
use vantage_shared::failure::FailureCode;
use vantage_shared::lab::server::{self, Reply};

/// A network namespace with 169.254.169.254 on its loopback and an nftables counter of every
/// packet sent to it: a stand-in for a cloud VM's metadata endpoint that shows whether the agent
/// sent anything there.
struct MetadataNs(String);

impl MetadataNs {
    fn create() -> MetadataNs {
        let name = format!("vantage-deny-{}", std::process::id());
        let ns = MetadataNs(name.clone());
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("`ip` from iproute2 runs");
            assert!(status.success(), "ip {args:?} (needs root)");
        };
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "addr", "add", "169.254.169.254/32", "dev", "lo"]);
        let rules = "table inet vantage_test {
            counter to_metadata {}
            chain out {
                type filter hook output priority 0;
                ip daddr 169.254.169.254 counter name to_metadata
            }
        }";
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &name, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft runs");
        std::io::Write::write_all(nft.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
        drop(nft.stdin.take());
        assert!(nft.wait().unwrap().success(), "nft loads the counter");
        ns
    }

    /// Packets sent to 169.254.169.254 from inside the namespace so far.
    fn packets_to_metadata(&self) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list", "counter", "inet", "vantage_test", "to_metadata"])
            .output()
            .expect("nft runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        words
            .find(|w| *w == "packets")
            .and_then(|_| words.next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {text:?}"))
    }

    fn check(&self, args: &[&str]) -> support::Run {
        let mut all = strings(&["check"]);
        all.extend(strings(args));
        agent_under(&["ip", "netns", "exec", &self.0], &all)
    }
}

impl Drop for MetadataNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn assert_denied(run: &support::Run) -> serde_json::Value {
    let json = run.json();
    let code = FailureCode::TargetDenied;
    assert_eq!(json["status"], "down", "{}", run.stdout);
    assert_eq!(json["failure"]["code"], code.as_str(), "{}", run.stdout);
    assert_eq!(json["failure"]["stage"], "dns", "{}", run.stdout);
    assert_eq!(json["failure"]["message"], code.cause());
    assert_eq!(json["failure"]["hint"], code.hint());
    assert_eq!(run.code, 2, "a denied target is critical");
    json
}

#[test]
fn the_metadata_endpoint_is_denied_before_any_packet_is_sent() {
    let ns = MetadataNs::create();
    let url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
    let run = ns.check(&[url, "--json", "--timeout", "3s"]);
    let json = assert_denied(&run);
    assert!(json["failure"]["detail"].as_str().unwrap().contains("169.254.169.254"), "{}", run.stdout);
    assert!(json["timings_ms"]["connect"].is_null(), "no connection was attempted: {}", run.stdout);
    assert_eq!(ns.packets_to_metadata(), 0, "nothing was sent to the metadata address");

    // IPv4-mapped IPv6 spelling reaches the same address and is denied as well.
    let run = ns.check(&["http://[::ffff:169.254.169.254]/", "--json", "--timeout", "3s"]);
    assert_denied(&run);
    // AWS's IPv6 metadata endpoint.
    assert_denied(&ns.check(&["http://[fd00:ec2::254]/", "--json", "--timeout", "3s"]));
    assert_eq!(ns.packets_to_metadata(), 0);

    // The counter does see a probe that is allowed there: nothing listens, so it is refused
    // (which is what the denied probes would have done).
    let run = ns.check(&[url, "--json", "--timeout", "3s", "--allow-network", "169.254.169.254/32"]);
    assert_eq!(run.json()["failure"]["code"], "tcp_refused", "{}", run.stdout);
    assert!(ns.packets_to_metadata() > 0, "the allowed probe reached the address");
}

/// A plain HTTP server on `ip` answering with `reply`, on a runtime of its own.
fn serve(runtime: &tokio::runtime::Runtime, ip: &str, reply: Reply) -> std::net::SocketAddr {
    runtime.block_on(async {
        let listener = server::bind(ip, 0).await.expect("binds on loopback");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server::serve_plain(listener, reply));
        addr
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

#[test]
fn a_denied_network_is_target_denied_and_allow_network_lifts_it() {
    let runtime = runtime();
    let addr = serve(&runtime, "127.0.0.2", Reply::Page { status: 200, body: "ok" });
    let url = format!("http://inside.vantage.test:{}/", addr.port());
    let base = vec![url, "--resolve".into(), "inside.vantage.test:127.0.0.2".into(), "--json".into()];
    let with = |extra: &[&str]| {
        let mut args = base.clone();
        args.extend(strings(extra));
        check(&args)
    };

    let run = with(&[]);
    assert_eq!(run.json()["status"], "up", "the server is up: {}", run.stdout);

    let run = with(&["--deny-network", "127.0.0.2/32"]);
    let json = assert_denied(&run);
    let detail = json["failure"]["detail"].as_str().unwrap();
    assert!(detail.contains("inside.vantage.test") && detail.contains("127.0.0.2"), "{detail}");

    let run = with(&["--deny-network", "127.0.0.0/8", "--allow-network", "127.0.0.2/32"]);
    assert_eq!(run.json()["status"], "up", "allowed inside a denied range: {}", run.stdout);

    // From the environment, as a deployment sets it (one value per variable).
    let env_run = |vars: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vantage-agent"))
            .arg("check")
            .args(&base)
            .envs(vars.iter().copied())
            .output()
            .expect("vantage-agent runs");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON on stdout")
    };
    let json = env_run(&[("VANTAGE_DENY_NETWORK", "127.0.0.0/8")]);
    assert_eq!(json["failure"]["code"], "target_denied", "{json}");
    let json = env_run(&[("VANTAGE_DENY_NETWORK", "127.0.0.0/8"), ("VANTAGE_ALLOW_NETWORK", "127.0.0.2")]);
    assert_eq!(json["status"], "up", "{json}");
}

#[test]
fn a_redirect_into_a_denied_network_is_target_denied() {
    let runtime = runtime();
    let inner = serve(&runtime, "127.0.0.2", Reply::Page { status: 200, body: "inside" });
    let to = format!("http://inside.vantage.test:{}/", inner.port());
    let outer = serve(&runtime, "127.0.0.1", Reply::RedirectTo(to.clone()));
    let base = vec![
        format!("http://outside.vantage.test:{}/", outer.port()),
        "--resolve".into(),
        "outside.vantage.test:127.0.0.1".into(),
        "--resolve".into(),
        "inside.vantage.test:127.0.0.2".into(),
        "--json".into(),
    ];
    let with = |extra: &[&str]| {
        let mut args = base.clone();
        args.extend(strings(extra));
        check(&args)
    };

    let run = with(&[]);
    let json = run.json();
    assert_eq!(json["status"], "up", "the redirect is followed: {}", run.stdout);
    assert_eq!(json["http"]["final_url"], to.as_str());

    let run = with(&["--deny-network", "127.0.0.2/32"]);
    let json = assert_denied(&run);
    let detail = json["failure"]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("following the redirect to {to}")), "{detail}");
}
