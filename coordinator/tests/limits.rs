//! Every input bounded, over the real gRPC server (in-process, on loopback): agents that break
//! the protocol (malformed or oversized messages) are disconnected and nothing of theirs is
//! stored; a result the coordinator will not store (malformed, oversized, for a target unknown or
//! not assigned to that agent) is refused on its own in the ack while the rest of its batch is
//! stored; an agent whose every result is refused silences its region; run-now ids fit the
//! longest URL; targets are checked field by field; the target cap and the per-request caps hold.

use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use vantage_coordinator::hub::HubOptions;
use vantage_coordinator::serve::{self, Running, ServeOptions};
use vantage_proto::v1::agent_service_client::AgentServiceClient;
use vantage_proto::v1::coordinator_client::CoordinatorClient;
use vantage_proto::v1::*;
use vantage_shared::limits::{MAX_ID, MAX_RESULT_BYTES, MAX_URL};

const URL: &str = "https://shop.limits.test/";

async fn start(name: &str, max_targets: usize) -> Running {
    start_with(name, HubOptions { max_targets, ..HubOptions::default() }).await
}

async fn start_with(name: &str, hub: HubOptions) -> Running {
    let dir = std::env::temp_dir().join(format!("vantage-limits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = ServeOptions { hub, ..ServeOptions::local("127.0.0.1:0".parse().unwrap(), dir) };
    let running = serve::start(options).await.unwrap();
    running.hub.upsert_target(TargetSpec { url: URL.into(), ..Default::default() }).await.unwrap();
    running
}

fn result(url: &str) -> TargetResult {
    TargetResult {
        target_url: url.into(),
        result: Some(ProbeResult { url: url.into(), status: ProbeStatus::Up as i32, ..Default::default() }),
        ..Default::default()
    }
}

fn batch(sequence: u64, results: Vec<TargetResult>) -> AgentMessage {
    AgentMessage { kind: Some(agent_message::Kind::Batch(ResultBatch { sequence, results })) }
}

/// Opens an agent stream, says hello, sends `messages`, and returns how the stream ended: the
/// error code, or `Ok` with the acked sequences when the coordinator kept it open.
async fn session(running: &Running, messages: Vec<AgentMessage>) -> Result<Vec<u64>, (Code, String)> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr)).unwrap().connect().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let hello =
        Hello { name: "agent-1".into(), region: "eu-west".into(), version: "test".into(), ..Default::default() };
    tx.send(AgentMessage { kind: Some(agent_message::Kind::Hello(hello)) }).await.unwrap();
    let mut client = AgentServiceClient::new(channel).max_encoding_message_size(64 << 20);
    let mut inbound =
        client.connect(ReceiverStream::new(rx)).await.map_err(|s| (s.code(), s.message().into()))?.into_inner();
    let expected = messages.len();
    for m in messages {
        tx.send(m).await.unwrap();
    }
    let mut acked = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), inbound.message()).await.expect("the coordinator answers") {
            Ok(Some(CoordinatorMessage { kind: Some(coordinator_message::Kind::Ack(ack)) })) => {
                acked.push(ack.sequence);
                if acked.len() == expected {
                    return Ok(acked);
                }
            }
            Ok(Some(_)) => {} // the assignment
            Ok(None) => return Err((Code::Ok, "stream ended".into())),
            Err(status) => return Err((status.code(), status.message().into())),
        }
    }
}

async fn stored(running: &Running, url: &str) -> usize {
    running.hub.history(url, None, i64::MIN, i64::MAX, 1000).await.unwrap().len()
}

#[tokio::test]
async fn malformed_or_oversized_agent_messages_end_the_stream_and_store_nothing() {
    let running = start("agents", 100).await;
    let hello = AgentMessage {
        kind: Some(agent_message::Kind::Hello(Hello {
            name: "agent-1".into(),
            region: "eu-west".into(),
            version: "x".into(),
            ..Default::default()
        })),
    };
    let mut huge = result(URL);
    huge.result.as_mut().unwrap().tls_cipher = "x".repeat(5 << 20);
    let cases: Vec<(&str, Vec<AgentMessage>, Code, &str)> = vec![
        ("1,001 results in a batch", vec![batch(1, vec![result(URL); 1001])], Code::InvalidArgument, "results:"),
        ("an absurd sequence", vec![batch(u64::MAX, vec![result(URL)])], Code::InvalidArgument, "sequence:"),
        ("a second hello", vec![hello], Code::InvalidArgument, "hello sent twice"),
        ("an empty message", vec![AgentMessage { kind: None }], Code::InvalidArgument, "empty message"),
        // tonic's decoder refuses it before reading it, naming the size and the 4 MiB limit.
        (
            "a 5 MiB message",
            vec![batch(4, vec![huge])],
            Code::OutOfRange,
            "decoded message length too large: found 5242",
        ),
    ];
    for (what, messages, code, message) in cases {
        let ended = session(&running, messages).await;
        let (got, text) = ended.expect_err(what);
        assert_eq!(got, code, "{what}: {text}");
        assert!(text.contains(message), "{what}: {text}");
    }
    assert_eq!(stored(&running, URL).await, 0, "nothing of a refused batch is stored");

    // A well-formed batch is stored, except results for targets nobody configured.
    let acked = session(&running, vec![batch(10, vec![result(URL), result("https://unknown.limits.test/")])]).await;
    assert_eq!(acked, Ok(vec![10]));
    assert_eq!(stored(&running, URL).await, 1);
    assert_eq!(stored(&running, "https://unknown.limits.test/").await, 0);
    running.shutdown().await;
}

/// Sends `message` on an agent stream and returns its ack (skipping assignments and run-nows).
async fn acked(
    tx: &tokio::sync::mpsc::Sender<AgentMessage>,
    inbound: &mut tonic::Streaming<CoordinatorMessage>,
    message: AgentMessage,
) -> Ack {
    tx.send(message).await.unwrap();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), inbound.message()).await.expect("an answer");
        match next.expect("the stream stays open") {
            Some(CoordinatorMessage { kind: Some(coordinator_message::Kind::Ack(ack)) }) => return ack,
            Some(_) => {}
            None => panic!("the stream ended"),
        }
    }
}

/// The value of `vantage_results_refused_total{reason="…"}` in the coordinator's metrics.
async fn refused_metric(running: &Running, reason: &str) -> u64 {
    let metrics = vantage_coordinator::metrics::render(&running.hub).await;
    let series = format!("vantage_results_refused_total{{reason=\"{reason}\"}} ");
    let line = metrics.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
    line[series.len()..].parse().unwrap()
}

#[tokio::test]
async fn a_bad_result_is_refused_on_its_own_and_the_rest_of_its_batch_is_stored() {
    let running = start("refusals", 100).await;
    // A target only another region probes: never this agent's.
    let elsewhere = "https://elsewhere.limits.test/";
    let spec = TargetSpec { url: elsewhere.into(), regions: vec!["us-east".into()], ..Default::default() };
    running.hub.upsert_target(spec).await.unwrap();
    let longest = format!("https://shop.limits.test/{}", "x".repeat(MAX_URL - URL.len()));
    running.hub.upsert_target(TargetSpec { url: longest.clone(), ..Default::default() }).await.unwrap();
    let (tx, mut inbound) = connect_as(&running, "agent-1", "eu-west").await.unwrap();

    let mut large = result(URL);
    large.result.as_mut().unwrap().tls_cipher = "x".repeat(MAX_RESULT_BYTES);
    let mut traced = result(URL);
    traced.trace_context = [("traceparent".into(), "0".repeat(600))].into();
    let results = vec![
        result(URL),
        result(&format!("{longest}x")),
        TargetResult { run_now_id: "r".repeat(MAX_ID + 1), ..result(URL) },
        result("https://unknown.limits.test/"),
        result(elsewhere),
        TargetResult { result: None, ..result(URL) },
        large,
        traced,
        TargetResult { first_failure_code: "c".repeat(MAX_ID + 1), ..result(URL) },
        result(""),
        result(&longest),
    ];
    let ack = acked(&tx, &mut inbound, batch(7, results)).await;
    assert_eq!(ack.sequence, 7);
    let refused: Vec<(u32, &str)> = ack.refused.iter().map(|r| (r.index, r.reason.as_str())).collect();
    let indexes: Vec<u32> = refused.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [1, 2, 3, 4, 5, 6, 7, 8, 9], "{refused:#?}");
    for (index, field) in [
        (1, "target_url: must be 1 to 2048 bytes"),
        (2, "run_now_id: at most 64 bytes"),
        (3, "target_url: no target https://unknown.limits.test/"),
        (4, "target_url: https://elsewhere.limits.test/ is not assigned to this agent"),
        (5, "result: missing"),
        (6, "the result is"),
        (7, "trace_context:"),
        (8, "first_failure_code: at most 64 bytes"),
        (9, "target_url: must be 1 to 2048 bytes, got 0"),
    ] {
        let reason = refused.iter().find(|(i, _)| *i == index).unwrap().1;
        assert!(reason.starts_with(field), "result {index}: {reason}");
    }
    // The good ones are stored: the first and the one with the longest URL allowed.
    assert_eq!(stored(&running, URL).await, 1);
    assert_eq!(stored(&running, &longest).await, 1);
    assert_eq!(stored(&running, elsewhere).await, 0);
    for (reason, n) in [
        ("target_url", 2),
        ("id", 2),
        ("unknown_target", 1),
        ("not_assigned", 1),
        ("no_result", 1),
        ("too_large", 1),
        ("trace_context", 1),
    ] {
        assert_eq!(refused_metric(&running, reason).await, n, "{reason}");
    }

    // The stream goes on: the next batch is acked, nothing refused.
    let ack = acked(&tx, &mut inbound, batch(8, vec![result(URL)])).await;
    assert_eq!((ack.sequence, ack.refused.len()), (8, 0));
    assert_eq!(stored(&running, URL).await, 2);
    running.shutdown().await;
}

/// A target URL (`https://NAME-N.limits.test/`) whose owner among `agents` (rendezvous hashing)
/// is `owner`.
fn owned_by(name: &str, owner: &str, agents: &[&str]) -> String {
    (0..)
        .map(|i| format!("https://{name}-{i}.limits.test/"))
        .find(|url| vantage_coordinator::assign::owner(url, agents) == Some(owner))
        .unwrap()
}

#[tokio::test]
async fn an_agent_reports_only_targets_assigned_to_it_or_lately_moved_from_it() {
    let running = start("assigned", 100).await;
    let both = ["agent-1", "agent-2"];
    let mine = owned_by("mine", "agent-1", &both);
    let theirs = owned_by("theirs", "agent-2", &both);
    let moving = owned_by("moving", "agent-2", &both);
    for url in [&mine, &theirs] {
        running.hub.upsert_target(TargetSpec { url: url.clone(), ..Default::default() }).await.unwrap();
    }
    // agent-2 first, then agent-1: agent-1 never held agent-2's target.
    let (tx2, mut inbound2) = connect_as(&running, "agent-2", "eu-west").await.unwrap();
    let (tx1, mut inbound1) = connect_as(&running, "agent-1", "eu-west").await.unwrap();
    let ack = acked(&tx1, &mut inbound1, batch(1, vec![result(&mine), result(&theirs)])).await;
    let refused: Vec<(u32, &str)> = ack.refused.iter().map(|r| (r.index, r.reason.as_str())).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 1);
    assert!(refused[0].1.ends_with("is not assigned to this agent"), "{}", refused[0].1);
    assert_eq!((stored(&running, &mine).await, stored(&running, &theirs).await), (1, 0));
    assert_eq!(acked(&tx2, &mut inbound2, batch(1, vec![result(&theirs)])).await.refused.len(), 0);
    assert_eq!(stored(&running, &theirs).await, 1);

    // A target added while agent-2 is away goes to agent-1; when agent-2 is back it moves there,
    // and agent-1's result from just before the move is still accepted (a run under way).
    drop((tx2, inbound2));
    running.hub.upsert_target(TargetSpec { url: moving.clone(), ..Default::default() }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while running.hub.agents().iter().any(|a| a.name == "agent-2" && a.connected) {
        assert!(tokio::time::Instant::now() < deadline, "agent-2's stream never ended");
        tokio::time::sleep(Duration::from_millis(20)).await; // until the coordinator sees agent-2 go
    }
    let assigned = |name: &str| running.hub.agents().into_iter().find(|a| a.name == name).unwrap().assigned_targets;
    assert_eq!(assigned("agent-1"), 4, "agent-1 probes everything while agent-2 is away");
    let (_tx2, _inbound2) = connect_as(&running, "agent-2", "eu-west").await.unwrap();
    let agent_2s =
        [URL, &theirs, &moving].into_iter().filter(|u| vantage_coordinator::assign::owner(u, &both) == Some("agent-2"));
    assert_eq!(assigned("agent-2") as usize, agent_2s.count(), "agent-2's targets, the moving one included, went back");
    let ack = acked(&tx1, &mut inbound1, batch(2, vec![result(&moving)])).await;
    assert!(ack.refused.is_empty(), "{:?}", ack.refused);
    assert_eq!(stored(&running, &moving).await, 1);
    running.shutdown().await;
}

#[tokio::test]
async fn a_run_now_id_fits_the_longest_url_and_its_answer_is_stored() {
    let running = start("run-now", 100).await;
    let longest = format!("https://shop.limits.test/{}", "x".repeat(MAX_URL - URL.len()));
    running.hub.upsert_target(TargetSpec { url: longest.clone(), ..Default::default() }).await.unwrap();
    let (tx, mut inbound) = connect_as(&running, "agent-1", "eu-west").await.unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr)).unwrap().connect().await.unwrap();
    let mut client = CoordinatorClient::new(channel);
    let url = longest.clone();
    let check = tokio::spawn(async move { client.check_now(CheckNowRequest { url }).await });
    let run_now = loop {
        let next = tokio::time::timeout(Duration::from_secs(30), inbound.message()).await.expect("a run-now");
        if let Some(CoordinatorMessage { kind: Some(coordinator_message::Kind::RunNow(r)) }) = next.unwrap() {
            break r;
        }
    };
    assert_eq!(run_now.target_url, longest);
    assert!(!run_now.id.is_empty() && run_now.id.len() <= MAX_ID, "{:?} is longer than {MAX_ID}", run_now.id);
    let answer = TargetResult { run_now_id: run_now.id.clone(), ..result(&longest) };
    let ack = acked(&tx, &mut inbound, batch(1, vec![answer])).await;
    assert!(ack.refused.is_empty(), "{:?}", ack.refused);
    let answered = check.await.unwrap().expect("CheckNow answers").into_inner();
    assert_eq!(answered.results.len(), 1);
    assert_eq!(answered.results[0].run_now_id, run_now.id);
    assert!(answered.missing_regions.is_empty());
    running.shutdown().await;
}

#[tokio::test]
async fn an_agent_whose_every_result_is_refused_silences_its_region() {
    use std::sync::Arc;
    use vantage_coordinator::alert::Alerting;
    let alerting = Alerting { region_silent_after: Duration::from_secs(1), ..Alerting::default() };
    let options = HubOptions { reconnect_grace: Duration::ZERO, alerting: Arc::new(alerting), ..HubOptions::default() };
    let running = start_with("refused-region", options).await;
    let secs = |s| Some(prost_types::Duration { seconds: s, nanos: 0 });
    let spec = TargetSpec {
        url: URL.into(),
        interval: secs(1),
        timeout: Some(prost_types::Duration { seconds: 0, nanos: 200_000_000 }),
        ..Default::default()
    };
    running.hub.upsert_target(spec).await.unwrap();
    let (tx, mut inbound) = connect_as(&running, "agent-1", "eu-west").await.unwrap();
    let silent = |running: &Running| {
        let hub = running.hub.clone();
        async move {
            let alerts = hub.alerts("eu-west", 10).await.unwrap();
            alerts.into_iter().map(|r| r.alert).collect::<Vec<_>>()
        }
    };
    // Connected, and every result refused (a target it does not have): its region goes silent
    // once it has gone longer than its targets allow without a stored result.
    let mut sequence = 0;
    let started = tokio::time::Instant::now();
    let alert = loop {
        sequence += 1;
        let ack = acked(&tx, &mut inbound, batch(sequence, vec![result("https://unknown.limits.test/")])).await;
        assert_eq!(ack.refused.len(), 1);
        if let Some(alert) = silent(&running).await.into_iter().find(|a| a.kind.as_str() == "region_silent") {
            break alert;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no region_silent while every result is refused");
        tokio::time::sleep(Duration::from_millis(250)).await; // an agent's pace of batches
    };
    let cause = alert.cause.expect("a cause");
    assert!(cause.message.contains("connected, but none of their results has been stored"), "{}", cause.message);
    assert!(running.hub.agents()[0].connected, "the agent stayed connected throughout");
    // Once its results are stored again, the region recovers.
    sequence += 1;
    assert!(acked(&tx, &mut inbound, batch(sequence, vec![result(URL)])).await.refused.is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !silent(&running).await.iter().any(|a| a.kind.as_str() == "region_recovered") {
        assert!(tokio::time::Instant::now() < deadline, "no region_recovered once results are stored");
        tokio::time::sleep(Duration::from_millis(100)).await; // the coordinator's once-a-second sweep
    }
    running.shutdown().await;
}

#[tokio::test]
async fn targets_are_checked_field_by_field_and_capped() {
    let running = start("targets", 2).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr)).unwrap().connect().await.unwrap();
    let mut client = CoordinatorClient::new(channel);
    let secs = |s| Some(prost_types::Duration { seconds: s, nanos: 0 });
    let base = || TargetSpec { url: "https://new.limits.test/".into(), ..Default::default() };
    let cases: Vec<(TargetSpec, &str)> = vec![
        (TargetSpec { url: "ftp://x.limits.test/".into(), ..base() }, "url"),
        (TargetSpec { url: "https://".into(), ..base() }, "url"),
        // 2,049 bytes: an agent could never report on it.
        (TargetSpec { url: format!("https://new.limits.test/{}", "x".repeat(MAX_URL + 1 - 24)), ..base() }, "url"),
        (TargetSpec { interval: Some(prost_types::Duration { seconds: 0, nanos: 500_000_000 }), ..base() }, "interval"),
        (TargetSpec { interval: secs(10), timeout: secs(10), ..base() }, "timeout"),
        (TargetSpec { regions: vec!["eu west".into()], ..base() }, "regions"),
        (TargetSpec { regions: vec!["eu".into()], quorum: 2, ..base() }, "quorum"),
        (TargetSpec { expect_status: vec![99], ..base() }, "expect_status"),
        (TargetSpec { expect_ips: vec!["10.0.0.300".into()], ..base() }, "expect_ips"),
        (TargetSpec { warn_days: 3, critical_days: 7, ..base() }, "critical_days"),
        (TargetSpec { labels: [("team".into(), "x".repeat(257))].into(), ..base() }, "labels"),
    ];
    for (spec, field) in cases {
        let status = client.upsert_target(UpsertTargetRequest { target: Some(spec.clone()) }).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{spec:?}");
        assert!(status.message().starts_with(&format!("{field}:")), "{field}: {}", status.message());
    }
    let status = client.upsert_target(UpsertTargetRequest { target: None }).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "target: missing"));

    // Two targets fit (one was there); a third does not, but changing a kept one still works.
    client.upsert_target(UpsertTargetRequest { target: Some(base()) }).await.unwrap();
    let third = TargetSpec { url: "https://third.limits.test/".into(), ..Default::default() };
    let status = client.upsert_target(UpsertTargetRequest { target: Some(third) }).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    client
        .upsert_target(UpsertTargetRequest { target: Some(TargetSpec { interval: secs(30), ..base() }) })
        .await
        .unwrap();

    let urls = (0..1001).map(|i| format!("https://t{i}.limits.test/")).collect();
    let status = client.list_status(ListStatusRequest { urls }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    let status =
        client.get_history(GetHistoryRequest { url: URL.into(), limit: 5000, ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    running.shutdown().await;
}

/// Connects as `name` in `region` and keeps the stream: its sender and what the coordinator sends.
async fn connect_as(
    running: &Running,
    name: &str,
    region: &str,
) -> Result<(tokio::sync::mpsc::Sender<AgentMessage>, tonic::Streaming<CoordinatorMessage>), tonic::Status> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr)).unwrap().connect().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let hello = Hello { name: name.into(), region: region.into(), version: "test".into(), ..Default::default() };
    tx.send(AgentMessage { kind: Some(agent_message::Kind::Hello(hello)) }).await.unwrap();
    let inbound = AgentServiceClient::new(channel).connect(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, inbound))
}

#[tokio::test]
async fn an_agent_name_live_in_one_region_is_refused_in_another() {
    let running = start("names", 100).await;
    let first = connect_as(&running, "agent-1", "eu-west").await.expect("the first agent-1 is admitted");
    let refused = connect_as(&running, "agent-1", "us-east").await.expect_err("a second agent-1 elsewhere is refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("already connected from region eu-west"), "{}", refused.message());
    let agents = running.hub.agents();
    assert_eq!(agents.len(), 1);
    assert_eq!((agents[0].region.as_str(), agents[0].connected), ("eu-west", true), "the first keeps its session");
    // The same name and region reconnecting (a restarted agent) takes over, as before.
    let again = connect_as(&running, "agent-1", "eu-west").await.expect("a reconnect is admitted");
    drop(first);
    // Once eu-west's agent-1 is gone, the name may move to another region.
    drop(again);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let moved = loop {
        match connect_as(&running, "agent-1", "us-east").await {
            Ok(stream) => break stream,
            Err(e) if e.code() == Code::PermissionDenied && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await; // until the coordinator sees the stream end
            }
            Err(e) => panic!("agent-1 could not move to us-east: {e}"),
        }
    };
    assert_eq!(running.hub.agents()[0].region, "us-east");
    drop(moved);
    running.shutdown().await;
}

/// A retention of zero would delete what was just stored; the command line refuses it before
/// anything is opened.
#[test]
fn a_zero_retention_is_refused_before_anything_starts() {
    let dir = std::env::temp_dir().join(format!("vantage-zero-retention-{}", std::process::id()));
    for flag in ["--retention", "--event-retention", "--agent-retention"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vantage-coordinator"))
            .args(["serve", "--insecure", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .args([flag, "0s"])
            .output()
            .expect("vantage-coordinator runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} 0s: {stderr}");
        assert!(stderr.contains(&format!("invalid value '0s' for '{flag}")), "{flag}: {stderr}");
        assert!(stderr.contains("must be more than 0s"), "{flag}: {stderr}");
        assert!(!dir.exists(), "{flag} 0s: nothing is created");
    }
}
