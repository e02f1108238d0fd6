//! The control socket: accepts connections on a Unix stream socket, reads newline-delimited
//! JSON requests, hands each to the [`Controller`] and writes its response line.
//!
//! No packet or table code here: parsing and framing only. Each connection gets its own
//! thread so a slow client cannot hold up the CNI plugin's calls. What keeps clients from
//! locking each other (and the CNI plugin) out:
//! - **Who**: a connection is served only if the kernel's `SO_PEERCRED` for it names root or
//!   the switch's own user, or, with `control.group` configured, a peer whose group
//!   (`SO_PEERCRED`'s gid) or one of whose supplementary groups (`SO_PEERGROUPS`) is that
//!   group; anyone else gets `permission_denied` and is closed. Both are what the kernel
//!   recorded at `connect(2)`: unlike the peer's `/proc/<pid>/status` they cannot change
//!   under the check (the peer exiting, its pid reused), and if they cannot be read the
//!   peer is refused. The socket file is mode 0660, owned by the switch's user and by
//!   `control.group` when set: the first gate, this the second.
//! - **How many**: at most [`MAX_CONNECTIONS`]. When a new one arrives at the limit, the
//!   connection that has waited longest for its next request is closed to make room, so idle
//!   clients can never starve a CNI `ADD`; only when all are busy with a request is the
//!   newcomer refused (`unavailable`).
//! - **How long**: a connection idle for [`IDLE_TIMEOUT`] is closed.
//! - **How big**: a request line longer than [`MAX_REQUEST_LEN`] is answered with an error and
//!   the connection closed; and only one connection at a time may be reading a line longer
//!   than [`SMALL_REQUEST_LEN`] (a large `service_apply`), so clients together buffer at
//!   most `MAX_REQUEST_LEN` + `MAX_CONNECTIONS` × `SMALL_REQUEST_LEN`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::api::{parse_request, ApiError, ErrorKind, Response, MAX_REQUEST_LEN};
use super::controller::Controller;
use crate::sys::process::{chown_group, euid, peer_cred, peer_groups, PeerCred};

/// Most connections served at once (see the module doc for what happens at the limit).
pub const MAX_CONNECTIONS: usize = 64;

/// An idle connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest request line any number of connections may be reading at once; longer lines
/// (up to [`MAX_REQUEST_LEN`]) are read by one connection at a time.
pub const SMALL_REQUEST_LEN: usize = 1 << 20;

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

/// A bound control socket not served yet ([`Server::bind`]).
#[derive(Debug)]
pub struct Bound {
    path: PathBuf,
    listener: UnixListener,
    group: Option<u32>,
}

impl Bound {
    /// Serves `controller` on the socket until stopped.
    pub fn serve(self, controller: Arc<Controller>) -> Result<Server, ServeError> {
        let Bound { path, listener, group } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("psw-control".into())
            .spawn(move || accept_loop(listener, controller, group, stop2))
            .map_err(|source| ServeError::Bind { path: path.clone(), source })?;
        Ok(Server { path, stop, thread: Some(thread) })
    }
}

impl Server {
    /// Listens on `path` (creating its directory; replacing a stale socket left by a switch
    /// that died), mode 0660 and given to `group` if any, and serves `controller` until
    /// stopped.
    pub fn start(
        path: &Path,
        group: Option<u32>,
        controller: Arc<Controller>,
    ) -> Result<Server, ServeError> {
        Server::bind(path, group)?.serve(controller)
    }

    /// The first half of [`Server::start`]: creates the socket (the part that may need
    /// privileges the switch drops once running) without serving it yet.
    pub fn bind(path: &Path, group: Option<u32>) -> Result<Bound, ServeError> {
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
        if let Some(gid) = group {
            chown_group(path, gid).map_err(bind_err)?;
        }
        Ok(Bound { path: path.to_path_buf(), listener, group })
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

/// One served connection, as the accept loop sees it.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// A handle on the socket, to close it from the accept loop.
    stream: UnixStream,
    /// Since when it has been waiting for a request; `None` while one is handled.
    idle_since: Option<Instant>,
}

/// The connections being served, and the one slot for reading a large request.
#[derive(Debug, Default)]
struct Conns {
    list: Mutex<Vec<Conn>>,
    large_reader: AtomicBool,
    next_id: AtomicU64,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection, making room by closing the longest-idle one at the limit.
    /// `None` when every connection is busy with a request.
    fn admit(&self, stream: &UnixStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let mut list = self.lock();
        if list.len() >= MAX_CONNECTIONS {
            let oldest = list
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.idle_since.map(|t| (t, i)))
                .min()
                .map(|(_, i)| i)?;
            let c = list.swap_remove(oldest);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push(Conn { id, stream: handle, idle_since: Some(Instant::now()) });
        Some(id)
    }

    fn set_idle(&self, id: u64, idle: bool) {
        if let Some(c) = self.lock().iter_mut().find(|c| c.id == id) {
            c.idle_since = idle.then(Instant::now);
        }
    }

    fn leave(&self, id: u64) {
        self.lock().retain(|c| c.id != id);
    }
}

fn refuse(stream: &mut UnixStream, kind: ErrorKind, message: &str) {
    let _ = write_response(stream, &Response::Error(ApiError::new(kind, message)));
}

/// Why the peer `c` (whose supplementary groups `groups` reads) may not use the socket, if
/// it may not: it must be root, the switch's user `me`, or in `group`.
fn refusal(
    c: PeerCred,
    me: u32,
    group: Option<u32>,
    groups: impl FnOnce() -> io::Result<Vec<u32>>,
) -> Option<String> {
    if c.uid == 0 || c.uid == me {
        return None;
    }
    let Some(g) = group else {
        return Some(format!("uid {} may not use the control socket (root or uid {me})", c.uid));
    };
    if c.gid == g {
        return None;
    }
    match groups() {
        Ok(list) if list.contains(&g) => None,
        Ok(_) => Some(format!(
            "uid {} may not use the control socket (root, uid {me} or group {g})",
            c.uid
        )),
        Err(e) => Some(format!("uid {}: cannot read its groups ({e}); refused", c.uid)),
    }
}

fn accept_loop(
    listener: UnixListener,
    controller: Arc<Controller>,
    group: Option<u32>,
    stop: Arc<AtomicBool>,
) {
    let conns = Arc::new(Conns::default());
    let me = euid();
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = conn else { continue };
        let denied = match peer_cred(&stream) {
            Ok(c) => refusal(c, me, group, || peer_groups(&stream)),
            Err(_) => continue,
        };
        let Some(id) = conns.admit(&stream) else {
            refuse(&mut stream, ErrorKind::Unavailable, "too many control connections, all busy");
            continue;
        };
        let controller = controller.clone();
        let conns2 = conns.clone();
        let spawned = std::thread::Builder::new().name("psw-conn".into()).spawn(move || {
            match denied {
                None => serve_connection(stream, &controller, &conns2, id),
                Some(why) => deny(stream, &why),
            }
            conns2.leave(id);
        });
        if spawned.is_err() {
            conns.leave(id);
        }
    }
}

/// Reads one request line into `line`: `Ok(false)` at the end of the stream, an error
/// response when it is too long (the connection is then closed).
fn read_line(
    reader: &mut BufReader<UnixStream>,
    line: &mut Vec<u8>,
    conns: &Conns,
) -> io::Result<Result<bool, ApiError>> {
    line.clear();
    let small = SMALL_REQUEST_LEN as u64;
    if (&mut *reader).take(small).read_until(b'\n', line)? == 0 {
        return Ok(Ok(false));
    }
    if line.last() == Some(&b'\n') {
        return Ok(Ok(true));
    }
    // Longer than a small request: only one connection at a time reads on.
    if conns.large_reader.swap(true, Ordering::AcqRel) {
        return Ok(Err(ApiError::new(
            ErrorKind::Unavailable,
            "another large request is being read; retry",
        )));
    }
    let rest = (MAX_REQUEST_LEN as u64 + 1).saturating_sub(line.len() as u64);
    let read = (&mut *reader).take(rest).read_until(b'\n', line);
    conns.large_reader.store(false, Ordering::Release);
    read?;
    if line.len() > MAX_REQUEST_LEN {
        return Ok(Err(ApiError::new(
            ErrorKind::InvalidArgument,
            format!("request longer than {MAX_REQUEST_LEN} bytes"),
        )));
    }
    Ok(Ok(true))
}

/// Answers a client that may not use the socket: after its first request line (or a short
/// wait), so it reads the refusal instead of a broken pipe.
fn deny(stream: UnixStream, why: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut line = Vec::new();
    let _ = BufReader::new(stream).take(SMALL_REQUEST_LEN as u64).read_until(b'\n', &mut line);
    refuse(&mut writer, ErrorKind::PermissionDenied, why);
}

fn serve_connection(stream: UnixStream, controller: &Controller, conns: &Conns, id: u64) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(1024);
    loop {
        conns.set_idle(id, true);
        match read_line(&mut reader, &mut line, conns) {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Err(_) => return,
            Ok(Err(e)) => {
                let _ = write_response(&mut writer, &Response::Error(e));
                return;
            }
        }
        conns.set_idle(id, false);
        if line.capacity() > SMALL_REQUEST_LEN {
            // Give a large request's buffer back once it is parsed below.
            line.shrink_to(SMALL_REQUEST_LEN);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerCred {
        PeerCred { pid: 1, uid, gid }
    }

    #[test]
    fn root_own_user_and_group_members_only_and_unreadable_groups_fail_closed() {
        let none = || -> io::Result<Vec<u32>> { Ok(vec![]) };
        assert_eq!(refusal(peer(0, 0), 1000, None, none), None);
        assert_eq!(refusal(peer(1000, 5), 1000, None, none), None);
        assert!(refusal(peer(1001, 5), 1000, None, || Ok(vec![5])).is_some(), "no group set");
        assert_eq!(refusal(peer(1001, 5), 1000, Some(5), none), None);
        assert_eq!(refusal(peer(1001, 6), 1000, Some(5), || Ok(vec![7, 5])), None);
        assert!(refusal(peer(1001, 6), 1000, Some(5), || Ok(vec![7])).is_some());
        let unreadable = || -> io::Result<Vec<u32>> { Err(io::Error::other("gone")) };
        let why = refusal(peer(1001, 6), 1000, Some(5), unreadable).unwrap();
        assert!(why.contains("refused"), "{why}");
    }
}
