//! TCP tools: a deterministic byte pattern, verified transfers, throughput and the rate of
//! new connections.

use super::*;

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
