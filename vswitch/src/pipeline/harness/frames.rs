//! Frame builders for the harness and its seeds, and the checksum check and repair a
//! mutated frame goes through.

use super::*;

/// An IPv4 header (DF set, TTL 64, checksum filled) and `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    let c = checksum::checksum(&v);
    v[10..12].copy_from_slice(&c.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An Ethernet II frame.
pub fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + payload.len());
    v.extend_from_slice(&dst.0);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub(super) fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &[u8]) -> u16 {
    let pseudo = checksum::pseudo_header_v4(&src, &dst, proto.into(), seg.len() as u16);
    checksum::finish(checksum::add(pseudo, checksum::sum(seg)))
}

/// An Ethernet/IPv4/UDP frame with a correct checksum.
pub fn udp_frame(
    smac: MacAddr,
    dmac: MacAddr,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&src.1.to_be_bytes());
    u.extend_from_slice(&dst.1.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = match l4_checksum(src.0, dst.0, 17, &u) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    ethernet(dmac, smac, 0x0800, &ipv4(src.0, dst.0, 17, &u))
}

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// An Ethernet/IPv4/TCP frame (no options) with a correct checksum.
pub fn tcp_frame(
    smac: MacAddr,
    dmac: MacAddr,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&src.1.to_be_bytes());
    t.extend_from_slice(&dst.1.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&(if flags & flags::ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = l4_checksum(src.0, dst.0, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ethernet(dmac, smac, 0x0800, &ipv4(src.0, dst.0, 6, &t))
}

/// An Ethernet/IPv4/ICMP frame: `kind` (type, code), 4 bytes of `rest` (identifier and
/// sequence, or unused/MTU), then `body`.
pub fn icmp_frame(
    smac: MacAddr,
    dmac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: (u8, u8),
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut m = vec![kind.0, kind.1, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ethernet(dmac, smac, 0x0800, &ipv4(src, dst, 1, &m))
}

/// A broadcast ARP request, padded to 60 bytes.
pub fn arp_request(smac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&smac.0);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    let mut f = ethernet(MacAddr::BROADCAST, smac, 0x0806, &a);
    f.resize(60, 0);
    f
}

/// A VXLAN datagram's payload as the overlay port delivers it: the 8-byte header (I flag,
/// `vni`) and the inner frame.
pub fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut d = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
    d.extend_from_slice(inner);
    d
}

/// Where the IPv4 header of `frame` starts: after the Ethernet header and one VLAN tag.
pub(super) fn l3_of(frame: &[u8]) -> Option<usize> {
    match frame.get(12..14)? {
        [0x08, 0x00] => Some(14),
        [0x81, 0x00] | [0x88, 0xa8] if frame.get(16..18)? == [0x08, 0x00] => Some(18),
        _ => None,
    }
}

/// What the checksums of a frame's IPv4 packet say: `(header ok, L4 ok)`, `None` when it is
/// not a (parseable) IPv4 frame. L4 is `false` for fragments and other protocols.
pub(super) fn checksums(frame: &[u8]) -> Option<(bool, bool)> {
    let l3 = l3_of(frame)?;
    let ip = frame.get(l3..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total < ihl || total > ip.len() {
        return None;
    }
    let hdr_ok = checksum::checksum(&ip[..ihl]) == 0;
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    let seg = &ip[ihl..total];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4_ok = !frag
        && match ip[9] {
            1 => seg.len() >= 8 && checksum::checksum(seg) == 0,
            6 => seg.len() >= 20 && l4_checksum(src, dst, 6, seg) == 0,
            17 => {
                seg.len() >= 8
                    && usize::from(u16::from_be_bytes([seg[4], seg[5]])) == seg.len()
                    && (seg[6..8] == [0, 0] || l4_checksum(src, dst, 17, seg) == 0)
            }
            _ => false,
        };
    Some((hdr_ok, l4_ok))
}

/// Repairs what a mutation broke, as `fix` asks: bit 0 the IPv4 total length (to the
/// frame's), bit 1 the IPv4 header checksum, bit 2 the UDP length and the L4 checksum. `at`
/// is where the Ethernet frame starts (8 for a VXLAN datagram).
pub(super) fn repair(frame: &mut [u8], at: usize, fix: u8) {
    let Some(inner) = frame.get_mut(at..) else { return };
    let Some(l3) = l3_of(inner) else { return };
    let Some(ip) = inner.get_mut(l3..) else { return };
    if ip.len() < 20 {
        return;
    }
    let ihl = (usize::from(ip[0] & 0x0f) * 4).clamp(20, ip.len());
    if fix & 1 != 0 {
        let total = ip.len().min(usize::from(u16::MAX)) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).clamp(ihl, ip.len());
    if fix & 4 != 0 {
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let proto = ip[9];
        let seg = &mut ip[ihl..total];
        match proto {
            1 if seg.len() >= 4 => {
                seg[2..4].copy_from_slice(&[0, 0]);
                let c = checksum::checksum(seg);
                seg[2..4].copy_from_slice(&c.to_be_bytes());
            }
            6 if seg.len() >= 20 => {
                seg[16..18].copy_from_slice(&[0, 0]);
                let c = l4_checksum(src, dst, 6, seg);
                seg[16..18].copy_from_slice(&c.to_be_bytes());
            }
            17 if seg.len() >= 8 => {
                let len = seg.len() as u16;
                seg[4..6].copy_from_slice(&len.to_be_bytes());
                seg[6..8].copy_from_slice(&[0, 0]);
                let c = match l4_checksum(src, dst, 17, seg) {
                    0 => 0xffff,
                    c => c,
                };
                seg[6..8].copy_from_slice(&c.to_be_bytes());
            }
            _ => {}
        }
    }
    if fix & 2 != 0 {
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&ip[..ihl]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
}
