//! The coordinator's HTTP side: the status page (`/`, `/target?url=…`, rendered by `page`),
//! `/healthz`, Prometheus metrics at `/metrics`, one target's probe detail at `/probe?target=…`
//! and the target list for Prometheus's discovery at `/probe/targets`, the consolidated status
//! as JSON at `/v1/status`, availability at `/v1/uptime` and hourly latency at `/v1/latency`
//! (JSON or CSV), and heartbeats:
//! `POST /v1/heartbeats/{name}` (signed with HMAC-SHA256 over the timestamp, the name and the
//! body) and `GET /v1/heartbeats`, and `POST /-/reload` (Prometheus's convention: the config
//! file read again), and badges (`/badge/status.svg`, `/badge/uptime.svg`, `badge`), and the
//! public status pages (`/s/{slug}`, `public`), which need no credentials, nor do the badges of
//! the targets on them. Connections are capped, and a slow client cannot hold one: its headers must
//! arrive within `--http-header-timeout`, a heartbeat body within 10 s, and no connection lasts
//! beyond five minutes.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::auth::AdminAuth;
use crate::conn::{Cap, Port, Stats};
use crate::hub::Hub;

/// Default of `--http-max-connections`: browsers, Prometheus and heartbeat senders need few.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default of `--http-header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection lasts, however busy.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Largest request head (request line and headers) read; hyper answers 431 beyond it.
const MAX_HEAD: usize = 64 << 10;

/// The HTTP port's limits (flags of `serve`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (from the connection's start, or
    /// the end of its previous request).
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: DEFAULT_MAX_CONNECTIONS, header_timeout: DEFAULT_HEADER_TIMEOUT }
    }
}

/// What the HTTP port serves from.
pub struct Http {
    pub hub: Arc<Hub>,
    /// With it, every request but `/healthz`, the signed heartbeats, the public status pages and
    /// the badges of their targets needs a token (`--http-auth`).
    pub gate: Option<Arc<AdminAuth>>,
    pub limits: Limits,
    /// Connection counters, also shown on `/metrics`.
    pub stats: Arc<Stats>,
    pub cap: Cap,
    /// Serves `POST /-/reload` and the reload series on `/metrics`.
    pub reloader: Arc<crate::reload::Reloader>,
    /// The watchdog's series on `/metrics`.
    pub watchdog: Arc<crate::watchdog::Status>,
}

/// Serves HTTP until the process ends.
pub async fn serve(listener: TcpListener, http: Arc<Http>) {
    let mut last_error = None;
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                crate::conn::accept_failed(Port::Http, e, &mut last_error).await;
                continue;
            }
        };
        // Beyond the cap the connection is dropped, which closes it.
        let Some(slot) = http.cap.admit() else { continue };
        let http = http.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let serving = http.clone();
            let service = hyper::service::service_fn(move |request| {
                let http = serving.clone();
                async move {
                    let refused = http.gate.as_deref().and_then(|gate| refuse(&http, gate, &request));
                    Ok::<_, std::convert::Infallible>(match refused {
                        Some(response) => response,
                        None => route(&http, request).await,
                    })
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(http.limits.header_timeout)
                .timer(hyper_util::rt::TokioTimer::new())
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

/// A 401 asking for credentials, unless the request has them or needs none.
fn refuse(http: &Http, gate: &AdminAuth, request: &Request<hyper::body::Incoming>) -> Option<Response<Full<Bytes>>> {
    let path = request.uri().path();
    let signed = request.method() == hyper::Method::POST && path.starts_with("/v1/heartbeats/");
    // Public status pages are for anyone: they show public names and states only.
    let public = request.method() == hyper::Method::GET && path.starts_with(crate::public::PREFIX);
    if path == "/healthz" || signed || public {
        return None;
    }
    let authorization = request.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    // Reloading changes what is monitored and who is alerted: the admin token only.
    if path == RELOAD && gate.check_http(authorization) == Ok("read token") {
        return Some(respond(
            StatusCode::FORBIDDEN,
            "text/plain",
            "the read token cannot reload the config: use the admin token\n".into(),
        ));
    }
    let reason = gate.check_http(authorization).err()?;
    // Badges follow the gate like every other route, but for the targets on a public status
    // page (whose badges such a page's readers may embed). Anything else, a target unknown
    // included, is a 401 like any request without credentials: nothing is learnt from it.
    let query = request.uri().query().unwrap_or_default();
    if request.method() == hyper::Method::GET
        && path.starts_with("/badge/")
        && http.reloader.public().badge_is_public(&http.hub, query)
    {
        return None;
    }
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

/// Prometheus's reload endpoint.
const RELOAD: &str = "/-/reload";

/// Largest heartbeat body read.
const MAX_HEARTBEAT_BODY: usize = 4096;

async fn route(http: &Http, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (hub, gated) = (&*http.hub, http.gate.is_some());
    let path = request.uri().path().to_owned();
    if request.method() == hyper::Method::GET {
        if let Some(slug) = path.strip_prefix(crate::public::PREFIX) {
            let (status, html, csp) = http.reloader.public().serve(hub, slug).await;
            let mut response = respond(status, "text/html; charset=utf-8", html);
            let headers = response.headers_mut();
            if let Ok(csp) = csp.parse() {
                headers.insert(hyper::header::CONTENT_SECURITY_POLICY, csp);
            }
            let max_age = format!("public, max-age={}", crate::public::RENDER_TTL.as_secs());
            if let Ok(value) = max_age.parse() {
                headers.insert(hyper::header::CACHE_CONTROL, value);
            }
            headers.insert(hyper::header::REFERRER_POLICY, hyper::header::HeaderValue::from_static("no-referrer"));
            return response;
        }
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
    if request.method() == hyper::Method::GET && path.starts_with("/badge/") {
        return badge(hub, &request).await;
    }
    let (status, content_type, body) = match (request.method().as_str(), path.as_str()) {
        ("POST", p) if p.starts_with("/v1/heartbeats/") => heartbeat(hub, request, gated).await,
        ("POST", RELOAD) => match http.reloader.reload().await {
            Ok(summary) => (StatusCode::OK, "text/plain", format!("config reloaded: {summary}\n")),
            Err(e @ crate::reload::ReloadError::NoConfig) => (StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        (_, RELOAD) => {
            let mut response =
                respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST to reload the config\n".into());
            response.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("POST"));
            return response;
        }
        ("GET", "/metrics") => {
            let text = crate::metrics::render(hub).await
                + &http.stats.render()
                + &http.reloader.render_metrics()
                + &http.watchdog.render_metrics();
            (StatusCode::OK, crate::metrics::text::CONTENT_TYPE, text)
        }
        ("GET", "/probe/targets") => (StatusCode::OK, "application/json", crate::metrics::probe::targets_sd(hub)),
        ("GET", "/probe") => {
            // The newest results are read from redb: off the async threads, as every store read.
            let (hub, query) = (http.hub.clone(), request.uri().query().unwrap_or_default().to_owned());
            match tokio::task::spawn_blocking(move || crate::metrics::probe::answer(&hub, &query)).await {
                Ok(Ok(text)) => (StatusCode::OK, crate::metrics::text::CONTENT_TYPE, text),
                Ok(Err(e)) => {
                    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
                    (status, "text/plain; charset=utf-8", format!("{e}\n"))
                }
                Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "the probe page failed\n".to_owned()),
            }
        }
        ("GET", "/v1/heartbeats") => {
            let list: Vec<serde_json::Value> = hub
                .heartbeats()
                .into_iter()
                .map(|(name, period, last, overdue)| {
                    serde_json::json!({
                        "name": name,
                        "period_seconds": period.as_secs(),
                        "last": (last != 0).then(|| crate::clock::rfc3339(last)),
                        "overdue": overdue,
                    })
                })
                .collect();
            let json = serde_json::to_string_pretty(&serde_json::json!({ "heartbeats": list })).unwrap_or_default();
            (StatusCode::OK, "application/json", json + "\n")
        }
        ("GET", "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        ("GET", "/v1/status") => {
            let statuses = hub.with_uptime(hub.statuses(&[])).await;
            let statuses: Vec<serde_json::Value> = statuses.iter().map(crate::view::to_json).collect();
            let json = serde_json::to_string_pretty(&serde_json::json!({ "targets": statuses })).unwrap_or_default();
            (StatusCode::OK, "application/json", json + "\n")
        }
        ("GET", "/v1/uptime") => uptime(hub, request.uri().query().unwrap_or_default()).await,
        ("GET", "/v1/latency") => latency(hub, request.uri().query().unwrap_or_default()).await,
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    respond(status, content_type, body)
}

/// `GET /v1/uptime?window=30d[&target=URL][&format=csv]`: each target's availability over one
/// window (default 30 days), as JSON (for one target, with each region's) or CSV (the targets'
/// own, for SLA reports).
async fn uptime(hub: &Hub, query: &str) -> (StatusCode, &'static str, String) {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    };
    let window = param("window").unwrap_or_else(|| "30d".to_owned());
    let target = param("target").unwrap_or_default();
    let csv = match param("format").as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return (StatusCode::BAD_REQUEST, "text/plain", format!("format {other:?}: use json or csv\n"));
        }
    };
    match hub.uptime(&target, std::slice::from_ref(&window)).await {
        Ok(targets) if csv => (StatusCode::OK, "text/csv; charset=utf-8", crate::view::uptime_csv(&targets)),
        Ok(targets) => {
            let targets: Vec<serde_json::Value> = targets.iter().map(crate::view::uptime_json).collect();
            let json = serde_json::json!({ "window": window, "targets": targets });
            (StatusCode::OK, "application/json", serde_json::to_string_pretty(&json).unwrap_or_default() + "\n")
        }
        Err(e @ crate::hub::HubError::NoTarget(_)) => (StatusCode::NOT_FOUND, "text/plain", format!("{e}\n")),
        Err(e @ crate::hub::HubError::Refused(_)) => (StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        Err(e) => {
            tracing::error!(error = %e, "GET /v1/uptime failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "reading availability failed; see the coordinator's log\n".into(),
            )
        }
    }
}

/// `GET /v1/latency?target=URL[&window=30d][&format=csv]`: one target's hourly latency per
/// region over a window (default 30 days), from the roll-ups, as JSON or CSV.
async fn latency(hub: &Hub, query: &str) -> (StatusCode, &'static str, String) {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    };
    let window = param("window").unwrap_or_else(|| "30d".to_owned());
    let Some(target) = param("target").filter(|t| !t.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "text/plain", "target: give the target's URL (target=URL)\n".into());
    };
    let csv = match param("format").as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return (StatusCode::BAD_REQUEST, "text/plain", format!("format {other:?}: use json or csv\n"));
        }
    };
    match hub.latency(&target, &window).await {
        Ok(report) if csv => (StatusCode::OK, "text/csv; charset=utf-8", crate::view::latency_csv(&report)),
        Ok(report) => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&crate::view::latency_json(&report)).unwrap_or_default() + "\n",
        ),
        Err(e @ crate::hub::HubError::NoTarget(_)) => (StatusCode::NOT_FOUND, "text/plain", format!("{e}\n")),
        Err(e @ crate::hub::HubError::Refused(_)) => (StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        Err(e) => {
            tracing::error!(error = %e, "GET /v1/latency failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "reading latency failed; see the coordinator's log\n".into(),
            )
        }
    }
}

/// `GET /badge/{status,uptime}.svg?target=URL[&window=30d]`: the SVG, cacheable for a while,
/// with an ETag (a matching `If-None-Match` is a 304); or the reason it is not there.
async fn badge(hub: &Hub, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let query = request.uri().query().unwrap_or_default();
    let badge = match crate::badge::answer(hub, request.uri().path(), query).await {
        Ok(badge) => badge,
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return respond(status, "text/plain; charset=utf-8", format!("{e}\n"));
        }
    };
    let etag = badge.etag();
    let unchanged = request
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if unchanged {
        let mut r = respond(StatusCode::NOT_MODIFIED, "image/svg+xml", String::new());
        *r.body_mut() = Full::new(Bytes::new());
        r
    } else {
        respond(StatusCode::OK, "image/svg+xml", badge.svg)
    };
    let headers = response.headers_mut();
    if let Ok(value) = format!("max-age={}", badge.max_age).parse() {
        headers.insert(hyper::header::CACHE_CONTROL, value);
    }
    if let Ok(value) = etag.parse() {
        headers.insert(hyper::header::ETAG, value);
    }
    response
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
            let json = serde_json::json!({ "accepted": name, "next_due": crate::clock::rfc3339(next_due) });
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
