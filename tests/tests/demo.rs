//! The README's main command: `vantage-coordinator demo` serves every scenario and diagnoses
//! each one as expected.

use vantage_e2e::run;

#[test]
fn demo_diagnoses_every_scenario() {
    let out = run("vantage-coordinator", &["demo", "--show", "cert_expired"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Every scenario was diagnosed as expected."), "{stdout}");
    for (scenario, diagnosis) in [
        ("healthy ", "UP        -"),
        ("cert_expired ", "DOWN      cert_expired"),
        ("tcp_refused ", "DOWN      tcp_refused"),
        ("dns_nxdomain ", "DOWN      dns_nxdomain"),
        ("all_backends_one_bad ", "DEGRADED  cert_expired"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(scenario))
            .unwrap_or_else(|| panic!("no row for {scenario}:\n{stdout}"));
        assert!(line.contains(diagnosis), "{line}");
    }
    // --show prints the full report, as `check` would.
    assert!(stdout.contains("$ vantage-agent check https://expired.vantage.test:"), "{stdout}");
    assert!(stdout.contains("fix:   Renew the certificate"), "{stdout}");
}

#[test]
fn demo_names_the_scenarios_when_asked_for_an_unknown_one() {
    let out = run("vantage-coordinator", &["demo", "--show", "no_such_thing"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no scenario \"no_such_thing\"") && stderr.contains("cert_expired"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_help_and_version_exit_0() {
    for args in [&["--version"][..], &["check", "--help"][..]] {
        let out = run("vantage-agent", args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}
