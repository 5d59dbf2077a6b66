//! Stage 5, HTTP: one request with hyper over the connection the earlier stages opened (HTTP/2
//! when ALPN chose it), with the response head and body read under size and time limits, and
//! the status and body judged against what the operator expects.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use vantage_shared::failure::FailureCode;
use vantage_shared::target::TargetUrl;

/// Largest response head accepted (HTTP/1.1 buffer, HTTP/2 header list).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most of a body read when looking for expected text.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no complete response within {:.1}s", after.as_secs_f64())]
    Timeout { after: Duration },
    #[error("{detail}")]
    Protocol { detail: String },
    #[error("the server answered {status}")]
    ServerError { status: u16 },
    #[error("the server answered {status}, expected {expected}")]
    UnexpectedStatus { status: u16, expected: String },
    #[error("still redirected after {limit} redirects (last to {location})")]
    TooManyRedirects { limit: usize, location: String },
    #[error("the first {searched} bytes of the body do not contain {expected:?}")]
    BodyMismatch { expected: String, searched: usize },
    #[error("the redirect to {location:?} cannot be followed: {reason}")]
    BadRedirect { location: String, reason: String },
}

impl HttpError {
    pub fn code(&self) -> FailureCode {
        match self {
            HttpError::Timeout { .. } => FailureCode::HttpTimeout,
            HttpError::Protocol { .. } | HttpError::BadRedirect { .. } => FailureCode::HttpProtocolError,
            HttpError::ServerError { .. } => FailureCode::Http5xx,
            HttpError::UnexpectedStatus { .. } => FailureCode::HttpUnexpectedStatus,
            HttpError::TooManyRedirects { .. } => FailureCode::HttpTooManyRedirects,
            HttpError::BodyMismatch { .. } => FailureCode::HttpBodyMismatch,
        }
    }

    fn from_hyper(error: hyper::Error) -> HttpError {
        let detail = if error.is_parse() || error.is_parse_status() {
            format!("malformed or oversized response head (limit {MAX_HEADER_BYTES} bytes): {error}")
        } else if error.is_incomplete_message() {
            "the connection closed before a complete response".to_owned()
        } else {
            format!("the exchange failed: {error}")
        };
        HttpError::Protocol { detail }
    }
}

/// Anything a request can go over: a TCP stream or a TLS stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The response, as far as the probe reads it.
pub struct Response {
    pub status: u16,
    pub version: &'static str,
    pub location: Option<String>,
    /// From sending the request to the response head.
    pub ttfb: Duration,
    /// Up to `MAX_BODY_BYTES` of the body, when asked for.
    pub body: Option<Vec<u8>>,
}

/// Sends one GET for `url` over `io` and reads the answer, all within `budget`.
pub async fn get(
    io: impl Io,
    h2: bool,
    url: &TargetUrl,
    read_body: bool,
    budget: Duration,
) -> Result<Response, HttpError> {
    let io = TokioIo::new(io);
    // HTTP/2 runs its connection and streams on spawned tasks; they end with this probe.
    let executor = ProbeExecutor::default();
    let _abort = AbortOnDrop(executor.clone());
    let exchange = async {
        if h2 {
            let (mut sender, conn) = hyper::client::conn::http2::Builder::new(executor.clone())
                .max_header_list_size(MAX_HEADER_BYTES as u32)
                .handshake(io)
                .await
                .map_err(HttpError::from_hyper)?;
            let sent = Instant::now();
            let send = sender.send_request(request(url, url.to_string())?);
            receive(conn, send, sent, read_body).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
                .max_buf_size(MAX_HEADER_BYTES)
                .handshake(io)
                .await
                .map_err(HttpError::from_hyper)?;
            let sent = Instant::now();
            let send = sender.send_request(request(url, url.path_and_query())?);
            receive(conn, send, sent, read_body).await
        }
    };
    tokio::time::timeout(budget, exchange).await.map_err(|_| HttpError::Timeout { after: budget })?
}

/// Awaits the response (and the body, when asked) while driving the connection in the same task
/// (HTTP/1.1 then needs no task of its own).
async fn receive<C, S>(conn: C, send: S, sent: Instant, read_body: bool) -> Result<Response, HttpError>
where
    C: Future<Output = Result<(), hyper::Error>>,
    S: Future<Output = Result<hyper::Response<Incoming>, hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut conn_done = false;
    let response = drive(conn.as_mut(), &mut conn_done, send).await.map_err(HttpError::from_hyper)?;
    let ttfb = sent.elapsed();
    let status = response.status().as_u16();
    let version = match response.version() {
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let location = response.headers().get(hyper::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = if read_body {
        Some(drive(conn.as_mut(), &mut conn_done, read_limited(response.into_body())).await?)
    } else {
        None
    };
    Ok(Response { status, version, location, ttfb, body })
}

/// Polls `work` to completion, polling the connection alongside until it ends.
async fn drive<T>(
    mut conn: std::pin::Pin<&mut impl Future<Output = Result<(), hyper::Error>>>,
    conn_done: &mut bool,
    work: impl Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = conn.as_mut(), if !*conn_done => *conn_done = true,
        }
    }
}

/// Spawns hyper's background tasks and remembers them, so they can be stopped together.
#[derive(Clone, Default)]
struct ProbeExecutor(Arc<Mutex<Vec<tokio::task::AbortHandle>>>);

impl<F> hyper::rt::Executor<F> for ProbeExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let handle = tokio::spawn(future).abort_handle();
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(handle);
    }
}

struct AbortOnDrop(ProbeExecutor);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in self.0.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain(..) {
            task.abort();
        }
    }
}

/// The first `MAX_BODY_BYTES` of a body.
async fn read_limited(mut body: Incoming) -> Result<Vec<u8>, HttpError> {
    let mut collected = Vec::new();
    while collected.len() < MAX_BODY_BYTES {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(HttpError::from_hyper(e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_BODY_BYTES - collected.len();
                    collected.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    Ok(collected)
}

fn request(url: &TargetUrl, uri: String) -> Result<hyper::Request<Empty<Bytes>>, HttpError> {
    hyper::Request::get(uri)
        .header(hyper::header::HOST, url.authority())
        .header(hyper::header::USER_AGENT, concat!("vantage/", env!("CARGO_PKG_VERSION")))
        .header(hyper::header::ACCEPT, "*/*")
        // The probe never inflates: a compressed body would hide --expect-body text (and could
        // be a bomb). Without this header any coding is acceptable (RFC 9110, 12.5.3).
        .header(hyper::header::ACCEPT_ENCODING, "identity")
        .body(Empty::new())
        .map_err(|e| HttpError::Protocol { detail: format!("cannot build the request: {e}") })
}

/// Is `status` what the operator expects? With no list: 2xx and 3xx pass.
pub fn judge_status(status: u16, expected: &[u16]) -> Result<(), HttpError> {
    let accepted = if expected.is_empty() { (200..400).contains(&status) } else { expected.contains(&status) };
    if accepted {
        Ok(())
    } else if status >= 500 {
        Err(HttpError::ServerError { status })
    } else {
        let expected = if expected.is_empty() {
            "2xx or 3xx".to_owned()
        } else {
            expected.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        };
        Err(HttpError::UnexpectedStatus { status, expected })
    }
}

pub fn judge_body(body: &[u8], expected: &str) -> Result<(), HttpError> {
    if body.windows(expected.len().max(1)).any(|w| w == expected.as_bytes()) {
        Ok(())
    } else {
        Err(HttpError::BodyMismatch { expected: expected.to_owned(), searched: body.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_expectation_is_2xx_or_3xx() {
        assert!(judge_status(200, &[]).is_ok());
        assert!(judge_status(301, &[]).is_ok());
        assert_eq!(judge_status(404, &[]).unwrap_err().code(), FailureCode::HttpUnexpectedStatus);
        assert_eq!(judge_status(503, &[]).unwrap_err().code(), FailureCode::Http5xx);
        assert!(judge_status(503, &[503]).is_ok());
        assert_eq!(judge_status(200, &[204]).unwrap_err().code(), FailureCode::HttpUnexpectedStatus);
    }

    #[test]
    fn asks_for_an_uncompressed_body() {
        let url = TargetUrl::parse("https://example.com/").unwrap();
        let request = request(&url, url.path_and_query()).unwrap();
        assert_eq!(request.headers()[hyper::header::ACCEPT_ENCODING], "identity");
    }

    #[test]
    fn body_must_contain_the_text() {
        assert!(judge_body(b"hello world", "world").is_ok());
        assert_eq!(judge_body(b"hello", "world").unwrap_err().code(), FailureCode::HttpBodyMismatch);
    }
}
