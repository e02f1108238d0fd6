//! The NodePort filter: the XDP program on the interface carrying the node's address that
//! hands the switch exactly the packets of NodePort Services and leaves everything else
//! (SSH, the kubelet, the overlay's own VXLAN datagrams, ARP) to the kernel untouched.
//!
//! A packet is redirected to the NodePort AF_XDP socket when it is IPv4 without options, not
//! a fragment, addressed to the node's address, and TCP or UDP to a (protocol, port) in the
//! filter's port map; every other packet gets `XDP_PASS`. The map is the switch's list of
//! node ports, updated as Services come and go, so a port nobody serves reaches the kernel
//! (which answers with a reset or port unreachable, as it would without the switch).
//!
//! Limits: packets with IP options or fragmented ones pass to the kernel, which has no
//! listener and refuses them; at most [`MAX_NODE_PORTS`] (protocol, port) pairs.
//!
//! ```text
//! r6 = ctx
//! r2 = ctx->data ; r3 = ctx->data_end
//! if r2 + 38 > r3            -> pass      (Ethernet 14 + IPv4 20 + ports 4)
//! if ethertype != IPv4       -> pass
//! if version/IHL != 0x45     -> pass      (no options)
//! if MF or fragment offset   -> pass
//! if daddr != node address   -> pass
//! if proto != 6 and != 17    -> pass
//! key = proto << 16 | dport (as loaded, byte-swapped on little-endian)
//! if !ports[key]             -> pass
//! return bpf_redirect_map(xsks, ctx->rx_queue_index, XDP_PASS)
//! pass: return XDP_PASS
//! ```

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use crate::sys::bpf::{helper, op, reg, BpfMap, Insn, MapKind, XDP_MD_RX_QUEUE_INDEX, XDP_PASS};
use crate::wire::IpProtocol;

/// Most (protocol, port) pairs the filter holds.
pub const MAX_NODE_PORTS: u32 = 8192;

/// The filter's port map: which (protocol, port) pairs go to the switch.
#[derive(Debug)]
pub struct NodePortMap {
    map: BpfMap,
}

impl NodePortMap {
    /// An empty map.
    pub fn create() -> io::Result<NodePortMap> {
        Ok(NodePortMap {
            map: BpfMap::create(MapKind::Hash, "psw_nodeports", 4, 4, MAX_NODE_PORTS)?,
        })
    }

    /// Starts handing `proto`/`port` packets to the switch.
    pub fn insert(&self, proto: IpProtocol, port: u16) -> io::Result<()> {
        self.map.update(&key(proto, port), &1u32.to_ne_bytes())
    }

    /// Leaves `proto`/`port` packets to the kernel again (absent is fine).
    pub fn remove(&self, proto: IpProtocol, port: u16) -> io::Result<()> {
        match self.map.delete(&key(proto, port)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Whether `proto`/`port` is in the map.
    pub fn contains(&self, proto: IpProtocol, port: u16) -> io::Result<bool> {
        let mut v = [0u8; 4];
        self.map.lookup(&key(proto, port), &mut v)
    }

    /// The map's fd, for the program.
    pub fn fd(&self) -> RawFd {
        self.map.fd()
    }
}

/// The map key as the program builds it: the protocol number above the port as a 16-bit
/// load from the packet sees it (network byte order read in host order).
fn key(proto: IpProtocol, port: u16) -> [u8; 4] {
    let p = u32::from(u8::from(proto));
    let as_loaded = u16::from_ne_bytes(port.to_be_bytes());
    ((p << 16) | u32::from(as_loaded)).to_ne_bytes()
}

/// A jump to the `pass` label, patched once the program's length is known.
const PASS: i16 = i16::MIN;

/// The program: see the module doc. `ports` is the port map's fd, `xsks` the XSKMAP's.
pub fn program(node_ip: Ipv4Addr, ports: RawFd, xsks: RawFd) -> Vec<Insn> {
    use op::*;
    use reg::*;
    let jmp32_ne = |dst: u8, imm: i32| Insn {
        code: BPF_JMP32 | BPF_JNE | BPF_K,
        regs: dst & 0x0f,
        off: PASS,
        imm,
    };
    let [ports_lo, ports_hi] = Insn::ld_map_fd(R1, ports);
    let [xsks_lo, xsks_hi] = Insn::ld_map_fd(R1, xsks);
    // The address as a 32-bit load from the packet sees it.
    let ip_as_loaded = u32::from_ne_bytes(node_ip.octets()) as i32;
    let ipv4_as_loaded = i32::from(u16::from_ne_bytes(0x0800u16.to_be_bytes()));
    // MF flag and fragment offset (bytes 20-21 of the frame), as a 16-bit load sees them.
    let frag_mask = i32::from(u16::from_ne_bytes(0x3fffu16.to_be_bytes()));
    let mut p = vec![
        Insn::mov64_reg(R6, R1),
        Insn::ldx(BPF_W, R2, R6, 0),
        Insn::ldx(BPF_W, R3, R6, 4),
        Insn::mov64_reg(R4, R2),
        Insn::alu64_imm(BPF_ADD, R4, 38),
        Insn::jmp_reg(BPF_JGT, R4, R3, PASS),
        Insn::ldx(BPF_H, R5, R2, 12),
        jmp32_ne(R5, ipv4_as_loaded),
        Insn::ldx(BPF_B, R5, R2, 14),
        jmp32_ne(R5, 0x45),
        Insn::ldx(BPF_H, R5, R2, 20),
        Insn::alu64_imm(BPF_AND, R5, frag_mask),
        jmp32_ne(R5, 0),
        Insn::ldx(BPF_W, R5, R2, 30),
        jmp32_ne(R5, ip_as_loaded),
        Insn::ldx(BPF_B, R5, R2, 23),
        Insn::jmp_imm(BPF_JEQ, R5, 6, 1),
        jmp32_ne(R5, 17),
        Insn::ldx(BPF_H, R4, R2, 36),
        Insn::alu64_imm(BPF_LSH, R5, 16),
        Insn::alu64_reg(BPF_OR, R4, R5),
        Insn::stx(BPF_W, R10, R4, -4),
        Insn::mov64_reg(R2, R10),
        Insn::alu64_imm(BPF_ADD, R2, -4),
        ports_lo,
        ports_hi,
        Insn::call(helper::MAP_LOOKUP_ELEM),
        Insn::jmp_imm(BPF_JEQ, R0, 0, PASS),
        Insn::ldx(BPF_W, R2, R6, XDP_MD_RX_QUEUE_INDEX),
        xsks_lo,
        xsks_hi,
        Insn::mov64_imm(R3, XDP_PASS),
        Insn::call(helper::REDIRECT_MAP),
        Insn::exit(),
    ];
    let pass = p.len();
    p.push(Insn::mov64_imm(R0, XDP_PASS));
    p.push(Insn::exit());
    for (i, insn) in p.iter_mut().enumerate() {
        if insn.off == PASS && insn.code & 0x07 != BPF_LDX && insn.code & 0x07 != BPF_STX {
            insn.off = (pass - i - 1) as i16;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::bpf::XdpProgram;

    #[test]
    fn keys_match_what_the_program_loads() {
        // Port 30080 = 0x7580 arrives as bytes 75 80; a little-endian u16 load gives 0x8075.
        let k = u32::from_ne_bytes(key(IpProtocol::Tcp, 30_080));
        if cfg!(target_endian = "little") {
            assert_eq!(k, (6 << 16) | 0x8075);
        }
        assert_ne!(key(IpProtocol::Tcp, 30_080), key(IpProtocol::Udp, 30_080));
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let p = program(Ipv4Addr::new(192, 168, 1, 1), 3, 4);
        for (i, insn) in p.iter().enumerate() {
            let class = insn.code & 0x07;
            let is_jump = (class == op::BPF_JMP || class == op::BPF_JMP32)
                && insn.code & 0xf0 != op::BPF_CALL
                && insn.code & 0xf0 != op::BPF_EXIT;
            if is_jump {
                let to = i as i64 + 1 + i64::from(insn.off);
                assert!((0..p.len() as i64).contains(&to), "insn {i} jumps to {to}");
            }
        }
    }

    /// The kernel's verifier accepts the program (needs root and BPF).
    #[test]
    fn the_verifier_accepts_the_program() {
        if crate::sys::process::is_root() {
            let ports = NodePortMap::create().expect("port map");
            let xsks = BpfMap::create(MapKind::XskMap, "psw_np_xsks", 4, 4, 64).expect("xskmap");
            ports.insert(IpProtocol::Tcp, 30_080).unwrap();
            assert!(ports.contains(IpProtocol::Tcp, 30_080).unwrap());
            assert!(!ports.contains(IpProtocol::Udp, 30_080).unwrap());
            ports.remove(IpProtocol::Tcp, 30_080).unwrap();
            ports.remove(IpProtocol::Tcp, 30_080).unwrap();
            let insns = program(Ipv4Addr::new(192, 168, 1, 1), ports.fd(), xsks.fd());
            XdpProgram::load("psw_nodeport", &insns).expect("verifier accepts the filter");
        }
    }
}
