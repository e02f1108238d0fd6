//! The control socket: accepts connections on a Unix stream socket, reads newline-delimited
//! JSON requests, hands each to the [`Controller`] and writes its response line.
//!
//! No packet or table code here: parsing and framing only. Each connection gets its own
//! thread (bounded by [`MAX_CONNECTIONS`]) so a slow client cannot hold up the CNI plugin's
//! calls. A request line longer than [`MAX_REQUEST_LEN`] is answered with an error and the
//! connection closed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::api::{parse_request, ApiError, ErrorKind, Response, MAX_REQUEST_LEN};
use super::controller::Controller;

/// Most connections served at once; more are answered `unavailable` and closed.
pub const MAX_CONNECTIONS: usize = 64;

/// An idle connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The running control socket; stops (and removes the socket file) when dropped.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another switch answers on the socket.
    #[error("another podswitch is already listening on {0}")]
    InUse(PathBuf),
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl Server {
    /// Listens on `path` (creating its directory; replacing a stale socket left by a switch
    /// that died) and serves `controller` until stopped.
    pub fn start(path: &Path, controller: Arc<Controller>) -> Result<Server, ServeError> {
        let bind_err = |source| ServeError::Bind { path: path.to_path_buf(), source };
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ServeError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(bind_err)?;
            }
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("psw-control".into())
            .spawn(move || accept_loop(listener, controller, stop2))
            .map_err(bind_err)?;
        Ok(Server { path: path.to_path_buf(), stop, thread: Some(thread) })
    }

    /// Stops accepting, waits for the accept loop, removes the socket file.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Unblock accept().
            let _ = UnixStream::connect(&self.path);
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: UnixListener, controller: Arc<Controller>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = conn else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = write_response(
                &mut stream,
                &Response::Error(ApiError::new(
                    ErrorKind::Unavailable,
                    "too many control connections",
                )),
            );
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let controller = controller.clone();
        let active2 = active.clone();
        let spawned = std::thread::Builder::new().name("psw-conn".into()).spawn(move || {
            serve_connection(stream, &controller);
            active2.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn serve_connection(stream: UnixStream, controller: &Controller) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        match (&mut reader).take(MAX_REQUEST_LEN as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() > MAX_REQUEST_LEN {
            let _ = write_response(
                &mut writer,
                &Response::Error(ApiError::new(
                    ErrorKind::InvalidArgument,
                    format!("request longer than {MAX_REQUEST_LEN} bytes"),
                )),
            );
            return;
        }
        let text = match std::str::from_utf8(&line) {
            Ok(t) => t.trim(),
            Err(_) => {
                let r = Response::Error(ApiError::new(
                    ErrorKind::InvalidArgument,
                    "request is not UTF-8",
                ));
                if write_response(&mut writer, &r).is_err() {
                    return;
                }
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        let response = match parse_request(text) {
            Ok(req) => controller.handle(req),
            Err(e) => Response::Error(e),
        };
        if write_response(&mut writer, &response).is_err() {
            return;
        }
    }
}

fn write_response(w: &mut UnixStream, r: &Response) -> io::Result<()> {
    let mut s = serde_json::to_vec(r).map_err(io::Error::other)?;
    s.push(b'\n');
    w.write_all(&s)
}
