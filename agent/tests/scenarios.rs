//! Every lab scenario through the real `vantage-agent check --json`: the status, the failure
//! code, the certificate health and the exit code must be what the scenario says.

mod support;

use std::time::Instant;

use support::{assert_ended_at_the_timeout, check, lab, timeout_of};
use vantage_shared::failure::FailureCode;

fn assert_scenario(name: &str) {
    let scenario = lab().scenario(name);
    let mut args = scenario.check_args();
    args.push("--json".into());
    let started = Instant::now();
    let run = check(&args);
    let took = started.elapsed();
    let json = run.json();
    let context = format!("scenario {name} ({}):\n{}", scenario.summary, run.stdout);
    // A scenario that ends in a timeout waits for its --timeout, and not for the default.
    if scenario.code.is_some_and(|c| c.as_str().ends_with("_timeout")) {
        eprintln!("{name}: {took:.2?} against --timeout {:?}", timeout_of(&args));
        assert_ended_at_the_timeout(took, timeout_of(&args), &context);
    }
    let status = serde_json::to_value(scenario.status).unwrap();
    assert_eq!(json["status"], status, "{context}");
    let code = json["failure"]["code"].as_str().and_then(FailureCode::from_code);
    assert_eq!(code, scenario.code, "{context}");
    if let Some(code) = scenario.code {
        assert_eq!(json["failure"]["stage"], serde_json::to_value(code.stage()).unwrap(), "{context}");
        assert_eq!(json["failure"]["hint"], code.hint(), "{context}");
        assert_eq!(json["failure"]["message"], code.cause(), "{context}");
    }
    if let Some(health) = scenario.health {
        assert_eq!(json["cert"]["health"], serde_json::to_value(health).unwrap(), "{context}");
    }
    assert_eq!(run.code, scenario.exit, "exit code, {context}\nstderr: {}", run.stderr);
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $( #[test] fn $name() { assert_scenario(stringify!($name)); } )*

        /// A scenario added to the lab without a test here would go unchecked.
        #[test]
        fn every_lab_scenario_has_a_test() {
            let mut tested = vec![$(stringify!($name)),*];
            let mut served: Vec<&str> = lab().scenarios.iter().map(|s| s.name).collect();
            tested.sort();
            served.sort();
            assert_eq!(tested, served);
        }
    };
}

scenarios!(
    healthy,
    regional,
    cert_warning,
    cert_critical,
    cert_expired,
    cert_expired_intermediate,
    cert_not_yet_valid,
    cert_hostname_mismatch,
    cert_wildcard_two_labels,
    cert_wildcard_one_label,
    cert_stale_extra_in_chain,
    http2,
    http2_timeout,
    cert_self_signed,
    cert_untrusted_root,
    cert_chain_incomplete,
    cert_bad_signature,
    cert_wrong_purpose,
    cert_faults_ordered,
    cert_dates_before_name,
    cert_pin_match,
    cert_pin_mismatch,
    cert_not_reloaded,
    cert_reloaded_recently,
    http_5xx,
    http_unexpected_status,
    http_expected_status,
    http_redirect,
    http_no_follow,
    http_too_many_redirects,
    http_body_mismatch,
    http_body_match,
    http_timeout,
    http_huge_headers,
    http_garbage,
    http_many_headers,
    http_endless_body,
    http_endless_body_unread,
    http_gzip_bomb,
    http_slowloris,
    tls_random_bytes,
    tls_random_server_hello,
    tls_thousand_cert_chain,
    cert_malformed_intermediate,
    cert_malformed_leaf,
    plain_http,
    idn_host,
    ipv6_literal,
    tls_handshake_timeout,
    tls_protocol_version,
    tls_protocol_version_alert,
    tls_handshake_failed,
    tcp_refused,
    tcp_timeout,
    all_backends_one_bad,
    all_backends_one_expiring,
    http_to_https_redirect,
    target_denied,
    first_backend_only,
    dns_resolves,
    dns_expected_address,
    dns_unexpected_address,
    dns_nxdomain,
    dns_no_records,
    dns_servfail,
    dns_refused,
    dns_timeout,
);

/// Every failure code is produced by some scenario, except `tcp_unreachable`, which needs a
/// network namespace without routes (see `unreachable.rs`).
#[test]
fn every_failure_code_is_produced_by_a_scenario() {
    let produced: Vec<FailureCode> = lab().scenarios.iter().filter_map(|s| s.code).collect();
    for code in FailureCode::ALL {
        if *code != FailureCode::TcpUnreachable {
            assert!(produced.contains(code), "no lab scenario produces {code}");
        }
    }
}
