//! The queue-steering program of multi-queue TAP devices: the kernel asks it which queue
//! (that is, which worker) gets each frame a pod sends, and it answers with the worker flow
//! steering would pick (`pipeline/steer.rs`), so a Service connection's packets reach the
//! worker that tracks it without being handed over inside the switch.
//!
//! Without it the kernel puts a new flow on a queue by hash, and about half of the first
//! packets of Service connections (one per connection, the SYN) had to cross to their worker,
//! waking it on a CPU a pod thread was using. The program runs on every frame a pod sends
//! (the device's transmit path, before the frame is queued for the switch):
//!
//! ```text
//! not IPv4                      → queue 0
//! dst in the Service CIDR        → key(src, sport)     the client's worker
//! otherwise                      → key(dst, dport)     the destination's worker
//! key(ip, port) = mix(port | 0x10000) when ip is the gateway address, else mix(ip)
//! return (key >> 16) ^ key       the kernel takes it modulo the number of queues
//! ```
//!
//! Replies are steered by destination unconditionally here; the switch only cares when the
//! destination has tracked connections, and then the two agree. Traffic without Services is
//! thereby spread by destination, which puts the two directions of a pod pair on different
//! workers when their keys differ. ICMP errors and fragments are left to the switch.

use std::io;
use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;
use crate::sys::bpf::{op, reg, Insn, SocketFilterProgram};

/// The murmur3 finalizer constants and seed, as `pipeline::steer::key` uses them.
const SEED: u32 = 0x9e37_79b9;
const M1: u32 = 0x85eb_ca6b;
const M2: u32 = 0xc2b2_ae35;

/// The program's instructions for a node with this gateway address and Service CIDR.
pub fn program(gateway: Ipv4Addr, services: Ipv4Cidr) -> Vec<Insn> {
    use op::*;
    use reg::*;
    let gw = u32::from(gateway) as i32;
    let net = u32::from(services.network()) as i32;
    let mask = services.mask() as i32;
    // 32-bit compares: a 64-bit compare would sign-extend addresses from 128.0.0.0 up.
    let jmp32 = |op: u8, dst: u8, imm: i32, off: i16| Insn {
        code: BPF_JMP32 | op | BPF_K,
        regs: dst & 0x0f,
        off,
        imm,
    };
    // Layout (jump offsets count instructions after the jump):
    let mut p = vec![
        Insn::mov64_reg(R6, R1),            // 0: ctx for ld_abs
        Insn::ld_abs(BPF_H, 12),            // 1: ethertype
        jmp32(BPF_JNE, R0, 0x0800, 38),     // 2: → ret0 (41)
        Insn::ld_abs(BPF_W, 30),            // 3: dst
        Insn::mov64_reg(R7, R0),            // 4
        Insn::ld_abs(BPF_W, 26),            // 5: src
        Insn::mov64_reg(R8, R0),            // 6
        Insn::ld_abs(BPF_B, 14),            // 7: version/IHL
        Insn::alu64_imm(BPF_AND, R0, 0x0f), // 8
        Insn::alu64_imm(BPF_LSH, R0, 2),    // 9
        Insn::mov64_reg(R9, R0),            // 10: IP header length
        Insn::mov64_reg(R1, R7),            // 11
        Insn::alu32_imm(BPF_AND, R1, mask), // 12
        jmp32(BPF_JEQ, R1, net, 5),         // 13: frontend → 19
        // Destination's key: port 2 of the L4 header when it is the gateway.
        Insn::mov64_reg(R2, R7),         // 14
        jmp32(BPF_JNE, R7, gw, 8),       // 15: → mix (24)
        Insn::ld_ind(BPF_H, R9, 14 + 2), // 16: dport
        Insn::mov64_reg(R2, R0),         // 17
        Insn::ja(4),                     // 18: → port key (23)
        // Source's key.
        Insn::mov64_reg(R2, R8),               // 19
        jmp32(BPF_JNE, R8, gw, 3),             // 20: → mix (24)
        Insn::ld_ind(BPF_H, R9, 14),           // 21: sport
        Insn::mov64_reg(R2, R0),               // 22
        Insn::alu32_imm(BPF_OR, R2, 0x1_0000), // 23: port key
        // mix(r2) into r0.
        Insn::alu32_imm(BPF_XOR, R2, SEED as i32), // 24
    ];
    // h ^= h >> 16; h *= M1; h ^= h >> 13; h *= M2; h ^= h >> 16; r0 = (h >> 16) ^ h
    let shift_xor = |r: u8, n: i32| {
        [Insn::mov64_reg(R3, r), Insn::alu32_imm(BPF_RSH, R3, n), Insn::alu32_reg(BPF_XOR, r, R3)]
    };
    p.extend(shift_xor(R2, 16));
    p.push(Insn::alu32_imm(BPF_MUL, R2, M1 as i32));
    p.extend(shift_xor(R2, 13));
    p.push(Insn::alu32_imm(BPF_MUL, R2, M2 as i32));
    p.extend(shift_xor(R2, 16));
    p.extend(shift_xor(R2, 16));
    p.push(Insn::mov64_reg(R0, R2));
    p.push(Insn::exit());
    p.push(Insn::mov64_imm(R0, 0)); // 41: ret0
    p.push(Insn::exit());
    debug_assert_eq!(p.len(), 43);
    p
}

/// Loads the program for a node (one load serves every TAP device of the switch).
pub fn load(gateway: Ipv4Addr, services: Ipv4Cidr) -> io::Result<SocketFilterProgram> {
    SocketFilterProgram::load("psw_tap_steer", &program(gateway, services))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::steer::{key, Steering};

    /// A copy of the program's arithmetic in Rust, to check the constants and jumps against
    /// `pipeline::steer` without a kernel.
    fn model(frame: &[u8], gw: Ipv4Addr, services: Ipv4Cidr) -> u32 {
        if frame[12..14] != [8, 0] {
            return 0;
        }
        let ip = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
        let (src, dst) = (ip(26), ip(30));
        let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
        let port = |o: usize| u16::from_be_bytes([frame[o], frame[o + 1]]);
        let k = if services.contains(dst) {
            key(gw, src, port(l4))
        } else {
            key(gw, dst, port(l4 + 2))
        };
        (k >> 16) ^ k
    }

    #[test]
    fn the_kernel_accepts_the_program() {
        if !crate::sys::process::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        load(Ipv4Addr::new(10, 244, 1, 1), "10.96.0.0/12".parse().unwrap())
            .expect("verifier accepts the steering program");
        // A gateway and a Service CIDR above 128.0.0.0 (the 32-bit compares).
        load(Ipv4Addr::new(192, 168, 1, 1), "172.16.0.0/16".parse().unwrap())
            .expect("verifier accepts the steering program");
    }

    #[test]
    fn the_program_computes_what_the_model_does() {
        use crate::pipeline::testutil::*;
        if !crate::sys::process::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let services: Ipv4Cidr = "10.96.0.0/12".parse().unwrap();
        let prog = load(GW_IP, services).unwrap();
        let vip = Ipv4Addr::new(10, 96, 0, 9);
        let mut frames = vec![
            arp_request(MAC_A, IP_A, IP_B),
            udp_frame(MAC_A, GW_MAC, IP_A, vip, 40_000, 80, b"to a VIP"),
            udp_frame(MAC_B, MAC_A, IP_B, GW_IP, 80, 61_000, b"to the gateway"),
            udp_frame(MAC_A, GW_MAC, GW_IP, vip, 45_000, 53, b"from the gateway to a VIP"),
            udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"pod to pod"),
        ];
        for i in 0..32u16 {
            let ip = Ipv4Addr::new(10, 244, 1, 10 + i as u8);
            frames.push(udp_frame(MAC_A, GW_MAC, ip, vip, 30_000 + i, 80, b"c"));
            frames.push(udp_frame(MAC_B, MAC_A, IP_B, ip, 80, 30_000 + i, b"r"));
        }
        for f in &frames {
            // The test run strips a first Ethernet header: give it one in front of ours.
            let mut input = vec![0u8; 12];
            input.extend_from_slice(&[0x08, 0x00]);
            input.extend_from_slice(f);
            assert_eq!(prog.test_run(&input).unwrap(), model(f, GW_IP, services), "{f:02x?}");
        }
    }

    #[test]
    fn the_model_picks_the_worker_flow_steering_picks() {
        use crate::pipeline::testutil::*;
        let gw = GW_IP;
        let services: Ipv4Cidr = "10.96.0.0/12".parse().unwrap();
        let vip = Ipv4Addr::new(10, 96, 0, 9);
        let two = Steering { workers: 2, ..Steering::default() };
        for i in 0..64u16 {
            let to_vip = udp_frame(MAC_A, GW_MAC, IP_A, vip, 40_000 + i, 80, b"x");
            let q = model(&to_vip, gw, services) as usize % 2;
            assert_eq!(q, two.worker_of(key(gw, IP_A, 40_000 + i)));
            let reply = udp_frame(MAC_B, MAC_A, IP_B, GW_IP, 80, 61_000 + i, b"y");
            let q = model(&reply, gw, services) as usize % 2;
            assert_eq!(q, two.worker_of(key(gw, GW_IP, 61_000 + i)));
        }
    }
}
