//! Headless Chromium (Debian's, driven by Selenium through `tests/browser/drive.py`) for the
//! page tests: one JSON command per line, one JSON answer per line; and where their screenshots go.

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Headless Chromium behind `drive.py`: one JSON command per line, one JSON answer per line.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Browser {
    pub fn start() -> Browser {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/drive.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("python3 runs drive.py (.ci/setup installs selenium, chromium and chromium-driver)");
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut browser = Browser { child, stdin, answers };
        let version = browser.answer(Duration::from_secs(90)).unwrap_or_else(|e| panic!("Chromium did not start: {e}"));
        eprintln!("headless Chromium {version}");
        browser
    }

    fn answer(&mut self, within: Duration) -> Result<Value, String> {
        let line =
            self.answers.recv_timeout(within).map_err(|_| format!("no answer from drive.py within {within:?}"))?;
        let answer: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        if answer["ok"] == true { Ok(answer["value"].clone()) } else { Err(answer["error"].to_string()) }
    }

    pub fn call(&mut self, command: Value) -> Result<Value, String> {
        let within = Duration::from_secs(command["timeout"].as_u64().unwrap_or(30) + 60);
        writeln!(self.stdin, "{command}").map_err(|e| format!("drive.py is gone: {e}"))?;
        self.stdin.flush().map_err(|e| format!("drive.py is gone: {e}"))?;
        self.answer(within)
    }

    pub fn must(&mut self, command: Value) -> Value {
        self.call(command.clone()).unwrap_or_else(|e| panic!("{command}: {e}"))
    }

    pub fn open(&mut self, url: &str) {
        self.must(json!({"cmd": "open", "url": url}));
    }

    /// Waits (up to `seconds`) until the JS expression is truthy; returns its value.
    pub fn wait(&mut self, what: &str, js: &str, seconds: u64) -> Value {
        self.call(json!({"cmd": "wait", "js": js, "timeout": seconds}))
            .unwrap_or_else(|e| panic!("the page never showed {what} within {seconds}s: {e}"))
    }

    pub fn eval(&mut self, js: &str) -> Value {
        self.must(json!({"cmd": "eval", "js": js}))
    }

    pub fn screenshot(&mut self, path: &std::path::Path) {
        self.must(json!({"cmd": "screenshot", "path": path.to_str().expect("utf-8 path")}));
        let png = std::fs::read(path).expect("the screenshot was written");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} is not a real screenshot", path.display());
        println!("screenshot: {}", path.display());
    }
    /// Emulates `prefers-color-scheme` (`"dark"`, `"light"`, or `""` for the browser's own).
    pub fn color_scheme(&mut self, scheme: &str) {
        let dark = self.must(json!({"cmd": "media", "scheme": scheme}));
        assert_eq!(dark, scheme == "dark", "the page sees prefers-color-scheme: {scheme}");
    }

    /// The WCAG contrast ratio between the computed `color` (or `fill`) of the element `css`
    /// and `background` (a JS expression for a colour, e.g. the body's background).
    pub fn contrast(&mut self, css: &str, property: &str, background: &str) -> f64 {
        let js = format!(
            "(function () {{ function lum(c) {{ var v = c.match(/[0-9.]+/g).slice(0, 3).map(function (x) {{ \
             x = x / 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); }}); \
             return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; }} \
             var e = document.querySelector({css}); if (!e) return null; \
             var a = lum(getComputedStyle(e)[{property}]), b = lum({background}); \
             return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); }})()",
            css = serde_json::to_string(css).unwrap(),
            property = serde_json::to_string(property).unwrap(),
        );
        self.eval(&js).as_f64().unwrap_or_else(|| panic!("no element {css} to measure"))
    }
}

impl Drop for Browser {
    /// drive.py quits chromedriver and Chromium before it exits; if it does not exit in time,
    /// its whole process group goes (Chromium outlives a killed chromedriver otherwise).
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

/// `target/artifacts/status-page/`, made if need be: where the pages' screenshots are saved.
pub fn artifacts() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/artifacts/status-page"));
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir.canonicalize().expect("artifacts dir")
}
