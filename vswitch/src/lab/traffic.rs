//! Traffic tools: real traffic between network namespaces, measured. The lab, the behaviour
//! tests and the benchmarks use them, so podswitch needs no ping or iperf installed, and every
//! datapath (podswitch or a kernel peer) is measured by the same code.
//!
//! Safety rules, enforced here rather than trusted to callers:
//! - Every tool refuses to run in the network namespace the calling process itself lives in
//!   (the host's, for the lab and the tests), and in PID 1's when that is visible: test
//!   traffic only flows between namespaces the caller created.
//! - Every loop is bounded by a count *and* a deadline, every socket has timeouts, and every
//!   server thread is joined before the tool returns, on every path.
//!
//! How it works: sockets are created on a thread that has entered the endpoint's namespace
//! (`NetNs::run`) and stay in that namespace; the work itself then runs on ordinary scoped
//! threads. TCP goes through the pods' own kernel stacks, so what is measured is what a pod
//! sees. Measuring loops reuse their buffers and do not allocate.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::netns::NetNs;
use crate::wire::{IcmpMessage, IcmpPacket, IpProtocol, Ipv4Packet};

/// A server endpoint: the namespace it runs in and an address of an interface there.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The namespace.
    pub ns: &'a NetNs,
    /// The address to bind.
    pub addr: Ipv4Addr,
}

/// How long connects, accepts and single reads may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

static CALLS: AtomicU32 = AtomicU32::new(0);

/// A number unique to this call across threads and processes (pid mixed with a counter).
fn call_id() -> u32 {
    std::process::id().wrapping_mul(0x9e37_79b9)
        ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x85eb_ca6b)
}

/// Fails unless `ns` differs from both this process's namespace and PID 1's: test traffic
/// and test rules only ever go into namespaces the caller created.
pub fn refuse_root(ns: &NetNs) -> io::Result<()> {
    let inside = ns.run(|| std::fs::metadata("/proc/thread-self/ns/net"))??;
    let same = |path: &str| {
        std::fs::metadata(path).is_ok_and(|m| m.ino() == inside.ino() && m.dev() == inside.dev())
    };
    if same("/proc/self/ns/net") || same("/proc/1/ns/net") {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "refusing to use the root network namespace for test traffic or rules",
        ));
    }
    Ok(())
}

/// CPUs for the two sides of every tool, `usize::MAX` for "leave to the scheduler".
static PLACEMENT: [AtomicUsize; 2] = [AtomicUsize::new(usize::MAX), AtomicUsize::new(usize::MAX)];

/// The side of a measurement a thread works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sends requests or bulk data.
    Client = 0,
    /// Receives, counts or echoes.
    Server = 1,
}

/// Pins every tool's client-side threads to `client` and server-side threads to `server`
/// (`None`: unpinned). The benchmarks set this so every datapath is measured with the same
/// placement; it applies to tools started afterwards, process-wide.
pub fn set_placement(client: Option<usize>, server: Option<usize>) {
    PLACEMENT[0].store(client.unwrap_or(usize::MAX), Ordering::Relaxed);
    PLACEMENT[1].store(server.unwrap_or(usize::MAX), Ordering::Relaxed);
}

/// The CPU `side` is pinned to, if any.
pub fn placement(side: Side) -> Option<usize> {
    let cpu = PLACEMENT[side as usize].load(Ordering::Relaxed);
    (cpu != usize::MAX).then_some(cpu)
}

/// Pins the calling thread (a tool's own scoped thread) as [`set_placement`] asked.
fn place(side: Side) {
    if let Some(id) = placement(side) {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Accepts one connection before `deadline` (the listener is polled non-blocking).
fn accept_until(l: &TcpListener, deadline: Instant) -> io::Result<TcpStream> {
    l.set_nonblocking(true)?;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(timed_out("accept"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn listen(server: Endpoint) -> io::Result<(TcpListener, SocketAddr)> {
    listen_at(server, 0)
}

fn listen_at(server: Endpoint, port: u16) -> io::Result<(TcpListener, SocketAddr)> {
    refuse_root(server.ns)?;
    let l = server.ns.run(|| TcpListener::bind(SocketAddrV4::new(server.addr, port)))??;
    let a = l.local_addr()?;
    Ok((l, a))
}

fn connect(ns: &NetNs, to: SocketAddr) -> io::Result<TcpStream> {
    let s = ns.run(|| TcpStream::connect_timeout(&to, IO_TIMEOUT))??;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, io::Result<T>>) -> io::Result<T> {
    h.join().unwrap_or_else(|_| Err(io::Error::other("traffic thread panicked")))
}

// ---------------------------------------------------------------------------------------
// ICMP echo

/// Result of [`ping`].
#[derive(Debug, Clone)]
pub struct PingReport {
    /// Requests sent.
    pub sent: u32,
    /// Distinct replies received.
    pub received: u32,
    /// Round-trip time of each reply.
    pub rtts: Vec<Duration>,
}

impl PingReport {
    /// Fraction of requests without a reply.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            1.0 - f64::from(self.received) / f64::from(self.sent)
        }
    }

    /// True when every request got its reply.
    pub fn all_received(&self) -> bool {
        self.sent > 0 && self.received == self.sent
    }
}

/// ICMP echo from a raw socket inside `ns`: `count` requests `interval` apart (56 bytes of
/// payload), replies matched on identifier and sequence with a valid checksum; waits at most
/// `timeout` after the last request.
pub fn ping(
    ns: &NetNs,
    dst: Ipv4Addr,
    count: u32,
    interval: Duration,
    timeout: Duration,
) -> io::Result<PingReport> {
    refuse_root(ns)?;
    let sock = ns.run(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)))??;
    sock.set_read_timeout(Some(Duration::from_millis(10)))?;
    let to = SocketAddr::V4(SocketAddrV4::new(dst, 0)).into();
    let ident = call_id() as u16;
    let count = count.min(u32::from(u16::MAX));
    let mut sent_at: Vec<Option<Instant>> = vec![None; count as usize];
    let mut got = vec![false; count as usize];
    let mut report = PingReport { sent: 0, received: 0, rtts: Vec::with_capacity(count as usize) };
    let mut req = [0u8; 64];
    let mut buf = [0u8; 2048];
    let mut next_send = Instant::now();
    let mut last_deadline = None;
    loop {
        let now = Instant::now();
        if report.sent < count && now >= next_send {
            let seq = report.sent as u16;
            let mut p = IcmpPacket::new_unchecked(&mut req[..]);
            p.set_msg_type(IcmpMessage::EchoRequest);
            p.set_msg_code(0);
            p.set_echo_ident(ident);
            p.set_echo_seq_no(seq);
            p.data_mut().fill(0xa5);
            p.fill_checksum();
            sock.send_to(&req, &to)?;
            sent_at[usize::from(seq)] = Some(Instant::now());
            report.sent += 1;
            next_send = now + interval;
            if report.sent == count {
                last_deadline = Some(Instant::now() + timeout);
            }
        }
        if report.received == count || last_deadline.is_some_and(|d| now >= d) {
            break;
        }
        let n = match (&sock).read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let Ok(ip) = Ipv4Packet::new_checked(&buf[..n]) else { continue };
        if ip.next_header() != IpProtocol::Icmp || ip.src_addr() != dst {
            continue;
        }
        let Ok(icmp) = IcmpPacket::new_checked(ip.payload()) else { continue };
        if icmp.msg_type() != IcmpMessage::EchoReply
            || icmp.echo_ident() != ident
            || !icmp.verify_checksum()
        {
            continue;
        }
        let seq = usize::from(icmp.echo_seq_no());
        if let (Some(Some(t)), Some(false)) = (sent_at.get(seq), got.get(seq)) {
            got[seq] = true;
            report.received += 1;
            report.rtts.push(t.elapsed());
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// Verified TCP transfer

/// A deterministic byte stream (splitmix64), so a receiver can check every byte it gets
/// without the sender shipping a reference copy.
#[derive(Debug, Clone)]
pub struct PatternStream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl PatternStream {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> PatternStream {
        PatternStream { state: seed, word: [0; 8], used: 8 }
    }

    fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `out` with the next bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() && self.used < 8 {
            out[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut chunks = out[i..].chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_word().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            self.word = self.next_word().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&self.word[..n]);
            self.used = n;
        }
    }
}

/// Result of a bulk TCP transfer.
#[derive(Debug, Clone, Copy)]
pub struct TransferReport {
    /// Bytes received and verified.
    pub bytes: u64,
    /// Receiver's time from accept to the last byte.
    pub elapsed: Duration,
}

impl TransferReport {
    /// Goodput in Gbit/s.
    pub fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

const CHUNK: usize = 128 * 1024;

/// Sends exactly `bytes` bytes of a pattern stream from `client_ns` to `server`; the receiver
/// regenerates the stream and compares every byte. A mismatch is an error naming its offset; a
/// short transfer is an error. Bounded by `timeout`.
pub fn tcp_transfer_verified(
    server: Endpoint,
    client_ns: &NetNs,
    bytes: u64,
    timeout: Duration,
) -> io::Result<TransferReport> {
    refuse_root(client_ns)?;
    let (listener, addr) = listen(server)?;
    let seed = u64::from(call_id()) << 32 | 0x5eed;
    let deadline = Instant::now() + timeout;
    std::thread::scope(|s| {
        let rx = s.spawn(|| -> io::Result<TransferReport> {
            place(Side::Server);
            let mut conn = accept_until(&listener, deadline)?;
            let start = Instant::now();
            let mut expect = PatternStream::new(seed);
            let mut buf = vec![0u8; CHUNK];
            let mut want = vec![0u8; CHUNK];
            let mut got: u64 = 0;
            while got < bytes {
                if Instant::now() > deadline {
                    return Err(timed_out(&format!("transfer after {got} of {bytes} bytes")));
                }
                let n = match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                expect.fill(&mut want[..n]);
                if let Some(i) = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "byte {} differs: got {:#04x}, expected {:#04x}",
                            got + i as u64,
                            buf[i],
                            want[i]
                        ),
                    ));
                }
                got += n as u64;
            }
            if got != bytes {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("received {got} of {bytes} bytes"),
                ));
            }
            Ok(TransferReport { bytes: got, elapsed: start.elapsed() })
        });
        let tx = s.spawn(|| -> io::Result<()> {
            place(Side::Client);
            let mut conn = connect(client_ns, addr)?;
            let mut pattern = PatternStream::new(seed);
            let mut buf = vec![0u8; CHUNK];
            let mut left = bytes;
            while left > 0 {
                if Instant::now() > deadline {
                    return Err(timed_out("send"));
                }
                let n = (left as usize).min(CHUNK);
                pattern.fill(&mut buf[..n]);
                conn.write_all(&buf[..n])?;
                left -= n as u64;
            }
            conn.shutdown(Shutdown::Write)?;
            // Wait for the receiver to close, so the measurement ends at its last byte.
            let mut b = [0u8; 1];
            let _ = conn.read(&mut b);
            Ok(())
        });
        let r = join(rx);
        let t = join(tx);
        let report = r?;
        t?;
        Ok(report)
    })
}

// ---------------------------------------------------------------------------------------
// TCP throughput

/// Result of [`tcp_throughput`].
#[derive(Debug, Clone, Copy)]
pub struct ThroughputReport {
    /// Bytes the receiver read.
    pub bytes: u64,
    /// Receiver's time from the first accept to the last end of stream.
    pub elapsed: Duration,
    /// Parallel connections.
    pub streams: usize,
}

impl ThroughputReport {
    /// Throughput in Gbit/s.
    pub fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// `streams` parallel TCP connections sending for `duration`; the server discards.
pub fn tcp_throughput(
    server: Endpoint,
    client_ns: &NetNs,
    streams: usize,
    duration: Duration,
) -> io::Result<ThroughputReport> {
    refuse_root(client_ns)?;
    let streams = streams.clamp(1, 64);
    let (listener, addr) = listen(server)?;
    let deadline = Instant::now() + duration + IO_TIMEOUT * 2;
    let started = std::sync::OnceLock::new();
    std::thread::scope(|s| {
        let receivers: Vec<_> = (0..streams)
            .map(|_| {
                let (listener, started) = (&listener, &started);
                s.spawn(move || -> io::Result<(u64, Instant)> {
                    place(Side::Server);
                    let mut conn = accept_until(listener, deadline)?;
                    started.get_or_init(Instant::now);
                    let mut buf = vec![0u8; CHUNK];
                    let mut total = 0u64;
                    loop {
                        if Instant::now() > deadline {
                            return Err(timed_out("throughput receive"));
                        }
                        match conn.read(&mut buf) {
                            Ok(0) => return Ok((total, Instant::now())),
                            Ok(n) => total += n as u64,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                })
            })
            .collect();
        let senders: Vec<_> = (0..streams)
            .map(|_| {
                s.spawn(move || -> io::Result<()> {
                    place(Side::Client);
                    let mut conn = connect(client_ns, addr)?;
                    let buf = vec![0x5au8; CHUNK];
                    let end = Instant::now() + duration;
                    while Instant::now() < end {
                        conn.write_all(&buf)?;
                    }
                    conn.shutdown(Shutdown::Write)
                })
            })
            .collect();
        let mut bytes = 0;
        let mut last = None::<Instant>;
        let mut err = None;
        for r in receivers {
            match join(r) {
                Ok((b, t)) => {
                    bytes += b;
                    last = Some(last.map_or(t, |l| l.max(t)));
                }
                Err(e) => err = Some(e),
            }
        }
        for t in senders {
            if let Err(e) = join(t) {
                err.get_or_insert(e);
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        let start = *started.get().ok_or_else(|| io::Error::other("no connection"))?;
        let elapsed = last.map_or(Duration::ZERO, |l| l.duration_since(start));
        Ok(ThroughputReport { bytes, elapsed, streams })
    })
}

// ---------------------------------------------------------------------------------------
// Request/response latency

/// Latency distribution of request/response round trips.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    /// Round trips completed.
    pub samples: u64,
    /// Requests without a response (UDP only).
    pub lost: u64,
    /// Fastest.
    pub min: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Slowest.
    pub max: Duration,
    /// All samples, in nanoseconds.
    pub histogram: Histogram<u64>,
}

impl LatencyReport {
    fn from_histogram(h: Histogram<u64>, lost: u64) -> LatencyReport {
        let q = |p: f64| Duration::from_nanos(h.value_at_quantile(p));
        LatencyReport {
            samples: h.len(),
            lost,
            min: Duration::from_nanos(h.min()),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: Duration::from_nanos(h.max()),
            histogram: h,
        }
    }

    /// `points` (latency, fraction of samples at or below it) pairs for drawing a CDF.
    pub fn cdf(&self, points: usize) -> Vec<(Duration, f64)> {
        let points = points.max(2);
        (0..points)
            .map(|i| {
                let q = i as f64 / (points - 1) as f64;
                (Duration::from_nanos(self.histogram.value_at_quantile(q)), q)
            })
            .collect()
    }
}

fn new_histogram() -> io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| io::Error::other(e.to_string()))
}

/// A UDP response wait after which a request counts as lost.
pub const UDP_LOSS_TIMEOUT: Duration = Duration::from_millis(200);

/// `count` UDP round trips of `payload`-byte messages, one outstanding at a time; a request
/// without a response within [`UDP_LOSS_TIMEOUT`] counts as lost. Stops at `deadline`.
pub fn udp_rr(
    server: Endpoint,
    client_ns: &NetNs,
    payload: usize,
    count: u64,
    deadline: Duration,
) -> io::Result<LatencyReport> {
    refuse_root(server.ns)?;
    refuse_root(client_ns)?;
    let payload = payload.clamp(8, 1400);
    let srv = server.ns.run(|| UdpSocket::bind(SocketAddrV4::new(server.addr, 0)))??;
    srv.set_read_timeout(Some(Duration::from_millis(50)))?;
    let to = srv.local_addr()?;
    let cli = client_ns.run(|| UdpSocket::bind("0.0.0.0:0"))??;
    cli.connect(to)?;
    cli.set_read_timeout(Some(UDP_LOSS_TIMEOUT))?;
    let stop = AtomicBool::new(false);
    let end = Instant::now() + deadline;
    std::thread::scope(|s| {
        let echo = s.spawn(|| -> io::Result<()> {
            place(Side::Server);
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) && Instant::now() < end + Duration::from_secs(1) {
                match srv.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        srv.send_to(&buf[..n], from)?;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        let client = s.spawn(|| -> io::Result<LatencyReport> {
            place(Side::Client);
            let mut h = new_histogram()?;
            let mut lost = 0;
            let mut req = vec![0u8; payload];
            let mut resp = vec![0u8; 2048];
            for seq in 0..count {
                if Instant::now() > end {
                    break;
                }
                req[..8].copy_from_slice(&seq.to_be_bytes());
                let t = Instant::now();
                cli.send(&req)?;
                loop {
                    match cli.recv(&mut resp) {
                        Ok(n) if n >= 8 && resp[..8] == seq.to_be_bytes() => {
                            let _ = h.record(t.elapsed().as_nanos().max(1) as u64);
                            break;
                        }
                        Ok(_) => {
                            if t.elapsed() > UDP_LOSS_TIMEOUT {
                                lost += 1;
                                break;
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            lost += 1;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(LatencyReport::from_histogram(h, lost))
        });
        let result = join(client);
        stop.store(true, Ordering::Relaxed);
        let e = join(echo);
        let r = result?;
        e?;
        Ok(r)
    })
}

/// `count` TCP round trips of `payload`-byte messages on one connection (TCP_NODELAY on both
/// ends). Stops at `deadline`.
pub fn tcp_rr(
    server: Endpoint,
    client_ns: &NetNs,
    payload: usize,
    count: u64,
    deadline: Duration,
) -> io::Result<LatencyReport> {
    tcp_rr_via(server, 0, None, client_ns, payload, count, deadline)
}

/// [`tcp_rr`] with the server listening on `port` (0: any) and the client connecting to `to`
/// instead of the server's own address (a service address translated to it).
pub fn tcp_rr_via(
    server: Endpoint,
    port: u16,
    to: Option<SocketAddrV4>,
    client_ns: &NetNs,
    payload: usize,
    count: u64,
    deadline: Duration,
) -> io::Result<LatencyReport> {
    refuse_root(client_ns)?;
    let payload = payload.clamp(1, 65536);
    let (listener, addr) = listen_at(server, port)?;
    let addr = to.map_or(addr, SocketAddr::V4);
    let end = Instant::now() + deadline;
    std::thread::scope(|s| {
        let echo = s.spawn(|| -> io::Result<()> {
            place(Side::Server);
            let mut conn = accept_until(&listener, end)?;
            conn.set_nodelay(true)?;
            let mut buf = vec![0u8; payload];
            loop {
                match conn.read_exact(&mut buf) {
                    Ok(()) => conn.write_all(&buf)?,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
                if Instant::now() > end + IO_TIMEOUT {
                    return Err(timed_out("tcp echo"));
                }
            }
        });
        let client = s.spawn(|| -> io::Result<LatencyReport> {
            place(Side::Client);
            let mut conn = connect(client_ns, addr)?;
            conn.set_nodelay(true)?;
            let mut h = new_histogram()?;
            let req = vec![0x42u8; payload];
            let mut resp = vec![0u8; payload];
            for _ in 0..count {
                if Instant::now() > end {
                    break;
                }
                let t = Instant::now();
                conn.write_all(&req)?;
                conn.read_exact(&mut resp)?;
                let _ = h.record(t.elapsed().as_nanos().max(1) as u64);
            }
            conn.shutdown(Shutdown::Both)?;
            Ok(LatencyReport::from_histogram(h, 0))
        });
        let result = join(client);
        let e = join(echo);
        let r = result?;
        e?;
        Ok(r)
    })
}

// ---------------------------------------------------------------------------------------
// TCP connection rate

/// Result of [`tcp_connect_rate`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectRateReport {
    /// Connections that completed a one-byte exchange.
    pub completed: u64,
    /// Connections that failed (refused, reset, timed out).
    pub failed: u64,
    /// The client's time.
    pub elapsed: Duration,
}

impl ConnectRateReport {
    /// Completed connections per second.
    pub fn per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Opens new TCP connections one after another for `duration`: connect, one byte each way,
/// close with a reset so no TIME_WAIT piles up. Every server listens on `port` (0: any, for a
/// single server); the client connects to `to`, by default the first server's address (a
/// service address in front of several servers spreads the connections). Stops after `max`.
pub fn tcp_connect_rate(
    servers: &[Endpoint],
    port: u16,
    to: Option<SocketAddrV4>,
    client_ns: &NetNs,
    duration: Duration,
    max: u64,
) -> io::Result<ConnectRateReport> {
    refuse_root(client_ns)?;
    let mut listeners = Vec::with_capacity(servers.len());
    for server in servers {
        let (l, a) = listen_at(*server, port)?;
        socket2::SockRef::from(&l).set_read_timeout(Some(Duration::from_millis(50)))?;
        listeners.push((l, a));
    }
    let first = listeners.first().map(|(_, a)| *a).ok_or_else(|| io::Error::other("no server"))?;
    let to = to.map_or(first, SocketAddr::V4);
    let stop = AtomicBool::new(false);
    let end = Instant::now() + duration;
    std::thread::scope(|s| {
        let (stop, end) = (&stop, end);
        let acceptors: Vec<_> = listeners
            .iter()
            .map(|(listener, _)| {
                s.spawn(move || -> io::Result<()> {
                    place(Side::Server);
                    let mut b = [0u8; 1];
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end + IO_TIMEOUT {
                        match listener.accept() {
                            Ok((mut c, _)) => {
                                c.set_read_timeout(Some(IO_TIMEOUT))?;
                                if c.read_exact(&mut b).is_ok() {
                                    let _ = c.write_all(&b);
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock
                                        | io::ErrorKind::TimedOut
                                        | io::ErrorKind::Interrupted
                                        | io::ErrorKind::ConnectionAborted
                                ) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let client = s.spawn(move || -> io::Result<ConnectRateReport> {
            client_ns.enter()?;
            place(Side::Client);
            let start = Instant::now();
            let (mut completed, mut failed) = (0u64, 0u64);
            let mut b = [0u8; 1];
            while Instant::now() < end && completed + failed < max {
                let ok = (|| -> io::Result<()> {
                    let mut c = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
                    c.set_read_timeout(Some(IO_TIMEOUT))?;
                    c.write_all(&[0x42])?;
                    c.read_exact(&mut b)?;
                    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO))?;
                    Ok(())
                })();
                match ok {
                    Ok(()) => completed += 1,
                    Err(_) => failed += 1,
                }
            }
            Ok(ConnectRateReport { completed, failed, elapsed: start.elapsed() })
        });
        let r = join(client);
        stop.store(true, Ordering::Relaxed);
        let accepted: Vec<_> = acceptors.into_iter().map(join).collect();
        let r = r?;
        accepted.into_iter().collect::<io::Result<Vec<()>>>()?;
        Ok(r)
    })
}

// ---------------------------------------------------------------------------------------
// UDP flood

/// Result of [`udp_flood`].
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    /// Datagrams the sender handed to its kernel.
    pub sent: u64,
    /// Distinct datagrams the receiver got.
    pub received: u64,
    /// The sending time.
    pub elapsed: Duration,
}

impl FloodReport {
    /// Datagrams offered per second.
    pub fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Datagrams delivered per second (over the sending time).
    pub fn delivered_pps(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Fraction of sent datagrams that did not arrive.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (1.0 - self.received as f64 / self.sent as f64).max(0.0)
        }
    }
}

/// Payload that makes a 60-byte Ethernet frame without FCS (64 bytes on the wire with it):
/// 14 Ethernet + 20 IPv4 + 8 UDP + 18.
pub const PAYLOAD_FOR_64_BYTE_FRAMES: usize = 18;

/// How long the receiver waits for stragglers after the sender stops.
const FLOOD_DRAIN: Duration = Duration::from_millis(300);

/// One sender thread sends `payload`-byte datagrams (each with a sequence number) as fast as
/// it can for `duration`; the receiver counts distinct sequence numbers and drains until
/// nothing new has arrived for 300 ms.
pub fn udp_flood(
    receiver: Endpoint,
    sender_ns: &NetNs,
    payload: usize,
    duration: Duration,
) -> io::Result<FloodReport> {
    refuse_root(receiver.ns)?;
    refuse_root(sender_ns)?;
    let payload = payload.clamp(8, 1400);
    let rx = receiver.ns.run(|| -> io::Result<UdpSocket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        s.set_recv_buffer_size(8 << 20)?;
        s.bind(&SocketAddr::V4(SocketAddrV4::new(receiver.addr, 0)).into())?;
        Ok(s.into())
    })??;
    rx.set_read_timeout(Some(Duration::from_millis(50)))?;
    let to = rx.local_addr()?;
    let tx = sender_ns.run(|| UdpSocket::bind("0.0.0.0:0"))??;
    tx.connect(to)?;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let counter = s.spawn(|| -> io::Result<u64> {
            place(Side::Server);
            let mut seen: Vec<u64> = Vec::with_capacity(1 << 16);
            let mut distinct = 0u64;
            let mut buf = [0u8; 2048];
            let mut last_new = Instant::now();
            let hard_end = Instant::now() + duration + Duration::from_secs(5);
            loop {
                let now = Instant::now();
                if now > hard_end
                    || (done.load(Ordering::Relaxed) && now.duration_since(last_new) > FLOOD_DRAIN)
                {
                    return Ok(distinct);
                }
                match rx.recv(&mut buf) {
                    Ok(n) if n >= 8 => {
                        let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                        let (word, bit) = ((seq / 64) as usize, seq % 64);
                        if word >= seen.len() {
                            if word > 1 << 26 {
                                continue; // not ours
                            }
                            seen.resize(word + 1, 0);
                        }
                        if seen[word] & (1 << bit) == 0 {
                            seen[word] |= 1 << bit;
                            distinct += 1;
                            last_new = Instant::now();
                        }
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
        });
        let sender = s.spawn(|| -> io::Result<(u64, Duration)> {
            place(Side::Client);
            let mut buf = vec![0u8; payload];
            let start = Instant::now();
            let end = start + duration;
            let mut sent = 0u64;
            while Instant::now() < end {
                for _ in 0..64 {
                    buf[..8].copy_from_slice(&sent.to_be_bytes());
                    match tx.send(&buf) {
                        Ok(_) => sent += 1,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                            ) => {}
                        Err(e)
                            if e.raw_os_error() == Some(libc::ENOBUFS)
                                || e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok((sent, start.elapsed()))
        });
        let sending = join(sender);
        done.store(true, Ordering::Relaxed);
        let received = join(counter);
        let (sent, elapsed) = sending?;
        Ok(FloodReport { sent, received: received?, elapsed })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topology::{netns_with_lo, unique_name};

    fn lo_ns() -> Option<crate::sys::netns::NamedNetNs> {
        if !crate::sys::process::is_root() {
            eprintln!("skipped: needs root");
            return None;
        }
        Some(netns_with_lo(&unique_name("pswtt")).unwrap())
    }

    const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

    #[test]
    fn pattern_stream_is_deterministic_and_chunking_independent() {
        let mut a = PatternStream::new(7);
        let mut whole = vec![0u8; 1000];
        a.fill(&mut whole);
        let mut b = PatternStream::new(7);
        let mut pieces = Vec::new();
        for n in [1, 7, 8, 9, 100, 3, 872] {
            let mut p = vec![0u8; n];
            b.fill(&mut p);
            pieces.extend(p);
        }
        assert_eq!(pieces, whole);
        let mut c = PatternStream::new(8);
        let mut other = vec![0u8; 1000];
        c.fill(&mut other);
        assert_ne!(other, whole);
    }

    #[test]
    fn ping_loopback_and_nobody() {
        let Some(ns) = lo_ns() else { return };
        let r = ping(&ns, LO, 3, Duration::from_millis(20), Duration::from_secs(2)).unwrap();
        assert!(r.all_received(), "{r:?}");
        assert_eq!(r.rtts.len(), 3);
        let t = Instant::now();
        let r = ping(
            &ns,
            Ipv4Addr::new(10, 0, 0, 1),
            2,
            Duration::from_millis(20),
            Duration::from_millis(300),
        );
        // No route: either an error at send or no replies, and quickly.
        if let Ok(r) = r {
            assert_eq!(r.received, 0);
        }
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn tcp_tools_over_loopback() {
        let Some(ns) = lo_ns() else { return };
        let ep = Endpoint { ns: &ns, addr: LO };
        let r = tcp_transfer_verified(ep, &ns, 8 << 20, Duration::from_secs(30)).unwrap();
        assert_eq!(r.bytes, 8 << 20);
        assert!(r.gbit_per_sec() > 0.0);
        for streams in [1, 2] {
            let t = tcp_throughput(ep, &ns, streams, Duration::from_millis(500)).unwrap();
            assert!(t.bytes > 0 && t.gbit_per_sec() > 0.0, "{t:?}");
        }
        let c = tcp_connect_rate(&[ep], 0, None, &ns, Duration::from_millis(300), 200).unwrap();
        assert!(c.completed > 0 && c.completed + c.failed <= 200, "{c:?}");
        let l = tcp_rr(ep, &ns, 64, 200, Duration::from_secs(10)).unwrap();
        assert_eq!(l.samples, 200);
        assert!(l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.max);
    }

    #[test]
    fn udp_tools_over_loopback() {
        let Some(ns) = lo_ns() else { return };
        let ep = Endpoint { ns: &ns, addr: LO };
        let l = udp_rr(ep, &ns, 64, 300, Duration::from_secs(10)).unwrap();
        assert_eq!(l.samples + l.lost, 300);
        assert!(
            l.min <= l.p50
                && l.p50 <= l.p90
                && l.p90 <= l.p99
                && l.p99 <= l.p999
                && l.p999 <= l.max
        );
        let cdf = l.cdf(5);
        assert_eq!(cdf.len(), 5);
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0));
        let f = udp_flood(ep, &ns, PAYLOAD_FOR_64_BYTE_FRAMES, Duration::from_millis(300)).unwrap();
        assert!(f.received > 0 && f.received <= f.sent, "{f:?}");
        assert!((0.0..=1.0).contains(&f.loss()));
    }

    #[test]
    fn every_tool_refuses_the_root_namespace() {
        if !crate::sys::process::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let root = NetNs::open("/proc/self/ns/net").unwrap();
        let ep = Endpoint { ns: &root, addr: LO };
        let d = Duration::from_millis(10);
        let denied =
            |r: io::Result<()>| assert_eq!(r.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        denied(ping(&root, LO, 1, d, d).map(|_| ()));
        denied(tcp_transfer_verified(ep, &root, 1, d).map(|_| ()));
        denied(tcp_throughput(ep, &root, 1, d).map(|_| ()));
        denied(udp_rr(ep, &root, 64, 1, d).map(|_| ()));
        denied(tcp_rr(ep, &root, 64, 1, d).map(|_| ()));
        denied(udp_flood(ep, &root, 18, d).map(|_| ()));
        denied(tcp_connect_rate(&[ep], 0, None, &root, d, 1).map(|_| ()));
    }
}
