//! `vantage-coordinator pki`: a CA, a server certificate and region-bound agent certificates,
//! checked with the real `openssl` (verify, SANs, key usage) and file modes.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use vantage_e2e::run;

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("openssl runs (.ci/setup installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pki_issues_a_ca_server_agent_and_admin_chain_that_openssl_verifies() {
    let dir = std::env::temp_dir().join(format!("vantage-pki-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    for args in [
        &["pki", "init", "--dir", d, "--name", "coordinator.example", "--name", "10.0.0.5"][..],
        &["pki", "issue-agent", "--dir", d, "--region", "eu-west", "--name", "agent-1"][..],
        &["pki", "issue-admin", "--dir", d][..],
    ] {
        let out = run("vantage-coordinator", args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("expires 20"), "expiry is printed");
    }
    for key in ["ca.key", "coordinator.key", "agent-agent-1.key", "admin-admin.key"] {
        let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let ca = dir.join("ca.pem");
    for cert in ["coordinator.pem", "agent-agent-1.pem", "admin-admin.pem"] {
        let out = openssl(&["verify", "-CAfile", ca.to_str().unwrap(), dir.join(cert).to_str().unwrap()]);
        assert!(out.contains(": OK"), "{out}");
    }
    assert!(openssl(&["x509", "-in", ca.to_str().unwrap(), "-noout", "-text"]).contains("ASN1 OID: prime256v1"));
    let server = openssl(&[
        "x509",
        "-in",
        dir.join("coordinator.pem").to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName,extendedKeyUsage",
    ]);
    assert!(server.contains("DNS:coordinator.example") && server.contains("IP Address:10.0.0.5"), "{server}");
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    let agent = openssl(&[
        "x509",
        "-in",
        dir.join("agent-agent-1.pem").to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName,extendedKeyUsage",
    ]);
    assert!(agent.contains("URI:spiffe://vantage/region/eu-west/agent/agent-1"), "{agent}");
    assert!(agent.contains("TLS Web Client Authentication"), "{agent}");

    // Nothing is overwritten, and bad names are refused with a sentence.
    let again = run("vantage-coordinator", &["pki", "init", "--dir", d]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("must not exist yet"));
    let bad = run("vantage-coordinator", &["pki", "issue-agent", "--dir", d, "--region", "eu west", "--name", "x"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--region"));
    let _ = std::fs::remove_dir_all(&dir);
}
