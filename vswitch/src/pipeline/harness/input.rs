//! The input: how a byte string decodes into [`Step`]s (and back, for generated cases).

use super::*;

/// Reads an input byte by byte; past the end every read is zero (and [`Reader::is_empty`]).
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next `n` bytes, or as many as are left.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (b, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        b
    }
}

/// The `ctl` byte of a frame step: where and how the frame arrives.
///
/// - bits 0–3: the port. For a raw frame, the value modulo [`PORTS`]; for a template, 0–8
///   keep the template's own port and 9–15 mean port `v - 9`.
/// - bit 4: the worker whose queue it arrives on (the NIC's choice).
/// - bit 5: end the burst after this frame (run both workers' pending bursts).
/// - bits 6–7: offload metadata on TAP ports (host, pods): 0 none, 1 a partial L4 checksum
///   at the frame's own TCP/UDP checksum field, 2 a TCPv4 GSO super-frame of `gso_size`
///   (two more bytes), 3 an arbitrary virtio-net header (ten more bytes).
pub type Ctl = u8;

/// Byte values that mean something in a header (IPv4 version and header lengths, protocol
/// numbers, ICMP types, TCP flags, extremes): a [`Step::Template`] write can pick one by index,
/// as AFL's "interesting values" do, so a random input byte lands on one often.
pub const INTERESTING: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x0b, 0x0c, 0x10, 0x11, 0x12, 0x14, 0x18, 0x20,
    0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x4f, 0x50, 0x60, 0x7f, 0x80, 0xc0, 0xf0, 0xfe, 0xff,
];

/// What the offset of a [`Step::Template`] write counts from (its top two bits): 0 the
/// frame's start, 1 the (inner) IPv4 header, 2 the L4 header, 3 eight bytes into L4 (an
/// ICMP error's quoted packet, a UDP payload).
#[derive(Debug, Clone, Copy)]
pub struct Anchor;

impl Anchor {
    /// The four anchors of `frame`, whose Ethernet header starts at `at`.
    pub(super) fn of(frame: &[u8], at: usize) -> [usize; 4] {
        let l3 = at + frame.get(at..).and_then(l3_of).unwrap_or(14);
        let l4 = l3 + frame.get(l3).map_or(20, |b| usize::from(b & 0x0f) * 4);
        [0, l3, l4, l4 + 8]
    }
}

/// One step of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A frame as given.
    Raw {
        /// See [`Ctl`].
        ctl: Ctl,
        /// Offload bytes (`gso_size` or a whole header) when `ctl` asks for them.
        vnet: Vec<u8>,
        /// The frame (for the overlay port: VXLAN header and inner frame).
        frame: Vec<u8>,
    },
    /// A template frame, mutated.
    Template {
        /// See [`Ctl`].
        ctl: Ctl,
        /// Offload bytes when `ctl` asks for them.
        vnet: Vec<u8>,
        /// Which template (modulo their number).
        template: u8,
        /// Bytes overwritten: (where, value). The top two bits of `where` choose what the
        /// low thirteen count from (see [`Anchor`]; past the end they wrap); with bit 13 set
        /// the value is an index into [`INTERESTING`] rather than the byte itself.
        writes: Vec<(u16, u8)>,
        /// Bytes appended before anything else, in units of 64 (a pattern).
        extend: u8,
        /// 0: no cut; with the top bit set, cut the low six bits' worth of bytes (0–63) off
        /// the end; else cut to that length when shorter than the frame.
        truncate: u16,
        /// Repairs after the mutation (see [`repair`]): bit 0 IPv4 total length, bit 1
        /// IPv4 checksum, bit 2 UDP length and L4 checksum.
        fix: u8,
    },
    /// Time passes; with `housekeeping` the workers age their MAC tables and sweep
    /// conntrack, as between bursts.
    Advance {
        /// Seconds (×60 when the top bit is set).
        secs: u16,
        /// Run the housekeeping.
        housekeeping: bool,
    },
    /// A control-plane change, applied to both workers between bursts.
    Control {
        /// Which change (modulo 8): set endpoints, remove a Service, restore the Services,
        /// flush conntrack, flush the MAC table, remove a port, restore ports, remove or
        /// restore peers.
        op: u8,
        /// Its argument.
        arg: u8,
    },
}

pub(super) const STEP_KINDS: u8 = 9;

pub(super) fn vnet_len(ctl: Ctl) -> usize {
    match ctl >> 6 {
        2 => 2,
        3 => VnetHdr::LEN,
        _ => 0,
    }
}

impl Step {
    /// Reads one step; `None` at the end of the input.
    pub fn decode(r: &mut Reader<'_>) -> Option<Step> {
        if r.is_empty() {
            return None;
        }
        let kind = r.u8() % STEP_KINDS;
        Some(match kind {
            0..=2 => {
                let ctl = r.u8();
                let vnet = r.bytes(vnet_len(ctl)).to_vec();
                let len = usize::from(r.u16());
                Step::Raw { ctl, vnet, frame: r.bytes(len).to_vec() }
            }
            3..=6 => {
                let ctl = r.u8();
                let vnet = r.bytes(vnet_len(ctl)).to_vec();
                let template = r.u8();
                let n = usize::from(r.u8() % 9);
                let writes = (0..n).map(|_| (r.u16(), r.u8())).collect();
                Step::Template {
                    ctl,
                    vnet,
                    template,
                    writes,
                    extend: r.u8(),
                    truncate: r.u16(),
                    fix: r.u8(),
                }
            }
            7 => Step::Advance { secs: r.u16(), housekeeping: r.u8() & 1 != 0 },
            _ => Step::Control { op: r.u8(), arg: r.u8() },
        })
    }

    /// Appends the step's encoding: [`Step::decode`] reads it back.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let vnet = |out: &mut Vec<u8>, ctl: Ctl, v: &[u8]| {
            let mut v = v.to_vec();
            v.resize(vnet_len(ctl), 0);
            out.extend_from_slice(&v);
        };
        match self {
            Step::Raw { ctl, vnet: v, frame } => {
                out.extend_from_slice(&[0, *ctl]);
                vnet(out, *ctl, v);
                let len = frame.len().min(usize::from(u16::MAX));
                out.extend_from_slice(&(len as u16).to_le_bytes());
                out.extend_from_slice(&frame[..len]);
            }
            Step::Template { ctl, vnet: v, template, writes, extend, truncate, fix } => {
                out.extend_from_slice(&[3, *ctl]);
                vnet(out, *ctl, v);
                out.push(*template);
                let writes = &writes[..writes.len().min(8)];
                out.push(writes.len() as u8);
                for (at, b) in writes {
                    out.extend_from_slice(&at.to_le_bytes());
                    out.push(*b);
                }
                out.push(*extend);
                out.extend_from_slice(&truncate.to_le_bytes());
                out.push(*fix);
            }
            Step::Advance { secs, housekeeping } => {
                out.push(7);
                out.extend_from_slice(&secs.to_le_bytes());
                out.push(u8::from(*housekeeping));
            }
            Step::Control { op, arg } => out.extend_from_slice(&[8, *op, *arg]),
        }
    }
}

/// Every step of `input`.
pub fn decode(input: &[u8]) -> Vec<Step> {
    let mut r = Reader::new(input);
    std::iter::from_fn(|| Step::decode(&mut r)).collect()
}

/// The input that decodes to `steps`.
pub fn encode(steps: &[Step]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in steps {
        s.encode(&mut out);
    }
    out
}
