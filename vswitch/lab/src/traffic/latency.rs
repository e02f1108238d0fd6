//! Request/response round trips (UDP and TCP), recorded in histograms.

use super::*;

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
