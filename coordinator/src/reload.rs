//! Live reload and target files. `SIGHUP` and `POST /-/reload` read the config file again and
//! apply it (targets, channels, routes, silences, heartbeats, `[watchdog]`, `[alerts]`,
//! `[quorum]` and the public status pages); a file
//! that does not load leaves the running config as it was. The target files of
//! `[[target_files]]` are looked at every `refresh` and any change is applied like a reload; a
//! file that cannot be read or parsed is skipped and its earlier targets kept, a file that is
//! gone takes its targets with it. One reload or look runs at a time.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vantage_proto::v1::TargetSpec;

use crate::config::discovery::{self, Duplicate, Pattern, TargetFiles};
use crate::config::{self, Config, ConfigError};
use crate::hub::{Applied, Hub, HubError};
use crate::metrics::text::Text;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the coordinator was started without --config: there is no config file to reload")]
    NoConfig,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Apply(#[from] HubError),
}

/// What the last reload said, for `/metrics`.
#[derive(Debug, Clone, Copy)]
struct Status {
    successful: bool,
    /// Unix seconds of the last successful load (start-up counts).
    success_at: f64,
    /// Target files (or their directories) skipped at the last look.
    files_failing: usize,
}

/// One target file as last read: its content's digest, and its targets or why it was skipped.
#[derive(Debug, Clone)]
struct Seen {
    digest: u64,
    outcome: Result<Vec<TargetSpec>, String>,
}

/// The target files as last looked at.
#[derive(Debug, Default)]
pub struct Files {
    seen: BTreeMap<PathBuf, Seen>,
    /// Directories that could not be listed, with why (their files' targets are kept).
    unlisted: BTreeMap<PathBuf, String>,
}

/// What a look at the target files found.
#[derive(Debug, Default)]
pub struct Found {
    /// Each readable file's targets, by path.
    pub files: Vec<Vec<TargetSpec>>,
    /// Files skipped now: their targets in the hub stay as they are.
    failing: HashSet<String>,
    /// Patterns whose directory could not be listed: every target from a file they match stays.
    unlisted: Vec<Pattern>,
    /// Whether anything differs from the look before.
    pub changed: bool,
}

impl Found {
    /// Whether targets from `source` stay as they are (their file could not be read now).
    pub fn keeps(&self, source: &str) -> bool {
        self.failing.contains(source)
            || source.strip_prefix("file:").is_some_and(|p| self.unlisted.iter().any(|u| u.matches(Path::new(p))))
    }

    fn failing_count(&self) -> usize {
        self.failing.len() + self.unlisted.len()
    }
}

fn digest(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

impl Files {
    /// Looks at the files of `entries` (all of them when `due` is `None`, else only the entries
    /// it flags; the others as last seen). Errors are logged when they first appear.
    pub fn look(&mut self, entries: &[TargetFiles], due: Option<&[bool]>) -> Found {
        let mut found = Found::default();
        let mut paths: BTreeMap<PathBuf, discovery::Format> = BTreeMap::new();
        let mut unlisted: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let fresh = due.is_none_or(|due| due.get(i).copied().unwrap_or(true));
            for pattern in &entry.patterns {
                if !fresh {
                    for path in self.seen.keys().filter(|p| pattern.matches(p)) {
                        paths.insert(path.clone(), pattern.format);
                    }
                    if let Some(why) = self.unlisted.get(&pattern.dir) {
                        unlisted.insert(pattern.dir.clone(), why.clone());
                        found.unlisted.push(pattern.clone());
                    }
                    continue;
                }
                match std::fs::read_dir(&pattern.dir) {
                    Ok(dir) => {
                        for path in dir.filter_map(Result::ok).map(|e| e.path()) {
                            if pattern.matches(&path) && !path.is_dir() {
                                paths.insert(path, pattern.format);
                            }
                        }
                    }
                    // No directory, no files.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        if self.unlisted.get(&pattern.dir) != Some(&e.to_string()) {
                            tracing::error!(
                                dir = %pattern.dir.display(),
                                "target files: cannot list the directory, its files' targets are kept: {e}"
                            );
                        }
                        unlisted.insert(pattern.dir.clone(), e.to_string());
                        found.unlisted.push(pattern.clone());
                    }
                }
            }
        }
        let fresh_paths: Option<HashSet<&PathBuf>> = due.map(|due| {
            paths
                .keys()
                .filter(|p| {
                    entries.iter().zip(due).any(|(e, d)| *d && e.patterns.iter().any(|pattern| pattern.matches(p)))
                })
                .collect()
        });
        let mut seen = BTreeMap::new();
        for (path, format) in &paths {
            let before = self.seen.get(path);
            let read_now = fresh_paths.as_ref().is_none_or(|f| f.contains(path)) || before.is_none();
            let now = match (read_now, before) {
                (false, Some(before)) => before.clone(),
                _ => read_file(path, *format, before),
            };
            match &now.outcome {
                Ok(targets) => found.files.push(targets.clone()),
                Err(_) => {
                    found.failing.insert(discovery::source_of(path));
                }
            }
            found.changed |= before.is_none_or(|b| b.digest != now.digest || b.outcome.is_ok() != now.outcome.is_ok());
            seen.insert(path.clone(), now);
        }
        for gone in self.seen.keys().filter(|p| !seen.contains_key(*p)) {
            tracing::info!(file = %gone.display(), "target file gone: its targets are removed");
            found.changed = true;
        }
        found.changed |= unlisted != self.unlisted;
        self.seen = seen;
        self.unlisted = unlisted;
        found
    }
}

/// Reads and parses one target file; an error is logged unless it is the one seen before.
fn read_file(path: &Path, format: discovery::Format, before: Option<&Seen>) -> Seen {
    let (digest, outcome) = match std::fs::read(path) {
        Ok(bytes) => {
            let digest = digest(&bytes);
            if let Some(before) = before.filter(|b| b.digest == digest) {
                return before.clone();
            }
            let outcome = match std::str::from_utf8(&bytes) {
                Ok(text) => discovery::parse_target_file(text, path, format),
                Err(_) => Err(discovery::TargetFileError::Parse {
                    path: path.display().to_string(),
                    message: "not UTF-8 text".into(),
                }),
            };
            let outcome = outcome.map(|parsed| {
                for url in parsed.duplicates {
                    tracing::warn!(file = %path.display(), target = url, "target listed twice in one file: the first is used");
                }
                parsed.targets
            });
            (digest, outcome.map_err(|e| e.to_string()))
        }
        Err(e) => {
            let message = discovery::TargetFileError::Read { path: path.display().to_string(), reason: e.to_string() };
            (digest(message.to_string().as_bytes()), Err(message.to_string()))
        }
    };
    if let Err(e) = &outcome {
        if before.is_none_or(|b| b.outcome.as_ref().err() != Some(e)) {
            tracing::error!("target file skipped, its earlier targets are kept: {e}");
        }
    }
    Seen { digest, outcome }
}

/// The config's targets and the target files', each URL once (`discovery::merge`); duplicates
/// are logged.
fn merge(config: Vec<TargetSpec>, found: &Found) -> Vec<TargetSpec> {
    if found.files.is_empty() {
        return config;
    }
    let (targets, duplicates) = discovery::merge(config, found.files.clone());
    for Duplicate { url, kept, dropped } in duplicates {
        tracing::warn!(target = url, kept, dropped, "target defined twice: the first definition is used");
    }
    targets
}

/// What the loop needs between reloads.
struct Inner {
    /// The config file's own targets, as last loaded, to merge with the target files' when they
    /// change (kept only when there are target files: 100,000 targets are not held twice for
    /// nothing).
    config_targets: Vec<TargetSpec>,
    target_files: Vec<TargetFiles>,
    files: Files,
    /// When each `[[target_files]]` entry is looked at next.
    due: Vec<Instant>,
}

impl Inner {
    fn schedule(&mut self) {
        let now = Instant::now();
        self.due = self.target_files.iter().map(|t| now + t.refresh).collect();
    }
}

/// Reloads the config and watches the target files of a running coordinator.
pub struct Reloader {
    hub: Arc<Hub>,
    path: Option<PathBuf>,
    inner: tokio::sync::Mutex<Inner>,
    status: Mutex<Status>,
    /// Wakes the loop when a reload changed the schedule.
    rescheduled: tokio::sync::Notify,
    /// The public status pages in force.
    public: Arc<crate::public::Public>,
}

/// The config at start-up with its target files read: what `Hub::open` gets.
pub struct Initial {
    pub config: Config,
    files: Files,
    found: Found,
}

impl Initial {
    /// Loads the config at `path` and reads its target files.
    pub fn load(path: &Path) -> Result<Initial, ConfigError> {
        let config = config::load(path)?;
        let mut files = Files::default();
        let found = files.look(&config.target_files, None);
        Ok(Initial { config, files, found })
    }

    /// Every target the config brings, its files' too.
    pub fn targets(&self) -> Vec<TargetSpec> {
        merge(self.config.targets.clone(), &self.found)
    }
}

impl Reloader {
    /// After `Hub::open`: applies the target files once more (their targets that are gone since
    /// the last run are removed) and takes over watching them.
    pub async fn start(
        hub: Arc<Hub>,
        path: Option<PathBuf>,
        initial: Option<Initial>,
    ) -> Result<Arc<Reloader>, HubError> {
        let mut status_pages = Vec::new();
        let (inner, failing) = match initial {
            Some(Initial { config, files, found }) => {
                let Config { targets, target_files, shard, status_pages: pages, .. } = config;
                status_pages = pages;
                let config_targets = if target_files.is_empty() { Vec::new() } else { targets.clone() };
                hub.apply_config_targets(merge(targets, &found), shard, |s| found.keeps(s)).await?;
                let mut inner = Inner { config_targets, target_files, files, due: Vec::new() };
                inner.schedule();
                (inner, found.failing_count())
            }
            None => (
                Inner {
                    config_targets: Vec::new(),
                    target_files: Vec::new(),
                    files: Files::default(),
                    due: Vec::new(),
                },
                0,
            ),
        };
        Ok(Arc::new(Reloader {
            hub,
            path,
            inner: tokio::sync::Mutex::new(inner),
            status: Mutex::new(Status { successful: true, success_at: unix_now(), files_failing: failing }),
            rescheduled: tokio::sync::Notify::new(),
            public: Arc::new(crate::public::Public::new(status_pages)),
        }))
    }

    /// The public status pages in force (`/s/{slug}`).
    pub fn public(&self) -> &Arc<crate::public::Public> {
        &self.public
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Reads the config file again and applies it; on any error the running config stays. The
    /// outcome is logged (one line) and shown on `/metrics`.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoConfig)?;
        let mut inner = self.inner.lock().await;
        let result = self.apply(path, &mut inner).await;
        match &result {
            Ok(summary) => {
                self.set_status(|s| (s.successful, s.success_at) = (true, unix_now()));
                tracing::info!("config reloaded from {}: {summary}", path.display());
            }
            Err(e) => {
                self.set_status(|s| s.successful = false);
                tracing::error!("config reload failed, the running config is kept: {e}");
            }
        }
        self.rescheduled.notify_one();
        result
    }

    async fn apply(&self, path: &Path, inner: &mut Inner) -> Result<String, ReloadError> {
        let path = path.to_owned();
        let mut config =
            tokio::task::spawn_blocking(move || config::load(&path)).await.map_err(|_| HubError::Closed)??;
        let found = inner.files.look(&config.target_files, None);
        let config_targets = if config.target_files.is_empty() { Vec::new() } else { config.targets.clone() };
        let mut targets = merge(std::mem::take(&mut config.targets), &found);
        let shard = config.shard;
        targets.retain(|t| shard.owns(&t.url));
        let count = targets.len();
        let Applied { added, changed, removed, .. } =
            self.hub.apply_config_targets(targets, shard, |s| found.keeps(s)).await?;
        let alerting = &config.alerting;
        let in_shard = if shard.is_split() { format!(" in {shard}") } else { String::new() };
        let mut summary = format!(
            "{} targets{in_shard} ({added} added, {changed} changed, {removed} removed), {} channels, {} routes, \
             {} silences, {} heartbeats",
            count,
            alerting.channels.len(),
            alerting.routes.len(),
            config.silences.len(),
            alerting.heartbeats.len(),
        );
        if let Some(watchdog) = &alerting.watchdog {
            summary += &format!(", watchdog {} every {:?}", watchdog.target.kind(), watchdog.period);
        }
        if !config.target_files.is_empty() {
            let skipped = found.failing_count();
            summary += &format!(", {} target files ({skipped} skipped)", found.files.len() + found.failing.len());
        }
        if !config.status_pages.is_empty() {
            summary += &format!(", {} status pages", config.status_pages.len());
        }
        self.hub
            .apply_config_settings(config.alerting, config.silences, config.region_forget_after, config.impaired)
            .await?;
        self.public.set(std::mem::take(&mut config.status_pages));
        self.set_status(|s| s.files_failing = found.failing_count());
        inner.config_targets = config_targets;
        inner.target_files = config.target_files;
        inner.schedule();
        Ok(summary)
    }

    /// Looks at the target files that are due, and applies what changed.
    async fn look(&self) {
        let mut inner = self.inner.lock().await;
        let now = Instant::now();
        let due: Vec<bool> = inner.due.iter().map(|d| *d <= now).collect();
        if !due.contains(&true) {
            return;
        }
        let Inner { files, target_files, config_targets, .. } = &mut *inner;
        let found = files.look(target_files, Some(&due));
        self.set_status(|s| s.files_failing = found.failing_count());
        if found.changed {
            let targets = merge(config_targets.clone(), &found);
            match self.hub.apply_config_targets(targets, self.hub.shard(), |s| found.keeps(s)).await {
                // A file that broke changes nothing: its error is logged already.
                Ok(Applied { added: 0, changed: 0, removed: 0, .. }) => {}
                Ok(Applied { added, changed, removed, .. }) => {
                    tracing::info!("target files changed: {added} targets added, {changed} changed, {removed} removed")
                }
                Err(e) => tracing::error!("applying the target files failed: {e}"),
            }
        }
        let refresh: Vec<Duration> = inner.target_files.iter().map(|t| t.refresh).collect();
        for ((d, is_due), refresh) in inner.due.iter_mut().zip(due).zip(refresh) {
            if is_due {
                *d = now + refresh;
            }
        }
    }

    /// Runs until aborted: a reload on each `SIGHUP`, and the target files looked at when due.
    pub async fn run(self: Arc<Self>, mut hangup: Option<tokio::signal::unix::Signal>) {
        loop {
            let next = self.inner.lock().await.due.iter().min().copied();
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup => {
                    tracing::info!("SIGHUP: reloading the config");
                    // The outcome is logged and on /metrics.
                    if let Err(e @ ReloadError::NoConfig) = self.reload().await {
                        tracing::warn!("SIGHUP ignored: {e}");
                    }
                }
                _ = due => self.look().await,
                _ = self.rescheduled.notified() => {}
            }
        }
    }

    /// Listens for `SIGHUP` (from now on it reloads instead of ending the process) and runs the
    /// loop.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP ({e}): reload with POST /-/reload");
                None
            }
        };
        tokio::spawn(self.clone().run(hangup))
    }

    /// The reload series for `/metrics` (Prometheus's names), and the failing target files.
    pub fn render_metrics(&self) -> String {
        let status = *self.status.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = Text::new();
        text.family(
            "vantage_config_last_reload_successful",
            "gauge",
            "Whether the last config reload (or the load at start-up) succeeded.",
        );
        text.sample("vantage_config_last_reload_successful", &[], f64::from(u8::from(status.successful)));
        text.family(
            "vantage_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the config was last loaded successfully, in Unix seconds.",
        );
        text.sample("vantage_config_last_reload_success_timestamp_seconds", &[], status.success_at);
        text.family(
            "vantage_target_files_failing",
            "gauge",
            "Target files (or their directories) skipped at the last look because they cannot be read or parsed; \
             their earlier targets are kept.",
        );
        text.sample("vantage_target_files_failing", &[], status.files_failing as f64);
        text.finish()
    }
}

fn unix_now() -> f64 {
    crate::clock::now_ms() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(found: &Found) -> Vec<String> {
        found.files.iter().flatten().map(|t| t.url.clone()).collect()
    }

    #[test]
    fn a_look_sees_files_come_change_break_and_go() {
        let dir = std::env::temp_dir().join(format!("vantage-reload-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sd")).unwrap();
        let entries = vec![TargetFiles {
            patterns: vec![Pattern::new(&dir, "sd/*.json").unwrap(), Pattern::new(&dir, "sd/*.toml").unwrap()],
            refresh: Duration::from_secs(1),
        }];
        let mut files = Files::default();
        let found = files.look(&entries, None);
        assert!(urls(&found).is_empty() && !found.changed, "no files yet");

        std::fs::write(dir.join("sd/b.toml"), "[[group]]\ntargets = [\"https://b.test/\"]\n").unwrap();
        std::fs::write(dir.join("sd/a.json"), r#"[{"targets": ["https://a.test/"]}]"#).unwrap();
        std::fs::write(dir.join("sd/notes.txt"), "not a target file").unwrap();
        let found = files.look(&entries, None);
        assert_eq!((urls(&found), found.changed), (vec!["https://a.test/".into(), "https://b.test/".into()], true));
        assert!(!files.look(&entries, None).changed, "the same files: nothing to apply");

        std::fs::write(dir.join("sd/a.json"), r#"[{"targets": ["https://a.test/", "https://a2.test/"]}]"#).unwrap();
        // Not due: not read again.
        assert!(!files.look(&entries, Some(&[false])).changed);
        let found = files.look(&entries, Some(&[true]));
        assert!(found.changed);
        assert_eq!(urls(&found).len(), 3);

        std::fs::write(dir.join("sd/b.toml"), "[[group]]\ntargets = \"https://b.test/\"\n").unwrap();
        let found = files.look(&entries, None);
        let b = discovery::source_of(&dir.join("sd/b.toml"));
        assert!(found.changed && found.keeps(&b) && !found.keeps(&discovery::source_of(&dir.join("sd/a.json"))));
        assert_eq!((urls(&found).len(), found.failing_count()), (2, 1), "b's targets are kept, not read");

        std::fs::remove_file(dir.join("sd/a.json")).unwrap();
        let found = files.look(&entries, None);
        assert!(found.changed && urls(&found).is_empty() && found.keeps(&b));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
