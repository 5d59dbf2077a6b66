//! Trust between agents and the coordinator, with real processes: the coordinator serves mTLS on
//! a bridge (certificates from the real `pki` commands), agents run in their regions'
//! namespaces. Agents without a certificate, with another CA's, with a revoked one, or claiming
//! another region are refused and store nothing; the admin API takes an admin certificate or a
//! token and nothing else (checked with the real grpcurl); `--insecure` stays on loopback; under
//! `--http-auth` the HTTP port wants the token too (checked with curl).

use vantage_e2e::cluster::{ADMIN_TOKEN, Cluster, READ_TOKEN, pki};
use vantage_e2e::{grpcurl_output, post_heartbeat, run};

/// A token the coordinator does not know, which it must not echo either.
const WRONG_TOKEN: &str = "not-the-token-at-all";

fn history_len(c: &Cluster, region: &str) -> usize {
    let body = format!("{{\"url\": \"{}\", \"region\": \"{region}\", \"limit\": 1000}}", c.targets[0].url);
    c.call("GetHistory", &body).get("results").and_then(|r| r.as_array()).map_or(0, Vec::len)
}

fn agent_names(c: &Cluster) -> Vec<String> {
    let agents = c.call("ListAgents", "{}");
    let list = agents.get("agents").and_then(|a| a.as_array()).cloned().unwrap_or_default();
    list.iter().filter_map(|a| a.get("name").and_then(|n| n.as_str()).map(str::to_owned)).collect()
}

fn cluster() -> Cluster {
    let mut c = Cluster::new(&["eu-west", "us-east"]);
    c.add_target("shop", false);
    c.start_coordinator("1s", "500ms");
    c
}

#[test]
fn agents_that_cannot_prove_their_region_are_refused_and_store_nothing() {
    let mut c = cluster();
    let addr = c.coordinator_addr.to_string();
    let ca = c.pki.join("ca.pem");

    // No client certificate: grpcurl speaks TLS to the agent service and says hello.
    let hello = r#"{"hello": {"name": "agent-x", "region": "eu-west", "version": "0"}}"#;
    let out = grpcurl_output(&["-cacert", ca.to_str().unwrap(), "-d", hello, &addr, "vantage.v1.AgentService/Connect"]);
    assert!(out.contains("Unauthenticated") && out.contains("client certificate"), "{out}");

    // A certificate from another CA: the TLS handshake fails; the agent says so and retries.
    let other = c.pki.parent().unwrap().join("other-pki");
    pki(&["init", "--dir", other.to_str().unwrap()]);
    pki(&["issue-agent", "--dir", other.to_str().unwrap(), "--region", "eu-west", "--name", "agent-eu-west"]);
    let stranger =
        c.spawn_agent(0, &other.join("agent-agent-eu-west.pem"), &other.join("agent-agent-eu-west.key"), &[]);
    stranger.wait_for_line(|l| l.contains("session to the coordinator failed"));
    stranger.wait_for_line(|l| l.contains("session to the coordinator failed")); // it retried
    assert!(stranger.printed().iter().all(|l| !l.contains("assignment received")), "{:?}", stranger.printed());
    drop(stranger);
    // The refusal is the TLS handshake's: the coordinator answers that certificate with a fatal
    // alert (decrypt_error, 51: the other CA has the same name, so its signature is what fails;
    // unknown_ca, 48, for a differently named one), as openssl s_client, presenting it, shows;
    // with the rightful certificate there is no alert.
    let s_client = |cert: &std::path::Path, key: &std::path::Path| {
        // Reading until the server closes: at once after an alert; a session it accepts stays
        // open (it waits for HTTP/2), so 5 s without an alert is the bounded "never".
        let out = std::process::Command::new("timeout")
            .args(["5", "openssl", "s_client", "-ign_eof", "-alpn", "h2", "-connect", &addr])
            .arg("-CAfile")
            .arg(&ca)
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let out = s_client(&other.join("agent-agent-eu-west.pem"), &other.join("agent-agent-eu-west.key"));
    let alert = out.lines().find(|l| l.contains("SSL alert number")).unwrap_or_else(|| panic!("no TLS alert: {out}"));
    assert!(alert.contains("alert decrypt error") || alert.contains("alert unknown ca"), "{alert}");
    let (cert, key) = c.agent_cert(0);
    let out = s_client(&cert, &key);
    assert!(!out.contains("SSL alert number"), "the rightful certificate is not refused: {out}");

    // A valid eu-west certificate whose hello claims us-east.
    let (cert, key) = c.agent_cert(0);
    let liar = c.spawn_agent(1, &cert, &key, &["--region", "us-east"]);
    let line = liar.wait_for_line(|l| l.contains("session to the coordinator failed"));
    assert!(line.contains("PermissionDenied") && line.contains("region eu-west"), "{line}");
    let coordinator = c.coordinator.as_ref().unwrap();
    let log = coordinator.wait_for_line(|l| l.contains("agent refused: its hello claims another region"));
    assert!(log.contains("claimed_region=\"us-east\"") || log.contains("claimed_region=us-east"), "{log}");
    drop(liar);

    assert_eq!(history_len(&c, "eu-west"), 0);
    assert_eq!(history_len(&c, "us-east"), 0);
    assert!(agent_names(&c).is_empty(), "no refused agent was recorded: {:?}", agent_names(&c));

    // The rightful agent is admitted, reports, and is then revoked by an operator.
    c.start_agent(0);
    let watch = c.watch();
    watch.wait_for_line(|l| l.contains("\"verdict\":\"UP\""));
    let mut revoke = vec!["pki", "revoke-agent", "--agent-cert", cert.to_str().unwrap()];
    let credentials = c.cli_credentials();
    revoke.extend(credentials.iter().map(String::as_str));
    let out = run("vantage-coordinator", &revoke);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let identity = "spiffe://vantage/region/eu-west/agent/agent-eu-west";
    assert!(printed.contains(identity) && printed.contains("1 open stream(s) closed"), "{printed}");

    // Its reconnections are refused, and nothing more is stored from it.
    let again = c.spawn_agent(0, &cert, &key, &[]);
    let refused = |agent: &vantage_e2e::Process| {
        let line = agent.wait_for_line(|l| l.contains("session to the coordinator failed"));
        assert!(line.contains("PermissionDenied") && line.contains("revoked"), "{line}");
    };
    refused(&again);
    let stored = history_len(&c, "eu-west");
    assert!(stored > 0, "the agent reported before it was revoked");
    refused(&again);
    assert_eq!(history_len(&c, "eu-west"), stored);
    let agents = c.call("ListAgents", "{}");
    let listed = agents["agents"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "the revoked agent stays listed, alone: {agents}");
    assert_eq!((listed[0]["name"].as_str(), listed[0]["region"].as_str()), (Some("agent-eu-west"), Some("eu-west")));
    assert_eq!(listed[0]["connected"], serde_json::Value::Null, "proto3 JSON omits false: {agents}");

    // The revocation is durable: after a restart the certificate is still refused.
    drop(again);
    c.kill_coordinator();
    c.restart_coordinator();
    refused(&c.spawn_agent(0, &cert, &key, &[]));
}

#[test]
fn the_admin_api_needs_an_admin_certificate_or_a_token() {
    let c = cluster();
    let addr = c.coordinator_addr.to_string();
    let ca = c.pki.join("ca.pem").to_str().unwrap().to_owned();
    let (agent_cert, agent_key) = c.agent_cert(0);
    let replies = std::cell::RefCell::new(Vec::new());
    let call = |auth: &[&str], method: &str, body: &str| {
        let mut args = vec!["-cacert", ca.as_str()];
        args.extend(auth);
        let method = format!("vantage.v1.Coordinator/{method}");
        args.extend(["-d", body, addr.as_str(), method.as_str()]);
        let out = grpcurl_output(&args);
        replies.borrow_mut().push(out.clone());
        out
    };
    let admin_bearer = format!("authorization: Bearer {ADMIN_TOKEN}");
    let read_bearer = format!("authorization: Bearer {READ_TOKEN}");
    let wrong_bearer = format!("authorization: Bearer {WRONG_TOKEN}");
    let admin_tls = c.admin_tls();
    let admin_tls: Vec<&str> = admin_tls.iter().map(String::as_str).skip(2).collect(); // without -cacert
    let agent_tls = ["-cert", agent_cert.to_str().unwrap(), "-key", agent_key.to_str().unwrap()];
    let add = |n: usize| format!("{{\"target\": {{\"url\": \"https://new{n}.e2e.test/\"}}}}");

    // Nothing, a wrong token, an agent's certificate: UNAUTHENTICATED.
    for auth in [&[][..], &["-H", &wrong_bearer][..], &agent_tls[..]] {
        let out = call(auth, "ListStatus", "{}");
        assert!(out.contains("Code: Unauthenticated"), "{auth:?}: {out}");
        let out = call(auth, "UpsertTarget", &add(0));
        assert!(out.contains("Code: Unauthenticated"), "{auth:?}: {out}");
    }
    // The admin certificate and the admin token may do everything.
    for (n, auth) in [&admin_tls[..], &["-H", &admin_bearer][..]].into_iter().enumerate() {
        let out = call(auth, "ListStatus", "{}");
        assert!(out.contains("\"targets\""), "{auth:?}: {out}");
        let out = call(auth, "UpsertTarget", &add(n + 1));
        assert!(out.contains("\"created\": true"), "{auth:?}: {out}");
    }
    // The read token reads, and may not write.
    let out = call(&["-H", &read_bearer], "ListTargets", "{}");
    assert!(out.contains("new1.e2e.test") && out.contains("new2.e2e.test"), "{out}");
    let out = call(&["-H", &read_bearer], "DeleteTarget", r#"{"url": "https://new1.e2e.test/"}"#);
    assert!(out.contains("Code: PermissionDenied"), "{out}");
    // Writes are logged with who made them: by the token's kind, never the token.
    let coordinator = c.coordinator.as_ref().unwrap();
    coordinator.wait_for_line(|l| l.contains("target upserted") && l.contains("admin token"));

    // Invalid input is refused with the field named.
    let bad = r#"{"target": {"url": "https://x.e2e.test/", "interval": "10s", "timeout": "20s"}}"#;
    let out = call(&admin_tls, "UpsertTarget", bad);
    assert!(out.contains("Code: InvalidArgument") && out.contains("timeout"), "{out}");

    // A revoked admin certificate opens nothing any more.
    let admin_pem = std::fs::read_to_string(c.pki.join("admin-admin.pem")).unwrap();
    let body = serde_json::json!({ "cert_pem": admin_pem }).to_string();
    let out = call(&["-H", &admin_bearer], "RevokeAgent", &body);
    assert!(out.contains("spiffe://vantage/admin/admin"), "{out}");
    let out = call(&admin_tls, "ListStatus", "{}");
    assert!(out.contains("Code: PermissionDenied") && out.contains("revoked"), "{out}");

    // No token, token digest or private key is ever in a reply or in any line the coordinator
    // logged (both only grow until here, so everything said is scanned).
    let secrets = secrets_of(&c);
    let said: Vec<String> =
        replies.borrow().iter().chain(c.coordinator.as_ref().unwrap().printed().iter()).cloned().collect();
    assert!(said.len() > 20, "replies and log lines to scan: {said:?}");
    for (what, secret) in &secrets {
        for line in &said {
            assert!(!line.contains(secret.as_str()), "{what} given away: {line}");
        }
    }
}

/// Everything the cluster's coordinator must never say, named: both tokens (and the wrong one
/// tried), their SHA-256 digests in hex (what the coordinator keeps), and every line of every
/// private key `pki` wrote.
fn secrets_of(c: &Cluster) -> Vec<(String, String)> {
    let mut secrets = Vec::new();
    for (name, token) in [("admin token", ADMIN_TOKEN), ("read token", READ_TOKEN), ("wrong token", WRONG_TOKEN)] {
        secrets.push((name.to_owned(), token.to_owned()));
        let mut openssl = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-r"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs");
        std::io::Write::write_all(&mut openssl.stdin.take().unwrap(), token.as_bytes()).unwrap();
        let out = String::from_utf8(openssl.wait_with_output().unwrap().stdout).unwrap();
        let digest = out.split_whitespace().next().unwrap().to_owned();
        assert_eq!(digest.len(), 64, "{out}");
        secrets.push((format!("{name}'s digest"), digest));
    }
    let mut keys = 0;
    for entry in std::fs::read_dir(&c.pki).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            keys += 1;
            let pem = std::fs::read_to_string(&path).unwrap();
            for line in pem.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16) {
                secrets.push((format!("a line of {}", path.display()), line.to_owned()));
            }
        }
    }
    assert!(keys >= 4, "the CA's, the coordinator's, the agents' and the admin's keys: {keys}");
    secrets
}

#[test]
fn serve_refuses_plaintext_beyond_loopback_and_without_a_choice() {
    let dir = std::env::temp_dir().join(format!("vantage-insecure-{}", std::process::id()));
    let data = dir.to_str().unwrap();
    let out = run("vantage-coordinator", &["serve", "--insecure", "--listen", "0.0.0.0:0", "--data-dir", data]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--insecure serves plaintext on loopback only") && err.contains("0.0.0.0"), "{err}");
    let out = run("vantage-coordinator", &["serve", "--listen", "127.0.0.1:0", "--data-dir", data]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("give --tls-cert, --tls-key and --client-ca"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn days_left(line: &str) -> i64 {
    let value = line.split("days_left=").nth(1).and_then(|r| r.split_whitespace().next());
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no days_left in {line}"))
}

#[test]
fn the_coordinator_warns_about_expiring_certificates_and_loose_key_files() {
    let dir = std::env::temp_dir().join(format!("vantage-expiry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki_dir = dir.join("pki");
    let d = pki_dir.to_str().unwrap();
    pki(&["init", "--dir", d, "--days", "20"]);
    pki(&["issue-agent", "--dir", d, "--region", "eu-west", "--name", "agent-1", "--days", "5"]);
    let file = |name: &str| pki_dir.join(name).to_str().unwrap().to_owned();
    std::fs::set_permissions(pki_dir.join("coordinator.key"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .unwrap();
    let data = dir.join("data");
    let coordinator = vantage_e2e::Process::start(
        "vantage-coordinator",
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-cert",
            &file("coordinator.pem"),
            "--tls-key",
            &file("coordinator.key"),
            "--client-ca",
            &file("ca.pem"),
        ],
    );
    let line = coordinator.wait_for_line(|l| l.contains("secret file is accessible to other users"));
    assert!(line.contains("coordinator.key") && line.contains("644"), "{line}");
    // Both lines, in whichever order they come.
    let (mut addr, mut expiry) = (None, None);
    while addr.is_none() || expiry.is_none() {
        let line =
            coordinator.wait_for_line(|l| l.contains("coordinator listening") || l.contains("server certificate"));
        if line.contains("coordinator listening") {
            addr = line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_owned);
        } else {
            expiry = Some(line);
        }
    }
    let (addr, line) = (addr.unwrap(), expiry.unwrap());
    assert!(line.contains("expires in under 30 days") && days_left(&line) <= 20, "{line}");

    let _agent = vantage_e2e::Process::start(
        "vantage-agent",
        &[
            "run",
            "--coordinator",
            &format!("https://{addr}"),
            "--cert",
            &file("agent-agent-1.pem"),
            "--key",
            &file("agent-agent-1.key"),
            "--coordinator-ca",
            &file("ca.pem"),
        ],
    );
    let line = coordinator.wait_for_line(|l| l.contains("agent certificate expires soon"));
    assert!(line.contains("agent-1") && days_left(&line) <= 5, "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// curl against the HTTP port: the status code, and the headers and body.
fn curl(url: &str, extra: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (said, code) = text.rsplit_once('\n').unwrap();
    (code.to_owned(), said.to_owned())
}

#[test]
fn under_http_auth_the_http_port_needs_the_token_but_for_health() {
    let dir = std::env::temp_dir().join(format!("vantage-http-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let refused = run(
        "vantage-coordinator",
        &["serve", "--insecure", "--listen", "127.0.0.1:0", "--data-dir", data, "--http-auth"],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("--http-auth needs a token"), "{err}");

    let secret = |file: &str, text: &str| {
        std::fs::write(dir.join(file), text).unwrap();
        std::fs::set_permissions(dir.join(file), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        dir.join(file).to_str().unwrap().to_owned()
    };
    let (read_token, admin_token) = (secret("read.token", READ_TOKEN), secret("admin.token", ADMIN_TOKEN));
    secret("backup.secret", "backup-heartbeat-secret-01234");
    std::fs::write(
        dir.join("vantage.toml"),
        "[[heartbeat]]\nname = \"backup\"\nperiod = \"1d\"\nsecret_file = \"backup.secret\"\n",
    )
    .unwrap();
    let config = dir.join("vantage.toml");
    let coordinator = vantage_e2e::Process::start(
        "vantage-coordinator",
        &[
            "serve",
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--read-token-file",
            &read_token,
            "--admin-token-file",
            &admin_token,
            "--config",
            config.to_str().unwrap(),
            "--http-auth",
        ],
    );
    let (_, http) = vantage_e2e::listening(&coordinator);
    let base = format!("http://{http}");

    for path in ["/", "/metrics", "/v1/status", "/v1/uptime", "/v1/heartbeats", "/target?url=https://a.example/"] {
        let (code, said) = curl(&format!("{base}{path}"), &[]);
        assert_eq!(code, "401", "{path} without a token: {said}");
        assert!(said.to_ascii_lowercase().contains("www-authenticate: basic realm=\"vantage\""), "{said}");
        let (code, _) = curl(&format!("{base}{path}"), &["-H", "Authorization: Bearer not-the-token-0123456789"]);
        assert_eq!(code, "401", "{path} with a wrong token");
    }
    // Prometheus sends the token as a bearer; a browser as the password of Basic.
    let (code, said) = curl(&format!("{base}/metrics"), &["-H", &format!("Authorization: Bearer {READ_TOKEN}")]);
    assert!(code == "200" && said.contains("vantage_targets"), "{code}: {said}");
    let (code, said) = curl(&format!("{base}/"), &["-u", &format!("ops:{READ_TOKEN}")]);
    assert!(code == "200" && said.contains("<title>Vantage status</title>"), "{code}: {said}");
    let (code, _) = curl(&format!("{base}/v1/status"), &["-u", &format!("ops:{ADMIN_TOKEN}")]);
    assert_eq!(code, "200", "the admin token opens it too");
    let (code, _) = curl(&format!("{base}/"), &["-u", "ops:not-the-token-0123456789"]);
    assert_eq!(code, "401", "a wrong Basic password");
    // Heartbeats carry their own signatures: through without a token, and an unknown name is a
    // 401 like a bad signature (names cannot be listed).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (code, said) =
        post_heartbeat(&format!("{base}/v1/heartbeats/backup"), "backup-heartbeat-secret-01234", now, "ok");
    assert_eq!(code, 200, "a signed heartbeat needs no token: {said}");
    let (code, said) =
        post_heartbeat(&format!("{base}/v1/heartbeats/nobody"), "backup-heartbeat-secret-01234", now, "ok");
    assert_eq!((code, said.trim()), (401, "no such heartbeat, or a bad signature"));
    let (code, said) =
        post_heartbeat(&format!("{base}/v1/heartbeats/backup"), "not-the-secret-0123456789", now + 1, "ok");
    assert_eq!((code, said.trim()), (401, "no such heartbeat, or a bad signature"));
    // Health stays open for load balancers and service managers.
    let (code, _) = curl(&format!("{base}/healthz"), &[]);
    assert_eq!(code, "200");
    let _ = std::fs::remove_dir_all(&dir);
}
