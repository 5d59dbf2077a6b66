//! Heartbeats with real processes: the certbot deploy hook (its own reload and its signed POST,
//! with every command it runs recorded) is accepted, forged, replayed and skewed heartbeats are
//! refused, and a job that misses its period raises `heartbeat_overdue`, cleared by its next
//! heartbeat (`heartbeat_recovered`), on a real webhook receiver.

use std::path::{Path, PathBuf};
use std::process::Command;

use vantage_e2e::alert_world::{World, kind};
use vantage_e2e::receiver::Receiver;
use vantage_e2e::{post_heartbeat, post_heartbeat_signed_for};

/// A directory of shims, one for every command on the PATH, each recording its name and
/// arguments in the returned log before running the real command.
fn argv_recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let (shims, log) = (dir.join("shims"), dir.join("argv.log"));
    std::fs::create_dir_all(&shims).unwrap();
    let path = std::env::var("PATH").unwrap();
    let recorder = dir.join("record-argv");
    // The real command is looked up on the original PATH; its children keep the shims.
    let script = format!(
        "#!/bin/sh\nname=${{0##*/}}\n{{ printf '%s' \"$name\"; for a in \"$@\"; do printf ' %s' \"$a\"; done; echo; }} >> '{}'\n\
         real='{path}'\nIFS=:\nfor d in $real; do [ -x \"$d/$name\" ] && exec \"$d/$name\" \"$@\"; done\nexit 127\n",
        log.display()
    );
    std::fs::write(&recorder, script).unwrap();
    std::fs::set_permissions(&recorder, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for bin in std::env::split_paths(&path) {
        for entry in std::fs::read_dir(&bin).into_iter().flatten().flatten() {
            let link = shims.join(entry.file_name());
            if !link.exists() {
                std::os::unix::fs::symlink(&recorder, link).unwrap();
            }
        }
    }
    (shims, log)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn heartbeats_from_the_certbot_hook_are_accepted_forgeries_refused_and_a_missed_one_alerts() {
    let receiver = Receiver::start();
    let mut w = World::new("heartbeats");
    w.write("certbot.secret", "certbot-heartbeat-secret-0123");
    w.write("backup.secret", "backup-heartbeat-secret-01234");
    let config = format!(
        r#"[[channel]]
name = "hook"
type = "webhook"
url = "{}"

[[route]]
channels = ["hook"]

[[heartbeat]]
name = "certbot-shop"
period = "93d"
secret_file = "certbot.secret"

[[heartbeat]]
name = "certbot-blog"
period = "93d"
secret_file = "certbot.secret"

[[heartbeat]]
name = "backup"
period = "2s"
secret_file = "backup.secret"
"#,
        receiver.url("/hook")
    );
    let config = w.write("vantage.toml", &config);
    w.start_coordinator(&config);
    let http = w.http.clone().unwrap();
    let certbot = format!("{http}/v1/heartbeats/certbot-shop");

    // The deploy hook, as certbot runs it: it reloads the server, then sends the heartbeat. Every
    // command it runs goes through a shim that records its arguments (what `ps` shows any user).
    let hook = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/certbot/vantage-deploy-hook");
    let shellcheck = Command::new("shellcheck").arg(hook).output().unwrap();
    assert!(shellcheck.status.success(), "{}", String::from_utf8_lossy(&shellcheck.stdout));
    let (shims, argv_log) = argv_recorder(&w.dir);
    let reloaded = w.dir.join("reloaded");
    let out = Command::new(hook)
        .env("PATH", format!("{}:{}", shims.display(), std::env::var("PATH").unwrap()))
        .env("VANTAGE_DEPLOY_HOOK_ENV", w.dir.join("absent.env"))
        .env("VANTAGE_HEARTBEAT_URL", &certbot)
        .env("VANTAGE_HEARTBEAT_SECRET_FILE", w.dir.join("certbot.secret"))
        .env("VANTAGE_RELOAD_COMMAND", format!("touch {}", reloaded.display()))
        .env("RENEWED_LINEAGE", "/etc/letsencrypt/live/shop.example.com")
        .env("RENEWED_DOMAINS", "shop.example.com")
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{answer}{}", String::from_utf8_lossy(&out.stderr));
    assert!(answer.contains("\"accepted\":\"certbot-shop\"") && answer.contains("next_due"), "{answer}");
    assert!(reloaded.exists(), "the hook reloads the web server first");
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    let ran = |name: &str| argv.lines().any(|l| l.split(' ').next() == Some(name));
    assert!(ran("openssl") && ran("curl") && ran("touch"), "the shims saw the hook's commands:\n{argv}");
    let secret = "certbot-heartbeat-secret-0123";
    let secret_hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!argv.contains(secret) && !argv.contains(&secret_hex), "the secret is in a command's arguments:\n{argv}");

    // A signature covers the heartbeat's name: one made for certbot-shop is refused by
    // certbot-blog, though both share a secret; an old v1 signature (without the name) is refused
    // with the reason.
    let blog = format!("{http}/v1/heartbeats/certbot-blog");
    let now = unix_now();
    let (code, answer) = post_heartbeat_signed_for(&blog, "certbot-shop", secret, now, "{}");
    assert_eq!((code, answer.trim()), (401, "the signature does not match"));
    let (code, answer) = post_heartbeat(&blog, secret, now, "{}");
    assert_eq!(code, 200, "signed for its own name, the same request is accepted: {answer}");
    let v1 = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H", &format!("X-Vantage-Timestamp: {}", now + 1)])
        .args(["-H", &format!("X-Vantage-Signature: v1={}", "ab".repeat(32)), "--data", "{}", &blog])
        .output()
        .unwrap();
    let v1 = String::from_utf8_lossy(&v1.stdout).into_owned();
    assert!(v1.ends_with("\n401") && v1.contains("v1 signatures do not cover the heartbeat's name"), "{v1}");

    // Forgeries and stale or replayed requests are refused, each with its reason.
    let (code, answer) = post_heartbeat(&certbot, "not-the-secret-at-all", now + 1, "{}");
    assert_eq!((code, answer.trim()), (401, "the signature does not match"));
    let (code, answer) = post_heartbeat(&certbot, "certbot-heartbeat-secret-0123", now - 600, "{}");
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("away from the coordinator's clock"), "{answer}");
    let (code, answer) = post_heartbeat(&certbot, "certbot-heartbeat-secret-0123", now + 2, "{\"n\":1}");
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = post_heartbeat(&certbot, "certbot-heartbeat-secret-0123", now + 2, "{\"n\":1}");
    assert_eq!(code, 409, "{answer}");
    assert!(answer.contains("replay"), "{answer}");
    let (code, _) = post_heartbeat(&format!("{http}/v1/heartbeats/nobody"), "x", now, "{}");
    assert_eq!(code, 404);

    // The backup job never checked in within its 2 s: overdue; its first heartbeat clears it.
    let overdue = receiver.wait_for("heartbeat_overdue", |r| kind(r) == "heartbeat_overdue");
    assert_eq!(overdue.json()["subject"], "backup");
    assert!(overdue.json()["text"].as_str().unwrap().contains("none has arrived"), "{:?}", overdue.json());
    let (code, answer) =
        post_heartbeat(&format!("{http}/v1/heartbeats/backup"), "backup-heartbeat-secret-01234", unix_now(), "done");
    assert_eq!(code, 200, "{answer}");
    receiver.wait_for("heartbeat_recovered", |r| kind(r) == "heartbeat_recovered" && r.json()["subject"] == "backup");
    assert!(receiver.matching(|r| r.json()["subject"] == "certbot-shop").is_empty(), "the renewed one never alerted");
}
