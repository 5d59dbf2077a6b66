//! The three simulated agents: hello, the assignment, then a healthy result for every assigned
//! target once per interval, spread evenly, and the acks counted as they come.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_stream::wrappers::ReceiverStream;
use vantage_proto::v1::agent_service_client::AgentServiceClient;
use vantage_proto::v1::*;

use crate::{BATCH, BenchError, INTERVAL, MAX_DECODE, Result, TICK};

fn now() -> prost_types::Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    prost_types::Timestamp { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// A healthy HTTPS probe's result, as an agent reports it.
fn result(url: &str) -> TargetResult {
    TargetResult {
        target_url: url.to_owned(),
        result: Some(ProbeResult {
            url: url.to_owned(),
            status: ProbeStatus::Up as i32,
            tls_version: "TLSv1.3".into(),
            http_status: 200,
            timings: Some(Timings {
                dns_ms: Some(2.0),
                connect_ms: Some(11.0),
                tls_ms: Some(23.0),
                ttfb_ms: Some(31.0),
                total_ms: 68.0,
            }),
            checked_at: Some(now()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What one simulated agent has sent and had acked.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub refused: AtomicU64,
    /// Assignment changes after the first assignment (none are expected: one agent per region).
    pub changes: AtomicU64,
}

/// One simulated agent: hello, its assignment, then the results of its targets once per
/// interval, spread evenly, until `stop`; acks are counted as they come.
pub struct Agent {
    pub counters: Arc<Counters>,
    pub sender: tokio::task::JoinHandle<Result<()>>,
    pub reader: tokio::task::JoinHandle<()>,
}

/// Connects as an agent of `region` and reads its assignment of `targets` URLs (a large one comes
/// as an `Assignment` and `AssignmentChange`s adding the rest, as to a real agent).
pub async fn connect_agent(grpc: SocketAddr, region: &str, targets: usize) -> Result<(Vec<String>, AgentStream)> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?.connect().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let hello = Hello {
        name: format!("scale-{region}"),
        region: region.into(),
        version: "scale-bench".into(),
        sent_at: Some(now()),
    };
    let _ = tx.send(AgentMessage { kind: Some(agent_message::Kind::Hello(hello)) }).await;
    let mut inbound = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_DECODE)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut urls: Vec<String> = Vec::with_capacity(targets);
    let mut sequence = None;
    loop {
        match inbound.message().await?.and_then(|m| m.kind) {
            Some(coordinator_message::Kind::Assignment(a)) => {
                urls = a.targets.into_iter().map(|t| t.url).collect();
                sequence = Some(a.last_sequence);
            }
            Some(coordinator_message::Kind::Change(c)) if sequence.is_some() => {
                urls.extend(c.upserted.into_iter().map(|t| t.url));
            }
            Some(_) => continue,
            None => return Err(BenchError::Feed(format!("{region}: the stream ended before an assignment"))),
        }
        if let Some(sequence) = sequence.filter(|_| urls.len() >= targets) {
            return Ok((urls, AgentStream { tx, inbound, sequence }));
        }
    }
}

pub struct AgentStream {
    tx: tokio::sync::mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
    sequence: u64,
}

impl Agent {
    pub fn feed(
        urls: Vec<String>,
        stream: AgentStream,
        start: Instant,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Agent {
        let counters = Arc::new(Counters::default());
        let pending: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
        let AgentStream { tx, mut inbound, mut sequence } = stream;
        let (count, waiting) = (counters.clone(), pending.clone());
        let reader = tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                match message.kind {
                    Some(coordinator_message::Kind::Ack(ack)) => {
                        let size = waiting.lock().unwrap().remove(&ack.sequence).unwrap_or(0);
                        let refused = ack.refused.len() as u64;
                        count.acked.fetch_add(size.saturating_sub(refused), Ordering::Relaxed);
                        count.refused.fetch_add(refused, Ordering::Relaxed);
                    }
                    Some(coordinator_message::Kind::Assignment(_) | coordinator_message::Kind::Change(_)) => {
                        count.changes.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        let count = counters.clone();
        let sender = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = 0u128;
            while !*stop.borrow() {
                tick.tick().await;
                // Every target is due once per interval: by now, this many results in all.
                let due = start.elapsed().as_millis() * urls.len() as u128 / INTERVAL.as_millis();
                while next < due {
                    let take = (due - next).min(BATCH as u128) as usize;
                    let results: Vec<TargetResult> =
                        (0..take).map(|i| result(&urls[(next as usize + i) % urls.len()])).collect();
                    next += take as u128;
                    sequence += 1;
                    pending.lock().unwrap().insert(sequence, take as u64);
                    let batch = ResultBatch { sequence, results };
                    if tx.send(AgentMessage { kind: Some(agent_message::Kind::Batch(batch)) }).await.is_err() {
                        return Err(BenchError::Feed("an agent stream ended during the feed".into()));
                    }
                    count.sent.fetch_add(take as u64, Ordering::Relaxed);
                }
            }
            Ok(())
        });
        Agent { counters, sender, reader }
    }
}

pub fn acked(agents: &[Agent]) -> u64 {
    agents.iter().map(|a| a.counters.acked.load(Ordering::Relaxed)).sum()
}
