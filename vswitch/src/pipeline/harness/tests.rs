//! The bounded property test over the harness, and checks of its warm-up.

use proptest::prelude::*;

use super::*;

#[test]
fn the_warm_up_tracks_connections_on_both_workers() {
    let h = Harness::new();
    let per: Vec<usize> = h.workers.iter().map(|w| w.pipeline.nat.conntrack.len()).collect();
    assert!(per.iter().sum::<usize>() >= 8, "{per:?}");
    assert!(per.iter().all(|&n| n > 0), "both workers track some: {per:?}");
    assert!(h.flows.len() >= 8, "{} flows", h.flows.len());
    assert!(h.templates().len() > 30);
}

#[test]
fn the_warm_up_is_the_same_every_time() {
    // The templates are made once per thread on that assumption.
    let (a, b) = (Harness::new(), Harness::new());
    let frames =
        |h: &Harness| -> Vec<Vec<u8>> { h.make_templates().into_iter().map(|t| t.frame).collect() };
    assert_eq!(frames(&a), frames(&b));
    assert_eq!(frames(&a), a.templates().iter().map(|t| t.frame.clone()).collect::<Vec<_>>());
}

#[test]
fn every_template_runs_clean_and_most_are_not_dropped() {
    let h = Harness::new();
    let n = h.templates().len();
    let mut dropped = Vec::new();
    for i in 0..n {
        let step = Step::Template {
            ctl: 0x20,
            vnet: vec![],
            template: i as u8,
            writes: vec![],
            extend: 0,
            truncate: 0,
            fix: 0,
        };
        let s = run_case(&encode(&[step]));
        assert_eq!(s.frames, 1);
        if s.dropped > 0 {
            dropped.push(h.templates()[i].name);
        }
    }
    // Only the ones meant to be dropped are.
    assert!(
        dropped
            .iter()
            .all(|n| ["vxlan unknown peer", "udp to unknown vip port"].contains(n)
                || n.contains("rst")),
        "{dropped:?}"
    );
}

/// Writes the binary seed corpora of `vswitch/fuzz/corpus/` (pipeline_stateful,
/// wire_parsers, gro, dns) when `PODSWITCH_FUZZ_CORPUS` names that directory; does
/// nothing otherwise. The text corpora (config, control_api, cni_stdin) are written by
/// hand.
#[test]
fn write_fuzz_seeds_when_asked() {
    let Some(dir) = std::env::var_os("PODSWITCH_FUZZ_CORPUS") else { return };
    let dir = std::path::PathBuf::from(dir);
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    for (name, bytes) in seeds() {
        write("pipeline_stateful", &name, &bytes);
    }
    // wire_parsers: selector 8 (an Ethernet frame), or 6 (VXLAN) for overlay frames.
    let h = Harness::new();
    for (i, t) in h.templates().iter().enumerate().step_by(3) {
        let mut b = vec![if t.port == OVERLAY { 6 } else { 8 }];
        b.extend_from_slice(&t.frame);
        write("wire_parsers", &format!("frame-{i:02}"), &b);
    }
    // gro: [len][virtio-net header][frame] each: a run of segments, then a super-frame.
    let mut run = Vec::new();
    for t in h.templates().iter().filter(|t| t.name == "host to pod segment") {
        run.extend_from_slice(&(t.frame.len() as u16).to_le_bytes());
        run.extend_from_slice(&[0; VnetHdr::LEN]);
        run.extend_from_slice(&t.frame);
    }
    write("gro", "segment-run", &run);
    let big = tcp_frame(GW_MAC, pod_mac(0), (GW_IP, 1), (pod_ip(0), 80), 7, 0x10, &[9; 4000]);
    let mut vnet = [0u8; VnetHdr::LEN];
    VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    }
    .write(&mut vnet);
    let mut sf = (big.len() as u16).to_le_bytes().to_vec();
    sf.extend_from_slice(&vnet);
    sf.extend_from_slice(&big);
    write("gro", "super-frame", &sf);
    // dns: selector (bit 0: TCP), then a query.
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let queries = [
        ("a-web", "web.default.svc.cluster.local.", RecordType::A, None, 0u8),
        ("aaaa-web", "Web.Default.svc.cluster.local.", RecordType::AAAA, None, 0),
        ("a-big-edns", "big.default.svc.cluster.local.", RecordType::A, Some(4096), 0),
        ("any-big-tcp", "big.default.svc.cluster.local.", RecordType::ANY, None, 1),
        ("soa-apex", "cluster.local.", RecordType::SOA, Some(1232), 0),
        ("a-missing", "nope.default.svc.cluster.local.", RecordType::A, None, 0),
        ("a-outside", "example.com.", RecordType::A, None, 0),
    ];
    for (name, q, t, edns, how) in queries {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(q).unwrap(), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        let mut b = vec![how];
        b.extend_from_slice(&m.to_vec().unwrap());
        write("dns", name, &b);
    }
}

#[test]
fn steps_round_trip_through_their_encoding() {
    for (_, seed) in seeds() {
        let steps = decode(&seed);
        assert_eq!(encode(&steps), seed);
    }
}

/// The known crash (fixed on main): an ICMP destination unreachable from a pod whose
/// quoted IPv4 header claims IHL 2, while conntrack holds connections.
#[test]
fn icmp_error_with_a_short_quoted_header_does_not_panic() {
    let mut h = Harness::new();
    assert!(h.conntrack_len() > 0);
    // Quoted: version 4, IHL 2, protocol UDP at offset 9, cut at 12 bytes.
    let quoted = [0x42, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
    let err = icmp_frame(pod_mac(1), GW_MAC, pod_ip(1), pod_ip(0), (3, 3), [0; 4], &quoted);
    let steps: Vec<Step> = (0..2)
        .map(|w| Step::Raw { ctl: 2 | (w << 4) | 0x20, vnet: vec![], frame: err.clone() })
        .collect();
    h.run(&steps);
}

fn step() -> impl Strategy<Value = Step> {
    let ctl = any::<u8>();
    let vnet = proptest::collection::vec(any::<u8>(), 0..=10);
    // Mutations aimed at headers: mostly near an anchor, often with values that mean
    // something in a header (versions and lengths, protocols, ICMP types, flags).
    let interesting = prop::sample::select(INTERESTING.to_vec());
    let write = (
        prop_oneof![1 => Just(0u16), 2 => Just(1), 2 => Just(2), 3 => Just(3)],
        prop_oneof![4 => 0u16..8, 2 => 0u16..64, 1 => 0u16..0x2000],
        prop_oneof![1 => any::<u8>(), 1 => interesting],
        any::<bool>(),
    )
        .prop_map(|(anchor, off, v, table)| (anchor << 14 | u16::from(table) << 13 | off, v));
    let template =
        (
            ctl,
            vnet.clone(),
            any::<u8>(),
            proptest::collection::vec(write, 0..4),
            prop_oneof![8 => Just(0u8), 1 => 0u8..24],
            prop_oneof![3 => Just(0u16), 2 => (1u16..40).prop_map(|n| 0x8000 | n), 1 => 1u16..200],
            prop_oneof![1 => Just(0u8), 3 => Just(7u8), 1 => 0u8..8],
        )
            .prop_map(|(ctl, vnet, template, writes, extend, truncate, fix)| {
                Step::Template { ctl, vnet, template, writes, extend, truncate, fix }
            });
    let raw = (ctl, vnet, proptest::collection::vec(any::<u8>(), 0..120))
        .prop_map(|(ctl, vnet, frame)| Step::Raw { ctl, vnet, frame });
    prop_oneof![
        12 => template,
        2 => raw,
        1 => (any::<u16>(), any::<bool>())
            .prop_map(|(secs, housekeeping)| Step::Advance { secs: secs % 400, housekeeping }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(op, arg)| Step::Control { op, arg }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    /// The stateful pipeline property: whatever arrives, in whatever order, on whichever
    /// worker, with time passing and the control plane changing things, on a node with
    /// Services, tracked connections, peers and two workers, nothing panics and every
    /// invariant of the harness holds.
    #[test]
    fn the_pipeline_with_state_survives_hostile_pods(steps in proptest::collection::vec(step(), 1..24)) {
        // Through the byte encoding, so this runs exactly what the fuzz target would.
        let mut h = Harness::new();
        h.run(&decode(&encode(&steps)));
    }
}
