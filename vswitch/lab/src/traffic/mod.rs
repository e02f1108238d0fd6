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
//!
//! - [`ping`]: ICMP echo through a raw socket, loss and round trips.
//! - [`tcp`]: the deterministic byte stream, verified transfers, throughput, connection rate.
//! - [`latency`]: request/response round trips over UDP and TCP, with percentiles.
//! - [`flood`]: paced 64-byte UDP floods, offered versus delivered.

mod flood;
mod latency;
mod ping;
mod tcp;
#[cfg(test)]
mod tests;

pub use flood::*;
pub use latency::*;
pub use ping::*;
pub use tcp::*;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use socket2::{Domain, Protocol, Socket, Type};

use podswitch_sys::netns::NetNs;
use vswitch::wire::{IcmpMessage, IcmpPacket, IpProtocol, Ipv4Packet};

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
