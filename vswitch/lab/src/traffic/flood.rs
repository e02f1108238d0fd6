//! Paced UDP floods of small frames: what is offered against what arrives.

use super::*;

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
