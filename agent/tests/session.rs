//! The agent's session over real gRPC against a peer that behaves like a coordinator refusing
//! things: a real tonic server implementing `AgentService` that acks with refusals, ends the
//! stream with `INVALID_ARGUMENT` over a batch it cannot take, or goes away (`UNAVAILABLE`).
//! The agent's side is the real `session::run`, fed results through its channel.

use std::collections::HashMap;
use std::io::BufRead;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use vantage_agent::session::{self, MAX_REJECTIONS, Outbox, SessionConfig};
use vantage_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use vantage_proto::v1::{
    Ack, AgentMessage, Assignment, CoordinatorMessage, RefusedResult, RunNow, TargetResult, TargetSpec, agent_message,
    coordinator_message,
};

/// What the peer does with a batch.
#[derive(Clone, Copy)]
enum Verdict {
    Ack,
    /// End the stream with this error instead of acking.
    End(tonic::Code),
}

/// Everything the peer saw: per batch, its session, sequence and result URLs; and what it acked.
#[derive(Default)]
struct Seen {
    sessions: usize,
    batches: Vec<(usize, u64, Vec<String>)>,
    acked: Vec<String>,
    /// The sequences of the batches the peer ended the stream over.
    ended: Vec<u64>,
}

impl Seen {
    /// How many times a result for `url` arrived.
    fn received(&self, url: &str) -> usize {
        self.batches.iter().flat_map(|(_, _, urls)| urls).filter(|u| *u == url).count()
    }

    /// The sequences of the batches that carried `url`, in arrival order.
    fn sequences_of(&self, url: &str) -> Vec<u64> {
        self.batches.iter().filter(|(_, _, urls)| urls.iter().any(|u| u == url)).map(|(_, s, _)| *s).collect()
    }
}

type Judge = dyn Fn(&[TargetResult], &Seen) -> Verdict + Send + Sync;

#[derive(Clone)]
struct Peer {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    judge: Arc<Judge>,
    /// The assignment every session starts with.
    targets: Vec<TargetSpec>,
    /// A run-now request for this URL, sent once, in the first session.
    run_now: Arc<Mutex<Option<String>>>,
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Peer {
    type ConnectStream = MessageStream;

    async fn connect(&self, request: Request<Streaming<AgentMessage>>) -> Result<Response<MessageStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let peer = self.clone();
        tokio::spawn(async move {
            let session = {
                let mut seen = peer.seen.lock().unwrap();
                seen.sessions += 1;
                seen.sessions
            };
            let assignment = Assignment { epoch: 1, targets: peer.targets.clone(), last_sequence: 0 };
            let _ = tx.send(Ok(message(coordinator_message::Kind::Assignment(assignment)))).await;
            let run_now = peer.run_now.lock().unwrap().take();
            if let Some(url) = run_now {
                let run_now = RunNow { id: format!("{url}#1"), target_url: url, trace_context: HashMap::new() };
                let _ = tx.send(Ok(message(coordinator_message::Kind::RunNow(run_now)))).await;
            }
            while let Ok(Some(m)) = inbound.message().await {
                let Some(agent_message::Kind::Batch(batch)) = m.kind else { continue };
                let urls: Vec<String> = batch.results.iter().map(|r| r.target_url.clone()).collect();
                let verdict = {
                    let mut seen = peer.seen.lock().unwrap();
                    seen.batches.push((session, batch.sequence, urls.clone()));
                    (peer.judge)(&batch.results, &seen)
                };
                let reply = match verdict {
                    Verdict::End(code) => Err(Status::new(code, "results[0].run_now_id: at most 64 bytes")),
                    Verdict::Ack => {
                        // Results for targets named "refuse…" are refused, as the coordinator refuses
                        // a result it will not store.
                        let refused = (urls.iter().enumerate())
                            .filter(|(_, u)| u.contains("refuse"))
                            .map(|(i, _)| RefusedResult { index: i as u32, reason: "not assigned".into() })
                            .collect();
                        peer.seen.lock().unwrap().acked.extend(urls);
                        Ok(message(coordinator_message::Kind::Ack(Ack { sequence: batch.sequence, refused })))
                    }
                };
                let end = reply.is_err();
                if end {
                    peer.seen.lock().unwrap().ended.push(batch.sequence);
                }
                let _ = tx.send(reply).await;
                peer.changed.notify_waiters();
                if end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn message(kind: coordinator_message::Kind) -> CoordinatorMessage {
    CoordinatorMessage { kind: Some(kind) }
}

fn result(url: &str) -> TargetResult {
    TargetResult { target_url: url.into(), ..Default::default() }
}

/// A run-now result: sent at once, in a batch of its own.
fn urgent(url: &str) -> TargetResult {
    TargetResult { target_url: url.into(), run_now_id: format!("{url}#1"), ..Default::default() }
}

/// The peer on a loopback port and an agent session connected to it.
struct Harness {
    peer: Peer,
    results: mpsc::Sender<TargetResult>,
}

/// Starts `peer` on a loopback port; returns its address.
async fn listen(peer: &Peer) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = AgentServiceServer::new(peer.clone());
    tokio::spawn(
        tonic::transport::Server::builder().add_service(service).serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

fn peer(judge: impl Fn(&[TargetResult], &Seen) -> Verdict + Send + Sync + 'static) -> Peer {
    Peer {
        seen: Arc::default(),
        changed: Arc::default(),
        judge: Arc::new(judge),
        targets: Vec::new(),
        run_now: Arc::default(),
    }
}

/// Waits (up to 60 s) until `done` holds for what `peer` saw.
async fn until(peer: &Peer, what: &str, done: impl Fn(&Seen) -> bool) {
    let wait = async {
        loop {
            let changed = peer.changed.notified();
            if done(&peer.seen.lock().unwrap()) {
                return;
            }
            changed.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), wait).await.is_err() {
        let seen = peer.seen.lock().unwrap();
        panic!("timed out waiting until {what}; batches seen: {:?}", seen.batches);
    }
}

impl Harness {
    async fn start(judge: impl Fn(&[TargetResult], &Seen) -> Verdict + Send + Sync + 'static) -> Harness {
        let peer = peer(judge);
        let addr = listen(&peer).await;
        let (results, results_rx) = mpsc::channel(1024);
        let (commands, mut commands_rx) = mpsc::channel(64);
        tokio::spawn(async move { while commands_rx.recv().await.is_some() {} });
        let config = SessionConfig {
            coordinator: format!("http://{addr}"),
            name: "agent-1".into(),
            region: "r1".into(),
            tls: None,
        };
        tokio::spawn(session::run(config, Outbox::new(10_000), results_rx, commands));
        Harness { peer, results }
    }

    async fn push(&self, result: TargetResult) {
        self.results.send(result).await.unwrap();
    }

    async fn until(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        until(&self.peer, what, done).await
    }
}

#[tokio::test]
async fn refused_results_are_dropped_and_never_resent() {
    // The coordinator goes away (UNAVAILABLE) the first time it sees ok-2, so the agent
    // reconnects and resends whatever it still holds.
    let h = Harness::start(|results, seen| {
        let ok_2 = results.iter().any(|r| r.target_url.contains("ok-2"));
        if ok_2 && seen.received("https://ok-2.example/") == 1 {
            Verdict::End(tonic::Code::Unavailable)
        } else {
            Verdict::Ack
        }
    })
    .await;
    h.push(result("https://ok-1.example/")).await;
    h.push(result("https://refuse-1.example/")).await;
    h.push(urgent("https://refuse-2.example/")).await;
    h.until("the first results are acked", |s| s.acked.iter().any(|u| u.contains("refuse-2"))).await;
    h.push(urgent("https://ok-2.example/")).await;
    // ok-2's batch ends the session; it is resent and acked in the next one.
    h.until("ok-2 is acked after a reconnect", |s| s.acked.iter().any(|u| u.contains("ok-2"))).await;
    h.push(urgent("https://ok-3.example/")).await;
    h.until("ok-3 is acked", |s| s.acked.iter().any(|u| u.contains("ok-3"))).await;

    let seen = h.peer.seen.lock().unwrap();
    assert!(seen.sessions >= 2, "the agent reconnected");
    assert_eq!(seen.received("https://ok-2.example/"), 2, "an unacked result is resent: {:?}", seen.batches);
    for refused in ["https://refuse-1.example/", "https://refuse-2.example/", "https://ok-1.example/"] {
        assert_eq!(seen.received(refused), 1, "{refused} was acked (refused or not) and never resent");
    }
}

#[tokio::test]
async fn a_batch_the_coordinator_rejects_is_dropped_after_the_limit_and_later_batches_get_through() {
    let h = Harness::start(|results, _| {
        if results.iter().any(|r| r.target_url.contains("poison")) {
            Verdict::End(tonic::Code::InvalidArgument)
        } else {
            Verdict::Ack
        }
    })
    .await;
    h.push(urgent("https://poison.example/")).await;
    h.until("the poison batch arrives", |s| s.received("https://poison.example/") == 1).await;
    // Later results, in batches behind the poison one.
    h.push(urgent("https://good-1.example/")).await;
    h.push(result("https://good-2.example/")).await;
    h.until("the later results are acked", |s| {
        ["good-1", "good-2"].iter().all(|g| s.acked.iter().any(|u| u.contains(g)))
    })
    .await;
    h.push(urgent("https://good-3.example/")).await;
    h.until("a new result is acked at once", |s| s.acked.iter().any(|u| u.contains("good-3"))).await;

    let seen = h.peer.seen.lock().unwrap();
    let poison = seen.sequences_of("https://poison.example/");
    assert_eq!(poison.len(), MAX_REJECTIONS as usize, "sent {MAX_REJECTIONS} times, then dropped: {:?}", seen.batches);
    assert!(poison.iter().all(|s| *s == poison[0]), "the same batch each time");
    assert!(!seen.acked.iter().any(|u| u.contains("poison")));
}

#[tokio::test]
async fn a_coordinator_going_away_never_costs_a_batch() {
    // UNAVAILABLE (a coordinator shutting down) well past the rejection limit, then acked.
    let h = Harness::start(|results, seen| {
        let flaky = results.iter().any(|r| r.target_url.contains("flaky"));
        if flaky && seen.received("https://flaky.example/") <= 2 * MAX_REJECTIONS as usize {
            Verdict::End(tonic::Code::Unavailable)
        } else {
            Verdict::Ack
        }
    })
    .await;
    h.push(urgent("https://flaky.example/")).await;
    h.until("the batch is finally acked", |s| s.acked.iter().any(|u| u.contains("flaky"))).await;
    let seen = h.peer.seen.lock().unwrap();
    let sent = seen.sequences_of("https://flaky.example/");
    assert_eq!(sent.len(), 2 * MAX_REJECTIONS as usize + 1, "{:?}", seen.batches);
    assert!(sent.iter().all(|s| *s == sent[0]));
}

/// With no probe slot or no room for a result, an agent would connect and never report: the
/// command line refuses both.
#[test]
fn run_refuses_a_zero_concurrency_or_outbox() {
    for flag in ["--concurrency", "--outbox-limit"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vantage-agent"))
            .args(["run", "--insecure", "--region", "r1", "--coordinator", "http://127.0.0.1:9", flag, "0"])
            .output()
            .expect("vantage-agent runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{flag} 0: {stderr}");
        assert!(stderr.contains(&format!("invalid value '0' for '{flag}")), "{flag}: {stderr}");
        assert!(stderr.contains("must be at least 1"), "{flag}: {stderr}");
    }
}

/// The real `vantage-agent run`, its stderr collected line by line.
struct AgentProcess {
    child: std::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl AgentProcess {
    fn start(addr: std::net::SocketAddr, extra: &[String]) -> AgentProcess {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vantage-agent"))
            .args(["run", "--insecure", "--region", "r1", "--name", "agent-1"])
            .arg("--coordinator")
            .arg(format!("http://{addr}"))
            .args(extra)
            .env("VANTAGE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("vantage-agent starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (pipe, lines) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        AgentProcess { child, stderr }
    }

    fn lines(&self, containing: &str) -> Vec<String> {
        self.stderr.lock().unwrap().iter().filter(|l| l.contains(containing)).cloned().collect()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP server answering 200, as a target: its URL under `name`, which the agent pins
/// to it with `--resolve`.
async fn target_server(name: &str, pins: &mut Vec<String>) -> String {
    use vantage_shared::lab::server::{self, Reply};
    let listener = server::bind("127.0.0.1", 0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve_plain(listener, Reply::Page { status: 200, body: "ok" }));
    pins.extend(["--resolve".to_owned(), format!("{name}:127.0.0.1")]);
    format!("http://{name}:{}/", addr.port())
}

fn spec(url: &str) -> TargetSpec {
    TargetSpec {
        url: url.into(),
        interval: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_logs_refusals_once_per_reason_and_the_batch_it_drops() {
    let mut pins = Vec::new();
    let refused = target_server("refuse.vantage.test", &mut pins).await;
    let good = target_server("good.vantage.test", &mut pins).await;
    let poison = target_server("poison.vantage.test", &mut pins).await;
    // Results for `refused` come back refused; a batch holding the run-now result for `poison`
    // ends the stream, as a run-now id the coordinator cannot take did before results could be
    // refused one by one.
    let p = poison.clone();
    let mut peer = peer(move |results, _| {
        if results.iter().any(|x| x.target_url == p && !x.run_now_id.is_empty()) {
            Verdict::End(tonic::Code::InvalidArgument)
        } else {
            Verdict::Ack
        }
    });
    peer.targets = vec![spec(&refused), spec(&good), spec(&poison)];
    *peer.run_now.lock().unwrap() = Some(poison.clone());
    let addr = listen(&peer).await;
    let agent = AgentProcess::start(addr, &pins);

    until(&peer, "the poison batch is dropped and results flow again", |s| {
        let acked = |url: &str| s.acked.iter().filter(|u| *u == url).count();
        s.ended.len() >= MAX_REJECTIONS as usize && acked(&good) >= 3 && acked(&refused) >= 3
    })
    .await;

    // Several results for `refused` were refused for the same reason: one warning says so.
    let warnings = agent.lines("the coordinator refused a result");
    assert_eq!(warnings.len(), 1, "once per reason per minute: {warnings:?}");
    let warning = &warnings[0];
    assert!(warning.contains("WARN") && warning.contains(&refused) && warning.contains("not assigned"), "{warning}");

    let dropped = agent.lines("it is dropped so the rest get through");
    assert_eq!(dropped.len(), 1, "one batch dropped, logged once: {dropped:?}");
    let line = &dropped[0];
    assert!(line.contains("ERROR") && line.contains("sequence=") && line.contains("results="), "{line}");
    assert!(line.contains("results[0].run_now_id: at most 64 bytes"), "the coordinator's error: {line}");
    let seen = peer.seen.lock().unwrap();
    let ended = &seen.ended;
    assert_eq!(ended.len(), MAX_REJECTIONS as usize, "the batch is sent {MAX_REJECTIONS} times, no more: {ended:?}");
    assert!(ended.iter().all(|s| *s == ended[0]), "the same batch each time: {ended:?}");
    assert!(line.contains(&format!("sequence={}", ended[0])), "the log names the dropped batch: {line}");
}
