//! The warm-up: real traffic that populates conntrack on both workers, and the
//! [templates](Template) made from what it tracked.

use super::*;

impl Harness {
    /// Where an endpoint's frames come from: its port, MAC and (for the remote pod) tunnel.
    pub(super) fn endpoint_path(ip: Ipv4Addr) -> (PortId, MacAddr, Option<Ipv4Addr>) {
        if ip == GW_IP {
            return (HOST, GW_MAC, None);
        }
        if ip == REMOTE_POD {
            return (OVERLAY, MacAddr([0x02, 0x76, 0x78, 0xa8, 0, 2]), Some(PEER2));
        }
        let i = usize::from(ip.octets()[3]) - 2;
        (pod_port(i), pod_mac(i), None)
    }

    /// Opens a connection: `frame` from the client, then the endpoint's answer; records the
    /// flow.
    pub(super) fn open(&mut self, client_port: PortId, client_mac: MacAddr, frame: Vec<u8>) {
        let (action, out) = self.one(client_port, None, &frame);
        let (Some(l3_in), Some(l3)) = (l3_of(&frame), l3_of(&out)) else { return };
        if !matches!(action, Action::Forward(_)) {
            return;
        }
        let ip_in = &frame[l3_in..];
        let proto = ip_in[9];
        let port_at = |d: &[u8], o: usize| u16::from_be_bytes([d[o], d[o + 1]]);
        let addr_at = |d: &[u8], o: usize| Ipv4Addr::new(d[o], d[o + 1], d[o + 2], d[o + 3]);
        let client = (addr_at(ip_in, 12), port_at(ip_in, 20));
        let vip = (addr_at(ip_in, 16), port_at(ip_in, 22));
        let ip = &out[l3..];
        let from = (addr_at(ip, 12), port_at(ip, 20));
        let to = (addr_at(ip, 16), port_at(ip, 22));
        let seen = ip[..28].to_vec();
        self.flows.push(Flow { client_port, client_mac, client, vip, proto, seen, from, to });
        let flow = self.flows.last().cloned().expect("just pushed");
        let (tmpl, tunnel) = self.reply_of(&flow, flags::SYN | flags::ACK, b"answer");
        let port = if tunnel.is_some() { OVERLAY } else { Self::endpoint_path(to.0).0 };
        self.one(port, tunnel, &tmpl);
        if proto == 6 {
            // The client's ACK completes the handshake.
            let ack = tcp_frame(client_mac, flow.next_hop(), client, vip, 1001, flags::ACK, b"");
            self.one(client_port, None, &ack);
        }
    }

    /// The endpoint's reply to `flow` (TCP `flags`), as it arrives (VXLAN for the remote pod).
    pub(super) fn reply_of(
        &self,
        flow: &Flow,
        tcp_flags: u8,
        payload: &[u8],
    ) -> (Vec<u8>, Option<Ipv4Addr>) {
        let (_, mac, tunnel) = Self::endpoint_path(flow.to.0);
        // A source-NATed flow's endpoint answers the gateway; any other answers the client
        // on its own link (decapsulation rewrites the MAC of what comes over the overlay).
        let dst_mac = if flow.from.0 == GW_IP { GW_MAC } else { flow.client_mac };
        let frame = if flow.proto == 6 {
            tcp_frame(mac, dst_mac, flow.to, flow.from, 5000, tcp_flags, payload)
        } else {
            udp_frame(mac, dst_mac, flow.to, flow.from, payload)
        };
        match tunnel {
            Some(t) => (vxlan(VNI, &frame), Some(t)),
            None => (frame, None),
        }
    }

    /// Real traffic through the pipeline, then the templates.
    pub(super) fn warm_up(&mut self) {
        let (a, b, d) = (0, 1, 3);
        let vip = |o: u8| Ipv4Addr::new(10, 96, 0, o);
        // ARP for the gateway and for a neighbour; a ping to the gateway.
        self.one(pod_port(a), None, &arp_request(pod_mac(a), pod_ip(a), GW_IP));
        self.one(pod_port(b), None, &arp_request(pod_mac(b), pod_ip(b), pod_ip(a)));
        let ping = icmp_frame(pod_mac(a), GW_MAC, pod_ip(a), GW_IP, (8, 0), [0, 7, 0, 1], b"ping");
        self.one(pod_port(a), None, &ping);
        // Pod A: UDP and TCP to web, DNS over UDP and TCP (to the node, behind the host port).
        let pa = (pod_port(a), pod_mac(a), pod_ip(a));
        let opens: Vec<(PortId, MacAddr, Vec<u8>)> = vec![
            (pa.0, pa.1, udp_frame(pa.1, GW_MAC, (pa.2, 40_001), (vip(20), 80), b"hello")),
            (
                pa.0,
                pa.1,
                tcp_frame(pa.1, GW_MAC, (pa.2, 40_002), (vip(20), 80), 1000, flags::SYN, b""),
            ),
            (pa.0, pa.1, udp_frame(pa.1, GW_MAC, (pa.2, 40_003), (vip(10), 53), b"query")),
            (
                pa.0,
                pa.1,
                tcp_frame(pa.1, GW_MAC, (pa.2, 40_004), (vip(10), 53), 1000, flags::SYN, b""),
            ),
            // Hairpin: A is loop's only endpoint.
            (pa.0, pa.1, udp_frame(pa.1, GW_MAC, (pa.2, 40_005), (vip(41), 7000), b"me")),
            // Pod D: the sticky Service, twice (the second is pinned to the first's endpoint).
            (
                pod_port(d),
                pod_mac(d),
                tcp_frame(
                    pod_mac(d),
                    GW_MAC,
                    (pod_ip(d), 41_000),
                    (vip(30), 443),
                    1000,
                    flags::SYN,
                    b"",
                ),
            ),
            (
                pod_port(d),
                pod_mac(d),
                tcp_frame(
                    pod_mac(d),
                    GW_MAC,
                    (pod_ip(d), 41_001),
                    (vip(30), 443),
                    1000,
                    flags::SYN,
                    b"",
                ),
            ),
            // Pod B: the remote endpoint, over the overlay.
            (
                pod_port(b),
                pod_mac(b),
                tcp_frame(
                    pod_mac(b),
                    GW_MAC,
                    (pod_ip(b), 42_000),
                    (vip(50), 8080),
                    1000,
                    flags::SYN,
                    b"",
                ),
            ),
            // NodePort: TCP and UDP from an external client.
            (
                NODE_PORT,
                CLIENT_MAC,
                tcp_frame(
                    CLIENT_MAC,
                    NODE_MAC,
                    (CLIENT_IP, 50_000),
                    (NODE_IP, 30_080),
                    1000,
                    flags::SYN,
                    b"",
                ),
            ),
            (
                NODE_PORT,
                CLIENT_MAC,
                udp_frame(CLIENT_MAC, NODE_MAC, (CLIENT_IP, 50_001), (NODE_IP, 30_053), b"np"),
            ),
        ];
        for (port, mac, frame) in opens {
            self.open(port, mac, frame);
        }
        // A Service without ready endpoints answers with a reset.
        let empty = tcp_frame(pa.1, GW_MAC, (pa.2, 40_006), (vip(60), 80), 1000, flags::SYN, b"");
        self.one(pa.0, None, &empty);
        // The warm-up is the same every time (nothing in it depends on a random seed), and
        // so are the templates made from it: make them once per thread.
        thread_local! {
            static TEMPLATES: std::cell::RefCell<Option<std::rc::Rc<[Template]>>> =
                const { std::cell::RefCell::new(None) };
        }
        self.templates = match TEMPLATES.with(|t| t.borrow().clone()) {
            Some(t) => t,
            None => {
                let t: std::rc::Rc<[Template]> = self.make_templates().into();
                TEMPLATES.with(|c| *c.borrow_mut() = Some(t.clone()));
                t
            }
        };
    }

    pub(super) fn make_templates(&self) -> Vec<Template> {
        let (a, b) = (0, 1);
        let vip = |o: u8| Ipv4Addr::new(10, 96, 0, o);
        let t = |name, port, tunnel, frame| Template { name, port, tunnel, frame };
        let mut v = vec![
            t(
                "udp to web",
                pod_port(a),
                None,
                udp_frame(pod_mac(a), GW_MAC, (pod_ip(a), 43_000), (vip(20), 80), b"new flow"),
            ),
            t(
                "tcp syn to web",
                pod_port(b),
                None,
                tcp_frame(
                    pod_mac(b),
                    GW_MAC,
                    (pod_ip(b), 43_001),
                    (vip(20), 80),
                    1,
                    flags::SYN,
                    b"",
                ),
            ),
            t(
                "udp to dns",
                pod_port(2),
                None,
                udp_frame(
                    pod_mac(2),
                    GW_MAC,
                    (pod_ip(2), 43_002),
                    (vip(10), 53),
                    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
                ),
            ),
            t(
                "udp hairpin",
                pod_port(a),
                None,
                udp_frame(pod_mac(a), GW_MAC, (pod_ip(a), 43_003), (vip(41), 7000), b"me again"),
            ),
            t(
                "tcp to empty",
                pod_port(a),
                None,
                tcp_frame(
                    pod_mac(a),
                    GW_MAC,
                    (pod_ip(a), 43_004),
                    (vip(60), 80),
                    1,
                    flags::SYN,
                    b"",
                ),
            ),
            t(
                "udp to unknown vip port",
                pod_port(a),
                None,
                udp_frame(pod_mac(a), GW_MAC, (pod_ip(a), 43_005), (vip(20), 81), b"x"),
            ),
            t(
                "node port tcp syn",
                NODE_PORT,
                None,
                tcp_frame(
                    CLIENT_MAC,
                    NODE_MAC,
                    (CLIENT_IP, 51_000),
                    (NODE_IP, 30_080),
                    1,
                    flags::SYN,
                    b"",
                ),
            ),
            t(
                "node port udp",
                NODE_PORT,
                None,
                udp_frame(CLIENT_MAC, NODE_MAC, (CLIENT_IP, 51_001), (NODE_IP, 30_053), b"np"),
            ),
            t("arp for gateway", pod_port(b), None, arp_request(pod_mac(b), pod_ip(b), GW_IP)),
            t("arp for pod", pod_port(b), None, arp_request(pod_mac(b), pod_ip(b), pod_ip(2))),
            t(
                "ping gateway",
                pod_port(b),
                None,
                icmp_frame(pod_mac(b), GW_MAC, pod_ip(b), GW_IP, (8, 0), [0, 9, 0, 1], b"ping"),
            ),
            t(
                "pod to pod udp",
                pod_port(a),
                None,
                udp_frame(pod_mac(a), pod_mac(b), (pod_ip(a), 1000), (pod_ip(b), 2000), b"direct"),
            ),
            t(
                "routed to pod",
                pod_port(a),
                None,
                udp_frame(pod_mac(a), GW_MAC, (pod_ip(a), 1000), (pod_ip(2), 2000), b"routed"),
            ),
            t(
                "host to pod",
                HOST,
                None,
                tcp_frame(GW_MAC, pod_mac(a), (GW_IP, 33_000), (pod_ip(a), 80), 1, flags::SYN, b""),
            ),
            t(
                "to remote pod",
                pod_port(a),
                None,
                tcp_frame(
                    pod_mac(a),
                    GW_MAC,
                    (pod_ip(a), 1000),
                    (Ipv4Addr::new(10, 244, 3, 9), 80),
                    1,
                    flags::ACK,
                    &[0x5a; 1400],
                ),
            ),
            t(
                "to remote pod, too big",
                pod_port(a),
                None,
                udp_frame(pod_mac(a), GW_MAC, (pod_ip(a), 1000), (REMOTE_POD, 80), &[0xa5; 1480]),
            ),
            t(
                "vxlan to local pod",
                OVERLAY,
                Some(PEER3),
                vxlan(
                    VNI,
                    &tcp_frame(
                        MacAddr([2, 0x76, 0x78, 0xa8, 0, 3]),
                        GW_MAC,
                        (Ipv4Addr::new(10, 244, 3, 9), 80),
                        (pod_ip(a), 1000),
                        1,
                        flags::ACK | flags::PSH,
                        b"from afar",
                    ),
                ),
            ),
            t(
                "vxlan to vip",
                OVERLAY,
                Some(PEER2),
                vxlan(
                    VNI,
                    &udp_frame(
                        MacAddr([2, 0x76, 0x78, 0xa8, 0, 2]),
                        GW_MAC,
                        (REMOTE_POD, 999),
                        (vip(20), 80),
                        b"remote client",
                    ),
                ),
            ),
            t(
                "vxlan unknown peer",
                OVERLAY,
                Some(Ipv4Addr::new(192, 168, 0, 99)),
                vxlan(
                    VNI,
                    &udp_frame(
                        MacAddr([2, 0, 0, 0, 0, 99]),
                        GW_MAC,
                        (REMOTE_POD, 999),
                        (pod_ip(a), 80),
                        b"who",
                    ),
                ),
            ),
            t(
                "ipv6",
                pod_port(a),
                None,
                ethernet(MacAddr([0x33, 0x33, 0, 0, 0, 1]), pod_mac(a), 0x86dd, &{
                    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 255];
                    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                    v6.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                    v6.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
                    v6
                }),
            ),
            t("vlan tagged", pod_port(a), None, {
                let f = udp_frame(pod_mac(a), GW_MAC, (pod_ip(a), 1), (vip(20), 80), b"tagged");
                let mut v = f[..12].to_vec();
                v.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
                v.extend_from_slice(&f[12..]);
                v
            }),
        ];
        // GRO material: a run of in-order segments from the host to pod A.
        for k in 0..3u32 {
            let seg = tcp_frame(
                GW_MAC,
                pod_mac(a),
                (GW_IP, 33_001),
                (pod_ip(a), 80),
                1 + k * 1000,
                flags::ACK,
                &[k as u8; 1000],
            );
            v.push(t("host to pod segment", HOST, None, seg));
        }
        for f in self.flows.clone() {
            let (reply, tunnel) = self.reply_of(&f, flags::ACK, b"reply data");
            let (port, mac, _) = Self::endpoint_path(f.to.0);
            let port = if tunnel.is_some() { OVERLAY } else { port };
            v.push(t("reply of a tracked flow", port, tunnel, reply));
            let next = if f.proto == 6 {
                let fl = flags::ACK | flags::PSH;
                tcp_frame(f.client_mac, f.next_hop(), f.client, f.vip, 1001, fl, b"more")
            } else {
                udp_frame(f.client_mac, f.next_hop(), f.client, f.vip, b"more")
            };
            v.push(t("client packet of a tracked flow", f.client_port, None, next));
            // ICMP errors from the endpoint (or a router on its way) about the translated
            // packet: port unreachable, fragmentation needed, time exceeded.
            for (typ, code, rest) in
                [(3u8, 3u8, [0u8; 4]), (3, 4, [0, 0, 0x05, 0x78]), (11, 0, [0; 4])]
            {
                let src = f.to.0;
                let err = icmp_frame(mac, GW_MAC, src, f.from.0, (typ, code), rest, &f.seen);
                let (frame, tunnel) = match tunnel {
                    Some(t) => (vxlan(VNI, &err), Some(t)),
                    None => (err, None),
                };
                v.push(t("icmp error about a tracked flow", port, tunnel, frame));
            }
            // The same error with a quote cut inside the IPv4 header (RFC 792 asks for the
            // header and 8 bytes; a hostile pod sends what it likes).
            let err = icmp_frame(mac, GW_MAC, f.to.0, f.from.0, (3, 3), [0; 4], &f.seen[..12]);
            let frame = match tunnel {
                Some(_) => vxlan(VNI, &err),
                None => err,
            };
            v.push(t("icmp error with a short quote", port, tunnel, frame));
            if f.proto == 6 {
                let fin = self.reply_of(&f, flags::FIN | flags::ACK, b"").0;
                v.push(t("fin from the endpoint", port, tunnel, fin));
                let rst = self.reply_of(&f, flags::RST, b"").0;
                v.push(t("rst from the endpoint", port, tunnel, rst));
            }
        }
        v
    }

    // --- running --------------------------------------------------------------------
}
