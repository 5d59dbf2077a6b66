//! A private network of "hosts" on one machine: a bridge with a /24, one network namespace per
//! host, and optionally a nameserver for all of them (`/etc/netns/<namespace>/resolv.conf`, which
//! `ip netns exec` puts in place of `/etc/resolv.conf`). Everything is removed on drop.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cluster::sh;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Lan {
    bridge: String,
    /// The bridge's own address, reachable from every host (servers the test runs live here).
    pub gateway: Ipv4Addr,
    namespaces: Vec<String>,
}

impl Lan {
    /// A bridge and `hosts` namespaces; host `i` has the address `.10 + i`. The /24s are taken
    /// from 10.200–249.x, apart from [`crate::cluster::Cluster`]'s.
    pub fn new(hosts: usize) -> Lan {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("{:04x}", (pid.wrapping_mul(37).wrapping_add(n * 7907)) & 0xffff);
        let net = [10, 200 + (n % 50) as u8, (pid % 250) as u8];
        let gateway = Ipv4Addr::new(net[0], net[1], net[2], 1);
        let bridge = format!("vlbr{id}");
        sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
        let mut lan = Lan { bridge, gateway, namespaces: Vec::new() };
        sh(&["ip", "addr", "add", &format!("{gateway}/24"), "dev", &lan.bridge]);
        sh(&["ip", "link", "set", &lan.bridge, "up"]);
        for i in 0..hosts {
            let ns = format!("vl{id}h{i}");
            let (outer, inner) = (format!("vl{id}h{i}a"), format!("vl{id}h{i}b"));
            sh(&["ip", "netns", "add", &ns]);
            lan.namespaces.push(ns.clone());
            sh(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            sh(&["ip", "link", "set", &inner, "netns", &ns]);
            sh(&["ip", "link", "set", &outer, "master", &lan.bridge]);
            sh(&["ip", "link", "set", &outer, "up"]);
            let addr = Ipv4Addr::new(net[0], net[1], net[2], 10 + i as u8);
            sh(&["ip", "-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inner]);
            sh(&["ip", "-n", &ns, "link", "set", &inner, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        lan
    }

    /// Host `i`'s network namespace (for `ip netns exec`).
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> IpAddr {
        let [a, b, c, _] = self.gateway.octets();
        IpAddr::V4(Ipv4Addr::new(a, b, c, 10 + i as u8))
    }

    /// Makes `nameserver` every host's only DNS server.
    pub fn set_nameserver(&self, nameserver: IpAddr) {
        for ns in &self.namespaces {
            let dir = etc_dir(ns);
            std::fs::create_dir_all(&dir).expect("/etc/netns/<namespace>");
            std::fs::write(dir.join("resolv.conf"), format!("nameserver {nameserver}\n")).expect("resolv.conf");
        }
    }

    /// `ip netns exec <host i> PROGRAM`, to which arguments and settings can be added.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.namespace(i), program]);
        command
    }
}

fn etc_dir(namespace: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(namespace)
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
            let _ = std::fs::remove_dir_all(etc_dir(ns));
        }
        // Only if no other namespace has settings there.
        let _ = std::fs::remove_dir("/etc/netns");
        let _ = Command::new("ip").args(["link", "delete", &self.bridge]).status();
    }
}
