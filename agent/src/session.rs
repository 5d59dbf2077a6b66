//! The agent's session with the coordinator: one bidirectional gRPC stream, a hello, the
//! assignment coming in, result batches going out. Results wait in a bounded outbox until the
//! coordinator acks them (after committing), are resent after a reconnect, and survive a
//! coordinator outage; reconnects back off exponentially up to a cap. Batches are split so each
//! fits the shared limits; results the coordinator refuses in its ack are dropped and logged, and
//! a batch whose sessions the coordinator keeps ending with an error is dropped after
//! [`MAX_REJECTIONS`], so no batch can wedge the agent.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use vantage_proto::v1::agent_service_client::AgentServiceClient;
use vantage_proto::v1::{Ack, AgentMessage, Hello, ResultBatch, TargetResult, agent_message, coordinator_message};
use vantage_shared::limits;

use crate::assigned;
use crate::scheduler::Command;

/// Results per batch (fewer when they would exceed [`limits::MAX_BATCH_BYTES`]).
pub const BATCH_SIZE: usize = 500;
const _: () = assert!(BATCH_SIZE <= limits::MAX_BATCH_RESULTS);
/// Sessions the coordinator may end with an error while the same batch is the oldest unacked
/// before that batch is dropped: a batch it cannot take must not be resent forever.
pub const MAX_REJECTIONS: u32 = 3;
/// The same refusal reason is logged at most this often.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// How long a result may wait for more to batch with.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Results not yet acked, oldest first, bounded: when full the oldest are dropped (and counted),
/// so a long outage costs old results, never the agent's memory.
pub struct Outbox {
    pending: VecDeque<TargetResult>,
    /// Encoded size of each pending result, as a field of a batch.
    pending_bytes: VecDeque<usize>,
    unacked: VecDeque<ResultBatch>,
    next_sequence: u64,
    limit: usize,
    pub dropped: u64,
    /// The oldest unacked batch and how many sessions in a row the coordinator ended with an
    /// error while it was outstanding.
    rejections: Option<(u64, u32)>,
}

/// A result the coordinator acknowledged without storing it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub target_url: String,
    pub reason: String,
}

/// A batch given up on after the coordinator ended [`MAX_REJECTIONS`] sessions over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    pub sequence: u64,
    pub results: usize,
}

/// The bytes `result` adds to a batch: its field key, length and body.
fn framed_len(result: &TargetResult) -> usize {
    let len = result.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// A batch's bytes besides its results: the sequence field at its longest.
const BATCH_OVERHEAD: usize = 1 + 10;

/// At most the first 256 bytes of `text`, for a log line.
fn shown(text: &str) -> &str {
    let mut end = text.len().min(256);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Logs refused results once per reason per [`REFUSAL_LOG_EVERY`], counting those it held back.
#[derive(Default)]
pub struct RefusalLog {
    /// Reason → when it was last logged and how many refusals for it went unlogged since.
    seen: HashMap<String, (Instant, u64)>,
}

impl RefusalLog {
    /// Most reasons remembered: a coordinator naming every URL in its reasons cannot grow this.
    const REASONS: usize = 1024;

    /// Whether to log this refusal now, and how many of the same reason were held back before it.
    pub fn note(&mut self, reason: &str, now: Instant) -> Option<u64> {
        if let Some((last, held)) = self.seen.get_mut(reason) {
            if now.duration_since(*last) < REFUSAL_LOG_EVERY {
                *held += 1;
                return None;
            }
            let held_back = *held;
            *last = now;
            *held = 0;
            return Some(held_back);
        }
        if self.seen.len() >= Self::REASONS {
            self.seen.retain(|_, (last, _)| now.duration_since(*last) < REFUSAL_LOG_EVERY);
            if self.seen.len() >= Self::REASONS {
                return None;
            }
        }
        self.seen.insert(reason.to_owned(), (now, 0));
        Some(0)
    }

    /// Logs what `note` lets through.
    pub fn log(&mut self, refused: &[Refused]) {
        for r in refused {
            if let Some(held_back) = self.note(&r.reason, Instant::now()) {
                tracing::warn!(
                    target_url = shown(&r.target_url),
                    reason = shown(&r.reason),
                    same_reason_since_last_logged = held_back,
                    "the coordinator refused a result; it is dropped, not resent"
                );
            }
        }
    }
}

/// Why a session ended, transient or not: only [`SessionError::Rejected`] is the coordinator's
/// verdict on what this agent sent; everything else (an unreachable coordinator, a broken
/// connection, a coordinator shutting down) is retried with every batch kept.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{url:?} is not a coordinator URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the TLS configuration: {0}")]
    Tls(String),
    #[error("cannot reach {coordinator}: {reason}")]
    Unreachable { coordinator: String, reason: String },
    #[error("the coordinator refused the session: {} ({:?})", .0.message(), .0.code())]
    Refused(tonic::Status),
    #[error("the stream broke: {} ({:?})", .0.message(), .0.code())]
    Broken(tonic::Status),
    /// The coordinator ended the stream with an error status of its own (not a broken
    /// connection): the message this agent sent was malformed or over a limit.
    #[error("the coordinator ended the stream: {} ({:?})", .0.message(), .0.code())]
    Rejected(tonic::Status),
    #[error("the stream closed")]
    Closed,
    #[error("the scheduler stopped")]
    SchedulerStopped,
}

impl SessionError {
    /// A status that ended the stream: `Rejected` when the coordinator sent it about the
    /// messages themselves, `Broken` when the connection underneath failed or the code means
    /// "later" (unavailable, resource exhausted, …).
    pub fn ended(status: tonic::Status) -> SessionError {
        let mut source = std::error::Error::source(&status);
        while let Some(error) = source {
            if error.is::<h2::Error>() || error.is::<hyper::Error>() || error.is::<std::io::Error>() {
                return SessionError::Broken(status);
            }
            source = error.source();
        }
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => SessionError::Rejected(status),
            _ => SessionError::Broken(status),
        }
    }
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
            pending_bytes: VecDeque::new(),
            unacked: VecDeque::new(),
            next_sequence: start,
            limit: limit.max(BATCH_SIZE),
            dropped: 0,
            rejections: None,
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len() + self.unacked.iter().map(|b| b.results.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a result. One over [`limits::MAX_RESULT_BYTES`] (which `wire::fit` rules out for
    /// what the probe reports) is dropped with an error: the coordinator would refuse it.
    pub fn push(&mut self, result: TargetResult) {
        let bytes = framed_len(&result);
        if bytes > limits::MAX_RESULT_BYTES {
            tracing::error!(
                target_url = shown(&result.target_url),
                bytes,
                max = limits::MAX_RESULT_BYTES,
                "a result too large to send was dropped (a bug: results are cut to the limits)"
            );
            return;
        }
        self.pending.push_back(result);
        self.pending_bytes.push_back(bytes);
        while self.len() > self.limit {
            self.dropped += 1;
            if self.pending.len() > 1 {
                self.pending.pop_front();
                self.pending_bytes.pop_front();
            } else if let Some(batch) = self.unacked.front_mut() {
                batch.results.remove(0);
                if batch.results.is_empty() {
                    self.unacked.pop_front();
                }
            }
        }
    }

    /// Turns pending results into batches of at most [`BATCH_SIZE`] results and
    /// [`limits::MAX_BATCH_BYTES`] encoded; returns the new ones to send.
    pub fn seal(&mut self) -> Vec<ResultBatch> {
        let mut sealed = Vec::new();
        while !self.pending.is_empty() {
            let (mut take, mut bytes) = (0, BATCH_OVERHEAD);
            for &size in self.pending_bytes.iter().take(BATCH_SIZE) {
                // A result always fits an empty batch (push refused the ones that would not).
                if take > 0 && bytes + size > limits::MAX_BATCH_BYTES {
                    break;
                }
                take += 1;
                bytes += size;
            }
            self.pending_bytes.drain(..take);
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

    /// Forgets every batch up to the acked sequence, now committed, and returns the results of
    /// the acked batch the coordinator refused: they are dropped too (resending them would be
    /// refused again), and the caller logs them.
    pub fn ack(&mut self, ack: &Ack) -> Vec<Refused> {
        let mut refused = Vec::new();
        while self.unacked.front().is_some_and(|b| b.sequence <= ack.sequence) {
            let Some(batch) = self.unacked.pop_front() else { break };
            if batch.sequence != ack.sequence {
                continue;
            }
            for r in &ack.refused {
                let target_url = batch.results.get(r.index as usize).map(|t| t.target_url.clone());
                let target_url = target_url.unwrap_or_else(|| format!("(no result {} in the batch)", r.index));
                refused.push(Refused { target_url, reason: r.reason.clone() });
            }
        }
        refused
    }

    /// The coordinator ended a session with an error after this outbox's batches were sent: a
    /// strike against the oldest unacked batch (the coordinator takes batches in order, so it is
    /// the one it could not take). At [`MAX_REJECTIONS`] strikes in a row that batch is dropped
    /// and returned, so the rest get through.
    pub fn rejected(&mut self) -> Option<Abandoned> {
        let oldest = self.unacked.front()?.sequence;
        let strikes = match self.rejections {
            Some((sequence, n)) if sequence == oldest => n + 1,
            _ => 1,
        };
        if strikes < MAX_REJECTIONS {
            self.rejections = Some((oldest, strikes));
            return None;
        }
        self.rejections = None;
        let batch = self.unacked.pop_front()?;
        Some(Abandoned { sequence: batch.sequence, results: batch.results.len() })
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
    let mut refusals = RefusalLog::default();
    loop {
        let mut sent = false;
        match connect_and_serve(&config, &mut outbox, &mut results, &commands, &mut backoff, &mut refusals, &mut sent)
            .await
        {
            Ok(()) => {
                tracing::warn!("the coordinator closed the stream; reconnecting");
                backoff = BACKOFF_FIRST;
            }
            Err(SessionError::Rejected(status)) if sent => {
                tracing::warn!(error = status.message(), code = ?status.code(), retry_in = ?backoff, "the coordinator ended the stream");
                if let Some(dropped) = outbox.rejected() {
                    tracing::error!(
                        sequence = dropped.sequence,
                        results = dropped.results,
                        error = shown(status.message()),
                        code = ?status.code(),
                        "the coordinator ended {MAX_REJECTIONS} sessions in a row over this batch; it is dropped so the rest get through"
                    );
                }
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
    refusals: &mut RefusalLog,
    sent: &mut bool,
) -> Result<(), SessionError> {
    let mut endpoint = Endpoint::from_shared(config.coordinator.clone())
        .map_err(|e| SessionError::BadUrl { url: config.coordinator.clone(), reason: e.to_string() })?;
    if let Some(tls) = &config.tls {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_pem))
            .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
            .timeout(Duration::from_secs(10));
        endpoint = endpoint.tls_config(tls).map_err(|e| SessionError::Tls(e.to_string()))?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| SessionError::Unreachable { coordinator: config.coordinator.clone(), reason: e.to_string() })?;
    let (tx, rx) = mpsc::channel::<AgentMessage>(256);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let hello = Hello {
        name: config.name.clone(),
        region: config.region.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        sent_at: Some(prost_types::Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 }),
    };
    tx.send(AgentMessage { kind: Some(agent_message::Kind::Hello(hello)) }).await.map_err(|_| SessionError::Closed)?;
    let mut inbound = AgentServiceClient::new(channel)
        .max_decoding_message_size(limits::MAX_ASSIGNMENT)
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(SessionError::Refused)?
        .into_inner();
    tracing::info!(coordinator = config.coordinator, region = config.region, "connected");
    // A session that came up starts the next outage's backoff from the beginning.
    *backoff = BACKOFF_FIRST;
    let served: Result<(), SessionError> = async {
        // Whatever was sent and not acked before is sent again; the coordinator drops duplicates.
        for batch in outbox.unacked() {
            send_batch(&tx, batch).await?;
            *sent = true;
        }
        // New batches are numbered once the first assignment says what the coordinator committed.
        let mut numbered = false;
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                message = inbound.message() => {
                    let message = message.map_err(SessionError::ended)?;
                    let Some(kind) = message.and_then(|m| m.kind) else { return Ok(()) };
                    let command = match kind {
                        coordinator_message::Kind::Assignment(a) => {
                            outbox.raise_floor(a.last_sequence);
                            numbered = true;
                            Some(Command::Assign(assigned::all(a.targets)))
                        }
                        coordinator_message::Kind::Change(c) => Some(Command::Change { upserted: assigned::all(c.upserted), removed: c.removed_urls }),
                        coordinator_message::Kind::RunNow(r) => {
                            Some(Command::RunNow { id: r.id, url: r.target_url, trace_context: r.trace_context })
                        }
                        coordinator_message::Kind::Ack(ack) => {
                            refusals.log(&outbox.ack(&ack));
                            None
                        }
                    };
                    if let Some(command) = command {
                        commands.send(command).await.map_err(|_| SessionError::SchedulerStopped)?;
                    }
                }
                Some(result) = results.recv() => {
                    let urgent = !result.run_now_id.is_empty();
                    outbox.push(result);
                    if numbered && (urgent || outbox.pending.len() >= BATCH_SIZE) {
                        for batch in outbox.seal() {
                            send_batch(&tx, batch).await?;
                            *sent = true;
                        }
                    }
                }
                _ = flush.tick(), if numbered => {
                    for batch in outbox.seal() {
                        send_batch(&tx, batch).await?;
                        *sent = true;
                    }
                    if outbox.dropped > 0 {
                        tracing::warn!(dropped = outbox.dropped, "outbox was full; oldest results dropped");
                        outbox.dropped = 0;
                    }
                }
            }
        }
    }
    .await;
    match served {
        // The stream closed under a send: the coordinator ended it, and its status says why
        // (a rejection must be counted as one, not taken for a dropped connection).
        Err(SessionError::Closed) => match tokio::time::timeout(Duration::from_secs(1), inbound.message()).await {
            Ok(Err(status)) => Err(SessionError::ended(status)),
            _ => Err(SessionError::Closed),
        },
        other => other,
    }
}

async fn send_batch(tx: &mpsc::Sender<AgentMessage>, batch: ResultBatch) -> Result<(), SessionError> {
    tx.send(AgentMessage { kind: Some(agent_message::Kind::Batch(batch)) }).await.map_err(|_| SessionError::Closed)
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
        outbox.ack(&Ack { sequence: sealed[0].sequence, refused: Vec::new() });
        assert_eq!(outbox.unacked().len(), 1);
        outbox.ack(&Ack { sequence: sealed[1].sequence, refused: Vec::new() });
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

    /// A result as large as the probe makes them: a 4 KiB failure detail and 256 SANs.
    fn large(n: usize) -> TargetResult {
        use vantage_proto::v1::{Certificate, Failure, ProbeResult};
        let mut probe = ProbeResult {
            url: format!("https://t{n}.example/"),
            failure: Some(Failure { code: "cert_expired".into(), detail: "d".repeat(4096), ..Default::default() }),
            cert: Some(Certificate {
                sans: (0..256).map(|i| format!("host-{i:04}.a-rather-long-subdomain.t{n}.example")).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        crate::wire::fit(&mut probe);
        TargetResult { target_url: format!("https://t{n}.example/"), result: Some(probe), ..Default::default() }
    }

    #[test]
    fn large_results_are_split_into_batches_under_the_byte_cap() {
        let mut outbox = Outbox::new(10_000);
        for n in 0..500 {
            outbox.push(large(n));
        }
        let sealed = outbox.seal();
        assert!(sealed.len() >= 3, "{} batches for ~7 MiB of results", sealed.len());
        let mut next = 0;
        for batch in &sealed {
            assert!(batch.encoded_len() <= limits::MAX_BATCH_BYTES, "{} bytes", batch.encoded_len());
            assert!(batch.results.len() <= limits::MAX_BATCH_RESULTS);
            let message = AgentMessage { kind: Some(agent_message::Kind::Batch(batch.clone())) };
            assert!(message.encoded_len() <= limits::MAX_MESSAGE);
            for r in &batch.results {
                assert_eq!(r.target_url, format!("https://t{next}.example/"), "order is kept");
                next += 1;
            }
        }
        assert_eq!(next, 500);
        // Full batches are close to the cap, not cut needlessly small.
        assert!(sealed[0].encoded_len() > limits::MAX_BATCH_BYTES - 2 * framed_len(&large(0)));
    }

    #[test]
    fn a_result_over_the_result_cap_is_dropped_not_sent() {
        let mut outbox = Outbox::new(10_000);
        let huge = TargetResult { target_url: "x".repeat(limits::MAX_RESULT_BYTES), ..Default::default() };
        outbox.push(huge);
        outbox.push(result(1));
        let sealed = outbox.seal();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].results.len(), 1);
        assert_eq!(sealed[0].results[0].target_url, "https://t1.example/");
    }

    #[test]
    fn refused_results_are_dropped_with_their_reasons() {
        use vantage_proto::v1::RefusedResult;
        let mut outbox = Outbox::new(10_000);
        for n in 0..3 {
            outbox.push(result(n));
        }
        let batch = outbox.seal().remove(0);
        let ack = Ack {
            sequence: batch.sequence,
            refused: vec![
                RefusedResult { index: 1, reason: "not assigned".into() },
                RefusedResult { index: 7, reason: "run_now_id: at most 64 bytes".into() },
            ],
        };
        let refused = outbox.ack(&ack);
        assert_eq!(
            refused,
            vec![
                Refused { target_url: "https://t1.example/".into(), reason: "not assigned".into() },
                Refused {
                    target_url: "(no result 7 in the batch)".into(),
                    reason: "run_now_id: at most 64 bytes".into()
                },
            ]
        );
        assert!(outbox.unacked().is_empty(), "nothing of an acked batch is resent");
        assert!(outbox.is_empty());
    }

    #[test]
    fn refusals_are_logged_once_per_reason_per_minute() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note("not assigned", t0), Some(0));
        assert_eq!(log.note("not assigned", t0 + Duration::from_secs(1)), None);
        assert_eq!(log.note("not assigned", t0 + Duration::from_secs(59)), None);
        assert_eq!(log.note("target_url: at most 2048 bytes", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(log.note("not assigned", t0 + REFUSAL_LOG_EVERY), Some(2), "two held back");
        assert_eq!(log.note("not assigned", t0 + REFUSAL_LOG_EVERY), None);
        // Endless distinct reasons do not grow the log without bound.
        for n in 0..(RefusalLog::REASONS * 2) {
            log.note(&format!("reason {n}"), t0 + Duration::from_secs(3));
        }
        assert!(log.seen.len() <= RefusalLog::REASONS);
    }

    #[test]
    fn a_batch_the_coordinator_keeps_rejecting_is_dropped_after_the_limit() {
        let mut outbox = Outbox::new(10_000);
        outbox.push(result(0));
        let poison = outbox.seal().remove(0);
        outbox.push(result(1));
        outbox.push(result(2));
        let good = outbox.seal().remove(0);
        for _ in 1..MAX_REJECTIONS {
            assert_eq!(outbox.rejected(), None);
            assert_eq!(outbox.unacked().len(), 2, "kept and resent until the limit");
        }
        assert_eq!(outbox.rejected(), Some(Abandoned { sequence: poison.sequence, results: 1 }));
        assert_eq!(outbox.unacked(), vec![good.clone()], "the rest goes on");
        // The next batch starts from a clean count.
        assert_eq!(outbox.rejected(), None);
        outbox.ack(&Ack { sequence: good.sequence, refused: Vec::new() });
        assert_eq!(outbox.rejected(), None, "nothing outstanding, nothing to drop");
    }

    #[test]
    fn strikes_count_only_in_a_row_for_the_same_batch() {
        let mut outbox = Outbox::new(10_000);
        outbox.push(result(0));
        let first = outbox.seal().remove(0);
        outbox.push(result(1));
        let second = outbox.seal().remove(0);
        for _ in 1..MAX_REJECTIONS {
            assert_eq!(outbox.rejected(), None);
        }
        // The first got through after all: the second starts from one strike.
        outbox.ack(&Ack { sequence: first.sequence, refused: Vec::new() });
        for _ in 1..MAX_REJECTIONS {
            assert_eq!(outbox.rejected(), None);
        }
        assert_eq!(outbox.rejected(), Some(Abandoned { sequence: second.sequence, results: 1 }));
    }

    #[test]
    fn only_the_coordinators_own_error_statuses_reject_a_batch() {
        use tonic::Status;
        let rejects = |s: Status| matches!(SessionError::ended(s), SessionError::Rejected(_));
        assert!(rejects(Status::invalid_argument("results[3].run_now_id: at most 64 bytes")));
        assert!(rejects(Status::out_of_range("Error, decoded message length too large")));
        // Transient: the coordinator going away, a full or busy coordinator, a broken connection.
        assert!(!rejects(Status::unavailable("the coordinator is shutting down")));
        assert!(!rejects(Status::resource_exhausted("full")));
        assert!(!rejects(Status::internal("storage failure; see the coordinator's log")));
        let reset = Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert!(!rejects(reset));
        let mut broken = Status::invalid_argument("h2 protocol error");
        broken.set_source(std::sync::Arc::new(h2::Error::from(h2::Reason::PROTOCOL_ERROR)));
        assert!(!rejects(broken), "a code over a broken connection is not the coordinator's verdict");
    }
}
