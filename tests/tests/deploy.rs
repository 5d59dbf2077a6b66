//! The deployment files, checked by their real validators: the Prometheus alerting rules by
//! `promtool check rules` and by their unit tests under `promtool test rules`.

use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (.ci/setup installs Debian's prometheus)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn the_alerting_rules_are_valid_and_their_tests_pass() {
    let checked = promtool(&["check", "rules", "vantage-rules.yml"]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "vantage-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}
