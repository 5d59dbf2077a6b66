//! Every committed seed of the coordinator's fuzz targets, replayed by `cargo test` through what
//! the targets run (`fuzz/fuzz_targets/{target_config,result_batch}.rs`), with the same
//! properties: a loaded target normalizes to itself; a decoded batch, checked as a whole and
//! result by result, is ingested into a real hub and redb store (in a temp dir) and,
//! redelivered, is a duplicate. The fuzzer needs
//! nightly and libFuzzer; this keeps the seeds, and the properties, checked on every run.

use std::time::Duration;

use prost::Message;
use vantage_coordinator::hub::{Hub, HubOptions, Retention};
use vantage_coordinator::store::{BatchOutcome, Store};
use vantage_coordinator::{api, config, spec};
use vantage_proto::v1::{AgentMessage, TargetSpec, agent_message};

const REGIONS: &[&str] = &["eu-west", "us-east", "ap-south"];

/// The seeds of one fuzz target, by name, read from the fuzz folder beside this crate.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("seed entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("seed reads"))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn every_target_config_seed_loads_into_targets_that_normalize_to_themselves() {
    let mut loaded = Vec::new();
    for (name, data) in seeds("target_config") {
        let text = std::str::from_utf8(&data).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        match config::parse(text, "fuzz.toml") {
            Ok(specs) => {
                for s in &specs {
                    let again = spec::normalize(s.clone()).unwrap_or_else(|e| {
                        panic!("seed {name}: a loaded target does not normalize again: {e}\n{s:?}")
                    });
                    assert_eq!(&again, s, "seed {name}: normalize is not idempotent");
                }
                loaded.push((name, specs.len()));
            }
            Err(e) => assert!(!e.to_string().is_empty(), "seed {name}"),
        }
    }
    // The seeds hold good files as well as bad ones: the property was checked on real targets.
    assert!(loaded.iter().any(|(_, n)| *n > 1), "no seed loaded several targets: {loaded:?}");
    for bad in ["bad-duration.toml", "bad-quorum.toml", "unknown-field.toml"] {
        assert!(!loaded.iter().any(|(n, _)| n == bad), "{bad} loaded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_batch_seed_is_ingested_once_and_its_redelivery_is_a_duplicate() {
    let dir = std::env::temp_dir().join(format!("vantage-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = std::sync::Arc::new(Store::open(&dir).expect("store opens"));
    // The fuzz target's hub: explicit regions and a long reconnect grace, so each region counts
    // as connected and every result reaches the verdict without an agent stream.
    let targets = [
        ("https://shop.example.com/", &REGIONS[..], 2),
        ("https://api.example.com/", &REGIONS[..2], 0),
        ("https://eu.example.com/", &REGIONS[..1], 1),
    ]
    .into_iter()
    .map(|(url, regions, quorum)| {
        spec::normalize(TargetSpec {
            url: url.into(),
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            quorum,
            source: "config".into(),
            ..TargetSpec::default()
        })
        .expect("fixture target")
    })
    .collect();
    let options = HubOptions { reconnect_grace: Duration::from_secs(365 * 86_400), ..HubOptions::default() };
    let hub = Hub::open(store, targets, options).await.expect("hub opens");

    let mut committed = 0;
    for (run, (name, data)) in seeds("result_batch").into_iter().enumerate() {
        let message = AgentMessage::decode(&data[..]).unwrap_or_else(|e| panic!("seed {name} decodes: {e}"));
        let Some(agent_message::Kind::Batch(batch)) = message.kind else { continue };
        if let Err(status) = api::check_batch(&batch) {
            eprintln!("result_batch seed {name}: refused: {}", status.message());
            continue;
        }
        let agent = format!("seed-agent-{run}");
        let region = REGIONS[(batch.sequence % REGIONS.len() as u64) as usize];
        // Results refused on their own are acked as refused and left out, as `serve_agent` does.
        let kept: Vec<_> = batch.results.into_iter().filter(|r| api::check_result(r).is_ok()).collect();
        let results = api::history_entries(kept, region, &agent);
        match hub.ingest(&agent, region, batch.sequence, results.clone()).await {
            Ok(outcome) => {
                assert_eq!(outcome, BatchOutcome::Committed, "seed {name}: a new agent's first batch is committed");
                let again = hub.ingest(&agent, region, batch.sequence, results).await.expect("redelivery");
                assert_eq!(again, BatchOutcome::Duplicate, "seed {name}: a redelivered batch is dropped");
                committed += 1;
            }
            Err(e) => eprintln!("result_batch seed {name}: {e}"),
        }
        let urls: Vec<String> = hub.targets().into_iter().map(|t| t.url).collect();
        assert_eq!(hub.statuses(&urls).len(), urls.len(), "seed {name}");
    }
    assert!(committed >= 3, "most seeds are batches the hub takes: {committed} committed");
    hub.prune(&Retention::all(Duration::ZERO)).await.expect("prune");
    let _ = std::fs::remove_dir_all(&dir);
}
