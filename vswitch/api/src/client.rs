//! A client for the control socket, used by `podswitch ctl`, the lab, the CNI plugin and the
//! tests.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{ApiError, Reply, Request, Response};

/// How long a call may take before the client gives up (port adds do netlink work).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("cannot reach podswitch at {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The connection broke.
    #[error("control connection: {0}")]
    Io(#[from] io::Error),
    /// The switch answered something that is not a response.
    #[error("bad response from podswitch: {0}")]
    Protocol(String),
    /// The switch refused the request.
    #[error("{0}")]
    Api(ApiError),
}

/// A connection to a switch's control socket.
#[derive(Debug)]
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .map_err(|source| ClientError::Connect { path: path.to_path_buf(), source })?;
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        stream.set_write_timeout(Some(CALL_TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client { writer: stream, reader })
    }

    /// Sends a raw request line and returns the raw response line (for tests of malformed
    /// input).
    pub fn call_raw(&mut self, line: &str) -> Result<String, ClientError> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        let mut resp = String::new();
        if self.reader.read_line(&mut resp)? == 0 {
            return Err(ClientError::Protocol("connection closed without a response".into()));
        }
        Ok(resp)
    }

    /// Sends `req` and waits for its response.
    pub fn call(&mut self, req: &Request) -> Result<Reply, ClientError> {
        let line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self.call_raw(&line)?;
        match serde_json::from_str::<Response>(&resp) {
            Ok(Response::Ok(r)) => Ok(r),
            Ok(Response::Error(e)) => Err(ClientError::Api(e)),
            Err(e) => Err(ClientError::Protocol(format!("{e}: {}", resp.trim()))),
        }
    }
}

/// Connects, sends one request, returns its reply.
pub fn call(path: &Path, req: &Request) -> Result<Reply, ClientError> {
    Client::connect(path)?.call(req)
}
