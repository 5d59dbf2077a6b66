//! The coordinator's HTTP side: the status page (`/`, `/target?url=…`, rendered by `page`),
//! `/healthz`, Prometheus metrics at `/metrics`, the consolidated status as JSON at `/v1/status`,
//! and heartbeats: `POST /v1/heartbeats/{name}` (signed with HMAC-SHA256 over the timestamp, the
//! name and the body) and
//! `GET /v1/heartbeats`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::auth::AdminAuth;
use crate::hub::Hub;

/// Serves HTTP until the process ends; with `gate`, every request but `/healthz` and the signed
/// heartbeats needs a token (`--http-auth`).
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, gate: Option<Arc<AdminAuth>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (hub, gate) = (hub.clone(), gate.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (hub, gate) = (hub.clone(), gate.clone());
                async move {
                    let refused = gate.as_deref().and_then(|gate| refuse(gate, &request));
                    Ok::<_, std::convert::Infallible>(match refused {
                        Some(response) => response,
                        None => route(&hub, request, gate.is_some()).await,
                    })
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(Duration::from_secs(300), connection).await;
        });
    }
}

/// A 401 asking for credentials, unless the request has them or needs none.
fn refuse(gate: &AdminAuth, request: &Request<hyper::body::Incoming>) -> Option<Response<Full<Bytes>>> {
    let path = request.uri().path();
    let signed = request.method() == hyper::Method::POST && path.starts_with("/v1/heartbeats/");
    if path == "/healthz" || signed {
        return None;
    }
    let authorization = request.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let reason = gate.check_http(authorization).err()?;
    let mut response = respond(
        StatusCode::UNAUTHORIZED,
        "text/plain",
        format!(
            "{reason}: this coordinator's HTTP port needs its read or admin token (Bearer, or Basic as password)\n"
        ),
    );
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"Vantage\", charset=\"UTF-8\""),
    );
    Some(response)
}

/// Largest heartbeat body read.
const MAX_HEARTBEAT_BODY: usize = 4096;

async fn route(hub: &Hub, request: Request<hyper::body::Incoming>, gated: bool) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if request.method() == hyper::Method::GET {
        let query = request.uri().query().unwrap_or_default();
        if let Some((status, html)) = crate::page::route(hub, &path, query).await {
            let mut response = respond(status, "text/html; charset=utf-8", html);
            let headers = response.headers_mut();
            if let Ok(csp) = crate::page::CSP.parse() {
                headers.insert(hyper::header::CONTENT_SECURITY_POLICY, csp);
            }
            headers.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
            headers.insert(hyper::header::REFERRER_POLICY, hyper::header::HeaderValue::from_static("no-referrer"));
            return response;
        }
    }
    let (status, content_type, body) = match (request.method().as_str(), path.as_str()) {
        ("POST", p) if p.starts_with("/v1/heartbeats/") => heartbeat(hub, request, gated).await,
        ("GET", "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", crate::metrics::render(hub).await),
        ("GET", "/v1/heartbeats") => {
            let list: Vec<serde_json::Value> = hub
                .heartbeats()
                .into_iter()
                .map(|(name, period, last, overdue)| {
                    serde_json::json!({
                        "name": name,
                        "period_seconds": period.as_secs(),
                        "last": (last != 0).then(|| crate::alert::ms_rfc3339(last)),
                        "overdue": overdue,
                    })
                })
                .collect();
            let json = serde_json::to_string_pretty(&serde_json::json!({ "heartbeats": list })).unwrap_or_default();
            (StatusCode::OK, "application/json", json + "\n")
        }
        ("GET", "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        ("GET", "/v1/status") => {
            let statuses: Vec<serde_json::Value> = hub.statuses(&[]).iter().map(crate::status::to_json).collect();
            let json = serde_json::to_string_pretty(&serde_json::json!({ "targets": statuses })).unwrap_or_default();
            (StatusCode::OK, "application/json", json + "\n")
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    respond(status, content_type, body)
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
        .headers_mut()
        .insert(hyper::header::X_CONTENT_TYPE_OPTIONS, hyper::header::HeaderValue::from_static("nosniff"));
    response
}

/// `POST /v1/heartbeats/{name}`: 200 with the next due time, or 401/400/409/404/413 with the reason.
/// Behind `--http-auth` an unknown name is a 401 like a bad signature, so names cannot be listed.
async fn heartbeat(
    hub: &Hub,
    request: Request<hyper::body::Incoming>,
    gated: bool,
) -> (StatusCode, &'static str, String) {
    use http_body_util::BodyExt;
    let name = request.uri().path().trim_start_matches("/v1/heartbeats/").to_owned();
    let header = |n: &str| request.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (timestamp, signature) = (header("x-vantage-timestamp"), header("x-vantage-signature"));
    let limited = http_body_util::Limited::new(request.into_body(), MAX_HEARTBEAT_BODY);
    let body = match tokio::time::timeout(Duration::from_secs(10), limited.collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("a heartbeat body holds at most {MAX_HEARTBEAT_BODY} bytes\n"),
            );
        }
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "text/plain", "the body did not arrive within 10s\n".into()),
    };
    use crate::hub::HeartbeatError as E;
    match hub.heartbeat(&name, &timestamp, &signature, &body).await {
        Ok(next_due) => {
            let json = serde_json::json!({ "accepted": name, "next_due": crate::alert::ms_rfc3339(next_due) });
            (StatusCode::OK, "application/json", json.to_string() + "\n")
        }
        Err(e) => {
            let status = match &e {
                E::Unknown(_) => StatusCode::NOT_FOUND,
                E::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                E::Skewed(_) => StatusCode::BAD_REQUEST,
                E::Replay => StatusCode::CONFLICT,
                E::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(heartbeat = name, error = %e, "heartbeat refused");
            if gated && matches!(e, E::Unknown(_) | E::Unauthenticated(_)) {
                return (StatusCode::UNAUTHORIZED, "text/plain", "no such heartbeat, or a bad signature\n".into());
            }
            (status, "text/plain", format!("{e}\n"))
        }
    }
}
