//! Connection caps for the gRPC and HTTP ports: each open connection holds a slot; beyond the cap
//! a new connection is accepted and closed at once (the kernel's backlog does not fill with
//! clients left hanging). Open connections and the ones refused or closed early are counted for
//! `/metrics`, and a refusal is logged at most once a minute per port and reason.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which listening port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Grpc,
    Http,
}

impl Port {
    fn label(self) -> &'static str {
        match self {
            Port::Grpc => "grpc",
            Port::Http => "http",
        }
    }
}

/// Why a connection was refused or closed before its client ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The port's connection cap was reached.
    Limit,
    /// The TLS handshake failed or did not finish in time.
    TlsHandshake,
    /// No client certificate and no authenticated call within the grace period.
    Unauthenticated,
}

impl Closed {
    const ALL: [Closed; 3] = [Closed::Limit, Closed::TlsHandshake, Closed::Unauthenticated];

    fn label(self) -> &'static str {
        match self {
            Closed::Limit => "limit",
            Closed::TlsHandshake => "tls_handshake",
            Closed::Unauthenticated => "unauthenticated",
        }
    }
}

/// gRPC status codes a call may be refused with before its body is read (for the metric's label).
const REFUSED_CODES: [(tonic::Code, &str); 4] = [
    (tonic::Code::Unauthenticated, "unauthenticated"),
    (tonic::Code::PermissionDenied, "permission_denied"),
    (tonic::Code::Unimplemented, "unimplemented"),
    (tonic::Code::ResourceExhausted, "resource_exhausted"),
];

/// The counters behind `vantage_connections*` and `vantage_grpc_calls_refused_total`.
#[derive(Debug, Default)]
pub struct Stats {
    open: [AtomicU64; 2],
    closed: [[AtomicU64; 3]; 2],
    refused_calls: [AtomicU64; 4],
    /// When each (port, reason) was last logged.
    logged: Mutex<Vec<((Port, Closed), Instant)>>,
}

impl Stats {
    fn port(port: Port) -> usize {
        port as usize
    }

    /// Connections open now on `port`.
    pub fn open(&self, port: Port) -> u64 {
        self.open[Stats::port(port)].load(Ordering::Relaxed)
    }

    /// Connections refused or closed early on `port` for `why`, since start.
    pub fn closed(&self, port: Port, why: Closed) -> u64 {
        self.closed[Stats::port(port)][why as usize].load(Ordering::Relaxed)
    }

    /// Counts a connection refused or closed early, and logs it unless that was done within the
    /// last minute (a flood makes one line a minute, with the count so far).
    pub fn count_closed(&self, port: Port, why: Closed, detail: &str) {
        let total = self.closed[Stats::port(port)][why as usize].fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let last = logged.iter_mut().find(|(key, _)| *key == (port, why));
        match last {
            Some((_, at)) if now.duration_since(*at) < Duration::from_secs(60) => return,
            Some((_, at)) => *at = now,
            None => logged.push(((port, why), now)),
        }
        drop(logged);
        tracing::warn!(port = port.label(), reason = why.label(), total, "{detail} (logged at most once a minute)");
    }

    /// Counts a gRPC call refused from its headers.
    pub fn count_refused_call(&self, code: tonic::Code) {
        if let Some(i) = REFUSED_CODES.iter().position(|(c, _)| *c == code) {
            self.refused_calls[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition lines of these counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let ports = [Port::Grpc, Port::Http];
        let _ = writeln!(
            out,
            "# HELP vantage_connections Connections open now, by port.\n# TYPE vantage_connections gauge"
        );
        for port in ports {
            let _ = writeln!(out, "vantage_connections{{port=\"{}\"}} {}", port.label(), self.open(port));
        }
        let _ = writeln!(
            out,
            "# HELP vantage_connections_closed_total Connections refused or closed by the coordinator, by port and \
             reason (limit: the connection cap; tls_handshake: failed or too slow; unauthenticated: no credential \
             within the grace period).\n# TYPE vantage_connections_closed_total counter"
        );
        // The HTTP port is plaintext and needs no credential to stay: only its cap closes.
        let reasons = [(Port::Grpc, &Closed::ALL[..]), (Port::Http, &[Closed::Limit][..])];
        for (port, reasons) in reasons {
            for &why in reasons {
                let n = self.closed(port, why);
                let _ = writeln!(
                    out,
                    "vantage_connections_closed_total{{port=\"{}\",reason=\"{}\"}} {n}",
                    port.label(),
                    why.label()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP vantage_grpc_calls_refused_total gRPC calls refused from their headers, before any message was \
             read, by status code.\n# TYPE vantage_grpc_calls_refused_total counter"
        );
        for (i, (_, label)) in REFUSED_CODES.iter().enumerate() {
            let n = self.refused_calls[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "vantage_grpc_calls_refused_total{{code=\"{label}\"}} {n}");
        }
        out
    }
}

/// A port's connection cap.
#[derive(Debug, Clone)]
pub struct Cap {
    port: Port,
    max: usize,
    slots: Arc<Semaphore>,
    stats: Arc<Stats>,
}

impl Cap {
    pub fn new(port: Port, max: usize, stats: Arc<Stats>) -> Cap {
        Cap { port, max, slots: Arc::new(Semaphore::new(max)), stats }
    }

    /// A slot for a new connection, held until the connection ends; `None` when the cap is
    /// reached (counted and logged; the caller closes the connection).
    pub fn admit(&self) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.stats.open[Stats::port(self.port)].fetch_add(1, Ordering::Relaxed);
                Some(Slot { _permit: permit, port: self.port, stats: self.stats.clone() })
            }
            Err(_) => {
                let detail = format!("connection refused: the cap of {} open connections is reached", self.max);
                self.stats.count_closed(self.port, Closed::Limit, &detail);
                None
            }
        }
    }
}

/// An open connection's place under its port's cap; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    port: Port,
    stats: Arc<Stats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.open[Stats::port(self.port)].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Logs an accept error (out of file descriptors, say) at most once a minute, and waits a little
/// before the next accept so a persistent error does not spin.
pub async fn accept_failed(port: Port, error: std::io::Error, last: &mut Option<Instant>) {
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *last = Some(Instant::now());
        tracing::error!(port = port.label(), %error, "accepting a connection failed (logged at most once a minute)");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_refuses_beyond_its_size_and_frees_slots_on_drop() {
        let stats = Arc::new(Stats::default());
        let cap = Cap::new(Port::Http, 2, stats.clone());
        let (a, b) = (cap.admit().unwrap(), cap.admit().unwrap());
        assert!(cap.admit().is_none());
        assert_eq!((stats.open(Port::Http), stats.closed(Port::Http, Closed::Limit)), (2, 1));
        drop(a);
        let c = cap.admit().expect("a slot was given back");
        assert_eq!(stats.open(Port::Http), 2);
        drop((b, c));
        assert_eq!(stats.open(Port::Http), 0);
        assert_eq!(stats.open(Port::Grpc), 0);
        let text = stats.render();
        assert!(text.contains("vantage_connections_closed_total{port=\"http\",reason=\"limit\"} 1"), "{text}");
        assert!(text.contains("vantage_connections{port=\"grpc\"} 0"), "{text}");
    }
}
