//! The netlink wire format as podswitch speaks it: the kernel ABI constants, the fixed
//! headers of link, address and route messages, and [`Request`], the builder every request
//! is written with. Pure functions on byte buffers, no socket: what they write is checked
//! against the parsers of [`super::parse`] (including by proptest) without a kernel.

// --- Kernel ABI --------------------------------------------------------------------------
// Messages are encoded and decoded by hand, field by field in native byte order, rather than
// through `repr(C)` structs: no unsafe, and every read is bounds-checked.

/// `struct nlmsghdr` (`<linux/netlink.h>`): len u32, type u16, flags u16, seq u32, pid u32.
pub(super) const NLMSG_HDRLEN: usize = std::mem::size_of::<libc::nlmsghdr>();
/// `struct ifinfomsg` (`<linux/rtnetlink.h>`): family u8, pad u8, type u16, index i32,
/// flags u32, change u32.
pub(super) const IFINFOMSG_LEN: usize = std::mem::size_of::<libc::ifinfomsg>();
/// `struct ifaddrmsg` (`<linux/if_addr.h>`): family, prefixlen, flags, scope (u8), index u32.
pub(super) const IFADDRMSG_LEN: usize = std::mem::size_of::<libc::ifaddrmsg>();
/// `struct rtmsg` (`<linux/rtnetlink.h>`, not in libc): family, dst_len, src_len, tos, table,
/// protocol, scope, type (all u8), then flags u32.
pub(super) const RTMSG_LEN: usize = 12;
/// `struct rtattr` / `struct nlattr` header: len u16, type u16.
pub(super) const RTA_HDRLEN: usize = 4;

/// `VETH_INFO_PEER` from `<linux/veth.h>` (not in libc): the peer's `ifinfomsg` and
/// attributes, nested in `IFLA_INFO_DATA` of a veth.
pub(super) const VETH_INFO_PEER: u16 = 1;
/// `IFLA_NUM_TX_QUEUES` and `IFLA_NUM_RX_QUEUES` (`<linux/if_link.h>`; in libc for Android
/// only): a new link's queue counts.
pub(super) const IFLA_NUM_TX_QUEUES: u16 = 31;
pub(super) const IFLA_NUM_RX_QUEUES: u16 = 32;
/// `IFLA_STATS64` (`<linux/if_link.h>`).
pub(super) const IFLA_STATS64: u16 = 23;
/// `IFLA_XDP` and, nested in it, `IFLA_XDP_PROG_ID` (`<linux/if_link.h>`).
pub(super) const IFLA_XDP: u16 = 43;
pub(super) const IFLA_XDP_PROG_ID: u16 = 4;
/// `NLMSGERR_ATTR_MSG` from `<linux/netlink.h>` (not in libc): the extended ACK's text.
pub(super) const NLMSGERR_ATTR_MSG: u16 = 1;

pub(super) const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
pub(super) const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
pub(super) const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
pub(super) const NLM_F_DUMP_INTR: u16 = libc::NLM_F_DUMP_INTR as u16;
pub(super) const NLM_F_CREATE: u16 = libc::NLM_F_CREATE as u16;
pub(super) const NLM_F_EXCL: u16 = libc::NLM_F_EXCL as u16;
pub(super) const NLM_F_CAPPED: u16 = libc::NLM_F_CAPPED as u16;
pub(super) const NLM_F_ACK_TLVS: u16 = libc::NLM_F_ACK_TLVS as u16;
pub(super) const NLMSG_NOOP: u16 = libc::NLMSG_NOOP as u16;
pub(super) const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
pub(super) const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
pub(super) const NLMSG_OVERRUN: u16 = libc::NLMSG_OVERRUN as u16;
pub(super) const NLA_TYPE_MASK: u16 = libc::NLA_TYPE_MASK as u16;
pub(super) const AF_INET: u8 = libc::AF_INET as u8;

// --- Requests ----------------------------------------------------------------------------

/// A request under construction: header, fixed part, attributes. The header's length,
/// sequence number and final flags are filled in by [`Request::finish`].
#[derive(Debug, Clone)]
pub(super) struct Request {
    buf: Vec<u8>,
}

impl Request {
    pub(super) fn new(ty: u16, flags: u16) -> Request {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence number, set by finish
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: 0, the kernel fills it in
        Request { buf }
    }

    /// Appends raw bytes (a fixed header) padded to 4 bytes.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    pub(super) fn attr(&mut self, ty: u16, payload: &[u8]) {
        // Our attributes are a few bytes each, far from the 64 KiB an rtattr can describe.
        self.buf.extend_from_slice(&((RTA_HDRLEN + payload.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.push(payload);
    }

    pub(super) fn attr_u32(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_ne_bytes());
    }

    /// A NUL-terminated string attribute.
    pub(super) fn attr_str(&mut self, ty: u16, s: &str) {
        let mut bytes = Vec::with_capacity(s.len() + 1);
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        self.attr(ty, &bytes);
    }

    /// Starts a nested attribute; returns its offset for [`Request::end_nested`].
    pub(super) fn begin_nested(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        start
    }

    pub(super) fn end_nested(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// The finished message, with `extra_flags` added to the header's.
    pub(super) fn finish(&self, seq: u32, extra_flags: u16) -> Vec<u8> {
        let mut msg = self.buf.clone();
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        let flags = u16_at(&msg, 6).unwrap_or(0) | extra_flags;
        msg[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        msg
    }
}

pub(super) fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut m = [0u8; IFINFOMSG_LEN];
    // family AF_UNSPEC, padding and device type stay 0.
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

pub(super) fn ifaddrmsg(index: u32, prefix_len: u8, scope: u8) -> [u8; IFADDRMSG_LEN] {
    let mut m = [0u8; IFADDRMSG_LEN];
    m[0] = AF_INET;
    m[1] = prefix_len;
    m[3] = scope;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m
}

pub(super) fn rtmsg(dst_len: u8, protocol: u8, scope: u8, rtype: u8) -> [u8; RTMSG_LEN] {
    let mut m = [0u8; RTMSG_LEN];
    m[0] = AF_INET;
    m[1] = dst_len;
    m[4] = libc::RT_TABLE_MAIN;
    m[5] = protocol;
    m[6] = scope;
    m[7] = rtype;
    m
}

// --- Reading fields ----------------------------------------------------------------------

pub(super) fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    data.get(offset..offset.checked_add(2)?)?.try_into().ok().map(u16::from_ne_bytes)
}

pub(super) fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    data.get(offset..offset.checked_add(4)?)?.try_into().ok().map(u32::from_ne_bytes)
}

pub(super) fn i32_at(data: &[u8], offset: usize) -> Option<i32> {
    data.get(offset..offset.checked_add(4)?)?.try_into().ok().map(i32::from_ne_bytes)
}

/// `NLMSG_ALIGN` / `NLA_ALIGN`: rounds up to a multiple of 4, saturating.
pub(super) fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::parse::{Attrs, Messages};

    #[test]
    fn requests_are_encoded_with_lengths_and_padding() {
        let mut req = Request::new(libc::RTM_NEWLINK, NLM_F_CREATE);
        req.push(&ifinfomsg(7, 1, 1));
        req.attr_str(libc::IFLA_IFNAME, "abc"); // 4 + 4 bytes
        let nest = req.begin_nested(libc::IFLA_LINKINFO);
        req.attr_str(libc::IFLA_INFO_KIND, "veth"); // 4 + 5, padded to 12
        req.end_nested(nest);
        let msg = req.finish(99, NLM_F_ACK);
        assert_eq!(msg.len(), 16 + 16 + 8 + 4 + 12);
        assert_eq!(u32_at(&msg, 0), Some(msg.len() as u32));
        assert_eq!(u16_at(&msg, 4), Some(libc::RTM_NEWLINK));
        assert_eq!(u16_at(&msg, 6), Some(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK));
        assert_eq!(u32_at(&msg, 8), Some(99));
        assert_eq!(u32_at(&msg, 20), Some(7));
        let attrs: Vec<_> = Attrs(&msg[32..]).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (libc::IFLA_IFNAME, &b"abc\0"[..]));
        assert_eq!(attrs[1].0, libc::IFLA_LINKINFO);
        assert_eq!(attrs[1].1.len(), 12);
        assert_eq!(Attrs(attrs[1].1).next(), Some((libc::IFLA_INFO_KIND, &b"veth\0"[..])));
    }

    /// An attribute the builder writes: plain bytes, a u32, or a string.
    #[derive(Debug, Clone)]
    enum Value {
        Bytes(Vec<u8>),
        U32(u32),
        Str(String),
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
            any::<u32>().prop_map(Value::U32),
            "[^\u{0}]{0,20}".prop_map(Value::Str),
        ]
    }

    fn write(req: &mut Request, ty: u16, value: &Value) {
        match value {
            Value::Bytes(b) => req.attr(ty, b),
            Value::U32(v) => req.attr_u32(ty, *v),
            Value::Str(s) => req.attr_str(ty, s),
        }
    }

    /// The payload `write` gives an attribute, as the parsers should read it back.
    fn payload(value: &Value) -> Vec<u8> {
        match value {
            Value::Bytes(b) => b.clone(),
            Value::U32(v) => v.to_ne_bytes().to_vec(),
            Value::Str(s) => [s.as_bytes(), &[0]].concat(),
        }
    }

    proptest::proptest! {
        /// Whatever a request is built from (header fields, a fixed part, attributes, a
        /// nest of attributes), the parsers read back one message with the same header and
        /// fixed part, and the same attributes in the same order.
        #[test]
        fn what_the_builder_writes_parses_back(
            ty in proptest::num::u16::ANY,
            flags in proptest::num::u16::ANY,
            extra_flags in proptest::num::u16::ANY,
            seq in proptest::num::u32::ANY,
            fixed in proptest::collection::vec(proptest::num::u8::ANY, 0..24),
            attrs in proptest::collection::vec((0..=NLA_TYPE_MASK, value()), 0..8),
            nest_ty in 0..=NLA_TYPE_MASK,
            nested in proptest::collection::vec((0..=NLA_TYPE_MASK, value()), 0..8),
        ) {
            let mut req = Request::new(ty, flags);
            req.push(&fixed);
            for (t, v) in &attrs {
                write(&mut req, *t, v);
            }
            let nest = req.begin_nested(nest_ty);
            for (t, v) in &nested {
                write(&mut req, *t, v);
            }
            req.end_nested(nest);
            let msg = req.finish(seq, extra_flags);

            let msgs = Messages(&msg).collect::<Result<Vec<_>, _>>();
            proptest::prop_assert!(msgs.is_ok(), "{msgs:?}");
            let msgs = msgs.unwrap();
            proptest::prop_assert_eq!(msgs.len(), 1);
            let m = &msgs[0];
            proptest::prop_assert_eq!(
                (m.ty, m.flags, m.seq),
                (ty, NLM_F_REQUEST | flags | extra_flags, seq)
            );
            proptest::prop_assert_eq!(m.payload.len(), msg.len() - NLMSG_HDRLEN);
            proptest::prop_assert_eq!(&m.payload[..fixed.len()], &fixed[..]);

            let mut read: Vec<(u16, Vec<u8>)> =
                Attrs(&m.payload[align4(fixed.len())..]).map(|(t, p)| (t, p.to_vec())).collect();
            let (last_ty, last) = read.pop().expect("the nest is the last attribute");
            proptest::prop_assert_eq!(last_ty, nest_ty);
            let want: Vec<_> = attrs.iter().map(|(t, v)| (*t, payload(v))).collect();
            proptest::prop_assert_eq!(read, want);
            let read_nested: Vec<_> = Attrs(&last).map(|(t, p)| (t, p.to_vec())).collect();
            let want_nested: Vec<_> = nested.iter().map(|(t, v)| (*t, payload(v))).collect();
            proptest::prop_assert_eq!(read_nested, want_nested);
        }
    }
}
