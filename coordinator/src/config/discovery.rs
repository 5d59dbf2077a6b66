//! Targets from files (`[[target_files]]`), in the shape of Prometheus's `file_sd`: a list of
//! groups, each with `targets` (URLs), `labels` and any of a `[[target]]`'s other fields, applied
//! to each of its URLs. JSON files hold the list itself (`[{"targets": […], …}]`); TOML files
//! hold it as `[[group]]` tables. Which files: patterns whose last path segment may hold `*` (any
//! characters) and `?` (one), relative to the config file's directory, ending in `.json` or
//! `.toml` (which says how the file is read). The pure parts are here: patterns, parsing and the
//! merge rule; `reload` reads the files and polls them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vantage_proto::v1::TargetSpec;

use super::duration;
use super::targets::TargetEntry;
use crate::spec::SpecError;

/// Default of `[[target_files]] refresh`: how often the files are looked at (Prometheus's
/// `file_sd` default is 5 minutes; targets here are edited by hand or by a generator, and a
/// look costs one read of each file).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
/// Shortest `refresh`.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// `[[target_files]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetFilesEntry {
    files: Vec<String>,
    #[serde(default, deserialize_with = "duration")]
    refresh: Option<Duration>,
}

/// `[[target_files]]`, checked: patterns resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFiles {
    pub patterns: Vec<Pattern>,
    pub refresh: Duration,
}

impl TargetFilesEntry {
    /// Checks the entry; relative patterns are taken from `dir`.
    pub(super) fn check(self, dir: &Path) -> Result<TargetFiles, String> {
        if self.files.is_empty() {
            return Err("target_files: files: name at least one file or pattern".into());
        }
        let patterns = self
            .files
            .iter()
            .map(|f| Pattern::new(dir, f))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("target_files: {e}"))?;
        let refresh = self.refresh.unwrap_or(DEFAULT_REFRESH);
        if refresh < MIN_REFRESH {
            return Err(format!("target_files: refresh: at least {MIN_REFRESH:?}"));
        }
        Ok(TargetFiles { patterns, refresh })
    }
}

/// How a target file is read, from its name's ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

/// A file name pattern: a directory and a last segment that may hold `*` and `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub dir: PathBuf,
    pub name: String,
    pub format: Format,
}

impl Pattern {
    pub fn new(dir: &Path, text: &str) -> Result<Pattern, String> {
        let path = dir.join(text);
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| format!("{text:?}: not a file name"))?;
        let parent = path.parent().unwrap_or(dir);
        if parent.to_str().is_some_and(|p| p.contains(['*', '?', '['])) {
            return Err(format!("{text:?}: a pattern may only be in the last path segment"));
        }
        let format = if name.ends_with(".json") {
            Format::Json
        } else if name.ends_with(".toml") {
            Format::Toml
        } else {
            return Err(format!("{text:?}: must end in .json or .toml"));
        };
        Ok(Pattern { dir: parent.to_path_buf(), name: name.to_owned(), format })
    }

    /// Whether `path` is one of this pattern's files.
    pub fn matches(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path())
            && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| glob_match(&self.name, n))
    }
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer wildcard match, backtracking only to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The source a target from `path` carries (`status` and `ListTargets` show it).
pub fn source_of(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// Why a target file was skipped (its earlier targets are kept).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetFileError {
    #[error("{path}: cannot read it: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: group {group}: {message}")]
    Group { path: String, group: usize, message: String },
    #[error("{path}: group {group}: target {url}: {source}")]
    Target { path: String, group: usize, url: String, source: SpecError },
}

/// A target file's targets, checked, and the URLs it lists more than once (the first wins).
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub targets: Vec<TargetSpec>,
    pub duplicates: Vec<String>,
}

/// Parses a target file's text; `path` names it in errors and in its targets' source.
pub fn parse_target_file(text: &str, path: &Path, format: Format) -> Result<Parsed, TargetFileError> {
    let shown = path.display().to_string();
    let parse_error = |message: String| TargetFileError::Parse { path: shown.clone(), message };
    let groups: Vec<serde_json::Value> = match format {
        Format::Json => {
            serde_json::from_str(text).map_err(|e| parse_error(format!("not a JSON list of groups: {e}")))?
        }
        Format::Toml => {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| match super::one_line(text, &e) {
                (Some(line), message) => TargetFileError::Parse { path: format!("{shown}:{line}"), message },
                (None, message) => parse_error(message),
            })?;
            let groups = table.remove("group").unwrap_or(toml::Value::Array(Vec::new()));
            if let Some(key) = table.keys().next() {
                return Err(parse_error(format!("unknown key `{key}` (a target file holds [[group]] tables)")));
            }
            let toml::Value::Array(groups) = groups else {
                return Err(parse_error("`group` must be a list of [[group]] tables".into()));
            };
            groups
                .into_iter()
                .map(|g| serde_json::to_value(g).map_err(|e| parse_error(e.to_string())))
                .collect::<Result<_, _>>()?
        }
    };
    let source = source_of(path);
    let mut parsed = Parsed::default();
    let mut seen: HashSet<String> = HashSet::new();
    for (n, group) in groups.into_iter().enumerate() {
        let group_number = n + 1;
        let group_error =
            |message: String| TargetFileError::Group { path: shown.clone(), group: group_number, message };
        let serde_json::Value::Object(mut settings) = group else {
            return Err(group_error("must be a table with `targets`".into()));
        };
        if settings.contains_key("url") {
            return Err(group_error("list URLs in `targets`, not `url`".into()));
        }
        let urls = match settings.remove("targets") {
            Some(serde_json::Value::Array(urls)) => urls,
            Some(_) => return Err(group_error("targets: must be a list of URLs".into())),
            None => return Err(group_error("targets: missing".into())),
        };
        for url in urls {
            let serde_json::Value::String(url) = url else {
                return Err(group_error("targets: must be a list of URLs".into()));
            };
            let mut entry = settings.clone();
            entry.insert("url".into(), serde_json::Value::String(url.clone()));
            let entry: TargetEntry =
                serde_json::from_value(serde_json::Value::Object(entry)).map_err(|e| group_error(e.to_string()))?;
            let spec = entry.spec(&source).map_err(|source| TargetFileError::Target {
                path: shown.clone(),
                group: group_number,
                url: url.clone(),
                source,
            })?;
            if seen.insert(spec.url.clone()) {
                parsed.targets.push(spec);
            } else {
                parsed.duplicates.push(spec.url);
            }
        }
    }
    Ok(parsed)
}

/// A URL defined in more than one place: where it stays, and where it was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub url: String,
    pub kept: String,
    pub dropped: String,
}

/// The targets of the config file and of its target files, each URL once: the config file's
/// `[[target]]` wins, then the files in the order given (sorted by path), and within a file its
/// first mention. Every other definition is reported, to be logged.
pub fn merge(config: Vec<TargetSpec>, files: Vec<Vec<TargetSpec>>) -> (Vec<TargetSpec>, Vec<Duplicate>) {
    let mut seen: std::collections::HashMap<String, String> =
        config.iter().map(|t| (t.url.clone(), t.source.clone())).collect();
    let mut merged = config;
    let mut duplicates = Vec::new();
    for file in files {
        for spec in file {
            match seen.get(&spec.url) {
                Some(kept) => duplicates.push(Duplicate { url: spec.url, kept: kept.clone(), dropped: spec.source }),
                None => {
                    seen.insert(spec.url.clone(), spec.source.clone());
                    merged.push(spec);
                }
            }
        }
    }
    (merged, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> PathBuf {
        PathBuf::from(p)
    }

    #[test]
    fn patterns_match_in_their_last_segment_only() {
        let p = Pattern::new(Path::new("/etc/vantage"), "targets/*.json").unwrap();
        assert_eq!(
            (p.dir.as_path(), p.name.as_str(), p.format),
            (Path::new("/etc/vantage/targets"), "*.json", Format::Json)
        );
        assert!(p.matches(Path::new("/etc/vantage/targets/web.json")));
        assert!(!p.matches(Path::new("/etc/vantage/targets/web.json.bak")));
        assert!(!p.matches(Path::new("/etc/vantage/targets/sub/web.json")));
        assert!(!p.matches(Path::new("/etc/vantage/web.json")));
        let abs = Pattern::new(Path::new("/etc/vantage"), "/srv/sd/pods-?.toml").unwrap();
        assert_eq!(abs.dir, path("/srv/sd"));
        assert!(abs.matches(Path::new("/srv/sd/pods-a.toml")) && !abs.matches(Path::new("/srv/sd/pods-ab.toml")));
        for (bad, why) in [
            ("*/web.json", "only be in the last path segment"),
            ("targets/web.yaml", "must end in .json or .toml"),
            ("targets/", "must end in .json or .toml"),
        ] {
            let e = Pattern::new(Path::new("/etc/vantage"), bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn wildcards_match_as_a_shell_would() {
        for (p, n, expected) in [
            ("*.json", "a.json", true),
            ("*.json", ".json", true),
            ("*.json", "a.toml", false),
            ("tg_*.json", "tg_web.json", true),
            ("tg_*.json", "web.json", false),
            ("a*b*c.json", "axxbyyc.json", true),
            ("a*b*c.json", "axxcyyb.json", false),
            ("?.toml", "a.toml", true),
            ("?.toml", "ab.toml", false),
            ("web.json", "web.json", true),
            ("*", "", true),
        ] {
            assert_eq!(glob_match(p, n), expected, "{p} {n}");
        }
    }

    #[test]
    fn a_group_s_settings_apply_to_each_of_its_urls() {
        let json = r#"[
          {"targets": ["https://a.example/", "https://b.example/"], "labels": {"team": "shop"},
           "interval": "30s", "all_backends": true, "regions": ["eu", "us"]},
          {"targets": ["https://c.example/"]}
        ]"#;
        let file = path("/etc/vantage/targets/web.json");
        let parsed = parse_target_file(json, &file, Format::Json).unwrap();
        let urls: Vec<&str> = parsed.targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["https://a.example/", "https://b.example/", "https://c.example/"]);
        let b = &parsed.targets[1];
        assert_eq!((b.labels["team"].as_str(), b.all_backends, b.regions.len()), ("shop", true, 2));
        assert_eq!(crate::spec::timing(b).0, Duration::from_secs(30));
        assert_eq!(b.source, "file:/etc/vantage/targets/web.json");
        assert!(parsed.targets[2].labels.is_empty() && !parsed.targets[2].all_backends);

        let toml = "[[group]]\ntargets = [\"https://pods.shop.svc.cluster.local:8443/healthz\"]\nall_backends = true\n\
                    labels = { team = \"shop\" }\n\n[[group]]\ntargets = [\"https://d.example/\", \"https://D.example\"]\n";
        let parsed = parse_target_file(toml, &path("/srv/sd/k8s.toml"), Format::Toml).unwrap();
        assert_eq!(parsed.targets.len(), 2);
        assert!(parsed.targets[0].all_backends);
        assert_eq!(parsed.duplicates, ["https://d.example/"], "the first mention wins");
    }

    #[test]
    fn a_bad_target_file_says_which_file_group_and_field() {
        let file = path("/t/web.json");
        for (text, format, expected) in [
            ("{", Format::Json, "/t/web.json: not a JSON list of groups"),
            ("[{\"labels\": {}}]", Format::Json, "/t/web.json: group 1: targets: missing"),
            ("[{\"targets\": \"https://a/\"}]", Format::Json, "/t/web.json: group 1: targets: must be a list"),
            (
                "[{\"targets\": [\"https://a/\"], \"url\": \"https://b/\"}]",
                Format::Json,
                "group 1: list URLs in `targets`",
            ),
            (
                "[{\"targets\": [\"https://a/\"]}, {\"targets\": [\"https://b/\"], \"intervl\": \"5s\"}]",
                Format::Json,
                "group 2: unknown field `intervl`",
            ),
            ("[{\"targets\": [\"https://a/\"], \"interval\": \"soon\"}]", Format::Json, "group 1: invalid duration"),
            ("[{\"targets\": [\"ftp://a/\"]}]", Format::Json, "/t/web.json: group 1: target ftp://a/: url:"),
            (
                "[{\"targets\": [\"https://a/\"], \"quorum\": 3, \"regions\": [\"eu\"]}]",
                Format::Json,
                "target https://a/: quorum:",
            ),
            ("targets = []\n", Format::Toml, "/t/web.json: unknown key `targets`"),
            ("[[group]]\ntargets = [\"https://a/\"]\ninterval = \n", Format::Toml, "/t/web.json:3: "),
        ] {
            let e = parse_target_file(text, &file, format).unwrap_err().to_string();
            assert!(e.starts_with(expected) || e.contains(expected), "{text}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        assert_eq!(parse_target_file("[]", &file, Format::Json).unwrap(), Parsed::default(), "an empty list is fine");
        assert_eq!(parse_target_file("", &file, Format::Toml).unwrap(), Parsed::default());
    }

    #[test]
    fn the_config_file_wins_then_the_first_file_by_path() {
        let spec =
            |url: &str, source: &str| TargetSpec { url: url.into(), source: source.into(), ..Default::default() };
        let config = vec![spec("https://a/", "config")];
        let files = vec![
            vec![spec("https://a/", "file:/t/1.json"), spec("https://b/", "file:/t/1.json")],
            vec![spec("https://b/", "file:/t/2.json"), spec("https://c/", "file:/t/2.json")],
        ];
        let (merged, duplicates) = merge(config, files);
        let got: Vec<(&str, &str)> = merged.iter().map(|t| (t.url.as_str(), t.source.as_str())).collect();
        assert_eq!(got, [("https://a/", "config"), ("https://b/", "file:/t/1.json"), ("https://c/", "file:/t/2.json")]);
        let d = |url: &str, kept: &str, dropped: &str| Duplicate {
            url: url.into(),
            kept: kept.into(),
            dropped: dropped.into(),
        };
        assert_eq!(
            duplicates,
            [d("https://a/", "config", "file:/t/1.json"), d("https://b/", "file:/t/1.json", "file:/t/2.json")]
        );
    }
}
