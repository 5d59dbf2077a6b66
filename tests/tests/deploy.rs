//! The deployment files, checked by their real validators: the Prometheus alerting rules by
//! `promtool check rules` and by their unit tests under `promtool test rules`; the systemd units
//! by `systemd-analyze verify`.

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

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    // The units name /usr/local/bin; here they run the binaries just built.
    let dir = std::env::temp_dir().join(format!("vantage-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = vantage_e2e::binary("vantage-agent");
    let bin_dir = bin.parent().unwrap().to_str().unwrap();
    let mut units = Vec::new();
    for unit in ["vantage-coordinator.service", "vantage-agent.service"] {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/systemd/").to_owned() + unit)
                .unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/vantage-"), "{unit}");
        for hardening in ["NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n", "User=vantage"] {
            assert!(text.contains(hardening), "{unit} lacks {hardening}");
        }
        let path = dir.join(unit);
        std::fs::write(&path, text.replace("/usr/local/bin", bin_dir)).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze").arg("verify").args(&units).output().expect("systemd-analyze runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    let _ = std::fs::remove_dir_all(&dir);
}
