//! The lab's HTTP scenarios: answers (statuses, redirects, expected bodies), hostile answers (endless
//! headers and bodies, a trickle, a gzip bomb), plain HTTP, redirects across schemes and into a
//! network the agent must not reach, and names and addresses in every spelling.

use std::time::Duration;

use super::gzip::GzipBomb;
use super::pki::{Ca, LeafSpec};
use super::server::{self, Reply, Tally};
use super::{Builder, DOMAIN, LabError, Outcome, down, host, tls_server, up};
use crate::failure::FailureCode;
use crate::report::{CertHealth, ProbeStatus};

/// Adds the HTTP scenarios to `b`.
pub(super) async fn add(b: &mut Builder, inter: &Ca, gzip_bomb_sent: Tally) -> Result<(), LabError> {
    use CertHealth::*;
    use FailureCode::*;
    let ok_page = || Reply::Page { status: 200, body: "Welcome to the Vantage lab" };

    // HTTP answers.
    let http_cases: Vec<(&'static str, &'static str, Reply, &[&str], Outcome)> = vec![
        (
            "http_5xx",
            "the application answers 503",
            Reply::Page { status: 503, body: "upstream down" },
            &[],
            down(Http5xx),
        ),
        (
            "http_unexpected_status",
            "the page answers 404",
            Reply::Page { status: 404, body: "not found" },
            &[],
            down(HttpUnexpectedStatus),
        ),
        (
            "http_expected_status",
            "a 404 that the operator expects",
            Reply::Page { status: 404, body: "gone" },
            &["--expect-status", "404"],
            up(Ok, 0),
        ),
        ("http_redirect", "a redirect to a page that answers 200", Reply::RedirectOnce, &[], up(Ok, 0)),
        (
            "http_no_follow",
            "a redirect reported as is with --no-follow",
            Reply::RedirectOnce,
            &["--no-follow"],
            up(Ok, 0),
        ),
        ("http_too_many_redirects", "a redirect loop", Reply::RedirectLoop, &[], down(HttpTooManyRedirects)),
        (
            "http_body_mismatch",
            "a maintenance page served with 200",
            Reply::Page { status: 200, body: "down for maintenance" },
            &["--expect-body", "Welcome"],
            down(HttpBodyMismatch),
        ),
        ("http_body_match", "the expected text is on the page", ok_page(), &["--expect-body", "Welcome"], up(Ok, 0)),
        (
            "http_timeout",
            "the server completes TLS, then never answers",
            Reply::Stall,
            &["--timeout", "2s"],
            down(HttpTimeout),
        ),
        (
            "http_huge_headers",
            "the server sends headers without end (256 MiB)",
            Reply::HugeHeaders(256 << 20),
            &[],
            down(HttpProtocolError),
        ),
        (
            "http_garbage",
            "the server answers with something that is not HTTP",
            Reply::Garbage,
            &[],
            down(HttpProtocolError),
        ),
    ];
    // Hostile HTTP answers. The probe caps the head at 64 KiB and hyper at 100 headers, reads a
    // body only to look for --expect-body text and then at most 1 MiB of it, and never inflates
    // (it asks for `Accept-Encoding: identity`).
    let hostile_http: Vec<(&'static str, &'static str, Reply, &[&str], Outcome)> = vec![
        (
            "http_many_headers",
            "ten thousand one-line headers (60 KB, within the size cap)",
            Reply::ManyHeaders(10_000),
            &[],
            down(HttpProtocolError),
        ),
        (
            "http_endless_body",
            "a 200 whose chunked body never ends, searched for text: the probe reads 1 MiB of it",
            Reply::EndlessBody { chunked: true },
            &["--expect-body", "Welcome"],
            down(HttpBodyMismatch),
        ),
        (
            "http_endless_body_unread",
            "a 200 announcing a 1 TiB body, with no body check: the head is all the probe reads",
            Reply::EndlessBody { chunked: false },
            &[],
            up(Ok, 0),
        ),
        (
            "http_gzip_bomb",
            "a 200 whose gzip body inflates to 10 GiB: the probe never inflates, so the site is up",
            Reply::GzipBomb(GzipBomb::inflating_to(10 << 30), gzip_bomb_sent),
            &[],
            up(Ok, 0),
        ),
        (
            "http_slowloris",
            "the response head trickles in one byte every 500 ms, without end",
            Reply::Trickle(Duration::from_millis(500)),
            &["--timeout", "3s"],
            down(HttpTimeout),
        ),
    ];
    for (name, summary, reply, extra, outcome) in http_cases.into_iter().chain(hostile_http) {
        let h = host(&name.replace('_', "-"));
        let id = inter.identity(&LeafSpec::new(&[&h]), &[&inter])?;
        let addr = tls_server(&id, reply).await?;
        b.tls(name, summary, &h, addr, extra, outcome);
    }

    // Plain HTTP.
    let listener = server::bind("127.0.0.1", 0).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server::serve_plain(listener, ok_page()));
    let h = host("plain");
    b.add(
        "plain_http",
        "a plain http:// site (no TLS stages)",
        format!("http://{h}:{}/", addr.port()),
        vec!["--resolve".into(), format!("{h}:{}", addr.ip())],
        Outcome { status: ProbeStatus::Up, code: None, health: None, exit: 0 },
    );

    // An http:// site that redirects to https://, where the certificate has 3 days left: the
    // probe follows and judges the certificate it ends up at.
    let secure = host("secure");
    let id = inter.identity(&LeafSpec::new(&[&secure]).valid(-60, 3), &[&inter])?;
    let secure_addr = tls_server(&id, ok_page()).await?;
    let listener = server::bind("127.0.0.1", 0).await?;
    let addr = listener.local_addr()?;
    let to = format!("https://{secure}:{}/", secure_addr.port());
    tokio::spawn(server::serve_plain(listener, Reply::RedirectTo(to)));
    let h = host("insecure");
    b.add(
        "http_to_https_redirect",
        "http:// redirecting to https:// with a certificate 3 days from expiry",
        format!("http://{h}:{}/", addr.port()),
        vec![
            "--resolve".into(),
            format!("{h}:{}", addr.ip()),
            "--resolve".into(),
            format!("{secure}:{}", secure_addr.ip()),
            "--ca-file".into(),
            b.ca_file.clone(),
        ],
        up(Critical, 2),
    );

    // A redirect into a network the agent must not reach: the hop is refused before connecting,
    // though the server there would answer (a stand-in for a redirect to a metadata endpoint).
    let inner = server::bind("127.0.0.2", 0).await?;
    let inner_port = inner.local_addr()?.port();
    tokio::spawn(server::serve_plain(inner, ok_page()));
    let (outer_host, inner_host) = (host("redirect-out"), host("metadata"));
    let listener = server::bind("127.0.0.1", 0).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server::serve_plain(listener, Reply::RedirectTo(format!("http://{inner_host}:{inner_port}/"))));
    b.add(
        "target_denied",
        "a redirect to an address in a denied network (--deny-network 127.0.0.2/32)",
        format!("http://{outer_host}:{}/", addr.port()),
        vec![
            "--resolve".into(),
            format!("{outer_host}:127.0.0.1"),
            "--resolve".into(),
            format!("{inner_host}:127.0.0.2"),
            "--deny-network".into(),
            "127.0.0.2/32".into(),
        ],
        down(TargetDenied),
    );

    // Names and addresses in every spelling: an IDN host (probed as punycode) and an IPv6 literal.
    let idn_ascii = format!("xn--bcher-kva.{DOMAIN}");
    let id = inter.identity(&LeafSpec::new(&[&idn_ascii]), &[&inter])?;
    let addr = tls_server(&id, ok_page()).await?;
    b.tls(
        "idn_host",
        "an internationalized host name, probed as punycode",
        &format!("bücher.{DOMAIN}"),
        addr,
        &[],
        up(Ok, 0),
    );
    let listener = server::bind("::1", 0).await?;
    let port = listener.local_addr()?.port();
    let id = inter.identity(&LeafSpec::new(&["::1"]), &[&inter])?;
    tokio::spawn(server::serve_tls(listener, server::server_config(&id), ok_page()));
    b.add(
        "ipv6_literal",
        "an IPv6 literal URL with a certificate for the address",
        format!("https://[::1]:{port}/"),
        vec!["--ca-file".into(), b.ca_file.clone()],
        up(Ok, 0),
    );

    Result::Ok(())
}
