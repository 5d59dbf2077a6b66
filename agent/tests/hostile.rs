//! Servers built to hurt probes, met by the real `vantage-agent check --json`: endless headers
//! and bodies, a 1,000-certificate chain, malformed DER, random bytes for a ServerHello, redirect
//! loops, a trickled response and a gzip bomb. Each run must end in its classified outcome
//! within the timeout, with the process's peak memory (ru_maxrss from wait4) bounded.

mod support;

use std::time::{Duration, Instant};

use support::{TIMEOUT_MARGIN, assert_ended_at_the_timeout, check, lab, strings, timeout_of};

/// Peak resident memory allowed to one `check` against a hostile server. A probe that buffered
/// what these servers send would need from 400 KB (the chain) to gigabytes.
const MAX_PEAK_RSS_KIB: i64 = 64 * 1024;
/// Most of an unread body that may leave a server: the probe's read buffer and both sockets'
/// buffers on loopback, well under the 1 MiB a body check reads.
const UNREAD_BODY_MAX: u64 = 768 * 1024;

/// Runs scenario `name` (plus `extra` arguments), asserts it ended with failure `code` (`None`:
/// up) in time and in bounded memory, and returns the JSON report.
fn survives(name: &str, extra: &[&str], code: Option<&str>) -> serde_json::Value {
    let scenario = lab().scenario(name);
    let mut args = scenario.check_args();
    args.extend(strings(extra));
    args.push("--json".into());
    let timeout = timeout_of(&args);
    let started = Instant::now();
    let run = check(&args);
    let took = started.elapsed();
    let json = run.json();
    let context = format!("{name} ({}), {extra:?}:\n{}", scenario.summary, run.stdout);
    eprintln!("{name} {extra:?}: {} in {took:.1?}, peak RSS {} KiB", json["failure"]["code"], run.peak_rss_kib);
    assert_eq!(json["failure"]["code"].as_str(), code, "{context}");
    // Every run ends within its --timeout (plus TIMEOUT_MARGIN); one that fails by a timeout
    // also waited that long.
    if code.is_some_and(|c| c.ends_with("_timeout")) {
        assert_ended_at_the_timeout(took, timeout, &context);
    } else {
        assert!(took < timeout + TIMEOUT_MARGIN, "took {took:?} against a {timeout:?} timeout; {context}");
    }
    assert!(run.peak_rss_kib < MAX_PEAK_RSS_KIB, "peak RSS {} KiB; {context}", run.peak_rss_kib);
    json
}

fn detail(json: &serde_json::Value) -> &str {
    json["failure"]["detail"].as_str().unwrap_or_default()
}

#[test]
fn endless_headers_are_cut_off_at_the_head_limit() {
    let json = survives("http_huge_headers", &[], Some("http_protocol_error"));
    assert!(detail(&json).contains("limit 65536 bytes"), "{}", detail(&json));
}

#[test]
fn ten_thousand_small_headers_are_refused() {
    survives("http_many_headers", &[], Some("http_protocol_error"));
}

#[test]
fn an_endless_body_is_searched_for_one_mebibyte_only() {
    let json = survives("http_endless_body", &[], Some("http_body_mismatch"));
    assert!(detail(&json).contains("first 1048576 bytes"), "{}", detail(&json));
}

#[test]
fn an_endless_body_under_a_terabyte_content_length_is_not_read_without_a_body_check() {
    survives("http_endless_body_unread", &[], None);
    // Asked to search it, the probe reads its first mebibyte, as for a chunked body.
    let json = survives("http_endless_body_unread", &["--expect-body", "Welcome"], Some("http_body_mismatch"));
    assert!(detail(&json).contains("first 1048576 bytes"), "{}", detail(&json));
}

/// Runs the gzip bomb scenario and returns the report and the body bytes the bomb server got
/// rid of before the probe hung up.
fn bomb_sent(extra: &[&str], code: Option<&str>) -> (serde_json::Value, u64) {
    let tally = &lab().gzip_bomb_sent;
    let before = tally.finished();
    let json = survives("http_gzip_bomb", extra, code);
    let sent = tally.nth(before, Duration::from_secs(10)).expect("the bomb server saw the probe hang up");
    eprintln!("http_gzip_bomb {extra:?}: {sent} body bytes sent");
    (json, sent)
}

#[test]
fn a_gzip_bomb_is_never_inflated() {
    let (json, sent) = bomb_sent(&[], None);
    assert_eq!(json["http"]["status"], 200);
    // Without a body check only the head is read: the body's bytes that left the server are
    // what the sockets buffered, far from the mebibyte a body check reads.
    assert!(sent < UNREAD_BODY_MAX, "{sent} bytes of an unread body left the server");
    // Searched for text, the body is a mebibyte of compressed bytes that do not contain it:
    // that mebibyte came off the wire. A probe that inflated would have its mebibyte of zeros
    // from 1/159 of it (about 6.6 KiB) and hang up with far less sent.
    let (json, sent) = bomb_sent(&["--expect-body", "Welcome"], Some("http_body_mismatch"));
    assert!(detail(&json).contains("first 1048576 bytes"), "{}", detail(&json));
    assert!(sent >= 1 << 20, "only {sent} compressed bytes were read for a mebibyte searched: inflated");
}

#[test]
fn a_trickled_response_head_ends_at_the_timeout() {
    let json = survives("http_slowloris", &[], Some("http_timeout"));
    assert!(json["timings_ms"]["ttfb"].is_null(), "no complete head ever arrived");
}

#[test]
fn a_thousand_certificate_chain_is_refused_without_being_read() {
    let json = survives("tls_thousand_cert_chain", &[], Some("tls_handshake_failed"));
    assert!(detail(&json).contains("HandshakePayloadTooLarge"), "{}", detail(&json));
}

#[test]
fn malformed_der_in_the_intermediate_is_an_invalid_certificate() {
    let json = survives("cert_malformed_intermediate", &[], Some("cert_invalid"));
    assert!(detail(&json).contains("malformed certificate"), "{}", detail(&json));
    assert_eq!(json["tls"]["version"], "TLSv1.3", "the handshake itself completed");
}

#[test]
fn malformed_der_in_the_leaf_is_an_invalid_certificate() {
    let json = survives("cert_malformed_leaf", &[], Some("cert_invalid"));
    assert_eq!(json["failure"]["stage"], "certificate");
    assert!(detail(&json).contains("malformed"), "{}", detail(&json));
}

#[test]
fn random_bytes_instead_of_a_server_hello_fail_the_handshake() {
    survives("tls_random_bytes", &[], Some("tls_handshake_failed"));
}

#[test]
fn a_server_hello_full_of_random_bytes_fails_the_handshake() {
    survives("tls_random_server_hello", &[], Some("tls_handshake_failed"));
}

#[test]
fn plain_http_on_the_tls_port_fails_the_handshake() {
    survives("tls_handshake_failed", &[], Some("tls_handshake_failed"));
}

#[test]
fn a_redirect_loop_stops_at_the_redirect_limit() {
    let json = survives("http_too_many_redirects", &[], Some("http_too_many_redirects"));
    assert_eq!(json["http"]["redirects"].as_array().map(Vec::len), Some(5));
}

#[test]
fn an_answer_that_is_not_http_is_a_protocol_error() {
    survives("http_garbage", &[], Some("http_protocol_error"));
}

#[test]
fn silent_servers_end_at_the_timeout() {
    survives("tls_handshake_timeout", &[], Some("tls_handshake_timeout"));
    survives("http_timeout", &[], Some("http_timeout"));
    survives("http2_timeout", &[], Some("http_timeout"));
}
