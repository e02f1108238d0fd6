//! `ping`: ICMP echo requests from a raw socket in the client's namespace.

use super::*;

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
