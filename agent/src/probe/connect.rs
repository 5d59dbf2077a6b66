//! Stage 2, TCP connect: refused (a reset), timed out (no answer) and unreachable (no route)
//! are different problems with different fixes, so they are told apart.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use vantage_shared::failure::FailureCode;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{addr} refused the connection")]
    Refused { addr: SocketAddr },
    #[error("{addr} did not answer within {:.1}s", after.as_secs_f64())]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("{addr} is unreachable: {source}")]
    Unreachable { addr: SocketAddr, source: std::io::Error },
}

impl ConnectError {
    pub fn code(&self) -> FailureCode {
        match self {
            ConnectError::Refused { .. } => FailureCode::TcpRefused,
            ConnectError::Timeout { .. } => FailureCode::TcpTimeout,
            ConnectError::Unreachable { .. } => FailureCode::TcpUnreachable,
        }
    }
}

pub async fn connect(addr: SocketAddr, budget: Duration) -> Result<TcpStream, ConnectError> {
    match tokio::time::timeout(budget, TcpStream::connect(addr)).await {
        Err(_) => Err(ConnectError::Timeout { addr, after: budget }),
        Ok(Ok(stream)) => {
            // One request, then done: no reason to wait for more data before sending.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(match e.kind() {
            ErrorKind::ConnectionRefused => ConnectError::Refused { addr },
            ErrorKind::TimedOut => ConnectError::Timeout { addr, after: budget },
            // Network/host unreachable, address not available, and anything else the kernel
            // says before a peer answers: the address cannot be reached from here.
            _ => ConnectError::Unreachable { addr, source: e },
        }),
    }
}
