//! `ListStatus` over the real gRPC server (in-process, on loopback). The coordinator builds and
//! encodes the answer a slice of targets at a time (so 100,000 statuses are never held at once);
//! a client must see exactly the message it would have got whole: every target once, in URL
//! order, as the hub's statuses say, across slice boundaries; and a call naming targets gets
//! those. `WatchStatus` starts a watcher with every status the same way, a slice at a time.

use vantage_coordinator::serve::{self, ServeOptions};
use vantage_proto::v1::coordinator_client::CoordinatorClient;
use vantage_proto::v1::{ListStatusRequest, TargetStatus, WatchStatusRequest};

/// More than two slices (the coordinator encodes 1,000 statuses at a time).
const TARGETS: usize = 2_500;

#[tokio::test]
async fn list_status_answers_every_target_once_in_order_across_slices_and_the_targets_named() {
    let dir = std::env::temp_dir().join(format!("vantage-list-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("targets.toml");
    let text: String =
        (0..TARGETS).map(|i| format!("[[target]]\nurl = \"https://t{i}.list.test/\"\ninterval = \"60s\"\n")).collect();
    std::fs::write(&config, text).unwrap();
    let options =
        ServeOptions { config: Some(config), ..ServeOptions::local("127.0.0.1:0".parse().unwrap(), dir.join("data")) };
    let running = serve::start(options).await.unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr)).unwrap().connect().await.unwrap();
    let mut client = CoordinatorClient::new(channel).max_decoding_message_size(64 << 20);

    let all = client.list_status(ListStatusRequest::default()).await.unwrap().into_inner();
    let mut expected: Vec<String> = (0..TARGETS).map(|i| format!("https://t{i}.list.test/")).collect();
    expected.sort();
    let listed: Vec<&str> = all.targets.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(listed, expected, "every target once, in URL order");
    // Each status as the hub's own, with its availability over the four windows beside it.
    assert!(all.targets.iter().all(|s| s.uptime.iter().map(|a| a.window.as_str()).eq(["24h", "7d", "30d", "90d"])));
    let without_uptime: Vec<_> =
        all.targets.iter().cloned().map(|s| TargetStatus { uptime: Vec::new(), ..s }).collect();
    assert_eq!(without_uptime, running.hub.statuses(&[]), "each status as the hub's own");
    assert!(all.targets.iter().all(|s| s.since.is_some()), "every target judged");

    // Named targets (one of them spelled differently): those, in URL order.
    let named = vec![expected[1_500].clone(), "HTTPS://T7.LIST.TEST".into(), expected[3].clone()];
    let some = client.list_status(ListStatusRequest { urls: named }).await.unwrap().into_inner();
    let listed: Vec<&str> = some.targets.iter().map(|s| s.url.as_str()).collect();
    let mut want = vec![expected[1_500].as_str(), "https://t7.list.test/", expected[3].as_str()];
    want.sort_unstable();
    assert_eq!(listed, want);

    // A watcher first hears every target once, in URL order, across the slices' edges.
    let mut watch = client.watch_status(WatchStatusRequest::default()).await.unwrap().into_inner();
    let mut heard = Vec::new();
    while heard.len() < TARGETS {
        let status = tokio::time::timeout(std::time::Duration::from_secs(30), watch.message())
            .await
            .expect("the watcher hears every target within 30 s")
            .unwrap()
            .expect("the stream stays open");
        heard.push(status.url);
    }
    assert_eq!(heard, expected, "every target once, in URL order");

    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
