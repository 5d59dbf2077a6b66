//! Every input bounded, over the real gRPC server (in-process, on loopback): agents that send
//! malformed or oversized messages are disconnected and nothing of theirs is stored; targets are
//! checked field by field; the target cap and the per-request caps hold.

use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use vantage_coordinator::hub::HubOptions;
use vantage_coordinator::serve::{self, Running, ServeOptions};
use vantage_proto::v1::agent_service_client::AgentServiceClient;
use vantage_proto::v1::coordinator_client::CoordinatorClient;
use vantage_proto::v1::*;

const URL: &str = "https://shop.limits.test/";

async fn start(name: &str, max_targets: usize) -> Running {
    let dir = std::env::temp_dir().join(format!("vantage-limits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = ServeOptions {
        hub: HubOptions { max_targets, ..HubOptions::default() },
        ..ServeOptions::local("127.0.0.1:0".parse().unwrap(), dir)
    };
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
        (
            "a result without its result",
            vec![batch(2, vec![TargetResult { result: None, ..result(URL) }])],
            Code::InvalidArgument,
            "results[0].result",
        ),
        ("an empty target URL", vec![batch(3, vec![result("")])], Code::InvalidArgument, "results[0].target_url"),
        ("a second hello", vec![hello], Code::InvalidArgument, "hello sent twice"),
        ("an empty message", vec![AgentMessage { kind: None }], Code::InvalidArgument, "empty message"),
        ("a 5 MiB message", vec![batch(4, vec![huge])], Code::OutOfRange, ""),
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
