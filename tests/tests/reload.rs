//! Live reload with the real coordinator and agents: `SIGHUP` (sent by the systemd unit's own
//! `ExecReload=` line) and `POST /-/reload` add, change and remove targets, and the agent starts
//! and stops probing them; a target added through the API is left alone; a broken config keeps the
//! running one and flips `vantage_config_last_reload_successful` to 0 until it is fixed; a reload
//! swaps the channel an alert goes to; and under `--http-auth` only the admin token reloads.

use vantage_e2e::Process;
use vantage_e2e::alert_world::{World, kind};
use vantage_e2e::receiver::Receiver;
use vantage_e2e::reload::{curl, metric, systemctl_reload, targets, wait_for_verdict, watch};

fn target(url: &str, extra: &str) -> String {
    format!("[[target]]\nurl = \"{url}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n{extra}\n")
}

fn agent(w: &World) -> &Process {
    w.agents[0].as_ref().expect("the agent runs")
}

#[test]
fn sighup_and_post_reload_add_change_and_remove_targets_and_a_broken_config_changes_nothing() {
    let mut w = World::new("reload-targets");
    let (a, b) = (w.add_site("a", 90), w.add_site("b", 90));
    let (url_a, url_b) = (w.sites[a].url.clone(), w.sites[b].url.clone());
    let config = w.write("vantage.toml", &target(&url_a, ""));
    w.start_coordinator(&config);
    w.start_agent(0);
    let (addr, http) = (w.addr.unwrap().to_string(), w.http.clone().unwrap());
    let reload = format!("{http}/-/reload");
    let status = watch(&addr);
    wait_for_verdict(&status, &url_a, "UP");
    assert_eq!(metric(&http, "vantage_config_last_reload_successful", None), Some(1.0), "set at start-up");
    let started = metric(&http, "vantage_config_last_reload_success_timestamp_seconds", None).unwrap();
    assert!(started > 1.7e9, "{started}");

    // Added: SIGHUP, as `systemctl reload` sends it. The agent is assigned b and probes it (a
    // verdict needs its results).
    let both = target(&url_a, "") + &target(&url_b, "");
    w.write("vantage.toml", &both);
    systemctl_reload(w.coordinator().pid());
    let line = w.coordinator().wait_for_line(|l| l.contains("config reloaded"));
    assert!(line.contains("2 targets (1 added, 0 changed, 0 removed)"), "{line}");
    agent(&w).wait_for_line(|l| l.contains("assignment changed") && l.contains("targets=2"));
    wait_for_verdict(&status, &url_b, "UP");
    let loaded = metric(&http, "vantage_config_last_reload_success_timestamp_seconds", None).unwrap();
    assert!(loaded >= started, "{loaded} {started}");

    // Broken: the running config stays, one line says why, the metric says so.
    w.write("vantage.toml", &(both.clone() + "[alerts]\nunknown_after = \"soon\"\n"));
    systemctl_reload(w.coordinator().pid());
    let line = w.coordinator().wait_for_line(|l| l.contains("config reload failed"));
    assert!(
        line.contains("the running config is kept")
            && line.contains("vantage.toml:")
            && line.contains("invalid duration"),
        "{line}"
    );
    assert_eq!(metric(&http, "vantage_config_last_reload_successful", None), Some(0.0));
    assert_eq!(metric(&http, "vantage_config_last_reload_success_timestamp_seconds", None), Some(loaded));
    let (code, body) = curl("POST", &reload, None);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("vantage.toml:") && body.contains("invalid duration") && body.lines().count() == 1, "{body}");
    assert_eq!(targets(&w).len(), 2, "the running targets stay");

    // Changed, by POST /-/reload; a target added through the API meanwhile is the API's.
    let api_url = "https://api-added.alerts.test:9/";
    w.call("UpsertTarget", &format!(r#"{{"target": {{"url": "{api_url}", "interval": "5s"}}}}"#));
    w.write("vantage.toml", &(target(&url_a, "") + &target(&url_b, "labels = { team = \"shop\" }")));
    let (code, body) = curl("POST", &reload, None);
    assert_eq!(
        (code, body.trim()),
        (
            200,
            "config reloaded: 2 targets (0 added, 1 changed, 0 removed), 0 channels, 0 routes, 0 silences, 0 heartbeats"
        )
    );
    assert_eq!(metric(&http, "vantage_config_last_reload_successful", None), Some(1.0), "fixed");
    let list = w.call("ListTargets", "{}");
    let b_now = list["targets"].as_array().unwrap().iter().find(|t| t["url"] == url_b.as_str()).unwrap().clone();
    assert_eq!(b_now["labels"]["team"], "shop");

    // Removed: the agent stops probing a, and it leaves the status; the API's target stays.
    w.write("vantage.toml", &target(&url_b, "labels = { team = \"shop\" }"));
    let (code, body) = curl("POST", &reload, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("1 targets (0 added, 0 changed, 1 removed)"), "{body}");
    agent(&w).wait_for_line(|l| l.contains("assignment changed") && l.contains("targets=2"));
    assert_eq!(
        targets(&w),
        [(api_url.to_owned(), "api".to_owned()), (url_b.clone(), "config".to_owned())],
        "a is gone, the API's target stays"
    );
    let statuses = w.call("ListStatus", "{}");
    assert!(!statuses.to_string().contains(&url_a), "{statuses}");

    let (code, body) = curl("GET", &reload, None);
    assert_eq!(code, 405, "{body}");
}

#[test]
fn a_reload_swaps_the_channel_an_alert_goes_to() {
    let receiver = Receiver::start();
    let mut w = World::new("reload-channels");
    let a = w.add_site("a", 90);
    let url = w.sites[a].url.clone();
    let channel = |name: &str| {
        format!(
            "[[channel]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"{}\"\n\n[[route]]\nchannels = [\"{name}\"]\n\n",
            receiver.url(&format!("/{name}"))
        )
    };
    let config = w.write("vantage.toml", &(target(&url, "") + &channel("old")));
    w.start_coordinator(&config);
    w.start_agent(0);
    let status = watch(&w.addr.unwrap().to_string());
    wait_for_verdict(&status, &url, "UP");
    w.stop_site(a);
    receiver.wait_for("down on the old channel", |r| r.path == "/old" && kind(r) == "down");
    w.start_site(a);
    receiver.wait_for("recovered on the old channel", |r| r.path == "/old" && kind(r) == "recovered");
    wait_for_verdict(&status, &url, "UP");

    w.write("vantage.toml", &(target(&url, "") + &channel("new")));
    systemctl_reload(w.coordinator().pid());
    let line = w.coordinator().wait_for_line(|l| l.contains("config reloaded"));
    assert!(line.contains("1 channels, 1 routes"), "{line}");
    w.stop_site(a);
    let down = receiver.wait_for("down on the new channel", |r| r.path == "/new" && kind(r) == "down");
    assert_eq!(down.json()["subject"], url.as_str());
    w.start_site(a);
    receiver.wait_for("recovered on the new channel", |r| r.path == "/new" && kind(r) == "recovered");
    let old: Vec<String> = receiver.matching(|r| r.path == "/old").iter().map(kind).collect();
    assert_eq!(old, ["down", "recovered"], "the old channel hears nothing after the reload");
}

#[test]
fn under_http_auth_only_the_admin_token_reloads() {
    let w = World::new("reload-auth");
    let config = w.write("vantage.toml", "");
    let (admin, read) = ("reload-admin-token-0123456789", "reload-read-token-0123456789");
    let (admin_file, read_file) = (w.write("admin.token", admin), w.write("read.token", read));
    let data = w.dir.join("data");
    let coordinator = vantage_e2e::serve_on_loopback(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--admin-token-file",
            admin_file.to_str().unwrap(),
            "--read-token-file",
            read_file.to_str().unwrap(),
            "--http-auth",
        ],
    );
    let (_, http) = vantage_e2e::listening(&coordinator);
    let reload = format!("http://{http}/-/reload");
    assert_eq!(curl("POST", &reload, None).0, 401);
    assert_eq!(curl("POST", &reload, Some("not-the-token-0123456789")).0, 401);
    let (code, body) = curl("POST", &reload, Some(read));
    assert_eq!((code, body.trim()), (403, "the read token cannot reload the config: use the admin token"));
    let (code, body) = curl("POST", &reload, Some(admin));
    assert_eq!(code, 200, "{body}");
    coordinator.wait_for_line(|l| l.contains("config reloaded"));
    assert_eq!(curl("GET", &reload, Some(admin)).0, 405);
    let http = format!("http://{http}");
    assert_eq!(metric(&http, "vantage_config_last_reload_successful", Some(read)), Some(1.0));
}
