//! Targets from files (`[[target_files]]`) with the real coordinator and agent: a file added,
//! changed, broken (its targets kept, the error logged and counted) and removed, each seen by the
//! agent's assignment; and the per-pod certificate recipe: a name that resolves to several
//! addresses (a Kubernetes headless Service), from a real DNS server, with `all_backends`, has
//! every address probed, so the one pod serving an expired certificate is found.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use vantage_e2e::Process;
use vantage_e2e::alert_world::World;
use vantage_e2e::reload::{metric, targets, wait_for_verdict, watch};
use vantage_shared::lab::dns::{self, Answer};
use vantage_shared::lab::pki::LeafSpec;
use vantage_shared::lab::server::{self, Reply};

const CONFIG: &str = "[[target_files]]\nfiles = [\"sd/*.json\", \"sd/*.toml\"]\nrefresh = \"1s\"\n";

#[test]
fn a_target_file_added_changed_broken_and_removed() {
    let mut w = World::new("discovery-files");
    let (a, b) = (w.add_site("a", 90), w.add_site("b", 90));
    let (url_a, url_b) = (w.sites[a].url.clone(), w.sites[b].url.clone());
    std::fs::create_dir_all(w.dir.join("sd")).unwrap();
    let config = w.write("vantage.toml", CONFIG);
    w.start_coordinator(&config);
    w.start_agent(0);
    let (addr, http) = (w.addr.unwrap().to_string(), w.http.clone().unwrap());
    let agent = w.agents[0].as_ref().unwrap();
    let status = watch(&addr);
    let file = w.dir.join("sd/web.json");
    let source = format!("file:{}", file.display());

    // Added: a group's settings apply to its URL; the agent is assigned it and probes it.
    let group = |urls: &[&str]| {
        let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            r#"[{{"targets": [{}], "labels": {{"team": "web"}}, "interval": "1s", "timeout": "500ms"}}]"#,
            urls.join(", ")
        )
    };
    std::fs::write(&file, group(&[&url_a])).unwrap();
    agent.wait_for_line(|l| l.contains("assignment changed") && l.contains("targets=1"));
    wait_for_verdict(&status, &url_a, "UP");
    assert_eq!(targets(&w), [(url_a.clone(), source.clone())]);
    let list = w.call("ListTargets", "{}");
    assert_eq!(list["targets"][0]["labels"]["team"], "web");

    // Changed.
    std::fs::write(&file, group(&[&url_a, &url_b])).unwrap();
    agent.wait_for_line(|l| l.contains("assignment changed") && l.contains("targets=2"));
    wait_for_verdict(&status, &url_b, "UP");
    assert_eq!(targets(&w), [(url_a.clone(), source.clone()), (url_b.clone(), source.clone())]);

    // Broken: skipped with an error, its targets kept, the metric counts it.
    std::fs::write(&file, group(&[&url_a, &url_b]).replace("\"1s\"", "\"soon\"")).unwrap();
    let line = w.coordinator().wait_for_line(|l| l.contains("target file skipped"));
    assert!(
        line.contains("its earlier targets are kept") && line.contains("web.json: group 1: invalid duration"),
        "{line}"
    );
    assert_eq!(metric(&http, "vantage_target_files_failing", None), Some(1.0));
    assert_eq!(targets(&w).len(), 2, "the broken file's targets stay");
    assert_eq!(metric(&http, "vantage_config_last_reload_successful", None), Some(1.0), "the config itself is fine");

    // Removed: its targets go, and the agent stops probing them.
    std::fs::remove_file(&file).unwrap();
    w.coordinator().wait_for_line(|l| l.contains("target file gone"));
    agent.wait_for_line(|l| l.contains("assignment changed") && l.contains("targets=0"));
    assert!(targets(&w).is_empty());
    assert_eq!(metric(&http, "vantage_target_files_failing", None), Some(0.0));
}

#[test]
fn a_headless_service_name_with_all_backends_has_every_pod_probed() {
    let mut w = World::new("discovery-pods");
    // Two pods, each with its own certificate, on one port; the second's has expired.
    let host = "shop.vantage.test";
    let names = [host];
    let (good, expired) = (
        w.ca.identity(&LeafSpec::new(&names), &[]).unwrap(),
        w.ca.identity(&LeafSpec::new(&names).valid(-92, -2), &[]).unwrap(),
    );
    let (first, second) = w.runtime.block_on(async {
        for _ in 0..20 {
            let first = server::bind("127.0.0.2", 0).await.unwrap();
            let port = first.local_addr().unwrap().port();
            if let Ok(second) = server::bind("127.0.0.3", port).await {
                return (first, second);
            }
        }
        panic!("no port free on both 127.0.0.2 and 127.0.0.3");
    });
    let port = first.local_addr().unwrap().port();
    let reply = Reply::Page { status: 200, body: "ok" };
    w.runtime.spawn(server::serve_tls(first, server::server_config(&good), reply.clone()));
    w.runtime.spawn(server::serve_tls(second, server::server_config(&expired), reply));
    // The headless Service's name answers with every pod's address.
    let pods: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
    let zone: HashMap<String, Answer> = [(format!("{host}."), Answer::Addresses(pods))].into();
    let socket = w.runtime.block_on(tokio::net::UdpSocket::bind("127.0.0.1:0")).unwrap();
    let nameserver = socket.local_addr().unwrap();
    w.runtime.spawn(dns::serve(socket, Arc::new(zone)));

    std::fs::create_dir_all(w.dir.join("sd")).unwrap();
    let url = format!("https://{host}:{port}/");
    let file = format!(
        "[[group]]\ntargets = [\"{url}\"]\nall_backends = true\ninterval = \"1s\"\ntimeout = \"500ms\"\nlabels = {{ app = \"shop\" }}\n"
    );
    std::fs::write(w.dir.join("sd/shop.toml"), file).unwrap();
    let config = w.write("vantage.toml", CONFIG);
    w.start_coordinator(&config);
    let agent = Process::start(
        "vantage-agent",
        &[
            "run",
            "--insecure",
            "--coordinator",
            &format!("http://{}", w.addr.unwrap()),
            "--region",
            "eu-west",
            "--name",
            "agent-eu-west",
            "--ca-file",
            w.dir.join("ca.pem").to_str().unwrap(),
            "--nameserver",
            &nameserver.to_string(),
        ],
    );
    agent.wait_for_line(|l| l.contains("assignment received") && l.contains("targets=1"));
    let status = wait_for_verdict(&watch(&w.addr.unwrap().to_string()), &url, "DEGRADED");
    let region = &status["regions"][0];
    assert_eq!(
        (region["opinion"].as_str(), region["failure_code"].as_str()),
        (Some("partial"), Some("cert_expired")),
        "{status}"
    );
    // Every pod was probed: the newest result holds one backend per address, the expired one
    // failing.
    let history = w.call("GetHistory", &format!(r#"{{"url": "{url}", "limit": 1}}"#));
    let backends = history["results"][0]["result"]["backends"].as_array().cloned().unwrap_or_default();
    let seen: Vec<(String, String)> = backends
        .iter()
        .map(|b| {
            let address = b["address"].as_str().unwrap_or_default().to_owned();
            (address, b["failure"]["code"].as_str().unwrap_or("ok").to_owned())
        })
        .collect();
    assert_eq!(seen.len(), 2, "{history}");
    assert!(seen.iter().any(|(a, code)| a.contains("127.0.0.2") && code == "ok"), "{seen:?}");
    assert!(seen.iter().any(|(a, code)| a.contains("127.0.0.3") && code.contains("expired")), "{seen:?}");
}
