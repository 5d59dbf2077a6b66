//! A real Prometheus server (Debian's `prometheus`), for the tests that check what it scrapes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::files::TempDir;

/// How long a query may take to come out as expected (scrapes run each second).
const ANSWER_WITHIN: Duration = Duration::from_secs(90);

/// A Prometheus running on the `prometheus.yml` (and the files it names) in its directory;
/// stopped, and its directory removed, when dropped.
pub struct Prometheus {
    child: Child,
    api: String,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus on `dir/prometheus.yml`, which the caller wrote, after `promtool check
    /// config` accepts it.
    pub fn start(dir: TempDir) -> Prometheus {
        let config = dir.join("prometheus.yml");
        let checked = Command::new("promtool").arg("check").arg("config").arg(&config).output();
        let checked = checked.expect("promtool runs (.ci/setup installs Debian's prometheus)");
        assert!(checked.status.success(), "promtool check config: {checked:?}");
        let port = vantage_shared::lab::server::free_port("127.0.0.1").expect("a free port");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("a log file"))
            .spawn()
            .expect("prometheus runs (.ci/setup installs Debian's prometheus)");
        Prometheus { child, api: format!("http://127.0.0.1:{port}/api/v1/query"), dir }
    }

    /// The instant vector `query` returns, once `done` holds for it.
    pub fn query_until(&self, query: &str, done: impl Fn(&Vec<serde_json::Value>) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "5", "--get", "--data-urlencode", &format!("query={query}"), &self.api])
                .output()
                .expect("curl runs");
            let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let result = answer["data"]["result"].as_array().cloned().unwrap_or_default();
            if done(&result) {
                return result;
            }
            let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "Prometheus never answered {query} as expected: {answer}\n{log}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
