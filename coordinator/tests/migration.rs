//! A database written by the version that stored results whole (`fixtures/store-v1.redb.gz`, made
//! by `examples/store_fixture.rs` on that version; README, "Storage and retention") opens in this
//! one: its results are moved to the compact encoding and read back exactly as the same writes
//! give on this version, and its targets, verdicts, transitions, incident, alerts and roll-ups are
//! all kept.

use std::path::{Path, PathBuf};

use vantage_coordinator::store::{Pruning, Store};

#[allow(dead_code)]
#[path = "../examples/store_fixture.rs"]
mod fixture;

/// 2025-11-20, the fixture's day.
const DAY: i64 = 20_412;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-migration-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture, unpacked into `dir` as `vantage.redb`.
fn unpack_fixture(dir: &Path) {
    let packed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.redb.gz");
    let out = std::process::Command::new("gzip").arg("-dc").arg(&packed).output().expect("gzip runs");
    assert!(out.status.success(), "gzip -dc {}: {}", packed.display(), String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("vantage.redb"), out.stdout).unwrap();
}

/// Everything a user reads back from a store, alert ids (random) left out.
fn everything(store: &Store) -> String {
    let mut out = String::new();
    let mut targets: Vec<String> = store.targets().unwrap().into_iter().map(|t| t.url).collect();
    targets.sort();
    for url in &targets {
        for region in [None, Some("eu-west"), Some("us-east")] {
            let history = store.history(url, region, i64::MIN, i64::MAX, 100_000).unwrap();
            out.push_str(&format!("history {url} {region:?} {}\n{history:?}\n", history.len()));
        }
        let mut latest = store.latest_of(url).unwrap();
        latest.sort_by(|a, b| a.entry.region.cmp(&b.entry.region));
        out.push_str(&format!("latest {url} {latest:?}\ntransitions {:?}\n", store.transitions(url).unwrap()));
        out.push_str(&format!("incidents {:?}\n", store.incidents(url, false, 100).unwrap()));
        let alerts: Vec<String> = store
            .alerts(url, 100)
            .unwrap()
            .into_iter()
            .map(|mut r| {
                r.alert.id.clear();
                format!("{r:?}")
            })
            .collect();
        out.push_str(&format!("alerts {alerts:?}\n"));
    }
    let mut verdicts = store.verdicts().unwrap();
    verdicts.sort_by(|a, b| a.0.cmp(&b.0));
    out.push_str(&format!("verdicts {verdicts:?}\n"));
    out.push_str(&format!("rollups {:?}\n", store.rollups(&targets, DAY - 1, DAY + 1, true).unwrap()));
    out
}

#[test]
fn a_database_written_by_the_previous_version_is_migrated_and_keeps_everything() {
    let old = temp_dir("old");
    unpack_fixture(&old);
    let migrated = Store::open(&old).unwrap();
    // The same writes on this version, for comparing.
    let new = temp_dir("new");
    fixture::write(&new);
    let fresh = Store::open(&new).unwrap();
    let before = everything(&migrated);
    assert_eq!(before, everything(&fresh), "the migrated database reads as one this version wrote");
    assert!(before.contains("history https://api.example/ None 240"), "every result is kept");
    assert_eq!(
        migrated
            .history("https://api.example/", None, i64::MIN, i64::MAX, 1_000)
            .unwrap()
            .iter()
            .filter(|r| r.entry.result.as_ref().unwrap().failure.is_some())
            .count(),
        40
    );
    assert_eq!(migrated.incidents("", false, 100).unwrap().len(), 1);
    assert_eq!(migrated.alerts("", 100).unwrap().len(), 2);
    // Sealing the moved rows into blocks changes nothing a user reads.
    let mut pruning = Pruning::new(i64::MIN, i64::MIN, i64::MIN);
    // Whatever day the test runs, the fixture's roll-ups stay.
    pruning.rollups_before_day = i64::MIN;
    while !migrated.prune_step(&mut pruning, 100, std::time::Duration::MAX).unwrap() {}
    assert_eq!(pruning.done.sealed, 480);
    assert_eq!(everything(&migrated), before);
    // Opened again, there is nothing left to migrate, and it still reads the same.
    drop(migrated);
    let reopened = Store::open(&old).unwrap();
    assert_eq!(everything(&reopened), before);
    let _ = std::fs::remove_dir_all(&old);
    let _ = std::fs::remove_dir_all(&new);
}
