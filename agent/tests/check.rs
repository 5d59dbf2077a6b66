//! `vantage-agent check` as a user meets it: the JSON contract's facts, the human report, the
//! exit codes for bad input, and bounded time and memory against hostile servers.

mod support;

use std::time::{Duration, Instant};

use support::{check, lab, strings};

fn json_of(name: &str, extra: &[&str]) -> (serde_json::Value, support::Run) {
    let mut args = lab().scenario(name).check_args();
    args.extend(strings(extra));
    args.push("--json".into());
    let run = check(&args);
    (run.json(), run)
}

fn is_rfc3339_utc(s: &serde_json::Value) -> bool {
    let s = s.as_str().unwrap_or_default();
    s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

#[test]
fn healthy_site_reports_every_fact_of_the_json_contract() {
    let (json, run) = json_of("healthy", &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(json["status"], "up");
    assert!(json["failure"].is_null());
    assert!(json["url"].as_str().unwrap().starts_with("https://healthy.vantage.test:"));

    let cert = &json["cert"];
    assert_eq!(cert["subject"], "CN=healthy.vantage.test");
    assert_eq!(cert["issuer"], "CN=Vantage Lab Intermediate CA, O=Vantage Lab");
    assert_eq!(cert["sans"], serde_json::json!(["healthy.vantage.test"]));
    assert_eq!(cert["health"], "ok");
    assert_eq!(cert["days_remaining"], 90);
    assert_eq!(cert["key"], "ECDSA P-256");
    assert_eq!(cert["signature_algorithm"], "ecdsa-with-SHA256");
    assert_eq!(cert["trusted"], true);
    for field in ["not_before", "not_after", "earliest_expiry"] {
        assert!(is_rfc3339_utc(&cert[field]), "{field}: {}", cert[field]);
    }
    let sha = cert["sha256"].as_str().unwrap();
    assert!(sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{sha}");
    let chain = cert["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate are served");
    assert_eq!(chain[0]["sha256"], cert["sha256"]);
    assert_eq!(chain[1]["subject"], "CN=Vantage Lab Intermediate CA, O=Vantage Lab");
    assert_eq!(chain[1]["issuer"], "CN=Vantage Lab Root CA, O=Vantage Lab");
    assert!(is_rfc3339_utc(&chain[1]["not_after"]));

    assert_eq!(json["tls"]["version"], "TLSv1.3");
    assert!(json["tls"]["cipher"].as_str().unwrap().starts_with("TLS13_"));
    assert_eq!(json["tls"]["alpn"], "http/1.1", "the lab server picks http/1.1 from the offered h2, http/1.1");
    assert_eq!(json["http"]["status"], 200);
    for stage in ["connect", "tls", "ttfb", "total"] {
        assert!(json["timings_ms"][stage].as_f64().unwrap() > 0.0, "timing {stage}");
    }
    assert!(json["timings_ms"]["dns"].is_null(), "--resolve pins the name: no lookup happened");
    assert_eq!(json["backends"].as_array().unwrap().len(), 1);
    assert_eq!(json["backends"][0]["status"], "up");
    assert_eq!(json["backends"][0]["cert_sha256"], cert["sha256"]);
    assert!(is_rfc3339_utc(&json["checked_at"]));
}

#[test]
fn earliest_expiry_comes_from_the_whole_chain() {
    // The intermediate expired; the leaf itself has two months left.
    let (json, _) = json_of("cert_expired_intermediate", &[]);
    let cert = &json["cert"];
    assert_ne!(cert["earliest_expiry"], cert["not_after"]);
    assert_eq!(cert["earliest_expiry"], cert["chain"][1]["not_after"]);
    assert_eq!(cert["health"], "expired");
    assert!(cert["days_remaining"].as_i64().unwrap() < 0);
    assert!(json["failure"]["detail"].as_str().unwrap().contains("Expired Intermediate"), "{}", json["failure"]);
}

#[test]
fn dns_lookup_lists_the_resolved_addresses_and_its_time() {
    let (json, run) = json_of("dns_resolves", &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(json["addresses"], serde_json::json!(["127.0.0.1"]));
    assert!(json["timings_ms"]["dns"].as_f64().unwrap() > 0.0);
    let (json, _) = json_of("dns_unexpected_address", &[]);
    assert!(json["failure"]["detail"].as_str().unwrap().contains("127.0.0.1"), "names the unexpected address");
}

#[test]
fn redirects_are_followed_and_listed() {
    let (json, _) = json_of("http_redirect", &[]);
    assert_eq!(json["http"]["status"], 200);
    assert_eq!(json["http"]["redirects"][0]["status"], 302);
    assert!(json["http"]["final_url"].as_str().unwrap().ends_with("/landing"));
    let (json, _) = json_of("http_no_follow", &[]);
    assert_eq!(json["http"]["status"], 302);
    assert_eq!(json["http"]["redirects"], serde_json::json!([]));
    let (json, _) = json_of("http_too_many_redirects", &[]);
    assert_eq!(json["http"]["redirects"].as_array().unwrap().len(), 5);
}

#[test]
fn http2_is_negotiated_and_reported() {
    let (json, run) = json_of("http2", &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(json["tls"]["alpn"], "h2");
    assert_eq!(json["http"]["version"], "HTTP/2");
    assert_eq!(json["http"]["status"], 200);
}

#[test]
fn a_redirect_to_https_is_judged_by_the_certificate_it_reaches() {
    let (json, _) = json_of("http_to_https_redirect", &[]);
    assert!(json["url"].as_str().unwrap().starts_with("http://"));
    assert!(json["http"]["final_url"].as_str().unwrap().starts_with("https://secure.vantage.test:"));
    assert_eq!(json["cert"]["subject"], "CN=secure.vantage.test");
    assert_eq!(json["tls"]["version"], "TLSv1.3");
}

#[test]
fn all_backends_shows_the_certificate_closest_to_expiry() {
    let (json, _) = json_of("all_backends_one_expiring", &[]);
    let backends = json["backends"].as_array().unwrap();
    assert_eq!(backends[0]["cert_health"], "ok");
    assert_eq!(backends[1]["cert_health"], "critical");
    assert_eq!(backends[1]["cert_days_remaining"], 3);
    assert_eq!(json["cert"]["sha256"], backends[1]["cert_sha256"]);
}

#[test]
fn all_backends_lists_each_backend_with_its_certificate() {
    let (json, _) = json_of("all_backends_one_bad", &[]);
    let backends = json["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[0]["status"], "up");
    assert_eq!(backends[1]["status"], "down");
    assert_eq!(backends[1]["failure"]["code"], "cert_expired");
    assert!(backends[1]["address"].as_str().unwrap().starts_with("127.0.0.3:"));
    assert_ne!(backends[0]["cert_sha256"], backends[1]["cert_sha256"]);
    // The report's facts are the failing backend's.
    assert_eq!(json["cert"]["sha256"], backends[1]["cert_sha256"]);
}

#[test]
fn warning_thresholds_follow_the_flags() {
    // 20 days left: a warning by default, ok with --warn-days 10, critical with --critical-days 21.
    let (json, run) = json_of("cert_warning", &["--warn-days", "10"]);
    assert_eq!((json["cert"]["health"].as_str(), run.code), (Some("ok"), 0));
    let (json, run) = json_of("cert_warning", &["--warn-days", "40", "--critical-days", "21"]);
    assert_eq!((json["cert"]["health"].as_str(), run.code), (Some("critical"), 2));
}

#[test]
fn human_report_reads_stage_by_stage_with_cause_and_fix() {
    let run = check(&lab().scenario("cert_expired").check_args());
    assert_eq!(run.code, 2);
    let out = &run.stdout;
    for expected in [
        "✓ dns",
        "✓ connect",
        "✓ tls",
        "TLSv1.3",
        "✗ certificate",
        "CN=expired.vantage.test",
        "· http",
        "not reached",
        "DOWN  cert_expired  A certificate in the served chain has expired.",
        "fix:   Renew the certificate",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains('\x1b'), "no colour when stdout is not a terminal:\n{out}");

    let run = check(&lab().scenario("healthy").check_args());
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("✓ http") && run.stdout.contains("200 HTTP/1.1"), "{}", run.stdout);
    assert!(run.stdout.contains("\nUP  in "), "{}", run.stdout);
}

#[test]
fn colour_only_on_a_terminal() {
    // `script` gives the child a pseudo-terminal as stdout.
    let args = lab().scenario("cert_expired").check_args().join(" ");
    let bin = env!("CARGO_BIN_EXE_vantage-agent");
    let out = std::process::Command::new("script")
        .args(["-qec", &format!("{bin} check {args}"), "/dev/null"])
        .env_remove("NO_COLOR")
        .output()
        .expect("script(1) from util-linux runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\x1b[31m✗\x1b[0m"), "a red cross on a terminal:\n{text}");
}

#[test]
fn bad_input_exits_3_with_one_clear_sentence() {
    let long = format!("https://{}.example/", "a.".repeat(130));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (strings(&["not a url"]), "is not a valid URL"),
        (strings(&["ftp://example.com/"]), "unsupported scheme \"ftp\""),
        (strings(&["gopher://example.com/"]), "only http and https can be probed"),
        (strings(&["https://example.com:0/"]), "uses port 0, which cannot be connected to"),
        (strings(&["https:///"]), "no host name"),
        (strings(&[&long]), "too long"),
        (
            strings(&["https://example.com/", "--timeout", "soon"]),
            "invalid duration \"soon\": expected a number (write it like 500ms, 10s, 1m30s or 2h)",
        ),
        (strings(&["https://example.com/", "--expect-status", "700"]), "700 is not in 100..=599"),
        (strings(&["https://example.com/", "--resolve", "example.com"]), "\"example.com\" is not HOST:IP"),
        (
            strings(&["https://example.com/", "--nameserver", "dns.example"]),
            "\"dns.example\" is not an IP address with an optional port",
        ),
        (strings(&["https://example.com/", "--ca-file", "/nonexistent/ca.pem"]), "cannot read CA file"),
        (strings(&["https://example.com/", "--critical-days", "40"]), "must not be more than --warn-days"),
        (strings(&["https://example.com/", "--pin-sha256", "abc"]), "is not a SHA-256 hash (64 hex digits)"),
        (strings(&["https://example.com/", "--watch-cert", "/etc/ssl/site.pem"]), "is not PATH=URL"),
        (
            strings(&["https://example.com/", "--watch-cert", "/etc/ssl/site.pem=https://other.example/"]),
            "check probes https://example.com/; watch a file for the URL being checked",
        ),
        (
            strings(&["https://example.com/", "--watch-cert-grace", "soon"]),
            "invalid duration \"soon\": expected a number",
        ),
        // Argument errors clap finds itself: its own sentence, not the echoed argument.
        (strings(&["https://example.com/", "--bogus-flag"]), "error: unexpected argument '"),
        (strings(&[]), "error: the following required arguments were not provided:\n  <URL>"),
    ];
    for (args, expected) in cases {
        let run = check(&args);
        assert_eq!(run.code, 3, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{args:?}: expected {expected:?} in {:?}", run.stderr);
        assert!(!run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: nothing on stdout, got {:?}", run.stdout);
    }
}

#[test]
fn ca_file_without_certificates_is_refused() {
    let path = lab().dir().join("empty.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let run = check(&strings(&["https://example.com/", "--ca-file", path.to_str().unwrap()]));
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("holds no PEM certificate"), "{}", run.stderr);
}

/// The served leaf's fingerprint and key hash, as `check --json` and the pin mismatch show them.
fn leaf_facts(json: &serde_json::Value) -> (String, String, String) {
    let cert = &json["cert"];
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
    (text(&cert["sha256"]), text(&cert["not_after"]), text(&json["failure"]["detail"]))
}

#[test]
fn a_certificate_renewed_on_disk_but_not_loaded_is_shown_with_both_fingerprints_and_dates() {
    let (json, run) = json_of("cert_not_reloaded", &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let (served_sha, served_expiry, detail) = leaf_facts(&json);
    let file = lab().scenario("cert_not_reloaded").args.iter().find_map(|a| a.split_once("=https://")).unwrap().0;
    let pem = std::fs::read_to_string(file).unwrap();
    let disk_der = rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
        .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.unwrap())
        .next()
        .unwrap();
    let disk_sha = vantage_shared::identity::sha256_hex(disk_der.as_ref());
    let expected = format!("the server serves sha256 {served_sha} (expires {served_expiry}), but {file} holds a newer");
    assert!(detail.starts_with(&expected), "{detail}");
    assert!(detail.contains(&format!("newer certificate, sha256 {disk_sha} (expires 20")), "{detail}");
    assert!(detail.contains(", written 20"), "the file's mtime is named: {detail}");

    // The same file within a longer grace period: the reload may still come.
    let (json, run) = json_of("cert_not_reloaded", &["--watch-cert-grace", "2h"]);
    assert_eq!(json["status"], "up", "{}", run.stdout);
}

#[test]
fn an_unreadable_watched_file_is_a_warning_not_a_failure() {
    let url = lab().scenario("healthy").url.clone();
    let (json, run) = json_of("healthy", &["--watch-cert", &format!("/nonexistent/fullchain.pem={url}")]);
    assert_eq!((run.code, &json["status"]), (0, &serde_json::json!("up")), "{}", run.stdout);
    assert!(run.stderr.contains("watched certificate not compared"), "{}", run.stderr);
    assert!(run.stderr.contains("cannot read /nonexistent/fullchain.pem"), "{}", run.stderr);
}

#[test]
fn a_pin_mismatch_names_the_served_fingerprint_and_key_hash() {
    let (json, _) = json_of("cert_pin_mismatch", &[]);
    let (served_sha, _, detail) = leaf_facts(&json);
    assert!(detail.starts_with(&format!("the served leaf (sha256 {served_sha}, public key sha256 ")), "{detail}");
    assert!(detail.ends_with("matches none of the 1 pinned hash(es)"), "{detail}");

    // The certificate's own fingerprint is a pin too, pasted as openssl prints it.
    let openssl_style = served_sha.as_bytes().chunks(2).map(|p| std::str::from_utf8(p).unwrap()).collect::<Vec<_>>();
    let pin = openssl_style.join(":").to_ascii_uppercase();
    let (json, run) = json_of("cert_pin_mismatch", &["--pin-sha256", &pin]);
    assert_eq!(json["status"], "up", "one matching pin of two is enough: {}", run.stdout);
}

#[test]
fn a_pin_does_not_hide_a_broken_chain() {
    let (json, _) = json_of("cert_chain_incomplete", &["--pin-sha256", &"0".repeat(64)]);
    assert_eq!(json["failure"]["code"], "cert_chain_incomplete");
}

/// Hostile servers end in a classified failure within the timeout, with the probe's memory
/// bounded (a 4 MiB header flood must not be buffered).
#[test]
fn hostile_servers_are_classified_within_the_timeout_with_bounded_memory() {
    for (name, code) in [
        ("http_huge_headers", "http_protocol_error"),
        ("tls_handshake_timeout", "tls_handshake_timeout"),
        ("http_timeout", "http_timeout"),
    ] {
        let started = Instant::now();
        let (json, run) = json_of(name, &[]);
        let took = started.elapsed();
        assert_eq!(json["failure"]["code"], code, "{name}");
        assert!(took < Duration::from_secs(8), "{name} took {took:?}; the lab gives stalling servers a 2s timeout");
        assert!(run.peak_rss_kib < 32 * 1024, "{name}: peak RSS {} KiB", run.peak_rss_kib);
    }
}
