//! Queue-steering programs: with several workers, the kernel asks them which queue (that
//! is, which worker) gets each frame a pod sends, and they answer with the worker flow
//! steering would pick (`pipeline/steer.rs`), so a Service connection's packets reach the
//! worker that tracks it without being handed over inside the switch.
//!
//! Without them the kernel puts a new flow on a queue by hash, and about half of the first
//! packets of Service connections (one per connection, the SYN) had to cross to their worker,
//! waking it on a CPU a pod thread was using. One computation, two attachments, both on the
//! path of every frame a pod sends, before the frame is queued for the switch:
//!
//! - TAP pods: a socket-filter program attached with `TUNSETSTEERINGEBPF`
//!   ([`tap_program`]); the TAP driver takes its return value modulo the number of queues,
//!   and the switch reads queue `k` with worker `k`.
//! - AF_XDP pods: a tc program on the egress of the veth's pod end, attached through tcx
//!   ([`veth_program`], [`attach_to_veth`]). veth hands a frame sent on tx queue `k` to rx
//!   queue `k` of the host end, whose AF_XDP socket belongs to worker `k`. The program writes
//!   `k + 1` into the frame's `queue_mapping`; the kernel then picks the tx queue as for a
//!   frame with a recorded rx queue (`skb_tx_hash`: `queue_mapping - 1`, as veth has no XPS
//!   map and no `ndo_select_queue`). A socket that caches its tx queue (TCP, connected UDP)
//!   caches that choice, which is the same for every packet of a flow.
//!
//! ```text
//! not IPv4                      → TAP: queue 0; veth: no choice (the kernel's flow hash)
//! dst in the Service CIDR        → key(src, sport)     the client's worker
//! otherwise                      → key(dst, dport)     the destination's worker
//! key(ip, port) = mix(port | 0x10000) when ip is the gateway address, else mix(ip)
//! h = (key >> 16) ^ key
//! TAP:  return h                 the kernel takes it modulo the number of queues
//! veth: queue_mapping = h % workers + 1, return TC_ACT_OK
//! ```
//!
//! Replies are steered by destination unconditionally here; the switch only cares when the
//! destination has tracked connections, and then the two agree. Traffic without Services is
//! thereby spread by destination, which puts the two directions of a pod pair on different
//! workers when their keys differ. ICMP errors and fragments are left to the switch.

use std::io;
use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;
use crate::sys::bpf::{
    op, reg, Insn, SchedClsProgram, SocketFilterProgram, TcxDirection, TcxLink, SKB_QUEUE_MAPPING,
};
use crate::sys::netns::NetNs;

/// The murmur3 finalizer constants and seed, as `pipeline::steer::key` uses them.
const SEED: u32 = 0x9e37_79b9;
const M1: u32 = 0x85eb_ca6b;
const M2: u32 = 0xc2b2_ae35;

/// Instructions of the shared part: with the context in r6, r2 = `(key >> 16) ^ key` for an
/// IPv4 frame, then `choice` runs; any other frame skips `choice`. After `choice` (if it
/// falls through) the program returns 0.
fn program(gateway: Ipv4Addr, services: Ipv4Cidr, choice: &[Insn]) -> Vec<Insn> {
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
        jmp32(BPF_JNE, R0, 0x0800, 0),      // 2: → ret0, patched below
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
        // mix(r2) into r2.
        Insn::alu32_imm(BPF_XOR, R2, SEED as i32), // 24
    ];
    // h ^= h >> 16; h *= M1; h ^= h >> 13; h *= M2; h ^= h >> 16; r2 = (h >> 16) ^ h
    let shift_xor = |r: u8, n: i32| {
        [Insn::mov64_reg(R3, r), Insn::alu32_imm(BPF_RSH, R3, n), Insn::alu32_reg(BPF_XOR, r, R3)]
    };
    p.extend(shift_xor(R2, 16));
    p.push(Insn::alu32_imm(BPF_MUL, R2, M1 as i32));
    p.extend(shift_xor(R2, 13));
    p.push(Insn::alu32_imm(BPF_MUL, R2, M2 as i32));
    p.extend(shift_xor(R2, 16));
    p.extend(shift_xor(R2, 16));
    debug_assert_eq!(p.len(), 39);
    p.extend_from_slice(choice);
    let ret0 = p.len();
    p[2].off = (ret0 - 3) as i16;
    p.push(Insn::mov64_imm(R0, 0));
    p.push(Insn::exit());
    p
}

/// The TAP program's choice: return h (43 instructions in all).
const TAP_CHOICE: [Insn; 2] = [Insn::mov64_reg(reg::R0, reg::R2), Insn::exit()];

/// The veth program's choice: `queue_mapping = h % workers + 1`, then on into `return 0`
/// (`TC_ACT_OK`).
fn veth_choice(workers: u32) -> [Insn; 3] {
    use op::*;
    [
        Insn::alu32_imm(BPF_MOD, reg::R2, workers as i32),
        Insn::alu32_imm(BPF_ADD, reg::R2, 1),
        Insn::stx(BPF_W, reg::R6, reg::R2, SKB_QUEUE_MAPPING),
    ]
}

/// The TAP program for a node with this gateway address and Service CIDR (a socket filter
/// for `TUNSETSTEERINGEBPF`).
pub fn tap_program(gateway: Ipv4Addr, services: Ipv4Cidr) -> Vec<Insn> {
    program(gateway, services, &TAP_CHOICE)
}

/// The veth program for a node with this gateway address and Service CIDR and `workers`
/// workers, each reading one queue of the host end (a tc program for the pod end's egress).
/// `workers` must be from 1 to [`MAX_WORKERS`](crate::config::MAX_WORKERS).
pub fn veth_program(gateway: Ipv4Addr, services: Ipv4Cidr, workers: usize) -> Vec<Insn> {
    assert!((1..=crate::config::MAX_WORKERS).contains(&workers), "{workers} workers");
    program(gateway, services, &veth_choice(workers as u32))
}

/// Loads the TAP program (one load serves every TAP device of the switch).
pub fn load_tap(gateway: Ipv4Addr, services: Ipv4Cidr) -> io::Result<SocketFilterProgram> {
    SocketFilterProgram::load("psw_tap_steer", &tap_program(gateway, services))
}

/// Loads the veth program (one load serves every AF_XDP pod of the switch).
pub fn load_veth(
    gateway: Ipv4Addr,
    services: Ipv4Cidr,
    workers: usize,
) -> io::Result<SchedClsProgram> {
    SchedClsProgram::load("psw_veth_steer", &veth_program(gateway, services, workers))
}

/// Attaches the veth program to the egress of the device with index `ifindex` in `ns` (a
/// pod end). The attachment lasts while the link lives and the device exists; it stays
/// with the device if the device moves to another namespace.
pub fn attach_to_veth(prog: &SchedClsProgram, ns: &NetNs, ifindex: u32) -> io::Result<TcxLink> {
    ns.run(|| TcxLink::attach(prog, ifindex, TcxDirection::Egress))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::steer::{key, Steering};
    use crate::pipeline::testutil::*;
    use std::net::SocketAddrV4;

    /// A copy of the shared arithmetic in Rust, to check the constants and jumps against
    /// `pipeline::steer` without a kernel: `(key >> 16) ^ key` for an IPv4 frame.
    fn model_hash(frame: &[u8], gw: Ipv4Addr, services: Ipv4Cidr) -> Option<u32> {
        if frame[12..14] != [8, 0] {
            return None;
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
        Some((k >> 16) ^ k)
    }

    /// What the TAP program returns.
    fn model_tap(frame: &[u8], gw: Ipv4Addr, services: Ipv4Cidr) -> u32 {
        model_hash(frame, gw, services).unwrap_or(0)
    }

    /// What the veth program writes into `queue_mapping` (`None`: nothing).
    fn model_veth(frame: &[u8], gw: Ipv4Addr, services: Ipv4Cidr, workers: u32) -> Option<u32> {
        model_hash(frame, gw, services).map(|h| h % workers + 1)
    }

    fn services() -> Ipv4Cidr {
        "10.96.0.0/12".parse().unwrap()
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 9);

    /// Frames of every case of the rule, plus many clients and replies.
    fn frames() -> Vec<Vec<u8>> {
        let mut frames = vec![
            arp_request(MAC_A, IP_A, IP_B),
            udp_frame(MAC_A, GW_MAC, IP_A, VIP, 40_000, 80, b"to a VIP"),
            udp_frame(MAC_B, MAC_A, IP_B, GW_IP, 80, 61_000, b"to the gateway"),
            udp_frame(MAC_A, GW_MAC, GW_IP, VIP, 45_000, 53, b"from the gateway to a VIP"),
            udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"pod to pod"),
        ];
        for i in 0..32u16 {
            let ip = Ipv4Addr::new(10, 244, 1, 10 + i as u8);
            frames.push(udp_frame(MAC_A, GW_MAC, ip, VIP, 30_000 + i, 80, b"c"));
            frames.push(udp_frame(MAC_B, MAC_A, IP_B, ip, 80, 30_000 + i, b"r"));
        }
        frames
    }

    fn needs_root() -> bool {
        let root = crate::sys::process::is_root();
        if !root {
            eprintln!("skipped: needs root");
        }
        root
    }

    #[test]
    fn the_programs_have_the_documented_length() {
        assert_eq!(tap_program(GW_IP, services()).len(), 43);
        assert_eq!(veth_program(GW_IP, services(), 2).len(), 44);
    }

    #[test]
    fn the_kernel_accepts_the_programs() {
        if !needs_root() {
            return;
        }
        load_tap(Ipv4Addr::new(10, 244, 1, 1), services())
            .expect("verifier accepts the TAP steering program");
        // A gateway and a Service CIDR above 128.0.0.0 (the 32-bit compares).
        let (gw, high) = (Ipv4Addr::new(192, 168, 1, 1), "172.16.0.0/16".parse().unwrap());
        load_tap(gw, high).expect("verifier accepts the TAP steering program");
        for workers in [1, 2, crate::config::MAX_WORKERS] {
            load_veth(Ipv4Addr::new(10, 244, 1, 1), services(), workers)
                .expect("verifier accepts the veth steering program");
        }
        load_veth(gw, high, 2).expect("verifier accepts the veth steering program");
    }

    #[test]
    fn the_tap_program_computes_what_the_model_does() {
        if !needs_root() {
            return;
        }
        let prog = load_tap(GW_IP, services()).unwrap();
        for f in &frames() {
            // The test run strips a first Ethernet header: give it one in front of ours.
            let mut input = vec![0u8; 12];
            input.extend_from_slice(&[0x08, 0x00]);
            input.extend_from_slice(f);
            assert_eq!(prog.test_run(&input).unwrap(), model_tap(f, GW_IP, services()), "{f:02x?}");
        }
    }

    /// The test run of a tc program does not hand `queue_mapping` back, so a twin of the veth
    /// program returns it after storing it (same instructions, then `r0 = queue_mapping`).
    #[test]
    fn the_veth_program_stores_what_the_model_does_and_lets_every_frame_go() {
        if !needs_root() {
            return;
        }
        use crate::sys::bpf::{op::BPF_W, reg::*, TC_ACT_OK};
        let mut frames = frames();
        // Cut short before the port to hash (the test run refuses frames shorter than an
        // IPv4 header): the packet load ends the program early, with 0 and nothing stored.
        frames.push(frames[3][..34].to_vec()); // from the gateway: sport
        frames.push(frames[2][..37].to_vec()); // to the gateway: dport
        for workers in [2u32, 3] {
            let prog = load_veth(GW_IP, services(), workers as usize).unwrap();
            let mut twin = veth_choice(workers).to_vec();
            twin.push(Insn::ldx(BPF_W, R0, R6, SKB_QUEUE_MAPPING));
            twin.push(Insn::exit());
            let twin = SchedClsProgram::load("psw_veth_twin", &program(GW_IP, services(), &twin))
                .expect("verifier accepts the twin");
            for (i, f) in frames.iter().enumerate() {
                assert_eq!(prog.test_run(f).unwrap(), TC_ACT_OK as u32, "{f:02x?}");
                let want = match i {
                    _ if i >= frames.len() - 2 => 0,
                    _ => model_veth(f, GW_IP, services(), workers).unwrap_or(0),
                };
                assert_eq!(twin.test_run(f).unwrap(), want, "{workers} workers: {f:02x?}");
            }
        }
    }

    #[test]
    fn the_models_pick_the_worker_flow_steering_picks() {
        let gw = GW_IP;
        for workers in [2u32, 3, 4] {
            let s = Steering { workers: workers as usize, ..Steering::default() };
            for i in 0..64u16 {
                let to_vip = udp_frame(MAC_A, GW_MAC, IP_A, VIP, 40_000 + i, 80, b"x");
                let want = s.worker_of(key(gw, IP_A, 40_000 + i));
                let q = model_tap(&to_vip, gw, services()) as usize % workers as usize;
                assert_eq!(q, want, "TAP");
                let q = model_veth(&to_vip, gw, services(), workers).unwrap() - 1;
                assert_eq!(q as usize, want, "veth");
                let reply = udp_frame(MAC_B, MAC_A, IP_B, GW_IP, 80, 61_000 + i, b"y");
                let want = s.worker_of(key(gw, GW_IP, 61_000 + i));
                let q = model_tap(&reply, gw, services()) as usize % workers as usize;
                assert_eq!(q, want, "TAP");
                let q = model_veth(&reply, gw, services(), workers).unwrap() - 1;
                assert_eq!(q as usize, want, "veth");
            }
        }
    }

    /// Source and destination address and port of an IPv4 UDP frame.
    fn udp_endpoints(f: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4)> {
        if f.get(12..14)? != [8, 0] || *f.get(23)? != 17 {
            return None;
        }
        let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
        let ip = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
        let port = |o: usize| f.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        Some((SocketAddrV4::new(ip(26), port(l4)?), SocketAddrV4::new(ip(30), port(l4 + 2)?)))
    }

    /// The real thing: a pod end with the program on its egress sends UDP flows of every
    /// kind the rule tells apart (to a VIP from several clients, to a VIP from the gateway
    /// address with many ports, to many other destinations), through connected sockets
    /// (which cache their tx queue), and every datagram arrives on the host end's queue of
    /// the worker `pipeline::steer` names. Without the program about half of the flows
    /// would land elsewhere (the kernel's flow hash).
    #[test]
    fn every_flow_a_veth_pod_end_sends_arrives_on_the_queue_of_its_worker() {
        use crate::packet::Batch;
        use crate::port::afxdp::{AfXdpOptions, AfXdpPort};
        use crate::port::{Port, PortId};
        use crate::sys::bpf::XdpMode;
        use crate::sys::netlink::Netlink;
        use crate::sys::netns::{netns_with_lo, unique_name};
        use std::collections::HashMap;
        use std::net::UdpSocket;
        use std::time::{Duration, Instant};
        if !needs_root() {
            return;
        }
        const PER_FLOW: usize = 3;
        let gw = Ipv4Addr::new(10, 99, 0, 1);
        let next_hop = Ipv4Addr::new(10, 99, 0, 254);
        let clients: Vec<Ipv4Addr> = (10..42).map(|i| Ipv4Addr::new(10, 99, 0, i)).collect();
        let ns = netns_with_lo(&unique_name("pswqs")).unwrap();
        let _ = ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"));
        let mut nl = Netlink::open_in(&ns).unwrap();
        nl.veth_add_queues("ha", "pb", None, 2).unwrap();
        let ha = nl.link_get("ha").unwrap().unwrap().index;
        let pb = nl.link_get("pb").unwrap().unwrap().index;
        for ip in std::iter::once(gw).chain(clients.iter().copied()) {
            nl.addr_add(pb, ip, 24).unwrap();
        }
        nl.link_set_up(ha, true).unwrap();
        nl.link_set_up(pb, true).unwrap();
        // Everything off the subnet goes through one next hop with a fixed MAC: no ARP.
        let neigh = std::process::Command::new("ip")
            .args(["-n", ns.name(), "neigh", "replace", &next_hop.to_string()])
            .args(["lladdr", "02:00:00:00:00:fe", "dev", "pb", "nud", "permanent"])
            .status()
            .expect("ip (iproute2)");
        assert!(neigh.success());
        nl.route_add(services().network(), services().prefix_len(), Some(next_hop), pb).unwrap();
        nl.route_add(Ipv4Addr::new(10, 100, 0, 0), 16, Some(next_hop), pb).unwrap();

        let opts = AfXdpOptions::for_mtu(1500).unwrap();
        let mut ports = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 2)).unwrap().unwrap();
        // Only native XDP sees the rx queue veth delivered on (skb mode: always 0).
        assert_eq!(ports[0].xdp_mode(), XdpMode::Native, "{:?}", ports[0].native_refused());
        let prog = load_veth(gw, services(), 2).unwrap();
        let link = attach_to_veth(&prog, &ns, pb).unwrap();
        assert_eq!(link.prog_id().unwrap(), prog.id().unwrap());

        // (from, to) of every flow: the source port is the kernel's pick.
        let mut plan: Vec<(SocketAddrV4, SocketAddrV4)> = Vec::new();
        for &c in &clients {
            plan.push((SocketAddrV4::new(c, 0), SocketAddrV4::new(VIP, 80)));
        }
        for _ in 0..32 {
            plan.push((SocketAddrV4::new(gw, 0), SocketAddrV4::new(VIP, 53)));
        }
        for i in 0..32u8 {
            let dst = SocketAddrV4::new(Ipv4Addr::new(10, 100, i, 1), 5000 + u16::from(i));
            plan.push((SocketAddrV4::new(clients[0], 0), dst));
        }
        let steering = Steering { workers: 2, ..Steering::default() };
        let flows: HashMap<(SocketAddrV4, SocketAddrV4), usize> = ns
            .run(|| {
                // All bound before any is closed, so no two flows share a source port.
                let socks: Vec<UdpSocket> = plan
                    .iter()
                    .map(|(from, to)| {
                        let s = UdpSocket::bind(from).unwrap();
                        s.connect(to).unwrap();
                        s
                    })
                    .collect();
                for _ in 0..PER_FLOW {
                    for s in &socks {
                        s.send(b"steer me").unwrap();
                    }
                }
                socks
                    .iter()
                    .map(|s| {
                        let std::net::SocketAddr::V4(from) = s.local_addr().unwrap() else {
                            unreachable!()
                        };
                        let std::net::SocketAddr::V4(to) = s.peer_addr().unwrap() else {
                            unreachable!()
                        };
                        let k = if services().contains(*to.ip()) {
                            key(gw, *from.ip(), from.port())
                        } else {
                            key(gw, *to.ip(), to.port())
                        };
                        ((from, to), steering.worker_of(k))
                    })
                    .collect()
            })
            .unwrap();
        assert_eq!(flows.len(), plan.len());

        let want = flows.len() * PER_FLOW;
        let mut got = 0;
        let mut per_queue = [0usize; 2];
        let mut batch = Batch::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got < want && Instant::now() < deadline {
            let mut idle = true;
            for (q, port) in ports.iter_mut().enumerate() {
                batch.clear();
                if port.rx_burst(&mut batch, PortId(1)).unwrap() > 0 {
                    idle = false;
                }
                for p in batch.packets() {
                    let Some(flow) = udp_endpoints(p.data()) else { continue };
                    let Some(&worker) = flows.get(&flow) else { continue };
                    assert_eq!(q, worker, "{flow:?} arrived on queue {q}, belongs to {worker}");
                    got += 1;
                    per_queue[q] += 1;
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(got, want, "every datagram arrived once (per queue: {per_queue:?})");
        assert!(per_queue.iter().all(|&n| n > 0), "both workers have flows: {per_queue:?}");
    }
}
