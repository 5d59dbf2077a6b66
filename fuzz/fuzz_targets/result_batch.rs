//! Arbitrary bytes as one message on an agent's stream, decoded the way tonic decodes it
//! (prost, `AgentMessage`) and, when it is a result batch, through the coordinator's batch path:
//! `api::check_batch` and `api::check_result`, then `Hub::ingest` (store write,
//! newest-result view, verdicts, incidents) on one hub and store shared by every run. A committed
//! batch is then redelivered and must be dropped.
//!
//! The hub's targets have explicit regions and a long reconnect grace, so each region counts as
//! connected and every result reaches the verdict without any agent stream being open. Each run
//! is a new agent name (so the fuzzed sequence number is always fresh); the region is picked by
//! the sequence number.

#![no_main]

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vantage_coordinator::hub::{Hub, HubOptions, Retention};
use vantage_coordinator::store::{BatchOutcome, Store};
use vantage_coordinator::{api, spec};
use vantage_proto::v1::{AgentMessage, TargetSpec, agent_message};

const REGIONS: &[&str] = &["eu-west", "us-east", "ap-south"];

/// Old results are pruned this often, so the store does not grow through a long run.
const PRUNE_EVERY: u64 = 2_000;

struct Harness {
    runtime: tokio::runtime::Runtime,
    hub: std::sync::Arc<Hub>,
    runs: AtomicU64,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // tmpfs when there is one: redb syncs every commit.
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
    let dir = base.join(format!("vantage-fuzz-result-batch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = std::sync::Arc::new(Store::open(&dir).expect("store opens"));
    // The store keeps its file open; unlinked now, it goes when the run ends, however it ends.
    let _ = std::fs::remove_dir_all(&dir);
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
    let hub = runtime.block_on(Hub::open(store, targets, options)).expect("hub opens");
    Harness { runtime, hub, runs: AtomicU64::new(0) }
});

fuzz_target!(|data: &[u8]| {
    let Ok(message) = AgentMessage::decode(data) else { return };
    let Some(agent_message::Kind::Batch(batch)) = message.kind else { return };
    if api::check_batch(&batch).is_err() {
        return;
    }
    let h = &*HARNESS;
    let run = h.runs.fetch_add(1, Ordering::Relaxed);
    let agent = format!("fuzz-agent-{run}");
    let region = REGIONS[(batch.sequence % REGIONS.len() as u64) as usize];
    // The rows the agent service (`serve_agent`) builds from a checked batch: results refused on
    // their own are acked as refused and left out. (Its assignment check needs a connected agent,
    // which this harness has none of; `Hub::ingest` keeps only the region's configured targets.)
    let kept: Vec<_> = batch.results.into_iter().filter(|r| api::check_result(r).is_ok()).collect();
    let results = api::history_entries(kept, region, &agent);
    h.runtime.block_on(async {
        match h.hub.ingest(&agent, region, batch.sequence, results.clone()).await {
            Ok(outcome) => {
                assert_eq!(outcome, BatchOutcome::Committed, "a new agent's first batch is committed");
                let again = h.hub.ingest(&agent, region, batch.sequence, results).await.expect("redelivery");
                assert_eq!(again, BatchOutcome::Duplicate, "a redelivered batch is dropped");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let urls: Vec<String> = h.hub.targets().into_iter().map(|t| t.url).collect();
        let _ = h.hub.statuses(&urls);
        if run % PRUNE_EVERY == PRUNE_EVERY - 1 {
            h.hub.prune(&Retention::all(Duration::ZERO)).await.expect("prune");
        }
    });
});
