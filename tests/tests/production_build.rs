//! The coordinator as deploy/ builds it carries no scenario lab and no probe code: the
//! Containerfile's `cargo build` leaves out the `demo` feature, and built that way the coordinator
//! depends neither on `vantage-agent` nor on the `lab` feature of `vantage-shared`, and compiles.
//! Checked with the real cargo against the real lock file, offline.

use std::path::Path;
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo).args(args).current_dir(ROOT).output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The words of the Containerfile's `cargo build` command, its line continuations joined.
fn containerfile_build() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/container/Containerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let line = joined.lines().find(|l| l.contains("cargo build")).expect("the Containerfile builds with cargo");
    let command = line.split("cargo build").nth(1).unwrap().split("&&").next().unwrap();
    command.split_whitespace().map(str::to_owned).collect()
}

/// The feature flags of a cargo command line (`--no-default-features`, `--features X`, `-F X`).
fn feature_flags(words: &[String]) -> Vec<String> {
    let mut flags = Vec::new();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--no-default-features" | "--all-features" => flags.push(word.clone()),
            "--features" | "-F" => {
                flags.push("--features".into());
                flags.push(words.next().expect("a feature list").clone());
            }
            w if w.starts_with("--features=") => flags.push(w.to_owned()),
            _ => {}
        }
    }
    flags
}

/// The packages a cargo command line selects (`-p X`, `--package X`).
fn packages(words: &[String]) -> Vec<String> {
    words.windows(2).filter(|w| w[0] == "-p" || w[0] == "--package").map(|w| w[1].clone()).collect()
}

/// `cargo tree` of the coordinator's normal dependencies, one `package features` line each.
fn coordinator_tree(flags: &[String]) -> String {
    let mut args = vec!["tree", "--locked", "--offline", "-p", "vantage-coordinator", "-e", "normal"];
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--prefix", "none", "-f", "{p} [{f}]"]);
    cargo(&args)
}

/// The features `vantage-shared` is built with, as one `cargo tree` listing says.
fn shared_features(tree: &str) -> Vec<String> {
    let line = tree.lines().find(|l| l.starts_with("vantage-shared ")).expect("vantage-shared is a dependency");
    let features = line.rsplit_once('[').unwrap().1.trim_end_matches(']');
    features.split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned).collect()
}

#[test]
fn the_coordinator_as_deploy_builds_it_has_no_lab_and_no_agent_and_compiles() {
    let build = containerfile_build();
    let flags = feature_flags(&build);
    assert_eq!(flags, ["--no-default-features"], "the Containerfile builds without the demo: {build:?}");

    let tree = coordinator_tree(&flags);
    assert!(tree.lines().any(|l| l.starts_with("vantage-coordinator ")), "{tree}");
    assert!(
        !tree.lines().any(|l| l.starts_with("vantage-agent ")),
        "the production coordinator depends on the agent:\n{tree}"
    );
    let features = shared_features(&tree);
    assert!(!features.iter().any(|f| f == "lab"), "vantage-shared is built with the lab: {features:?}");
    // Nothing the lab alone brings (its DNS server's hickory-proto, rcgen's lab PKI is the
    // coordinator's own `pki` and stays) comes in some other way.
    assert!(!tree.lines().any(|l| l.starts_with("hickory-")), "DNS server code in the coordinator:\n{tree}");

    // Built the way the Containerfile builds both binaries at once, the agent's features do not
    // bring the lab back into vantage-shared either (its lab is a dev-dependency).
    let mut args = vec!["tree", "--locked", "--offline", "-e", "normal", "--prefix", "none", "-f", "{p} [{f}]"];
    let packages = packages(&build);
    assert_eq!(packages, ["vantage-coordinator", "vantage-agent"], "{build:?}");
    for package in &packages {
        args.extend(["-p", package]);
    }
    args.extend(flags.iter().map(String::as_str));
    let both = cargo(&args);
    let features = shared_features(&both);
    assert!(!features.iter().any(|f| f == "lab"), "vantage-shared is built with the lab: {features:?}");

    // The default build still has the demo (the README's first command), through the feature.
    let default = coordinator_tree(&[]);
    assert!(default.lines().any(|l| l.starts_with("vantage-agent ")), "{default}");
    assert!(shared_features(&default).iter().any(|f| f == "lab"), "{default}");

    // And it compiles: checked (no binary written, so the e2e tests' coordinator, which has the
    // demo, is not replaced under them).
    cargo(&["check", "--locked", "--offline", "-p", "vantage-coordinator", "--no-default-features", "--bins"]);
}
