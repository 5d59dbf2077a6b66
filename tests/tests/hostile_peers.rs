//! Hostile and greedy peers against the real coordinator on mTLS (certificates from the real
//! `pki` commands), with a real agent reporting throughout. The hostile side is this test: real
//! TLS connections without a client certificate (tokio-rustls), speaking HTTP/2 with h2, each
//! starting a gRPC call whose message declares 4 MiB and then stalling. The coordinator answers
//! such calls `UNAUTHENTICATED` from their headers, before reading their body; its memory stays
//! within 64 MiB of idle with 1,000 of them; its connection cap closes connections beyond it
//! while the agent's stays; connections without a credential are closed after their grace; the
//! HTTP port caps connections and closes slow ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use vantage_e2e::cluster::{ADMIN_TOKEN, Cluster};

/// What a stalled message declares: the coordinator's largest.
const DECLARED: u32 = 4 << 20;
/// What of it is sent before stalling.
const SENT: usize = 16 << 10;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Raises this process's open-file limit (inherited by the coordinator and agent it starts) to
/// at least `n`, within the hard limit.
fn raise_open_files(n: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    assert!(ok, "getrlimit: {}", std::io::Error::last_os_error());
    if limit.rlim_cur < n {
        limit.rlim_cur = n.min(limit.rlim_max);
        // SAFETY: as above.
        let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0;
        assert!(ok, "setrlimit: {}", std::io::Error::last_os_error());
    }
    assert!(limit.rlim_cur >= n, "the hard open-file limit ({}) is below the {n} this test needs", limit.rlim_max);
}

/// A field of the coordinator's `/proc/PID/status` in KiB: `VmRSS` (resident memory now) or
/// `VmHWM` (its peak so far).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the coordinator runs");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

fn rss_kib(pid: u32) -> u64 {
    memory_kib(pid, "VmRSS:")
}

/// `curl` on the coordinator's HTTP port.
fn http_get(c: &Cluster, path: &str) -> String {
    let url = format!("http://{}{path}", c.http_addr.expect("the HTTP port"));
    let out = std::process::Command::new("curl").args(["-s", "--max-time", "20", &url]).output().expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sample of `/metrics` (the first whose name and labels start with `series`).
fn metric(c: &Cluster, series: &str) -> f64 {
    let text = http_get(c, "/metrics");
    let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

/// Waits (up to a minute) until the agent has had more results committed than `than`.
fn wait_for_results_beyond(c: &Cluster, than: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = metric(c, "vantage_ingested_results_total");
        if now > than {
            return now;
        }
        assert!(Instant::now() < deadline, "no result committed beyond {than} within a minute");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The hostile (or plain) client side: TLS without a client certificate, trusting the
/// coordinator's CA.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl Client {
    fn new(c: &Cluster) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(c.pki.join("ca.pem")).expect("ca.pem") {
            roots.add(cert.expect("a certificate")).expect("a CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let addr = c.coordinator_addr;
        Client { addr, tls: Arc::new(config).into(), name: ServerName::IpAddress(addr.ip().into()) }
    }

    /// A TLS and HTTP/2 connection; the receiver fires when the connection ends.
    async fn connect(&self) -> Result<(h2::client::SendRequest<Bytes>, oneshot::Receiver<()>), String> {
        let tcp = TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {e}"))?;
        let tls = self.tls.connect(self.name.clone(), tcp).await.map_err(|e| format!("TLS: {e}"))?;
        let (send, connection) = h2::client::handshake(tls).await.map_err(|e| format!("HTTP/2: {e}"))?;
        let (ended, closed) = oneshot::channel();
        tokio::spawn(async move {
            let _ = connection.await;
            let _ = ended.send(());
        });
        Ok((send, closed))
    }
}

/// Starts a gRPC call on `path`: headers (with `authorization` if given), then `body`; the
/// stream stays open unless `end`.
async fn start_call(
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    authorization: Option<&str>,
    body: Bytes,
    end: bool,
) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), String> {
    let mut ready = send.clone().ready().await.map_err(|e| format!("ready: {e}"))?;
    let mut request = hyper::Request::post(format!("https://vantage{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let request = request.body(()).expect("a request");
    let (response, mut stream) = ready.send_request(request, false).map_err(|e| format!("HEADERS: {e}"))?;
    stream.send_data(body, end).map_err(|e| format!("DATA: {e}"))?;
    *send = ready;
    Ok((response, stream))
}

/// A gRPC message prefix declaring `declared` bytes, followed by `sent` of them.
fn declaring(declared: u32, sent: usize) -> Bytes {
    let mut body = vec![0u8; 5 + sent];
    body[1..5].copy_from_slice(&declared.to_be_bytes());
    Bytes::from(body)
}

/// The gRPC status of a trailers-only answer (`None` when the answer has a body to come).
fn trailers_only_status(response: &hyper::Response<h2::RecvStream>) -> Option<String> {
    let status = response.headers().get("grpc-status")?;
    Some(status.to_str().unwrap_or("?").to_owned())
}

/// One stalled call on its own connection, kept open.
struct Stalled {
    _send: h2::client::SendRequest<Bytes>,
    _stream: h2::SendStream<Bytes>,
    closed: oneshot::Receiver<()>,
    /// The coordinator's answer to the call.
    status: Option<String>,
}

async fn stall(client: &Client, path: &str) -> Result<Stalled, String> {
    let (mut send, closed) = client.connect().await?;
    let (response, stream) = start_call(&mut send, path, None, declaring(DECLARED, SENT), false).await?;
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .map_err(|_| "no answer within 30s while the message was incomplete".to_owned())?
        .map_err(|e| format!("answer: {e}"))?;
    Ok(Stalled { _send: send, _stream: stream, closed, status: trailers_only_status(&response) })
}

/// Opens `n` stalled calls, 64 handshakes at a time, alternating between an admin and an agent
/// method; returns the connections that were established and the errors of the others.
fn stall_many(rt: &tokio::runtime::Runtime, client: &Client, n: usize) -> (Vec<Stalled>, Vec<String>) {
    rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = Vec::new();
        for i in 0..n {
            let (client, gate) = (client.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore");
                let path = if i % 2 == 0 {
                    "/vantage.v1.Coordinator/UpsertTarget"
                } else {
                    "/vantage.v1.AgentService/Connect"
                };
                stall(&client, path).await
            }));
        }
        let (mut held, mut failed) = (Vec::new(), Vec::new());
        for task in tasks {
            match task.await.expect("task") {
                Ok(stalled) => held.push(stalled),
                Err(e) => failed.push(e),
            }
        }
        (held, failed)
    })
}

fn still_open(held: &mut [Stalled]) -> usize {
    let open = |s: &mut Stalled| matches!(s.closed.try_recv(), Err(oneshot::error::TryRecvError::Empty));
    held.iter_mut().map(open).filter(|o| *o).count()
}

/// A cluster of one region whose agent reports, with `env` for the coordinator.
fn reporting_cluster(env: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::new(&["eu-west"]);
    c.env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    c.add_target("shop", false);
    c.start_coordinator("1s", "500ms");
    c.start_agent(0);
    wait_for_results_beyond(&c, 0.0);
    c
}

#[test]
fn a_call_without_credentials_is_refused_before_its_body_is_read() {
    let c = reporting_cluster(&[]);
    let client = Client::new(&c);
    let rt = runtime();
    rt.block_on(async {
        let (mut send, _closed) = client.connect().await.expect("a connection");
        for path in ["/vantage.v1.Coordinator/UpsertTarget", "/vantage.v1.AgentService/Connect"] {
            // 64 KiB of a declared 4 MiB: the coordinator answers while the message is incomplete.
            let (response, mut stream) =
                start_call(&mut send, path, None, declaring(DECLARED, 64 << 10), false).await.expect("a call");
            let response = tokio::time::timeout(Duration::from_secs(30), response)
                .await
                .unwrap_or_else(|_| panic!("{path}: no answer while the body was still being sent"))
                .expect("an answer");
            assert_eq!(trailers_only_status(&response).as_deref(), Some("16"), "{path}: {response:?}");
            let message = response.headers().get("grpc-message").map(|m| m.to_str().unwrap_or_default().to_owned());
            assert!(message.is_some_and(|m| m.contains("certificate")), "{path}: {response:?}");
            // The stream was reset: the rest of the body has nowhere to go.
            let more = stream.send_data(declaring(DECLARED, 1024), false);
            let gone = more.is_err() || futures_reset(&mut stream).await;
            assert!(gone, "{path}: the coordinator kept the stream open for the body");
        }
        // The same connection, with the read token: a real call, answered.
        let authorization = format!("Bearer {}", vantage_e2e::cluster::READ_TOKEN);
        let (response, _stream) =
            start_call(&mut send, "/vantage.v1.Coordinator/ListTargets", Some(&authorization), declaring(0, 0), true)
                .await
                .expect("a call");
        let response = response.await.expect("an answer");
        assert_eq!(trailers_only_status(&response), None, "{response:?}");
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("data");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.expect("trailers").expect("trailers");
        assert_eq!(trailers.get("grpc-status").map(|s| s.to_str().unwrap_or_default()), Some("0"));
    });
    // And the real grpcurl, without credentials, is refused too.
    let out = vantage_e2e::grpcurl_output(&[
        "-cacert",
        c.pki.join("ca.pem").to_str().unwrap(),
        "-d",
        "{}",
        &c.coordinator_addr.to_string(),
        "vantage.v1.Coordinator/ListTargets",
    ]);
    assert!(out.contains("Code: Unauthenticated"), "{out}");
    let refused = metric(&c, "vantage_grpc_calls_refused_total{code=\"unauthenticated\"}");
    assert!(refused >= 3.0, "{refused}");
}

/// Whether the peer reset a stream (h2 reports it on the next poll for capacity).
async fn futures_reset(stream: &mut h2::SendStream<Bytes>) -> bool {
    let reset = std::future::poll_fn(|cx| stream.poll_reset(cx));
    matches!(tokio::time::timeout(Duration::from_secs(10), reset).await, Ok(Ok(_)))
}

#[test]
fn a_thousand_stalled_connections_without_credentials_stay_within_64_mib_while_an_agent_reports() {
    raise_open_files(4096);
    // The grace before a connection without a credential is closed is long here, so that all
    // 1,000 are held at once while memory is measured.
    let c = reporting_cluster(&[("VANTAGE_UNAUTHENTICATED_TIMEOUT", "10m")]);
    let pid = c.coordinator.as_ref().expect("coordinator").pid();
    let client = Client::new(&c);
    let rt = runtime();
    // Warm up: the code paths of a refused call are in memory before the idle measurement.
    let (warm, _) = stall_many(&rt, &client, 20);
    drop(warm);
    let before = wait_for_results_beyond(&c, metric(&c, "vantage_ingested_results_total"));
    let idle = rss_kib(pid);

    let (mut held, failed) = stall_many(&rt, &client, 1000);
    assert!(failed.is_empty(), "{} connections failed, e.g. {:?}", failed.len(), failed.first());
    let answers: Vec<&str> = held.iter().map(|s| s.status.as_deref().unwrap_or("none")).collect();
    assert!(answers.iter().all(|s| *s == "16"), "every call is answered UNAUTHENTICATED: {answers:?}");
    assert_eq!(still_open(&mut held), 1000, "the hostile connections are held open");
    let open = metric(&c, "vantage_connections{port=\"grpc\"}");
    assert!(open >= 1001.0, "the coordinator holds them all and the agent's: {open}");

    // While they are held, the agent's results keep being committed, and memory stays bounded.
    let mut during = rss_kib(pid);
    let mut committed = before;
    for _ in 0..3 {
        committed = wait_for_results_beyond(&c, committed);
        during = during.max(rss_kib(pid));
    }
    assert_eq!(still_open(&mut held), 1000, "the hostile connections stayed open throughout");
    let peak = memory_kib(pid, "VmHWM:");
    println!("coordinator RSS: idle {idle} KiB, with 1,000 stalled connections {during} KiB (peak {peak} KiB)");
    assert!(
        during <= idle + 64 * 1024,
        "RSS grew from {idle} KiB to {during} KiB with 1,000 stalled connections (bound: +64 MiB)"
    );
    assert!(committed > before);
}

#[test]
fn the_connection_cap_closes_connections_beyond_it_and_spares_the_agent() {
    raise_open_files(4096);
    let c = reporting_cluster(&[("VANTAGE_MAX_CONNECTIONS", "100"), ("VANTAGE_UNAUTHENTICATED_TIMEOUT", "10m")]);
    let client = Client::new(&c);
    let rt = runtime();
    let before = metric(&c, "vantage_ingested_results_total");

    let (mut held, failed) = stall_many(&rt, &client, 1000);
    // The agent holds one of the 100 places.
    assert!(held.len() <= 99, "{} connections were held beyond the cap", held.len());
    assert!(failed.len() >= 901, "{} refused", failed.len());
    assert!(failed.iter().all(|e| e.starts_with("TLS")), "refused right after accept: {:?}", &failed[..3]);
    let closed = metric(&c, "vantage_connections_closed_total{port=\"grpc\",reason=\"limit\"}");
    assert!(closed >= 901.0, "{closed}");
    let coordinator = c.coordinator.as_ref().expect("coordinator");
    let line = coordinator.wait_for_line(|l| l.contains("connection refused: the cap of 100 open connections"));
    assert!(line.contains("WARN") && line.contains("limit"), "{line}");

    // The agent's connection was there first: its results keep being committed.
    let during = wait_for_results_beyond(&c, before);
    wait_for_results_beyond(&c, during);
    assert!(still_open(&mut held) == held.len(), "the connections within the cap stay");

    // Once they go, their places are free again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&c, "vantage_connections{port=\"grpc\"}") > 1.0 {
        assert!(Instant::now() < deadline, "the closed connections' places were not given back");
        std::thread::sleep(Duration::from_millis(200));
    }
    let agents = c.call("ListAgents", "{}");
    assert!(agents.to_string().contains("agent-eu-west"), "{agents}");
}

#[test]
fn connections_without_a_credential_are_closed_after_their_grace_and_token_callers_stay() {
    let c = reporting_cluster(&[("VANTAGE_UNAUTHENTICATED_TIMEOUT", "2s")]);
    let client = Client::new(&c);
    let rt = runtime();
    rt.block_on(async {
        // A stalled call without credentials does not earn the connection anything.
        let mut stalled = stall(&client, "/vantage.v1.Coordinator/ListAgents").await.expect("a connection");
        assert_eq!(stalled.status.as_deref(), Some("16"));
        // A connection that says nothing at all.
        let (_idle, idle_closed) = client.connect().await.expect("a connection");
        for closed in [&mut stalled.closed, &mut { idle_closed }] {
            let _ = tokio::time::timeout(Duration::from_secs(60), closed)
                .await
                .expect("the coordinator closes a connection without a credential");
        }

        // A connection whose call carries the admin token stays beyond the grace.
        let (mut send, mut closed) = client.connect().await.expect("a connection");
        let authorization = format!("Bearer {ADMIN_TOKEN}");
        for _ in 0..2 {
            let (response, _stream) = start_call(
                &mut send,
                "/vantage.v1.Coordinator/ListAgents",
                Some(&authorization),
                declaring(0, 0),
                true,
            )
            .await
            .expect("a call on the same connection");
            let response = response.await.expect("an answer");
            assert_eq!(response.status(), 200);
            assert_eq!(trailers_only_status(&response), None, "{response:?}");
            // Three times the grace: the connection is not closed (a bounded "never happens").
            let waited = tokio::time::timeout(Duration::from_secs(6), &mut closed).await;
            assert!(waited.is_err(), "the token caller's connection was closed");
        }
    });
    let closed = metric(&c, "vantage_connections_closed_total{port=\"grpc\",reason=\"unauthenticated\"}");
    assert!(closed >= 2.0, "{closed}");
    // The agent, with its certificate, is not touched by the grace.
    let agents = c.call("ListAgents", "{}");
    assert!(agents["agents"][0]["connected"].is_object() || agents.to_string().contains("connected"), "{agents}");
}

#[test]
fn the_http_port_caps_connections_and_closes_slow_ones() {
    use std::io::{Read, Write};
    let c = reporting_cluster(&[("VANTAGE_HTTP_MAX_CONNECTIONS", "3"), ("VANTAGE_HTTP_HEADER_TIMEOUT", "2s")]);
    let http = c.http_addr.expect("the HTTP port");
    // Three slow clients: a request line and one header, then nothing.
    let mut slow: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(http).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: vantage\r\n").expect("write");
            s
        })
        .collect();
    // A fourth connection is closed at once, without an answer.
    let mut fourth = std::net::TcpStream::connect(http).expect("connect");
    fourth.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let _ = fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: vantage\r\n\r\n");
    let mut answer = Vec::new();
    let read = fourth.read_to_end(&mut answer);
    assert!(read.is_ok() || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset), "{read:?}");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // The slow ones are closed once their headers are overdue.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest);
        assert!(read.is_ok() || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset), "closed");
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "{}", String::from_utf8_lossy(&rest));
    }
    // With them gone, the port serves again, and says what it refused.
    assert_eq!(http_get(&c, "/healthz"), "ok\n");
    assert!(metric(&c, "vantage_connections_closed_total{port=\"http\",reason=\"limit\"}") >= 1.0);
}
