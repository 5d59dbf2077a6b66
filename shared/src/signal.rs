//! The end of a binary's run: `vantage-agent run` and `vantage-coordinator serve` stop cleanly on
//! the same signals.

/// Resolves on Ctrl-C or SIGTERM (what systemd, Kubernetes and container runtimes send). Where
/// SIGTERM cannot be watched it never resolves, rather than stopping a monitor at once.
pub async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
