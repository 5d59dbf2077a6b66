//! The agent's session with the coordinator: one bidirectional gRPC stream, a hello, the
//! assignment coming in, result batches going out. Results wait in a bounded outbox until the
//! coordinator acks them (after committing), are resent after a reconnect, and survive a
//! coordinator outage; reconnects back off exponentially up to a cap.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use vantage_proto::v1::agent_service_client::AgentServiceClient;
use vantage_proto::v1::{AgentMessage, Hello, ResultBatch, TargetResult, agent_message, coordinator_message};

use crate::scheduler::Command;

/// Largest message accepted from the coordinator: a full assignment of 100,000 targets fits.
pub const MAX_ASSIGNMENT: usize = 64 << 20;
/// Results per batch.
pub const BATCH_SIZE: usize = 500;
/// How long a result may wait for more to batch with.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Results not yet acked, oldest first, bounded: when full the oldest are dropped (and counted),
/// so a long outage costs old results, never the agent's memory.
pub struct Outbox {
    pending: VecDeque<TargetResult>,
    unacked: VecDeque<ResultBatch>,
    next_sequence: u64,
    limit: usize,
    pub dropped: u64,
}

impl Outbox {
    pub fn new(limit: usize) -> Outbox {
        // Sequences grow across restarts too: they start from the clock (microseconds).
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Outbox {
            pending: VecDeque::new(),
            unacked: VecDeque::new(),
            next_sequence: start,
            limit: limit.max(BATCH_SIZE),
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len() + self.unacked.iter().map(|b| b.results.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, result: TargetResult) {
        self.pending.push_back(result);
        while self.len() > self.limit {
            self.dropped += 1;
            if self.pending.len() > 1 {
                self.pending.pop_front();
            } else if let Some(batch) = self.unacked.front_mut() {
                batch.results.remove(0);
                if batch.results.is_empty() {
                    self.unacked.pop_front();
                }
            }
        }
    }

    /// Turns pending results into batches; returns the new ones to send.
    pub fn seal(&mut self) -> Vec<ResultBatch> {
        let mut sealed = Vec::new();
        while !self.pending.is_empty() {
            let take = self.pending.len().min(BATCH_SIZE);
            let batch = ResultBatch { sequence: self.next_sequence, results: self.pending.drain(..take).collect() };
            self.next_sequence = self.next_sequence.saturating_add(1);
            self.unacked.push_back(batch.clone());
            sealed.push(batch);
        }
        sealed
    }

    /// Numbers new batches above `committed`, the coordinator's newest for this agent: sequences
    /// start from the clock, and a clock stepped back (an NTP correction at boot) would otherwise
    /// number them below what was committed, and the coordinator would drop them as duplicates.
    pub fn raise_floor(&mut self, committed: u64) {
        if self.next_sequence <= committed {
            tracing::warn!(
                committed,
                next = self.next_sequence,
                "batch sequences restart above the coordinator's newest (was the clock stepped back?)"
            );
            self.next_sequence = committed.saturating_add(1);
        }
    }

    /// Forgets every batch up to `sequence`, now committed.
    pub fn ack(&mut self, sequence: u64) {
        while self.unacked.front().is_some_and(|b| b.sequence <= sequence) {
            self.unacked.pop_front();
        }
    }

    /// Every batch sent but not acked, to resend after reconnecting.
    pub fn unacked(&self) -> Vec<ResultBatch> {
        self.unacked.iter().cloned().collect()
    }
}

pub struct SessionConfig {
    pub coordinator: String,
    pub name: String,
    pub region: String,
    pub tls: Option<crate::run::ClientTls>,
}

/// Keeps a session up for as long as the agent runs: results come in on `results`, coordinator
/// requests go out on `commands`.
pub async fn run(
    config: SessionConfig,
    mut outbox: Outbox,
    mut results: mpsc::Receiver<TargetResult>,
    commands: mpsc::Sender<Command>,
) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        match connect_and_serve(&config, &mut outbox, &mut results, &commands, &mut backoff).await {
            Ok(()) => {
                tracing::warn!("the coordinator closed the stream; reconnecting");
                backoff = BACKOFF_FIRST;
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "session to the coordinator failed"),
        }
        // Keep collecting results while waiting to reconnect.
        let wait = tokio::time::sleep(jittered(backoff));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                Some(result) = results.recv() => outbox.push(result),
            }
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

fn jittered(d: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    // Between 75% and 125% of the delay, so a fleet does not reconnect in step.
    d.mul_f64(0.75 + f64::from(nanos % 1000) / 2000.0)
}

async fn connect_and_serve(
    config: &SessionConfig,
    outbox: &mut Outbox,
    results: &mut mpsc::Receiver<TargetResult>,
    commands: &mpsc::Sender<Command>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let mut endpoint = Endpoint::from_shared(config.coordinator.clone())
        .map_err(|e| format!("{:?} is not a coordinator URL: {e}", config.coordinator))?;
    if let Some(tls) = &config.tls {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_pem))
            .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
            .timeout(Duration::from_secs(10));
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("the TLS configuration: {e}"))?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    let channel = endpoint.connect().await.map_err(|e| format!("cannot reach {}: {e}", config.coordinator))?;
    let (tx, rx) = mpsc::channel::<AgentMessage>(256);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let hello = Hello {
        name: config.name.clone(),
        region: config.region.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        sent_at: Some(prost_types::Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 }),
    };
    tx.send(AgentMessage { kind: Some(agent_message::Kind::Hello(hello)) }).await.map_err(|_| "stream closed")?;
    let mut inbound = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_ASSIGNMENT)
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("the coordinator refused the session: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    tracing::info!(coordinator = config.coordinator, region = config.region, "connected");
    // A session that came up starts the next outage's backoff from the beginning.
    *backoff = BACKOFF_FIRST;
    // Whatever was sent and not acked before is sent again; the coordinator drops duplicates.
    for batch in outbox.unacked() {
        send_batch(&tx, batch).await?;
    }
    // New batches are numbered once the first assignment says what the coordinator committed.
    let mut numbered = false;
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            message = inbound.message() => {
                let message = message.map_err(|s| format!("stream error: {}", s.message()))?;
                let Some(kind) = message.and_then(|m| m.kind) else { return Ok(()) };
                let command = match kind {
                    coordinator_message::Kind::Assignment(a) => {
                        outbox.raise_floor(a.last_sequence);
                        numbered = true;
                        Some(Command::Assign(a.targets))
                    }
                    coordinator_message::Kind::Change(c) => Some(Command::Change { upserted: c.upserted, removed: c.removed_urls }),
                    coordinator_message::Kind::RunNow(r) => {
                        Some(Command::RunNow { id: r.id, url: r.target_url, trace_context: r.trace_context })
                    }
                    coordinator_message::Kind::Ack(ack) => {
                        outbox.ack(ack.sequence);
                        None
                    }
                };
                if let Some(command) = command {
                    commands.send(command).await.map_err(|_| "the scheduler stopped")?;
                }
            }
            Some(result) = results.recv() => {
                let urgent = !result.run_now_id.is_empty();
                outbox.push(result);
                if numbered && (urgent || outbox.pending.len() >= BATCH_SIZE) {
                    for batch in outbox.seal() {
                        send_batch(&tx, batch).await?;
                    }
                }
            }
            _ = flush.tick(), if numbered => {
                for batch in outbox.seal() {
                    send_batch(&tx, batch).await?;
                }
                if outbox.dropped > 0 {
                    tracing::warn!(dropped = outbox.dropped, "outbox was full; oldest results dropped");
                    outbox.dropped = 0;
                }
            }
        }
    }
}

async fn send_batch(tx: &mpsc::Sender<AgentMessage>, batch: ResultBatch) -> Result<(), String> {
    tx.send(AgentMessage { kind: Some(agent_message::Kind::Batch(batch)) })
        .await
        .map_err(|_| "the stream closed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(n: usize) -> TargetResult {
        TargetResult { target_url: format!("https://t{n}.example/"), ..Default::default() }
    }

    #[test]
    fn batches_stay_until_acked_and_are_resent() {
        let mut outbox = Outbox::new(10_000);
        for n in 0..(BATCH_SIZE + 10) {
            outbox.push(result(n));
        }
        let sealed = outbox.seal();
        assert_eq!(sealed.iter().map(|b| b.results.len()).collect::<Vec<_>>(), vec![BATCH_SIZE, 10]);
        assert!(sealed[0].sequence < sealed[1].sequence);
        assert_eq!(outbox.unacked().len(), 2);
        outbox.ack(sealed[0].sequence);
        assert_eq!(outbox.unacked().len(), 1);
        outbox.ack(sealed[1].sequence);
        assert!(outbox.is_empty());
    }

    #[test]
    fn new_batches_are_numbered_above_what_the_coordinator_committed() {
        let mut outbox = Outbox::new(10_000);
        outbox.push(result(0));
        let first = outbox.seal()[0].sequence;
        // A coordinator that committed far more (this agent's clock was ahead before a restart).
        outbox.raise_floor(first + 1_000_000);
        outbox.push(result(1));
        assert_eq!(outbox.seal()[0].sequence, first + 1_000_001);
        // A floor below where the outbox is leaves it alone.
        outbox.raise_floor(5);
        outbox.push(result(2));
        assert_eq!(outbox.seal()[0].sequence, first + 1_000_002);
        assert_eq!(outbox.unacked().len(), 3, "sealed batches keep their numbers");
    }

    #[test]
    fn a_full_outbox_drops_the_oldest() {
        let mut outbox = Outbox::new(BATCH_SIZE);
        for n in 0..(BATCH_SIZE + 5) {
            outbox.push(result(n));
        }
        assert_eq!(outbox.len(), BATCH_SIZE);
        assert_eq!(outbox.dropped, 5);
        assert_eq!(outbox.seal()[0].results[0].target_url, "https://t5.example/");
    }
}
