//! Unit tests of the AF_XDP port.

use super::*;
use crate::sys::netlink::Netlink;
use crate::sys::netns::NamedNetNs;
use crate::sys::packet::PacketSocket;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[test]
fn options_follow_the_mtu() {
    let o = AfXdpOptions::for_mtu(1500).unwrap();
    assert_eq!((o.xsk.frame_size, o.queue, o.mode), (2048, 0, XdpMode::Native));
    assert_eq!(AfXdpOptions::for_mtu(3000).unwrap().xsk.frame_size, 4096);
    assert!(AfXdpOptions::for_mtu(9000).is_none());
}

/// A namespace with veth `ha` (the port's end) / `pb` (a packet socket's), IPv6 off.
fn veth_ns(mtu: u32) -> (NamedNetNs, u32) {
    veth_ns_queues(mtu, 1)
}

/// [`veth_ns`] with `queues` queues on both ends.
fn veth_ns_queues(mtu: u32, queues: u32) -> (NamedNetNs, u32) {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("pswafx-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let ns = NamedNetNs::create(&name).unwrap();
    let _ = ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"));
    let mut nl = Netlink::open_in(&ns).unwrap();
    nl.veth_add_queues("ha", "pb", None, queues).unwrap();
    let ha = nl.link_get("ha").unwrap().unwrap().index;
    let pb = nl.link_get("pb").unwrap().unwrap().index;
    for i in [ha, pb] {
        nl.link_set_mtu(i, mtu).unwrap();
        nl.link_set_up(i, true).unwrap();
    }
    (ns, ha)
}

fn packet_socket(ifname: &str) -> PacketSocket {
    let index = Netlink::open().unwrap().link_get(ifname).unwrap().unwrap().index;
    PacketSocket::open(index).unwrap()
}

fn recv_frames(sock: &PacketSocket, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + timeout;
    while got.len() < want && Instant::now() < deadline {
        match sock.try_recv(&mut buf).unwrap() {
            Some(n) if buf[..n].get(12..14) == Some(&[0x08, 0x00][..]) => {
                got.push(buf[..n].to_vec())
            }
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    got
}

/// A TCP/IPv4 super-frame as a TAP port with offloads delivers it: one frame with the
/// whole payload, GSO metadata and a partial checksum.
fn super_frame(payload: &[u8]) -> (Vec<u8>, VnetHdr) {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 244, 1, 2], [10, 244, 1, 3], 64)
        .tcp(40000, 5001, 7, 64000)
        .ack(1);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    let v = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    (f, v)
}

#[test]
fn super_frames_leave_as_valid_mtu_sized_segments_and_partial_checksums_are_completed() {
    if !crate::sys::process::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (ns, ha) = veth_ns(1500);
    let opts = AfXdpOptions::for_mtu(1500).unwrap();
    let mut port = ns.run(|| AfXdpPort::open("ha", ha, opts)).unwrap().unwrap();
    assert_eq!(port.bind_mode(), BindMode::Copy);
    assert_eq!(port.xdp_mode(), XdpMode::Native, "{:?}", port.native_refused());
    let sniff = ns.run(|| packet_socket("pb")).unwrap();
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 13) as u8).collect();
    let (sf, vnet) = super_frame(&payload);
    let mut batch = Batch::new();
    assert!(batch.push_frame(PortId(1), &sf));
    batch.packets_mut()[0].meta.vnet = vnet;
    // A UDP frame with a partial checksum (the pseudo-header sum in the field).
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 244, 1, 2], [10, 244, 1, 3], 64)
        .udp(1000, 2000);
    let mut udp = Vec::new();
    b.write(&mut udp, b"checksum me").unwrap();
    let good = [udp[40], udp[41]];
    let pseudo = crate::wire::checksum::fold(crate::wire::checksum::pseudo_header_v4(
        &"10.244.1.2".parse().unwrap(),
        &"10.244.1.3".parse().unwrap(),
        crate::wire::IpProtocol::Udp,
        (udp.len() - 34) as u16,
    ));
    udp[40..42].copy_from_slice(&pseudo.to_be_bytes());
    assert!(batch.push_frame(PortId(1), &udp));
    batch.packets_mut()[1].meta.vnet = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..Default::default()
    };
    // Too big for the MTU and not a super-frame: refused.
    let mut big = udp.clone();
    big.resize(1600, 0);
    assert!(batch.push_frame(PortId(1), &big));
    let out = port.tx_burst(&batch, &[0, 1, 2]);
    let segments = payload.len().div_ceil(1448);
    assert_eq!(out.sent as usize, segments + 1, "{out:?}");
    assert_eq!(out.errors, 1, "{out:?}");
    let frames = recv_frames(&sniff, segments + 1, Duration::from_secs(5));
    assert_eq!(frames.len(), segments + 1);
    let mut joined = Vec::new();
    for f in &frames[..segments] {
        assert!(f.len() <= 1514, "segment of {} bytes", f.len());
        let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
        let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else { panic!() };
        let want = tcp.to_header().calc_checksum_ipv4(&ip.header().to_header(), tcp.payload());
        assert_eq!(tcp.checksum(), want.unwrap());
        joined.extend_from_slice(tcp.payload());
    }
    assert_eq!(joined, payload);
    assert_eq!([frames[segments][40], frames[segments][41]], good);
}

/// A 142-byte UDP frame from the veth's far end.
fn udp_frame_100() -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 8])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1, 2);
    let mut f = Vec::new();
    b.write(&mut f, &[7u8; 100]).unwrap();
    f
}

#[test]
fn configured_rx_frames_bound_what_an_unread_queue_holds() {
    if !crate::sys::process::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (ns, ha) = veth_ns(1500);
    let umem = crate::config::AfxdpConfig { rx_frames: 64, tx_frames: 128 };
    let opts = AfXdpOptions::for_mtu_and_config(1500, &umem).unwrap();
    assert_eq!((opts.xsk.fill_size, opts.xsk.rx_size, opts.xsk.frame_count), (64, 64, 192));
    assert_eq!((opts.xsk.tx_size, opts.xsk.comp_size), (128, 128));
    let mut port = ns.run(|| AfXdpPort::open("ha", ha, opts));
    let port = port.as_mut().unwrap().as_mut().unwrap();
    let tx = ns.run(|| packet_socket("pb")).unwrap();
    let f = udp_frame_100();
    // 200 frames arrive while nobody reads: the 64 receive frames fill, the rest drop.
    for _ in 0..200 {
        assert_eq!(tx.send(&f).unwrap(), f.len());
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut batch = Batch::new();
    let mut total = 0;
    loop {
        batch.clear();
        let n = port.rx_burst(&mut batch, PortId(3)).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 64);
    let st = port.statistics().unwrap();
    assert_eq!(st.rx_dropped, 200 - 64, "{st:?}");
}

#[test]
fn received_frames_land_in_the_batch() {
    if !crate::sys::process::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (ns, ha) = veth_ns(1500);
    let mut port = ns.run(|| AfXdpPort::open("ha", ha, AfXdpOptions::for_mtu(1500).unwrap()));
    let port = port.as_mut().unwrap().as_mut().unwrap();
    let tx = ns.run(|| packet_socket("pb")).unwrap();
    let f = udp_frame_100();
    for _ in 0..40 {
        assert_eq!(tx.send(&f).unwrap(), f.len());
    }
    let mut batch = Batch::new();
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while total < 40 && Instant::now() < deadline {
        batch.clear();
        let n = port.rx_burst(&mut batch, PortId(3)).unwrap();
        assert!(n <= crate::packet::BATCH_SIZE);
        for p in batch.packets() {
            assert_eq!(p.data(), &f[..]);
            assert_eq!(p.meta.in_port, PortId(3));
        }
        total += n;
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(total, 40);
    assert_eq!(port.statistics().unwrap().rx_dropped, 0);
}

/// Polls every port until `want` UDP frames to `dst_port` have arrived in all, or five
/// seconds pass; returns the source ports of the frames each port received.
fn receive_on_all(ports: &mut [AfXdpPort], want: usize, dst_port: u16) -> Vec<Vec<u16>> {
    let mut got = vec![Vec::new(); ports.len()];
    let mut batch = Batch::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.iter().map(Vec::len).sum::<usize>() < want && Instant::now() < deadline {
        let mut idle = true;
        for (port, srcs) in ports.iter_mut().zip(got.iter_mut()) {
            batch.clear();
            if port.rx_burst(&mut batch, PortId(1)).unwrap() > 0 {
                idle = false;
            }
            srcs.extend(
                batch
                    .packets()
                    .iter()
                    .filter_map(|p| udp_ports(p.data()))
                    .filter_map(|(src, dst)| (dst == dst_port).then_some(src)),
            );
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

fn udp_ports(frame: &[u8]) -> Option<(u16, u16)> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match p.transport? {
        etherparse::TransportSlice::Udp(u) => Some((u.source_port(), u.destination_port())),
        _ => None,
    }
}

/// Sends `per_flow` datagrams from each of `flows` UDP sockets (one source port each)
/// out of `pb` to the subnet's broadcast address, which needs no neighbour entry.
fn send_flows(ns: &NamedNetNs, flows: usize, per_flow: usize, dst_port: u16) {
    ns.run(move || {
        let mut nl = Netlink::open().unwrap();
        let pb = nl.link_get("pb").unwrap().unwrap().index;
        nl.addr_add(pb, "10.99.0.1".parse().unwrap(), 24).unwrap();
        let socks: Vec<_> = (0..flows)
            .map(|_| {
                let s = std::net::UdpSocket::bind("10.99.0.1:0").unwrap();
                s.set_broadcast(true).unwrap();
                s
            })
            .collect();
        for _ in 0..per_flow {
            for s in &socks {
                s.send_to(b"one flow of many", ("10.99.0.255", dst_port)).unwrap();
            }
        }
    })
    .unwrap();
}

fn needs_root() -> bool {
    let root = crate::sys::process::is_root();
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}

const FLOWS: usize = 64;
const PER_FLOW: usize = 4;
const DPORT: u16 = 9999;

/// Two queue ports on a 2-queue veth in `mode`; sends [`FLOWS`] flows from the pod end
/// and returns the ports, their namespace and the source ports each port received, after
/// checking that every frame arrived exactly once and each flow stayed on one queue.
fn two_queue_ports(mode: XdpMode) -> (NamedNetNs, Vec<AfXdpPort>, Vec<HashSet<u16>>) {
    let (ns, ha) = veth_ns_queues(1500, 2);
    let opts = AfXdpOptions { mode, ..AfXdpOptions::for_mtu(1500).unwrap() };
    let mut ports = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 2)).unwrap().unwrap();
    assert_eq!(ports.iter().map(AfXdpPort::queue).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(ports[0].xdp_mode(), mode, "{:?}", ports[0].native_refused());
    assert_eq!(ports[0].prog_id().unwrap(), ports[1].prog_id().unwrap());
    send_flows(&ns, FLOWS, PER_FLOW, DPORT);
    let got = receive_on_all(&mut ports, FLOWS * PER_FLOW, DPORT);
    let counts: Vec<usize> = got.iter().map(Vec::len).collect();
    eprintln!("{mode} mode, frames per queue: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), FLOWS * PER_FLOW, "{counts:?}");
    for p in &ports {
        assert_eq!(p.statistics().unwrap().rx_dropped, 0);
    }
    // A flow stays on one queue, so one worker sees all of it, in order.
    let flows: Vec<HashSet<u16>> = got.iter().map(|g| g.iter().copied().collect()).collect();
    assert!(flows[0].is_disjoint(&flows[1]));
    assert_eq!(flows[0].len() + flows[1].len(), FLOWS);
    (ns, ports, flows)
}

#[test]
fn flows_from_the_pod_spread_over_the_queue_ports_and_either_port_sends() {
    if !needs_root() {
        return;
    }
    let (ns, mut ports, flows) = two_queue_ports(XdpMode::Native);
    assert!(flows.iter().all(|f| !f.is_empty()), "every queue gets some flows: {flows:?}");

    let sniff = ns.run(|| packet_socket("pb")).unwrap();
    let mut sent = Vec::new();
    for (q, port) in ports.iter_mut().enumerate() {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 99, 0, 2], [10, 99, 0, 1], 64)
            .udp(7000 + q as u16, 7);
        let mut f = Vec::new();
        b.write(&mut f, b"from a queue port").unwrap();
        let mut batch = Batch::new();
        assert!(batch.push_frame(PortId(1), &f));
        assert_eq!(port.tx_burst(&batch, &[0]).sent, 1);
        sent.push(f);
    }
    let mut frames = recv_frames(&sniff, 2, Duration::from_secs(5));
    frames.sort();
    assert_eq!(frames, sent);
}

/// In skb mode veth gives XDP no rx queue of its own (the frame's queue is what the
/// pod end's tx queue left recorded, 0 on a 2-queue pair): nothing is lost, but queue 0
/// gets every flow.
#[test]
fn in_skb_mode_every_frame_still_arrives_once() {
    if !needs_root() {
        return;
    }
    let (_ns, _ports, flows) = two_queue_ports(XdpMode::Skb);
    assert_eq!(flows[0].len(), FLOWS, "{flows:?}");
}

#[test]
fn the_program_stays_attached_until_the_last_queue_port_goes() {
    if !needs_root() {
        return;
    }
    let (ns, ha) = veth_ns_queues(1500, 2);
    let opts = AfXdpOptions::for_mtu(1500).unwrap();
    let mut nl = Netlink::open_in(&ns).unwrap();
    let mut prog_on_ha = || nl.link_by_index(ha).unwrap().unwrap().xdp_prog_id;
    let mut ports = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 2)).unwrap().unwrap();
    let id = ports[0].prog_id().unwrap();
    assert_eq!(prog_on_ha(), Some(id));
    let mut second = ports.split_off(1);
    drop(ports);
    assert_eq!(prog_on_ha(), Some(id));
    // The remaining port still receives its flows through the shared program.
    send_flows(&ns, FLOWS, PER_FLOW, DPORT);
    assert!(!receive_on_all(&mut second, 1, DPORT)[0].is_empty());
    drop(second);
    assert_eq!(prog_on_ha(), None);
    assert!(!bpf::prog_loaded(id).unwrap());
}

#[test]
fn bad_queue_counts_are_refused_and_leave_nothing_attached() {
    if !needs_root() {
        return;
    }
    let (ns, ha) = veth_ns_queues(1500, 2);
    let opts = AfXdpOptions::for_mtu(1500).unwrap();
    let e = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 0)).unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("queues 0"), "{e}");
    let from_max = AfXdpOptions { queue: u32::MAX, ..opts };
    let e = ns.run(|| AfXdpPort::open_queues("ha", ha, from_max, 2)).unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    // The device uses two queues: binding the third fails in the kernel.
    let e = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 3)).unwrap().unwrap_err();
    assert!(e.to_string().contains("ha queue 2"), "{e}");
    let mut nl = Netlink::open_in(&ns).unwrap();
    assert_eq!(nl.link_by_index(ha).unwrap().unwrap().xdp_prog_id, None);
    // And the device is free for a working set of ports.
    let ports = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 2)).unwrap().unwrap();
    assert_eq!(ports.len(), 2);
}
