//! A real HTTP receiver for alert deliveries (webhook, Slack, PagerDuty, and the chat, SMS and
//! paging services' APIs): it records every request, answers 200 (or 503 while it is made to
//! fail, or the status and body a rule chooses for the requests it matches), and can be stopped
//! and started again on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// The query string, without its `?` (empty when there is none).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
    /// When it arrived.
    pub at: std::time::SystemTime,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Whether the receiver answered it with a 2xx.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// An answer a rule gives: a status and a body.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: Bytes,
}

/// Which requests get which answer: the first matching rule decides.
type Rules = Arc<Mutex<Vec<(Arc<dyn Fn(&Received) -> bool + Send + Sync>, Answer)>>>;

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Received>>,
    arrived: Condvar,
}

pub struct Receiver {
    pub addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    log: Arc<Log>,
    failing: Arc<AtomicBool>,
    rules: Rules,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let listener = runtime.block_on(vantage_shared::lab::server::bind("127.0.0.1", 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut receiver = Receiver {
            addr,
            runtime,
            log: Arc::new(Log::default()),
            failing: Arc::new(AtomicBool::new(false)),
            rules: Rules::default(),
            task: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (log, failing, rules) = (self.log.clone(), self.failing.clone(), self.rules.clone());
        self.task = Some(self.runtime.spawn(async move {
            // The connections end with the receiver (a stopped one keeps no keep-alive open).
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (log, failing, rules) = (log.clone(), failing.clone(), rules.clone());
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let (log, failing, rules) = (log.clone(), failing.clone(), rules.clone());
                        async move {
                            let method = request.method().to_string();
                            let path = request.uri().path().to_owned();
                            let query = request.uri().query().unwrap_or_default().to_owned();
                            let headers = request
                                .headers()
                                .iter()
                                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
                                .collect();
                            let body = request.into_body().collect().await.map(|b| b.to_bytes().to_vec());
                            let answer = if failing.load(Ordering::SeqCst) {
                                Answer { status: 503, body: Bytes::from_static(b"ok") }
                            } else {
                                let mut received = Received {
                                    method,
                                    path,
                                    query,
                                    headers,
                                    body: body.unwrap_or_default(),
                                    status: 200,
                                    at: std::time::SystemTime::now(),
                                };
                                let rules = rules.lock().expect("rules").clone();
                                let answer = rules
                                    .iter()
                                    .find(|(matches, _)| matches(&received))
                                    .map(|(_, answer)| answer.clone())
                                    .unwrap_or(Answer { status: 200, body: Bytes::from_static(b"ok") });
                                received.status = answer.status;
                                log.requests.lock().expect("log").push(received);
                                log.arrived.notify_all();
                                answer
                            };
                            let mut response = hyper::Response::new(Full::new(answer.body));
                            *response.status_mut() = hyper::StatusCode::from_u16(answer.status).expect("status");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        }));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers 503 to everything (and records nothing) while `failing`.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Answers `status` to the requests `matches` selects (recorded with that status; the rules
    /// set earlier come first).
    pub fn answer(&self, status: u16, matches: impl Fn(&Received) -> bool + Send + Sync + 'static) {
        self.answer_with(status, "ok", matches);
    }

    /// Answers `status` with `body` to the requests `matches` selects (as a real service would:
    /// Telegram's `{"ok":true,…}`, Twilio's 201, Opsgenie's 202); a 2xx counts as accepted.
    pub fn answer_with(&self, status: u16, body: &str, matches: impl Fn(&Received) -> bool + Send + Sync + 'static) {
        let answer = Answer { status, body: Bytes::from(body.to_owned()) };
        self.rules.lock().expect("rules").push((Arc::new(matches), answer));
    }

    /// Drops every rule: everything is answered 200 again.
    pub fn answer_all_ok(&self) {
        self.rules.lock().expect("rules").clear();
    }

    /// Every request so far that a rule answered with something else than a 2xx and that
    /// satisfies `pred`.
    pub fn refused(&self, pred: impl Fn(&Received) -> bool) -> Vec<Received> {
        self.log.requests.lock().expect("log").iter().filter(|r| !r.accepted() && pred(r)).cloned().collect()
    }

    /// Stops listening and closes its connections: new ones are refused.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = self.runtime.block_on(task);
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        let listener = self.runtime.block_on(tokio::net::TcpListener::bind(self.addr)).expect("rebind");
        self.serve(listener);
    }

    /// Every request so far answered with a 2xx that satisfies `pred`, in the order they arrived.
    pub fn matching(&self, pred: impl Fn(&Received) -> bool) -> Vec<Received> {
        self.log.requests.lock().expect("log").iter().filter(|r| r.accepted() && pred(r)).cloned().collect()
    }

    /// Every request so far, whatever the answer, that satisfies `pred`.
    pub fn all(&self, pred: impl Fn(&Received) -> bool) -> Vec<Received> {
        self.log.requests.lock().expect("log").iter().filter(|r| pred(r)).cloned().collect()
    }

    /// Waits (up to two minutes) until a request answered with a 2xx satisfies `pred`, and
    /// returns it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut requests = self.log.requests.lock().expect("log");
        loop {
            if let Some(found) = requests.iter().find(|r| r.accepted() && pred(r)) {
                return found.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no request {what} within two minutes; got {} others", requests.len());
            requests = self.log.arrived.wait_timeout(requests, left).expect("log").0;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}
