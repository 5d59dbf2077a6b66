//! The coordinator as a process: starting it and waiting for `/healthz`, SIGTERM, its CPU time
//! and memory from `/proc`, and the timed reads of every target's state (HTTP, the `status` CLI,
//! `ListStatus`).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_proto::v1::ListStatusRequest;
use vantage_proto::v1::coordinator_client::CoordinatorClient;

use crate::table::Read;
use crate::{BIN, BenchError, CALL_TIMEOUT, MAX_DECODE, Proc, Result, io};

/// Two distinct free loopback addresses (both held until both are known).
pub fn free_addrs() -> Result<(SocketAddr, SocketAddr)> {
    let bind = || io("binding a free loopback port", std::net::TcpListener::bind("127.0.0.1:0"));
    let (a, b) = (bind()?, bind()?);
    Ok((io("reading its port", a.local_addr())?, io("reading its port", b.local_addr())?))
}

/// The coordinator under test: its files, ports and (while it runs) its process.
pub struct Coordinator {
    pub dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub process: Option<Proc>,
}

impl Coordinator {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("coordinator.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn fail(&self, what: impl Into<String>) -> BenchError {
        BenchError::Coordinator(what.into(), self.log_tail())
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, |p| p.0.id())
    }

    /// Spawns `serve` and waits for `/healthz` to answer 200; returns how long that took.
    pub async fn start(&mut self, timeout: Duration) -> Result<Duration> {
        let log = io(
            "opening the coordinator log",
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("coordinator.log")),
        )?;
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--insecure")
            .args(["--listen", &self.grpc.to_string(), "--http-listen", &self.http.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--config")
            .arg(self.dir.join("targets.toml"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl only, between fork and exec. The coordinator dies with the bench even when
        // the bench itself is killed (Ctrl-C), not only when it ends normally.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        self.process = Some(Proc(io("starting vantage-coordinator serve", command.spawn())?));
        let mut progress = started;
        loop {
            let exited = self.process.as_mut().and_then(|Proc(child)| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(self.fail(format!("exited during start-up ({status})")));
            }
            if let Ok((200, _)) = get(self.http, "/healthz", Duration::from_secs(2)).await {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(self.fail(format!("did not answer /healthz within {} s", timeout.as_secs())));
            }
            if progress.elapsed() >= Duration::from_secs(15) {
                progress = Instant::now();
                eprintln!("    still starting after {:.0} s…", started.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the process to exit; returns how long it took.
    pub async fn stop(&mut self) -> Result<Duration> {
        let Some(Proc(child)) = self.process.as_mut() else { return Ok(Duration::ZERO) };
        let started = Instant::now();
        // SAFETY: kill(2) on the PID of our own child, which has not been waited for yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if started.elapsed() < Duration::from_secs(120) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                _ => return Err(self.fail("did not exit within 120 s of SIGTERM")),
            }
        }
        let took = started.elapsed();
        self.process = None;
        Ok(took)
    }
}

/// `GET path` over HTTP/1.0 (so the body is never chunked); the status code and body length.
async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, usize)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or(std::io::ErrorKind::InvalidData)?;
        let head = String::from_utf8_lossy(&answer[..split]);
        let status =
            head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
        Ok((status, answer.len() - split - 4))
    };
    tokio::time::timeout(timeout, fetch).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// `GET path` timed: how long until the whole body arrived, and its size.
pub async fn http_read(addr: SocketAddr, path: &str) -> Read {
    let started = Instant::now();
    match get(addr, path, CALL_TIMEOUT).await {
        Ok((200, bytes)) => Ok((started.elapsed(), bytes)),
        Ok((code, _)) => Err(format!("HTTP {code}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the real `vantage-coordinator status` (its table into a file); how long it took and how
/// many lines it printed.
pub async fn status_cli(dir: &std::path::Path, grpc_url: &str) -> Read {
    let out = dir.join("status.txt");
    let file = std::fs::File::create(&out).map_err(|e| format!("creating status.txt: {e}"))?;
    let started = Instant::now();
    let child = Command::new(BIN).args(["status", "--addr", grpc_url]).stdout(file).stderr(Stdio::piped()).spawn();
    let mut child = Proc(child.map_err(|e| format!("running vantage-coordinator status: {e}"))?);
    let status = loop {
        if let Some(status) = child.0.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > CALL_TIMEOUT {
            return Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let took = started.elapsed();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut e) = child.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        return Err(format!("{status}: {}", stderr.trim()));
    }
    let text = std::fs::read(&out).map_err(|e| format!("reading status.txt: {e}"))?;
    Ok((took, text.iter().filter(|b| **b == b'\n').count()))
}

/// One `ListStatus` call for every target, on a fresh connection.
pub async fn list_status(grpc_url: &str) -> Read {
    let call = async {
        let channel = tonic::transport::Endpoint::from_shared(grpc_url.to_owned())?.connect().await?;
        let mut client = CoordinatorClient::new(channel).max_decoding_message_size(MAX_DECODE);
        let started = Instant::now();
        let listed = client.list_status(ListStatusRequest::default()).await?.into_inner();
        Ok::<_, BenchError>((started.elapsed(), listed.targets.len()))
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())),
    }
}

/// The coordinator's CPU time so far (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = io("reading /proc/<pid>/stat", std::fs::read_to_string(format!("/proc/{pid}/stat")))?;
    // Fields after the command name (which may hold spaces) start with field 3, the state:
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64(fields.iter().sum::<u64>() as f64 / ticks))
}

/// Starts a new peak: VmHWM is VmRSS again from now on (`clear_refs` 5, Linux 4.0 and later), so
/// the next read of it is the peak of what ran in between.
pub fn reset_peak(pid: u32) -> Result<()> {
    io("resetting /proc/<pid>/clear_refs", std::fs::write(format!("/proc/{pid}/clear_refs"), "5"))
}

/// VmRSS and VmHWM of a process, in MiB.
pub fn memory(pid: u32) -> Result<(f64, f64)> {
    let status = io("reading /proc/<pid>/status", std::fs::read_to_string(format!("/proc/{pid}/status")))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0))
}
