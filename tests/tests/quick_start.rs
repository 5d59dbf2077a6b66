//! The README's Quick start (up to its first subsection) as a fresh clone follows it: exactly two
//! set-up commands (the demo and the tests), the demo's banner as shown, and every `$` command of the section run as printed
//! against a demo on its documented addresses (`127.0.0.1:7700`, HTTP `:7701`), in a network
//! namespace of its own so those ports are free. `cargo run -p vantage-coordinator --` is the
//! freshly built coordinator binary (the same build: a second cargo build here would replace the
//! binary other tests run). What each command prints must match what the README shows, but for
//! the lab's ports (new on every run) and latencies. The lab port in the `ListStatus` example is
//! taken from the demo's banner, which must print that very command with its real port.

use std::process::{Command, Output};

use vantage_e2e::lan::Lan;
use vantage_e2e::{Process, binary};

const SECTION: &str = "## Quick start";

/// The commands the Quick start shows but this test does not run, and where they are checked.
const CHECKED_ELSEWHERE: [(&str, &str); 2] = [
    ("cargo build --release --locked --no-default-features", "tests/tests/production_build.rs"),
    ("target/release/vantage-coordinator demo --once", "tests/tests/production_build.rs"),
];

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md")
}

/// A fenced block of the section: its language and lines.
struct Block {
    lang: String,
    lines: Vec<String>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut lines = readme.lines().skip_while(|l| *l != SECTION);
    assert!(lines.next().is_some(), "README.md has the section {SECTION:?}");
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in lines {
        match (open.as_mut(), line.strip_prefix("```")) {
            (None, _) if line.starts_with('#') => break,
            (None, Some(lang)) => open = Some(Block { lang: lang.to_owned(), lines: Vec::new() }),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => block.lines.push(line.to_owned()),
            (None, None) => {}
        }
    }
    blocks
}

/// A `$ command` shown in a text block, and what the README shows it printing.
struct Shown {
    command: String,
    output: Vec<String>,
}

fn shown(blocks: &[Block]) -> Vec<Shown> {
    let mut all: Vec<Shown> = Vec::new();
    for block in blocks.iter().filter(|b| b.lang == "text") {
        let mut in_command = false;
        for line in &block.lines {
            if let Some(command) = line.strip_prefix("$ ") {
                all.push(Shown { command: command.to_owned(), output: Vec::new() });
                in_command = true;
            } else if in_command {
                all.last_mut().expect("a command").output.push(line.clone());
            }
        }
    }
    all
}

/// `text` with the port after each `.vantage.test:` written `PORT`: the lab's ports are new on
/// every run.
fn unport(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(".vantage.test:") {
        let (head, tail) = rest.split_at(at + ".vantage.test:".len());
        out.push_str(head);
        out.push_str("PORT");
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// A table of the demo or `status`, each row without its latency and with ports written `PORT`.
fn table(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let cut = if l.starts_with("TARGET ") { words.len() } else { words.len().saturating_sub(2) };
            unport(&words[..cut].join(" "))
        })
        .collect()
}

/// The parts of a `ListStatus` answer a run decides (not times or latencies).
fn decided(json: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let targets = v["targets"].as_array().cloned().unwrap_or_default();
    serde_json::Value::Array(
        targets
            .iter()
            .map(|t| {
                let regions: Vec<serde_json::Value> = t["regions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| serde_json::json!([r["region"], r["opinion"], r["failureCode"], r["agent"]]))
                    .collect();
                serde_json::json!({
                    "url": unport(t["url"].as_str().unwrap_or_default()),
                    "verdict": t["verdict"], "cause": t["cause"], "cert": t["cert"]["health"],
                    "regions": regions, "quorum": t["quorum"], "failing": t["failingRegions"],
                })
            })
            .collect(),
    )
}

/// A shell in the test's namespace, `cargo run -p vantage-coordinator --` standing for the binary.
fn shell(lan: &Lan, command: &str) -> Command {
    let bin = binary("vantage-coordinator");
    let command = command
        .replace("cargo run -q -p vantage-coordinator --", &bin.display().to_string())
        .replace("cargo run -p vantage-coordinator --", &bin.display().to_string());
    assert!(!command.contains("cargo "), "a cargo command this test does not know: {command}");
    let mut shell = lan.command(0, "bash");
    shell.args(["-euo", "pipefail", "-c", &command]).env("NO_COLOR", "1");
    shell
}

fn output(lan: &Lan, command: &str) -> String {
    let out: Output = shell(lan, command).output().expect("bash runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("$ {command}\n{stdout}{stderr}");
    assert!(out.status.success(), "the Quick start's `{command}` failed:\n{stdout}{stderr}");
    stdout.into_owned()
}

#[test]
fn the_quick_start_works_as_printed() {
    let readme = readme();
    let blocks = blocks(&readme);

    // Exactly two set-up commands: the demo and the tests.
    let setup: Vec<String> = blocks
        .iter()
        .filter(|b| b.lang == "sh")
        .flat_map(|b| b.lines.iter())
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(setup, ["cargo run -p vantage-coordinator -- demo", ".ci/test"], "the Quick start's set-up commands");

    // The banner as the README shows it.
    let banner: Vec<String> = blocks
        .iter()
        .find(|b| b.lang == "text" && b.lines.first().is_some_and(|l| l.starts_with("Vantage demo:")))
        .expect("the Quick start shows the demo's banner")
        .lines
        .clone();

    let lan = Lan::new(1);
    let mut demo: Option<(Process, Vec<String>)> = None;
    let mut ran = 0;
    for shown in shown(&blocks) {
        let command = shown.command.as_str();
        if let Some((_, file)) = CHECKED_ELSEWHERE.iter().find(|(c, _)| command.starts_with(c)) {
            println!("$ {command}\n(checked by {file})");
            continue;
        }
        ran += 1;
        if command.ends_with(" demo --once") {
            assert!(
                demo.is_none(),
                "`{command}` needs the demo's ports: show it before the commands for the live demo"
            );
            let printed = output(&lan, command);
            let printed: Vec<String> = printed.lines().map(str::to_owned).collect();
            assert_eq!(table(&printed), table(&shown.output), "`{command}` prints another table");
            continue;
        }
        // The live demo, started as the README's first set-up command says, and awaited until
        // its table is the one the README shows (every region has judged every target).
        let (_, real_banner) = demo.get_or_insert_with(|| {
            let process = Process::start_with(&mut shell(&lan, &format!("exec {}", setup[0])), "the demo");
            let mut lines: Vec<String> = Vec::new();
            let expected = table(&shown_status(&readme));
            process.wait_for_line(|l| {
                lines.push(l.to_owned());
                let frame = lines.iter().rposition(|l| l.starts_with("TARGET ")).map_or(&[][..], |at| &lines[at..]);
                table(frame) == expected
            });
            let banner = lines.iter().take_while(|l| !l.is_empty()).cloned().collect();
            (process, banner)
        });
        assert_eq!(
            real_banner.iter().map(|l| unport(l)).collect::<Vec<_>>(),
            banner.iter().map(|l| unport(l)).collect::<Vec<_>>(),
            "the README shows another banner"
        );
        // A lab port in a command is the demo's: its banner prints the command with it.
        let command = if command != unport(command) {
            let hint = real_banner
                .iter()
                .map(|l| l.trim())
                .find(|l| unport(l) == unport(command))
                .unwrap_or_else(|| panic!("the demo's banner prints no `{command}` with its real port"));
            hint.to_owned()
        } else {
            command.to_owned()
        };
        let printed = output(&lan, &command);
        let printed: Vec<String> = printed.lines().map(str::to_owned).collect();
        if shown.output.first().is_some_and(|l| l.starts_with("TARGET ")) {
            assert_eq!(table(&printed), table(&shown.output), "`{command}` prints another table");
        } else if shown.output.first().is_some_and(|l| l == "{") {
            assert_eq!(
                decided(&printed.join("\n")),
                decided(&shown.output.join("\n")),
                "`{command}` answers otherwise"
            );
        } else {
            assert_eq!(printed, shown.output, "`{command}` prints otherwise");
        }
    }
    assert!(ran >= 4, "the Quick start shows the demo, grpcurl and status commands");
}

/// The table the Quick start shows `status` printing.
fn shown_status(readme: &str) -> Vec<String> {
    shown(&blocks(readme))
        .into_iter()
        .find(|s| s.command.contains(" -- status"))
        .expect("the Quick start shows `status`")
        .output
}
