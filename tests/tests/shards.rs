//! Sharding past one machine with real coordinators: two processes with the same config but
//! `[shard]` 0 and 1 of 2 split its targets (its target file's too) with no overlap and no gap,
//! each holding what `vantage-coordinator shard` lists for it; an upsert of a URL the other shard
//! owns is refused, naming that shard; a real Prometheus with the shipped shards scrape config
//! scrapes every target's `/probe` at the shard that owns it; a reload that changes `[shard]`
//! leaves exactly the new shard's targets. And the README's shard recipe runs as printed.

use std::collections::BTreeSet;
use std::process::Command;

use vantage_e2e::files::{TempDir, deploy};
use vantage_e2e::prometheus::Prometheus;
use vantage_e2e::reload::curl;
use vantage_e2e::{Process, binary, grpcurl, grpcurl_output, listening, run, serve_on_loopback};

const SECTION: &str = "## Past one machine: shards";

/// The config every coordinator of the split gets, but for `[shard]`'s index: 40 targets of its
/// own and a target file of 10.
fn config(index: u32) -> String {
    let mut text = format!("[shard]\ncount = 2\nindex = {index}\n\n[[target_files]]\nfiles = [\"targets/*.json\"]\n\n");
    for i in 0..40 {
        text += &format!("[[target]]\nurl = \"https://t{i}.shards.test/\"\n\n");
    }
    text
}

fn file_targets() -> String {
    let urls: Vec<String> = (0..10).map(|i| format!("\"https://f{i}.shards.test/health\"")).collect();
    format!("[{{\"targets\": [{}], \"labels\": {{\"team\": \"web\"}}}}]", urls.join(", "))
}

struct Shard {
    process: Process,
    addr: String,
    http: String,
}

fn start(dir: &TempDir, name: &str, config: &str) -> Shard {
    let data = dir.join(&format!("data-{name}"));
    let config = dir.join(config);
    let process = serve_on_loopback(&data, &["--config", config.to_str().unwrap()]);
    let (addr, http) = listening(&process);
    Shard { process, addr, http }
}

fn list_targets(shard: &Shard) -> BTreeSet<String> {
    let out = grpcurl(&["-plaintext", "-d", "{}", &shard.addr, "vantage.v1.Coordinator/ListTargets"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list["targets"].as_array().into_iter().flatten().map(|t| t["url"].as_str().unwrap().to_owned()).collect()
}

/// What `vantage-coordinator shard` prints on stdout for these arguments (it must succeed).
fn shard_command(args: &[&str]) -> String {
    let out = run("vantage-coordinator", &[&["shard"], args].concat());
    assert!(out.status.success(), "shard {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_shards_split_the_config_with_no_overlap_no_gap_and_refuse_each_other_s_targets() {
    let dir = TempDir::new("shards");
    std::fs::create_dir_all(dir.join("targets")).unwrap();
    std::fs::write(dir.join("targets/web.json"), file_targets()).unwrap();
    std::fs::write(dir.join("shard0.toml"), config(0)).unwrap();
    std::fs::write(dir.join("shard1.toml"), config(1)).unwrap();
    let all: BTreeSet<String> = (0..40)
        .map(|i| format!("https://t{i}.shards.test/"))
        .chain((0..10).map(|i| format!("https://f{i}.shards.test/health")))
        .collect();
    let (zero, one) = (start(&dir, "0", "shard0.toml"), start(&dir, "1", "shard1.toml"));
    let said = zero.process.printed();
    assert!(said.iter().any(|l| l.contains("this coordinator is shard 0 of 2: it keeps")), "{said:?}");

    let (held0, held1) = (list_targets(&zero), list_targets(&one));
    assert!(held0.is_disjoint(&held1), "both hold {:?}", held0.intersection(&held1).collect::<Vec<_>>());
    let union: BTreeSet<String> = held0.union(&held1).cloned().collect();
    assert_eq!(union, all, "together they hold the config's targets, its file's too");
    assert!(held0.len() >= 15 && held1.len() >= 15, "a rough balance: {} and {}", held0.len(), held1.len());
    for (index, held) in [("0", &held0), ("1", &held1)] {
        let config = dir.join("shard0.toml");
        let listed = shard_command(&["--of", "2", "--index", index, "--config", config.to_str().unwrap()]);
        let listed: BTreeSet<String> = listed.lines().map(str::to_owned).collect();
        assert_eq!(&listed, held, "`shard --of 2 --index {index}` lists what shard {index} holds");
    }

    // An upsert of a URL shard 1 owns, sent to shard 0, is refused and names shard 1.
    let owned_by = |n: usize| shard_command(&["--of", "2", "--which", &format!("https://new{n}.shards.test/")]);
    let theirs = (0..).find(|n| owned_by(*n).trim() == "1").unwrap();
    let mine = (0..).find(|n| owned_by(*n).trim() == "0").unwrap();
    let upsert = |shard: &Shard, n: usize| {
        let body = format!(r#"{{"target": {{"url": "https://new{n}.shards.test/"}}}}"#);
        grpcurl_output(&["-plaintext", "-d", &body, &shard.addr, "vantage.v1.Coordinator/UpsertTarget"])
    };
    let refused = upsert(&zero, theirs);
    assert!(refused.contains("FailedPrecondition"), "{refused}");
    assert!(
        refused.contains(&format!(
            "https://new{theirs}.shards.test/ belongs to shard 1 of 2, not to this coordinator (shard 0 of 2)"
        )),
        "{refused}"
    );
    let added = upsert(&zero, mine);
    assert!(!added.contains("ERROR"), "{added}");
    let held0 = list_targets(&zero);
    assert!(held0.contains(&format!("https://new{mine}.shards.test/")));
    assert!(!held0.contains(&format!("https://new{theirs}.shards.test/")));

    // One Prometheus, the shipped shards config: every target's /probe scraped at its own shard
    // (at the other one it is a 404, and `up` 0).
    let prometheus = prometheus(&[&zero.http, &one.http]);
    let up = prometheus.query_until("up{job=\"vantage-probe\"}", |r| {
        r.len() == held0.len() + held1.len() && r.iter().all(|s| s["value"][1] == "1")
    });
    let scraped: BTreeSet<String> = up.iter().map(|s| s["metric"]["instance"].as_str().unwrap().to_owned()).collect();
    assert_eq!(scraped, held0.union(&held1).cloned().collect::<BTreeSet<_>>());
    let own = prometheus.query_until("up{job=\"vantage\"} == 1", |r| r.len() == 2);
    let shards: BTreeSet<&str> = own.iter().map(|s| s["metric"]["shard"].as_str().unwrap()).collect();
    assert_eq!(shards, BTreeSet::from(["0", "1"]));
    drop(prometheus);

    // Shard 0 becomes shard 1 by a reload: it then holds exactly shard 1's targets; what it no
    // longer owns is removed, the target added through the API too.
    std::fs::write(dir.join("shard0.toml"), config(1)).unwrap();
    let (code, body) = curl("POST", &format!("http://{}/-/reload", zero.http), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("{} targets in shard 1 of 2", held1.len())), "{body}");
    zero.process.wait_for_line(|l| l.contains("this coordinator is now shard 1 of 2 (was shard 0 of 2)"));
    assert_eq!(list_targets(&zero), held1);
}

/// A real Prometheus scraping the shards with `deploy/prometheus/vantage-scrape-shards.yml`.
fn prometheus(shards: &[&str]) -> Prometheus {
    let mut config = std::fs::read_to_string(deploy("prometheus/vantage-scrape-shards.yml")).unwrap();
    for (i, http) in shards.iter().enumerate() {
        config = config.replace(&format!("vantage-shard-{i}:7701"), http);
    }
    let config = config.replace("scrape_interval: 60s", "scrape_interval: 1s");
    let dir = TempDir::new("shards-prometheus");
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(deploy("prometheus/vantage-rules.yml"), dir.join("vantage-rules.yml")).unwrap();
    // Sent, and not needed: these coordinators run without --http-auth.
    std::fs::write(dir.join("vantage-read.token"), "a-read-token-0123456789").unwrap();
    Prometheus::start(dir)
}

/// The section's fenced blocks: (language, lines).
fn blocks() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut lines = readme.lines().skip_while(|l| *l != SECTION);
    assert!(lines.next().is_some(), "README.md has the section {SECTION:?}");
    let mut blocks = Vec::new();
    let mut open: Option<(String, Vec<String>)> = None;
    for line in lines {
        match (open.as_mut(), line.strip_prefix("```")) {
            (None, _) if line.starts_with("## ") => break,
            (None, Some(lang)) => open = Some((lang.to_owned(), Vec::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, lines)), None) => lines.push(line.to_owned()),
            (None, None) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_s_shard_recipe_runs_as_printed() {
    let blocks = blocks();
    let dir = TempDir::new("shards-recipe");
    let (_, config) = blocks.iter().find(|(lang, _)| lang == "toml").expect("the section shows the config");
    std::fs::write(dir.join("vantage.toml"), config.join("\n") + "\n").unwrap();
    let bin = binary("vantage-coordinator");
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let mut commands = 0;
    for (_, lines) in blocks.iter().filter(|(lang, _)| lang == "text") {
        let mut shown: Vec<(String, Vec<String>)> = Vec::new();
        for line in lines {
            match line.strip_prefix("$ ") {
                Some(command) => shown.push((command.to_owned(), Vec::new())),
                None => {
                    if let Some((_, output)) = shown.last_mut() {
                        output.push(line.clone());
                    }
                }
            }
        }
        for (command, output) in shown {
            let out = Command::new("sh")
                .args(["-c", &command])
                .current_dir(dir.join(""))
                .env("PATH", &path)
                .env("NO_COLOR", "1")
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(said.lines().collect::<Vec<_>>(), output, "{command}");
            commands += 1;
        }
    }
    assert!(commands >= 3, "the recipe's commands were found: {commands}");
}
