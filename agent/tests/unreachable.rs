//! `tcp_unreachable` needs a network with no route to the target. A fresh network namespace has
//! exactly that (only a loopback device), so the probe runs inside one; no packet leaves it.

mod support;

use std::process::Command;

use support::{agent_under, strings};

struct Netns(String);

impl Netns {
    fn create() -> Netns {
        let name = format!("vantage-unreach-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("`ip` from iproute2 runs (.ci/setup installs it)");
        assert!(status.success(), "`ip netns add` needs root");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

#[test]
fn no_route_to_the_address_is_tcp_unreachable() {
    let ns = Netns::create();
    let mut args = strings(&["check", "https://192.0.2.10/", "--json", "--timeout", "3s"]);
    let run = agent_under(&["ip", "netns", "exec", &ns.0], &args);
    let json = run.json();
    assert_eq!(json["failure"]["code"], "tcp_unreachable", "{}", run.stdout);
    assert_eq!(json["failure"]["stage"], "connect");
    assert_eq!(run.code, 2);

    // The same for an IPv6 literal.
    args = strings(&["check", "https://[2001:db8::10]/", "--json", "--timeout", "3s"]);
    let run = agent_under(&["ip", "netns", "exec", &ns.0], &args);
    assert_eq!(run.json()["failure"]["code"], "tcp_unreachable", "{}", run.stdout);
}
