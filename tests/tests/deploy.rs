//! The deployment files, checked by their real validators: the Prometheus alerting rules by
//! `promtool check rules` and by their unit tests under `promtool test rules`; the systemd units
//! by `systemd-analyze verify`; `install.sh` by shellcheck and by installing for real into a
//! staging root, whose files then start a coordinator and an agent that connect.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use vantage_e2e::Process;

/// A file or folder under deploy/.
fn deploy(path: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy")).join(path)
}

/// A fresh temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vantage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, path: &str) -> PathBuf {
        self.0.join(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command to its end: whether it succeeded, and what it said on stdout and stderr.
fn output(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?} starts: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Runs a command that must succeed, and returns what it said.
fn succeeds(command: &mut Command) -> String {
    let (ok, said) = output(command);
    assert!(ok, "{command:?} failed: {said}");
    said
}

/// `vantage-coordinator pki ARGS`, which must succeed.
fn pki(args: &[&str]) {
    let out = vantage_e2e::run("vantage-coordinator", &[&["pki"], args].concat());
    assert!(out.status.success(), "pki {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The `VANTAGE_*` variables a command's `--help` names (`[env: VANTAGE_X=]`).
fn env_names(binary: &str, command: &str) -> Vec<String> {
    let help = String::from_utf8(vantage_e2e::run(binary, &[command, "--help"]).stdout).unwrap();
    help.split("[env: ").skip(1).filter_map(|r| r.split('=').next()).map(str::to_owned).collect()
}

/// The `KEY=value` lines of an env file.
fn env_file(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{}: not KEY=value: {l}", path.display()));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

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

/// deploy/install.sh with these arguments.
fn install_sh(args: &[&str]) -> (bool, String) {
    output(Command::new(deploy("install.sh")).args(args))
}

#[test]
fn install_sh_passes_shellcheck_and_explains_missing_arguments() {
    succeeds(Command::new("shellcheck").arg(deploy("install.sh")));
    let help = succeeds(Command::new(deploy("install.sh")).arg("--help"));
    for flag in
        ["--from", "--url", "--sha256", "--coordinator", "--cert", "--key", "--ca", "--root", "--no-start", "--force"]
    {
        assert!(help.contains(flag), "--help does not document {flag}:\n{help}");
    }
    for (args, says) in [
        (&[][..], "say which component"),
        (&["agent"][..], "give --from DIR"),
        (
            &["agent", "--from", "/nonexistent", "--cert", "a.pem", "--key", "a.key", "--ca", "ca.pem"][..],
            "--coordinator",
        ),
        (&["agent", "--from", "/x", "--coordinator", "https://c:7700"][..], "--cert is required"),
        (&["coordinator", "--url", "file:///x", "--from", "/x"][..], "not both"),
        (&["agent", "--from", "/x", "--root"][..], "--root needs a value"),
        (&["agent", "--frm", "/x"][..], "unknown option: --frm"),
    ] {
        let (ok, said) = install_sh(args);
        assert!(!ok && said.contains(says), "install.sh {args:?} should say {says:?}: {said}");
    }
}

#[test]
fn install_sh_installs_into_a_staging_root_idempotently_and_the_result_runs() {
    let tmp = TempDir::new("install");
    let pki_dir = tmp.join("pki");
    let d = pki_dir.to_str().unwrap();
    pki(&["init", "--dir", d]);
    pki(&["issue-agent", "--dir", d, "--region", "eu-west", "--name", "agent-1"]);
    pki(&["issue-agent", "--dir", d, "--region", "eu-west", "--name", "agent-2"]);
    let file = |name: &str| pki_dir.join(name).to_str().unwrap().to_owned();
    // A staging root with the account files a system has, so install.sh creates the user in it.
    let root = tmp.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    for f in ["passwd", "group", "shadow", "gshadow"] {
        std::fs::write(root.join("etc").join(f), "").unwrap();
    }
    let r = root.to_str().unwrap();
    let bin_dir = vantage_e2e::binary("vantage-agent").parent().unwrap().to_str().unwrap().to_owned();
    let agent_args = |name: &str| -> Vec<String> {
        let args = ["agent", "--root", r, "--from", &bin_dir, "--coordinator", "https://localhost:7700"];
        let files =
            ["--cert".into(), file(&format!("agent-{name}.pem")), "--key".into(), file(&format!("agent-{name}.key"))];
        args.into_iter().map(str::to_owned).chain(files).chain(["--ca".into(), file("ca.pem")]).collect()
    };
    let (agent_1_pem, agent_1_key) = (file("agent-agent-1.pem"), file("agent-agent-1.key"));
    let first_args = agent_args("agent-1");
    let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();

    let (ok, said) = install_sh(&first_args);
    assert!(ok, "{said}");
    assert!(said.contains("created the system user vantage"), "{said}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let vantage = passwd.lines().find(|l| l.starts_with("vantage:")).expect("a vantage user in etc/passwd");
    let fields: Vec<&str> = vantage.split(':').collect();
    assert_eq!(fields[6], "/usr/sbin/nologin", "{vantage}");
    let uid: u32 = fields[2].parse().unwrap();

    let etc = root.join("etc/vantage");
    let key = etc.join("pki/agent.key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(std::fs::metadata(&key).unwrap().uid(), uid, "the key belongs to vantage");
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(&agent_1_key).unwrap());
    assert_eq!(mode(&etc.join("pki/agent.pem")), 0o644);
    assert_eq!(mode(&root.join("usr/local/bin/vantage-agent")), 0o755);
    assert_eq!(
        std::fs::read(root.join("etc/systemd/system/vantage-agent.service")).unwrap(),
        std::fs::read(deploy("systemd/vantage-agent.service")).unwrap()
    );
    let wanted = root.join("etc/systemd/system/multi-user.target.wants/vantage-agent.service");
    assert!(wanted.symlink_metadata().is_ok(), "systemctl --root enabled the unit");
    let env = env_file(&etc.join("agent.env"));
    let known = env_names("vantage-agent", "run");
    for (name, _) in &env {
        assert!(known.contains(name), "{name} is not a variable of vantage-agent run ({known:?})");
    }
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["VANTAGE_COORDINATOR", "VANTAGE_CERT", "VANTAGE_KEY", "VANTAGE_COORDINATOR_CA"]);

    // Again, the same: nothing changes.
    let (ok, said) = install_sh(&first_args);
    assert!(ok && !said.contains("installed"), "a second run changed something: {said}");

    // Another key is refused without --force, and nothing is touched; with --force it replaces.
    let second = agent_args("agent-2");
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let (ok, said) = install_sh(&second);
    assert!(!ok && said.contains("agent.key exists and differs") && said.contains("--force"), "{said}");
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(&agent_1_key).unwrap());
    assert_eq!(std::fs::read(etc.join("pki/agent.pem")).unwrap(), std::fs::read(&agent_1_pem).unwrap());
    let (ok, said) = install_sh(&[&second[..], &["--force"]].concat());
    assert!(ok, "{said}");
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(file("agent-agent-2.key")).unwrap());
    assert_eq!(mode(&key), 0o600);

    // The coordinator from a release tarball, checked by its SHA-256.
    let release = tmp.join("release");
    std::fs::create_dir_all(release.join("vantage-0.1.0")).unwrap();
    std::fs::copy(vantage_e2e::binary("vantage-coordinator"), release.join("vantage-0.1.0/vantage-coordinator"))
        .unwrap();
    let tarball = tmp.join("vantage.tar.gz");
    succeeds(Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(&release).arg("vantage-0.1.0"));
    let sum = succeeds(Command::new("sha256sum").arg(&tarball));
    let sum = sum.split_whitespace().next().unwrap();
    let url = format!("file://{}", tarball.display());
    let coordinator_args = |sha: &str| -> Vec<String> {
        ["coordinator", "--root", r, "--url", &url, "--sha256", sha, "--listen", "127.0.0.1:0"]
            .into_iter()
            .map(str::to_owned)
            .chain(["--http-listen".into(), "127.0.0.1:0".into(), "--cert".into(), file("coordinator.pem")])
            .chain(["--key".into(), file("coordinator.key"), "--ca".into(), file("ca.pem")])
            .collect()
    };
    let wrong = coordinator_args(&"0".repeat(64));
    let (ok, said) = install_sh(&wrong.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && said.contains("SHA-256") && said.contains("nothing installed"), "{said}");
    assert!(!root.join("usr/local/bin/vantage-coordinator").exists());
    let right = coordinator_args(sum);
    let right: Vec<&str> = right.iter().map(String::as_str).collect();
    let (ok, said) = install_sh(&right);
    assert!(ok, "{said}");
    let (ok, said) = install_sh(&right);
    assert!(ok && !said.contains("installed"), "a second run changed something: {said}");
    let token = etc.join("admin.token");
    assert_eq!(mode(&token), 0o600);
    assert!(std::fs::read_to_string(&token).unwrap().trim().len() >= 16, "the admin token is long enough");
    assert_eq!(mode(&etc.join("pki/coordinator.key")), 0o600);
    let env = env_file(&etc.join("coordinator.env"));
    let known = env_names("vantage-coordinator", "serve");
    for (name, _) in &env {
        assert!(known.contains(name), "{name} is not a variable of vantage-coordinator serve ({known:?})");
    }

    // What was installed runs: the coordinator and the agent with their env files and units'
    // arguments (paths moved into the staging root), connected over mTLS.
    let staged = |value: &str| value.replace("/etc/vantage", etc.to_str().unwrap());
    let unit_args = |unit: &str| -> Vec<String> {
        let text = std::fs::read_to_string(root.join("etc/systemd/system").join(unit)).unwrap();
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap().to_owned();
        exec.split_whitespace()
            .skip(1)
            .map(|a| staged(a).replace("/var/lib/vantage", tmp.join("data").to_str().unwrap()))
            .collect()
    };
    let mut command = Command::new(root.join("usr/local/bin/vantage-coordinator"));
    command.args(unit_args("vantage-coordinator.service"));
    for (k, v) in &env {
        command.env(k, staged(v));
    }
    let coordinator = Process::start_with(&mut command, "installed coordinator");
    let line = coordinator.wait_for_line(|l| l.contains("coordinator listening"));
    let addr = line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
    let mut command = Command::new(root.join("usr/local/bin/vantage-agent"));
    command.args(unit_args("vantage-agent.service"));
    for (k, v) in env_file(&etc.join("agent.env")) {
        let v = if k == "VANTAGE_COORDINATOR" {
            format!("https://localhost:{}", addr.rsplit(':').next().unwrap())
        } else {
            staged(&v)
        };
        command.env(k, v);
    }
    let _agent = Process::start_with(&mut command, "installed agent");
    let line = coordinator.wait_for_line(|l| l.contains("agent connected"));
    assert!(line.contains("agent-2") && line.contains("eu-west"), "{line}");
}
