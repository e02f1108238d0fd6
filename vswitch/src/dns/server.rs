//! The responder's sockets and threads: one UDP socket and one TCP listener on the same
//! address and port, each served by its own thread, and a short-lived thread per TCP
//! connection (at most [`MAX_TCP_CONNECTIONS`], at most [`MAX_TCP_PER_SOURCE`] from one
//! client address).
//!
//! Who the client is: pods reach the responder through the DNS Service's NAT, which
//! rewrites only the destination (`10.96.0.10:53` to the gateway address), never the
//! source, so the peer address a connection is accepted from is the pod's own address
//! (port security keeps pods to their own addresses); the node's processes come from the
//! node's addresses. The per-source limit is therefore a per-pod limit.
//!
//! Every thread wakes at least every [`TICK`] to look at the stop flag, so dropping the
//! [`DnsServer`] returns within about that long; open TCP connections are shut down, not
//! waited out. Names are read from [`SharedNames`] once per query, so a table the control
//! plane swaps in answers the next query.
//!
//! TCP follows RFC 7766: 2-byte length framing, several queries per connection answered in
//! order, a connection closed after [`IDLE_TIMEOUT`] without a complete query, on a length of
//! 0, on a message that gets no reply, or on any read or write error.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

use super::{respond, NameTable, Transport};

/// The names the responder answers from. The control plane replaces the inner `Arc` (see
/// [`publish`]) on every Service change; each query reads the current one.
pub type SharedNames = Arc<RwLock<Arc<NameTable>>>;

/// Wraps a first table for [`DnsServer::spawn`].
pub fn shared_names(names: NameTable) -> SharedNames {
    Arc::new(RwLock::new(Arc::new(names)))
}

/// Replaces the table the responder answers from.
pub fn publish(shared: &SharedNames, names: NameTable) {
    *shared.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(names);
}

/// Edits the table the responder answers from in place (cloning it only if a query holds
/// it at that moment).
pub fn edit(shared: &SharedNames, f: impl FnOnce(&mut NameTable)) {
    let mut guard = shared.write().unwrap_or_else(PoisonError::into_inner);
    f(Arc::make_mut(&mut guard));
}

/// Most TCP connections served at once; more are closed as soon as they are accepted.
pub const MAX_TCP_CONNECTIONS: usize = 64;

/// Most TCP connections served at once from one client address (one pod): a stub resolver
/// uses one connection at a time per lookup (RFC 7766 §6.2.1 asks clients to reuse one),
/// so 8 leaves a pod room for concurrent lookups while it takes eight pods together to
/// fill [`MAX_TCP_CONNECTIONS`]. More are closed as soon as they are accepted.
pub const MAX_TCP_PER_SOURCE: usize = 8;

/// A TCP connection is closed when a complete query takes longer than this to arrive
/// (counted from the previous reply), and when a reply takes longer than this to send.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often each thread looks at the stop flag.
pub const TICK: Duration = Duration::from_millis(100);

/// The responder's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCounters {
    /// Messages received (UDP datagrams and TCP messages).
    pub queries: u64,
    /// Replies with NOERROR (answers and NODATA).
    pub noerror: u64,
    /// Replies with NXDOMAIN.
    pub nxdomain: u64,
    /// Replies with REFUSED (names outside the cluster domain).
    pub refused: u64,
    /// Replies with another code (FORMERR, NOTIMP, BADVERS).
    pub other_errors: u64,
    /// Replies cut down to header and question with TC set (counted under their code too).
    pub truncated: u64,
    /// Messages that got no reply: shorter than a DNS header, or responses.
    pub dropped: u64,
    /// TCP connections accepted and served.
    pub tcp_connections: u64,
    /// TCP connections closed at once because [`MAX_TCP_CONNECTIONS`] were open.
    pub tcp_rejected: u64,
    /// TCP connections closed at once because [`MAX_TCP_PER_SOURCE`] were open from the
    /// same client address.
    #[serde(default)]
    pub tcp_rejected_per_source: u64,
    /// TCP connections closed because a complete query did not arrive within
    /// [`IDLE_TIMEOUT`] (silent, or trickling it byte by byte).
    #[serde(default)]
    pub tcp_idle_closed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queries: AtomicU64,
    noerror: AtomicU64,
    nxdomain: AtomicU64,
    refused: AtomicU64,
    other_errors: AtomicU64,
    truncated: AtomicU64,
    dropped: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_rejected: AtomicU64,
    tcp_rejected_per_source: AtomicU64,
    tcp_idle_closed: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> DnsCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsCounters {
            queries: get(&self.queries),
            noerror: get(&self.noerror),
            nxdomain: get(&self.nxdomain),
            refused: get(&self.refused),
            other_errors: get(&self.other_errors),
            truncated: get(&self.truncated),
            dropped: get(&self.dropped),
            tcp_connections: get(&self.tcp_connections),
            tcp_rejected: get(&self.tcp_rejected),
            tcp_rejected_per_source: get(&self.tcp_rejected_per_source),
            tcp_idle_closed: get(&self.tcp_idle_closed),
        }
    }
}

/// What every serving thread shares.
#[derive(Debug)]
struct Shared {
    names: SharedNames,
    stop: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The reply to one message, counted.
    fn handle(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        bump(&self.counters.queries);
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner).clone();
        // hickory-proto parses input from anyone on the network; a panic in it must not take
        // the responder down with it.
        let reply =
            catch_unwind(AssertUnwindSafe(|| respond(query, &names, transport))).ok().flatten();
        let Some(reply) = reply else {
            bump(&self.counters.dropped);
            return None;
        };
        let c = &self.counters;
        bump(match reply.rcode {
            ResponseCode::NoError => &c.noerror,
            ResponseCode::NXDomain => &c.nxdomain,
            ResponseCode::Refused => &c.refused,
            _ => &c.other_errors,
        });
        if reply.truncated {
            bump(&c.truncated);
        }
        Some(reply.bytes)
    }
}

/// The responder's sockets and threads: one UDP socket and one TCP listener bound to the same
/// address, each served by its own thread, answering from `names`. Dropping it stops the
/// threads (within about [`TICK`]) and closes the sockets.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddrV4,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` and starts serving. With port 0 the system picks a port
    /// free for both ([`DnsServer::local_addr`] tells which). The TCP listener sets
    /// SO_REUSEADDR, so a restarted switch can bind again while old connections linger.
    pub fn spawn(addr: SocketAddrV4, names: SharedNames) -> io::Result<DnsServer> {
        let (udp, tcp, addr) = bind(addr)?;
        udp.set_read_timeout(Some(TICK))?;
        let poll = Poll::new()?;
        poll.registry().register(&mut SourceFd(&tcp.as_raw_fd()), Token(0), Interest::READABLE)?;
        let shared =
            Arc::new(Shared { names, stop: AtomicBool::new(false), counters: Counters::default() });
        let mut server = DnsServer { addr, shared, threads: Vec::with_capacity(2) };
        let s = server.shared.clone();
        server.threads.push(
            std::thread::Builder::new()
                .name("psw-dns-udp".into())
                .spawn(move || serve_udp(&udp, &s))?,
        );
        let s = server.shared.clone();
        server.threads.push(
            std::thread::Builder::new()
                .name("psw-dns-tcp".into())
                .spawn(move || serve_tcp(&tcp, poll, &s))?,
        );
        Ok(server)
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// The counters so far.
    pub fn counters(&self) -> DnsCounters {
        self.shared.counters.snapshot()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Binds the UDP socket, then TCP on the port it got. With port 0, tries a few ports in case
/// the one UDP got is taken for TCP.
fn bind(addr: SocketAddrV4) -> io::Result<(UdpSocket, TcpListener, SocketAddrV4)> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)?;
        let SocketAddr::V4(local) = udp.local_addr()? else {
            return Err(io::Error::other("IPv4 socket with a non-IPv4 address"));
        };
        match tcp_listener(local) {
            Ok(tcp) => return Ok((udp, tcp, local)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

fn tcp_listener(addr: SocketAddrV4) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(addr).into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn serve_udp(socket: &UdpSocket, shared: &Shared) {
    let mut buf = vec![0u8; 65_535];
    while !shared.stopping() {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // Nothing recoverable is expected here; do not spin on it.
                std::thread::sleep(TICK);
                continue;
            }
        };
        if let Some(reply) = shared.handle(&buf[..n], Transport::Udp) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

/// A TCP connection's thread, and a handle on its socket to shut it down.
struct Connection {
    socket: TcpStream,
    thread: JoinHandle<()>,
    /// The client's address.
    source: std::net::IpAddr,
}

fn serve_tcp(listener: &TcpListener, mut poll: Poll, shared: &Arc<Shared>) {
    let mut events = Events::with_capacity(4);
    let mut connections: Vec<Connection> = Vec::with_capacity(MAX_TCP_CONNECTIONS);
    while !shared.stopping() {
        // The listener is registered edge-triggered; accepting until WouldBlock on every
        // wake-up, timeouts included, keeps a missed edge from stalling it.
        let _ = poll.poll(&mut events, Some(TICK));
        let (done, open): (Vec<_>, Vec<_>) =
            connections.drain(..).partition(|c| c.thread.is_finished());
        connections = open;
        for c in done {
            let _ = c.thread.join();
        }
        loop {
            let (socket, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if connections.len() >= MAX_TCP_CONNECTIONS {
                bump(&shared.counters.tcp_rejected);
                continue;
            }
            let source = peer.ip();
            if connections.iter().filter(|c| c.source == source).count() >= MAX_TCP_PER_SOURCE {
                bump(&shared.counters.tcp_rejected_per_source);
                continue;
            }
            let Ok(handle) = socket.try_clone() else { continue };
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("psw-dns-conn".into())
                .spawn(move || serve_connection(socket, &s));
            if let Ok(thread) = spawned {
                bump(&shared.counters.tcp_connections);
                connections.push(Connection { socket: handle, thread, source });
            }
        }
    }
    for c in &connections {
        let _ = c.socket.shutdown(Shutdown::Both);
    }
    for c in connections {
        let _ = c.thread.join();
    }
}

fn serve_connection(mut socket: TcpStream, shared: &Shared) {
    let setup = socket
        .set_nonblocking(false)
        .and_then(|()| socket.set_read_timeout(Some(TICK)))
        .and_then(|()| socket.set_write_timeout(Some(IDLE_TIMEOUT)))
        .and_then(|()| socket.set_nodelay(true));
    if setup.is_err() {
        return;
    }
    let mut message = Vec::new();
    loop {
        let deadline = Instant::now() + IDLE_TIMEOUT;
        let mut len = [0u8; 2];
        if let Err(e) = read_full(&mut socket, &mut len, deadline, shared) {
            return count_close(&e, shared);
        }
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 {
            return;
        }
        message.resize(len, 0);
        if let Err(e) = read_full(&mut socket, &mut message, deadline, shared) {
            return count_close(&e, shared);
        }
        let Some(reply) = shared.handle(&message, Transport::Tcp) else { return };
        // `answer` keeps TCP replies within 65,535 bytes.
        let Ok(reply_len) = u16::try_from(reply.len()) else { return };
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if socket.write_all(&framed).is_err() {
            return;
        }
    }
}

/// Counts a connection closed because its query did not arrive in time.
fn count_close(e: &io::Error, shared: &Shared) {
    if e.kind() == io::ErrorKind::TimedOut && !shared.stopping() {
        bump(&shared.counters.tcp_idle_closed);
    }
}

/// Fills `buf`, giving up at end of stream, on an error, at `deadline` or when stopping.
fn read_full(
    socket: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    shared: &Shared,
) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match socket.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                if shared.stopping() || Instant::now() >= deadline {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::services::{Algorithm, Endpoint, L4Proto, ServiceSpec};
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    use std::net::Ipv4Addr;

    const DOMAIN: &str = "cluster.local";

    fn spec(name: &str, namespace: &str, vip: Ipv4Addr) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            namespace: namespace.into(),
            vip,
            port: 80,
            proto: L4Proto::Tcp,
            endpoints: vec![Endpoint::new(Ipv4Addr::new(10, 244, 1, 5), 8080)],
            algorithm: Algorithm::default(),
            session_affinity_secs: None,
            node_port: None,
        }
    }

    fn names(specs: &[ServiceSpec]) -> NameTable {
        NameTable::from_services(specs, DOMAIN).unwrap()
    }

    fn start() -> (DnsServer, SharedNames) {
        let shared = shared_names(names(&[spec("web", "default", Ipv4Addr::new(10, 96, 0, 20))]));
        let server =
            DnsServer::spawn(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), shared.clone()).unwrap();
        assert_eq!(*server.local_addr().ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(server.local_addr().port(), 0);
        (server, shared)
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn ask_udp(server: &DnsServer, id: u16, name: &str) -> Message {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        socket.send_to(&query(id, name), server.local_addr()).unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = socket.recv_from(&mut buf).expect("a UDP reply within 2 s");
        assert_eq!(from, SocketAddr::V4(server.local_addr()));
        Message::from_vec(&buf[..n]).unwrap()
    }

    fn connect(server: &DnsServer) -> TcpStream {
        connect_from(server, Ipv4Addr::LOCALHOST)
    }

    /// A connection from `src` (any 127/8 address is the loopback's).
    fn connect_from(server: &DnsServer, src: Ipv4Addr) -> TcpStream {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into()).unwrap();
        sock.connect(&SocketAddr::V4(server.local_addr()).into()).unwrap();
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn send_tcp(stream: &mut TcpStream, message: &[u8]) {
        let mut framed = (message.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(message);
        stream.write_all(&framed).unwrap();
    }

    fn recv_tcp(stream: &mut TcpStream) -> Message {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).expect("a TCP reply within 2 s");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).unwrap();
        Message::from_vec(&buf).unwrap()
    }

    fn a_records(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    /// True if the server closed `stream` (end of stream or reset) within 2 s.
    fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !is_timeout(&e),
        }
    }

    #[test]
    fn dns_server_answers_over_udp() {
        let (server, _names) = start();
        let r = ask_udp(&server, 0x4242, "web.default.svc.cluster.local.");
        assert_eq!(r.metadata.id, 0x4242);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(a_records(&r), [Ipv4Addr::new(10, 96, 0, 20)]);
        let r = ask_udp(&server, 2, "example.com.");
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);

        // Garbage gets no reply and does not stop the thread.
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket.send_to(&[1, 2, 3], server.local_addr()).unwrap();
        let r = ask_udp(&server, 3, "nope.default.svc.cluster.local.");
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);

        let c = server.counters();
        assert_eq!(c.queries, 4, "{c:?}");
        assert_eq!((c.noerror, c.refused, c.nxdomain, c.dropped), (1, 1, 1, 1), "{c:?}");
    }

    #[test]
    fn dns_server_answers_several_queries_on_one_tcp_connection() {
        let (server, _names) = start();
        let mut stream = connect(&server);
        // Two queries written back to back, then both replies read, in order.
        send_tcp(&mut stream, &query(10, "web.default.svc.cluster.local."));
        send_tcp(&mut stream, &query(11, "other.default.svc.cluster.local."));
        let r = recv_tcp(&mut stream);
        assert_eq!(r.metadata.id, 10);
        assert_eq!(a_records(&r), [Ipv4Addr::new(10, 96, 0, 20)]);
        let r = recv_tcp(&mut stream);
        assert_eq!(r.metadata.id, 11);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        // A length of 0 closes the connection.
        stream.write_all(&[0, 0]).unwrap();
        assert!(closed(&mut stream));
        let c = server.counters();
        assert_eq!((c.tcp_connections, c.queries, c.noerror, c.nxdomain), (1, 2, 1, 1), "{c:?}");
    }

    #[test]
    fn dns_server_answers_from_the_table_published_last() {
        let (server, names) = start();
        publish(
            &names,
            super::NameTable::from_services(
                &[spec("api", "prod", Ipv4Addr::new(10, 96, 7, 7))],
                DOMAIN,
            )
            .unwrap(),
        );
        let r = ask_udp(&server, 1, "api.prod.svc.cluster.local.");
        assert_eq!(a_records(&r), [Ipv4Addr::new(10, 96, 7, 7)]);
        let r = ask_udp(&server, 2, "web.default.svc.cluster.local.");
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let mut stream = connect(&server);
        send_tcp(&mut stream, &query(3, "api.prod.svc.cluster.local."));
        assert_eq!(a_records(&recv_tcp(&mut stream)), [Ipv4Addr::new(10, 96, 7, 7)]);
    }

    #[test]
    fn dns_server_closes_tcp_connections_beyond_the_limit() {
        let (server, _names) = start();
        // From as many sources as it takes to stay within the per-source limit.
        let src = |i: usize| Ipv4Addr::new(127, 0, 1, (i / MAX_TCP_PER_SOURCE) as u8 + 1);
        let mut open: Vec<TcpStream> =
            (0..MAX_TCP_CONNECTIONS).map(|i| connect_from(&server, src(i))).collect();
        // A reply on each proves the server accepted them all before the next one.
        for (i, stream) in open.iter_mut().enumerate() {
            send_tcp(stream, &query(i as u16, "web.default.svc.cluster.local."));
            assert_eq!(recv_tcp(stream).metadata.id, i as u16);
        }
        let mut extra = connect(&server);
        assert!(closed(&mut extra), "connection {} should be closed", MAX_TCP_CONNECTIONS + 1);
        assert_eq!(server.counters().tcp_rejected, 1);
        assert_eq!(server.counters().tcp_rejected_per_source, 0);
        // Once one closes, a new connection is served again.
        drop(open.pop());
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut again = connect(&server);
            send_tcp(&mut again, &query(99, "web.default.svc.cluster.local."));
            let mut len = [0u8; 2];
            if again.read_exact(&mut len).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "no connection served after one closed");
            std::thread::sleep(TICK);
        }
    }

    #[test]
    fn dns_server_limits_connections_per_source_address() {
        let (server, _names) = start();
        let a = Ipv4Addr::new(127, 0, 2, 1);
        let mut open: Vec<TcpStream> =
            (0..MAX_TCP_PER_SOURCE).map(|_| connect_from(&server, a)).collect();
        for (i, stream) in open.iter_mut().enumerate() {
            send_tcp(stream, &query(i as u16, "web.default.svc.cluster.local."));
            assert_eq!(recv_tcp(stream).metadata.id, i as u16);
        }
        let mut extra = connect_from(&server, a);
        assert!(closed(&mut extra), "one connection too many from {a}");
        assert_eq!(server.counters().tcp_rejected_per_source, 1);
        // Another source is served meanwhile.
        let mut other = connect_from(&server, Ipv4Addr::new(127, 0, 2, 2));
        send_tcp(&mut other, &query(77, "web.default.svc.cluster.local."));
        assert_eq!(recv_tcp(&mut other).metadata.id, 77);
        assert_eq!(server.counters().tcp_rejected, 0);
    }

    #[test]
    fn dns_server_closes_silent_and_trickling_connections() {
        let (server, _names) = start();
        let mut silent = connect(&server);
        let mut trickle = connect(&server);
        silent.set_read_timeout(Some(IDLE_TIMEOUT * 2)).unwrap();
        trickle.set_read_timeout(Some(TICK * 5)).unwrap();
        // The trickler sends its query one byte at a time, each well within any per-read
        // timeout, until the server closes the connection (bounded by the query's size).
        let q = query(5, "web.default.svc.cluster.local.");
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let mut closed_early = false;
        for b in &framed[..framed.len() - 1] {
            if trickle.write_all(std::slice::from_ref(b)).is_err() {
                closed_early = true;
                break;
            }
            let mut buf = [0u8; 1];
            match trickle.read(&mut buf) {
                Ok(0) => {
                    closed_early = true;
                    break;
                }
                Ok(_) => panic!("an answer to half a query"),
                Err(_) => {}
            }
        }
        assert!(closed_early, "the trickling connection was never closed");
        assert!(closed(&mut silent), "the silent connection was not closed");
        assert_eq!(server.counters().tcp_idle_closed, 2, "{:?}", server.counters());
        assert_eq!(server.counters().queries, 0);
    }

    #[test]
    fn dns_server_drop_returns_promptly_with_connections_open() {
        let (server, _names) = start();
        let addr = server.local_addr();
        let mut idle = connect(&server);
        let mut half = connect(&server);
        half.write_all(&[0, 40, 1, 2]).unwrap(); // a length, and part of a message
        send_tcp(&mut idle, &query(1, "web.default.svc.cluster.local."));
        recv_tcp(&mut idle);
        let started = Instant::now();
        drop(server);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1000), "drop took {took:?}");
        assert!(closed(&mut idle));
        assert!(closed(&mut half));
        assert!(TcpStream::connect(addr).is_err(), "listener still open");
    }
}
