//! The table's tests: both directions, TCP lifecycles and timeouts through the table, the
//! limit, clashes, sweeping, and a model-based property test of the whole API.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::tables::conntrack::key::{PROTO_ICMP, PROTO_TCP};
use crate::tables::conntrack::TcpState;
use crate::wire::tcp::TcpFlags;

const SYN: u8 = TcpFlags::SYN.0;
const ACK: u8 = TcpFlags::ACK.0;
const FIN: u8 = TcpFlags::FIN.0;
const RST: u8 = TcpFlags::RST.0;
const SYN_ACK: u8 = SYN | ACK;
const FIN_ACK: u8 = FIN | ACK;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn client(n: u8, sport: u16, proto: u8) -> FlowKey {
    FlowKey { src: Ipv4Addr::new(10, 0, 0, n), dst: VIP, sport, dport: 80, proto }
}

fn to_backend(n: u8) -> Nat {
    Nat { vip: VIP, vport: 80, backend: Ipv4Addr::new(10, 1, 0, n), bport: 8080, snat: None }
}

fn table(max: usize) -> Conntrack {
    Conntrack::new(ConntrackConfig { max_entries: max, ..ConntrackConfig::default() })
}

/// Runs one packet through the table the way the NAT stage does: lookup, else create.
fn packet(ct: &mut Conntrack, key: FlowKey, flags: Option<u8>, now: Instant) -> (EntryId, Dir) {
    let (id, dir) = ct.lookup(&key, now).expect("tracked");
    ct.update(id, dir, flags, 100, now);
    (id, dir)
}

/// Creates a UDP flow and accounts a reply: assured, never early-dropped.
fn answered(ct: &mut Conntrack, key: FlowKey, now: Instant) -> Result<EntryId, CreateError> {
    let id = ct.create(key, to_backend(1), None, now)?;
    ct.update(id, Dir::Reply, None, 60, now);
    Ok(id)
}

fn state(ct: &Conntrack, id: EntryId) -> CtState {
    ct.get(id).unwrap().state
}

#[test]
fn tables_sharing_a_limit_hold_max_entries_between_them() {
    let t0 = Instant::now();
    let total = std::sync::Arc::new(SharedCounts::default());
    let (mut a, mut b) = (table(3), table(3));
    a.share_limit(total.clone());
    b.share_limit(total.clone());
    let ida = answered(&mut a, client(1, 1, 17), t0).unwrap();
    answered(&mut b, client(2, 1, 17), t0).unwrap();
    answered(&mut b, client(3, 1, 17), t0).unwrap();
    let full = a.create(client(4, 1, PROTO_TCP), to_backend(1), Some(SYN), t0);
    assert!(matches!(full, Err(CreateError::Full(3))), "{full:?}");
    // Room given back by one table is usable by the other.
    assert!(a.remove(ida));
    b.create(client(5, 1, PROTO_TCP), to_backend(1), Some(SYN), t0).unwrap();
    assert_eq!(b.flush(), 3);
    assert_eq!(total.len(), 0);
}

#[test]
fn full_table_early_drops_an_unassured_entry_never_an_assured_one() {
    let t0 = Instant::now();
    let mut ct = table(3);
    // a: answered UDP (assured); b: established TCP with a reply (assured).
    let a = client(1, 1, 17);
    let ida = ct.create(a, to_backend(1), None, t0).unwrap();
    ct.update(ida, Dir::Reply, None, 10, t0);
    let b = client(2, 1, PROTO_TCP);
    let idb = ct.create(b, to_backend(1), Some(SYN), t0).unwrap();
    ct.update(idb, Dir::Original, Some(SYN), 60, t0);
    ct.update(idb, Dir::Reply, Some(SYN_ACK), 60, t0);
    ct.update(idb, Dir::Original, Some(ACK), 60, t0);
    assert_eq!(state(&ct, idb), CtState::Tcp(TcpState::Established));
    // c: a SYN never answered (unassured).
    let c = client(3, 1, PROTO_TCP);
    ct.create(c, to_backend(1), Some(SYN), t0).unwrap();
    // The full table drops c for d, then has nothing left to drop for e.
    let d = client(4, 1, PROTO_TCP);
    let idd = ct.create(d, to_backend(1), Some(SYN), t0).unwrap();
    assert_eq!(ct.lookup(&c, t0), None);
    assert_eq!(ct.counters().early_drop, 1);
    ct.update(idd, Dir::Reply, Some(SYN_ACK), 60, t0);
    ct.update(idd, Dir::Original, Some(ACK), 60, t0);
    let e = ct.create(client(5, 1, 17), to_backend(1), None, t0);
    assert_eq!(e, Err(CreateError::Full(3)));
    assert_eq!(ct.counters().full, 1);
    for (k, id) in [(a, ida), (b, idb), (d, idd)] {
        assert_eq!(ct.lookup(&k, t0), Some((id, Dir::Original)));
    }
    // A closing connection may be dropped again (Linux's tcp_can_early_drop).
    ct.update(idb, Dir::Original, Some(FIN_ACK), 60, t0);
    ct.create(client(6, 1, 17), to_backend(1), None, t0).unwrap();
    assert_eq!(ct.lookup(&b, t0), None);
    let n = ct.counters();
    assert_eq!(n.created, ct.len() as u64 + n.early_drop);
}

#[test]
fn droppable_is_unassured_or_closing() {
    let t0 = Instant::now();
    let mut ct = table(8);
    let id = ct.create(client(1, 1, PROTO_TCP), to_backend(1), Some(ACK), t0).unwrap();
    // Picked up mid-stream: Established, but no reply yet.
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::Established));
    assert!(ct.get(id).unwrap().is_early_droppable());
    ct.update(id, Dir::Reply, Some(ACK), 60, t0);
    assert!(!ct.get(id).unwrap().is_early_droppable());
    let id = ct.create(client(2, 1, 17), to_backend(1), None, t0).unwrap();
    assert!(ct.get(id).unwrap().is_early_droppable());
    ct.update(id, Dir::Reply, None, 60, t0);
    assert!(!ct.get(id).unwrap().is_early_droppable());
    let id = ct.create(client(3, 1, PROTO_ICMP), to_backend(1), None, t0).unwrap();
    ct.update(id, Dir::Reply, None, 60, t0);
    assert!(ct.get(id).unwrap().is_early_droppable());
}

#[test]
fn a_port_past_its_share_is_refused_while_others_open_flows() {
    let t0 = Instant::now();
    let cfg = ConntrackConfig { max_entries: 10, max_per_port: 2, ..ConntrackConfig::default() };
    let mut ct = Conntrack::new(cfg);
    let (p, q) = (Some(PortId(3)), Some(PortId(4)));
    let udp = |n| client(n, 1, 17);
    let first = ct.create_for(p, udp(1), to_backend(1), None, t0).unwrap();
    ct.create_for(p, udp(2), to_backend(1), None, t0).unwrap();
    assert_eq!(
        ct.create_for(p, udp(3), to_backend(1), None, t0),
        Err(CreateError::PortLimit(PortId(3)))
    );
    assert_eq!(ct.counters().port_limit, 1);
    ct.create_for(q, udp(4), to_backend(1), None, t0).unwrap();
    // Flows no pod owns count only against max_entries.
    for n in 5..9 {
        ct.create_for(None, udp(n), to_backend(1), None, t0).unwrap();
    }
    assert_eq!((ct.port_len(PortId(3)), ct.port_len(PortId(4))), (2, 1));
    // Every kind of removal gives the share back.
    assert!(ct.remove(first));
    assert_eq!(ct.port_len(PortId(3)), 1);
    ct.create_for(p, udp(3), to_backend(1), None, t0).unwrap();
    // Expired entries of the port are reclaimed when it reaches its share.
    let later = t0 + secs(31);
    ct.create_for(p, udp(9), to_backend(1), None, later).unwrap();
    assert_eq!(ct.port_len(PortId(3)), 1);
    assert_eq!(ct.remove_port(PortId(3)), 1);
    assert_eq!(ct.port_len(PortId(3)), 0);
    ct.create_for(q, udp(10), to_backend(2), None, later).unwrap();
    assert_eq!(ct.port_len(PortId(4)), 1);
    ct.flush();
    assert_eq!((ct.port_len(PortId(4)), ct.shared_counts().len()), (0, 0));
}

#[test]
fn shares_are_counted_across_tables() {
    let t0 = Instant::now();
    let shared = std::sync::Arc::new(SharedCounts::default());
    let cfg = ConntrackConfig { max_entries: 100, max_per_port: 3, ..ConntrackConfig::default() };
    let (mut a, mut b) = (Conntrack::new(cfg), Conntrack::new(cfg));
    a.share_limit(shared.clone());
    b.share_limit(shared.clone());
    let p = Some(PortId(7));
    a.create_for(p, client(1, 1, 17), to_backend(1), None, t0).unwrap();
    b.create_for(p, client(2, 1, 17), to_backend(1), None, t0).unwrap();
    b.create_for(p, client(3, 1, 17), to_backend(1), None, t0).unwrap();
    let r = a.create_for(p, client(4, 1, 17), to_backend(1), None, t0);
    assert_eq!(r, Err(CreateError::PortLimit(PortId(7))));
    assert_eq!(b.remove_port(PortId(7)), 2);
    assert_eq!(shared.port_len(PortId(7)), 1);
    a.create_for(p, client(4, 1, 17), to_backend(1), None, t0).unwrap();
    assert_eq!((shared.len(), shared.port_len(PortId(7))), (2, 2));
}

#[test]
fn found_from_both_directions() {
    let t0 = Instant::now();
    let mut ct = table(16);
    let k = client(1, 40000, PROTO_TCP);
    let id = ct.create(k, to_backend(1), Some(SYN), t0).unwrap();
    let reply = FlowKey {
        src: Ipv4Addr::new(10, 1, 0, 1),
        dst: Ipv4Addr::new(10, 0, 0, 1),
        sport: 8080,
        dport: 40000,
        proto: PROTO_TCP,
    };
    assert_eq!(ct.get(id).unwrap().reply(), reply);
    assert_eq!(ct.lookup(&k, t0), Some((id, Dir::Original)));
    assert_eq!(ct.lookup(&reply, t0), Some((id, Dir::Reply)));
    // The untranslated reverse (VIP -> client) is not a key.
    assert_eq!(ct.lookup(&k.reversed(), t0), None);
    assert_eq!(ct.counters().found, 2);
    assert_eq!(ct.len(), 1);
}

#[test]
fn snat_and_icmp_reply_keys() {
    let t0 = Instant::now();
    let mut ct = table(16);
    let hairpin = Ipv4Addr::new(10, 0, 0, 254);
    let k = client(1, 40000, PROTO_TCP);
    let nat = Nat { snat: Some((hairpin, 61000)), ..to_backend(1) };
    let id = ct.create(k, nat, Some(SYN), t0).unwrap();
    let r = ct.get(id).unwrap().reply();
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (Ipv4Addr::new(10, 1, 0, 1), 8080, hairpin, 61000)
    );
    assert_eq!(ct.lookup(&r, t0), Some((id, Dir::Reply)));

    let ping = FlowKey {
        src: Ipv4Addr::new(10, 0, 0, 2),
        dst: VIP,
        sport: 7,
        dport: 7,
        proto: PROTO_ICMP,
    };
    let id = ct.create(ping, Nat { vport: 0, bport: 0, ..to_backend(2) }, None, t0).unwrap();
    let r = ct.get(id).unwrap().reply();
    assert_eq!((r.sport, r.dport), (7, 7));
    assert_eq!(state(&ct, id), CtState::Icmp);
    ct.update(id, Dir::Original, None, 84, t0);
    assert_eq!(ct.lookup(&r, t0 + secs(29)), Some((id, Dir::Reply)));
    assert_eq!(ct.lookup(&r, t0 + secs(30)), None);
}

#[test]
fn tcp_lifecycle_to_time_wait_timeout() {
    let t0 = Instant::now();
    let mut ct = table(16);
    let k = client(1, 40000, PROTO_TCP);
    let id = ct.create(k, to_backend(1), Some(SYN), t0).unwrap();
    let r = ct.get(id).unwrap().reply();
    let at = |n| t0 + secs(n);

    packet(&mut ct, k, Some(SYN), at(0));
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::SynSent));
    assert_eq!(ct.get(id).unwrap().expires, at(120));
    packet(&mut ct, r, Some(SYN_ACK), at(1));
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::SynRecv));
    assert_eq!(ct.get(id).unwrap().expires, at(61));
    packet(&mut ct, k, Some(ACK), at(2));
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::Established));
    assert_eq!(ct.get(id).unwrap().expires, at(2 + 432_000));
    // Days later the connection is still there.
    packet(&mut ct, r, Some(ACK), at(400_000));
    packet(&mut ct, k, Some(FIN_ACK), at(400_001));
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::FinWait));
    packet(&mut ct, r, Some(ACK), at(400_002));
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::CloseWait));
    packet(&mut ct, r, Some(FIN_ACK), at(400_003));
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::LastAck));
    packet(&mut ct, k, Some(ACK), at(400_004));
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::TimeWait));
    let e = ct.get(id).unwrap();
    assert_eq!(e.packets, [4, 4]);
    assert_eq!(e.bytes, [400, 400]);
    assert_eq!(ct.lookup(&k, at(400_004 + 119)), Some((id, Dir::Original)));
    assert_eq!(ct.lookup(&k, at(400_004 + 120)), None);
    assert!(ct.is_empty());
    assert_eq!(ct.counters().expired, 1);
}

#[test]
fn simultaneous_fins_and_reopen() {
    let t0 = Instant::now();
    let mut ct = table(16);
    let k = client(1, 40000, PROTO_TCP);
    let id = ct.create(k, to_backend(1), Some(SYN), t0).unwrap();
    let r = ct.get(id).unwrap().reply();
    for (key, flags) in [(k, SYN), (r, SYN_ACK), (k, ACK), (k, FIN_ACK), (r, FIN_ACK)] {
        packet(&mut ct, key, Some(flags), t0);
    }
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::LastAck));
    packet(&mut ct, k, Some(ACK), t0);
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::TimeWait));
    // The client reuses the port: a SYN in TimeWait reopens the same entry.
    packet(&mut ct, k, Some(SYN), t0 + secs(5));
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::SynSent));
}

#[test]
fn rst_closes_with_short_timeout() {
    let t0 = Instant::now();
    let mut ct = table(16);
    let k = client(1, 40000, PROTO_TCP);
    let id = ct.create(k, to_backend(1), Some(SYN), t0).unwrap();
    let r = ct.get(id).unwrap().reply();
    for (key, flags) in [(k, SYN), (r, SYN_ACK), (k, ACK)] {
        packet(&mut ct, key, Some(flags), t0);
    }
    packet(&mut ct, r, Some(RST | ACK), t0 + secs(50));
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::Close));
    assert_eq!(ct.get(id).unwrap().expires, t0 + secs(60));
    assert_eq!(ct.sweep(t0 + secs(59), 100), 0);
    assert_eq!(ct.sweep(t0 + secs(60), 100), 1);
    assert!(ct.is_empty());
}

#[test]
fn invalid_first_packets_and_pickup() {
    let t0 = Instant::now();
    let mut ct = table(16);
    for flags in [RST, RST | ACK, FIN_ACK, SYN_ACK, 0] {
        assert_eq!(
            ct.create(client(1, 1, PROTO_TCP), to_backend(1), Some(flags), t0),
            Err(CreateError::InvalidTcp(flags))
        );
    }
    assert_eq!(ct.counters().invalid, 5);
    assert!(ct.is_empty());
    // A mid-stream ACK is picked up, but not kept long without a reply.
    let k = client(1, 2, PROTO_TCP);
    let id = ct.create(k, to_backend(1), Some(ACK), t0).unwrap();
    packet(&mut ct, k, Some(ACK), t0);
    assert_eq!(state(&ct, id), CtState::Tcp(TcpState::Established));
    assert_eq!(ct.get(id).unwrap().expires, t0 + secs(120));
    let r = ct.get(id).unwrap().reply();
    packet(&mut ct, r, Some(ACK), t0 + secs(1));
    assert_eq!(ct.get(id).unwrap().expires, t0 + secs(1 + 432_000));
}

#[test]
fn udp_assured_after_reply() {
    let t0 = Instant::now();
    let mut ct = table(16);
    let a = client(1, 5353, 17);
    let b = client(2, 5353, 17);
    let ida = ct.create(a, to_backend(1), None, t0).unwrap();
    let idb = ct.create(b, to_backend(1), None, t0).unwrap();
    packet(&mut ct, a, None, t0);
    packet(&mut ct, b, None, t0);
    assert_eq!(state(&ct, ida), CtState::Udp { assured: false });
    let ra = ct.get(ida).unwrap().reply();
    packet(&mut ct, ra, None, t0 + secs(1));
    assert_eq!(state(&ct, ida), CtState::Udp { assured: true });
    assert_eq!(state(&ct, ida).to_string(), "udp_assured");
    // Unreplied: 30 s. Replied: 120 s from the last packet.
    assert_eq!(ct.lookup(&b, t0 + secs(30)), None);
    assert_eq!(ct.lookup(&a, t0 + secs(120)), Some((ida, Dir::Original)));
    assert_eq!(ct.lookup(&a, t0 + secs(121)), None);
    assert_eq!(ct.get(idb), None);
}

#[test]
fn full_table_of_assured_entries_refuses_never_evicts_then_accepts() {
    let t0 = Instant::now();
    let mut ct = table(2);
    let a = client(1, 1, 17);
    let b = client(2, 1, 17);
    let c = client(3, 1, 17);
    let ida = ct.create(a, to_backend(1), None, t0).unwrap();
    packet(&mut ct, a, None, t0);
    ct.update(ida, Dir::Reply, None, 10, t0); // a: assured, 120 s
    let idb = ct.create(b, to_backend(1), None, t0).unwrap();
    ct.update(idb, Dir::Reply, None, 10, t0); // b: assured, 120 s
    assert_eq!(ct.create(c, to_backend(1), None, t0 + secs(10)), Err(CreateError::Full(2)));
    assert_eq!(ct.create(c, to_backend(1), None, t0 + secs(10)), Err(CreateError::Full(2)));
    assert_eq!((ct.counters().full, ct.counters().early_drop), (2, 0));
    assert_eq!(ct.lookup(&a, t0 + secs(10)), Some((ida, Dir::Original)));
    assert_eq!(ct.lookup(&b, t0 + secs(10)), Some((idb, Dir::Original)));
    ct.update(ida, Dir::Original, None, 10, t0 + secs(100)); // a: until 220 s
                                                             // b expires (not yet swept): the full table reclaims it for the new flow.
    let idc = ct.create(c, to_backend(1), None, t0 + secs(121)).unwrap();
    assert_eq!(ct.len(), 2);
    assert_eq!(ct.lookup(&a, t0 + secs(121)), Some((ida, Dir::Original)));
    assert_eq!(ct.lookup(&b, t0 + secs(121)), None);
    // Removal makes room too.
    assert!(ct.remove(idc));
    assert!(!ct.remove(idc));
    ct.create(b, to_backend(1), None, t0 + secs(122)).unwrap();
    let c = ct.counters();
    assert_eq!((c.created, c.expired, c.removed, c.early_drop), (4, 1, 1, 0));
}

#[test]
fn clash_and_expired_holder() {
    let t0 = Instant::now();
    let mut ct = table(16);
    let snat = Some((Ipv4Addr::new(10, 0, 0, 254), 61000));
    let a = client(1, 1000, 17);
    let b = client(2, 2000, 17);
    ct.create(a, Nat { snat, ..to_backend(1) }, None, t0).unwrap();
    assert_eq!(ct.create(a, to_backend(2), None, t0), Err(CreateError::Clash(a)));
    // Same backend and same snat port: the reply 5-tuples collide.
    let nat = Nat { snat, ..to_backend(1) };
    let err = ct.create(b, nat, None, t0).unwrap_err();
    assert_eq!(err, CreateError::Clash(reply_key(&b, &nat)));
    assert_eq!(ct.counters().clash, 2);
    // Once the holder expired, the key is free.
    assert!(ct.create(b, nat, None, t0 + secs(30)).is_ok());
    assert_eq!(ct.len(), 1);
    assert_eq!(ct.counters().expired, 1);
}

#[test]
fn sweep_respects_budget_and_eventually_removes_all() {
    let t0 = Instant::now();
    let mut ct = table(100);
    for i in 0..50 {
        ct.create(client(1, i, 17), to_backend(1), None, t0).unwrap();
    }
    for i in 0..10 {
        let id = ct.create(client(2, i, 17), to_backend(1), None, t0).unwrap();
        ct.update(id, Dir::Reply, None, 1, t0); // assured: lives 120 s
    }
    let later = t0 + secs(60);
    let mut total = 0;
    let mut calls = 0;
    while total < 50 {
        let n = ct.sweep(later, 7);
        assert!(n <= 7);
        total += n;
        calls += 1;
        assert!(calls <= 9, "one pass over 60 slots takes 9 calls of 7");
    }
    assert_eq!(ct.len(), 10);
    assert_eq!(ct.sweep(later, 1000), 0);
    assert_eq!(ct.counters().expired, 50);
    assert_eq!(ct.sweep(t0 + secs(120), usize::MAX), 10);
    assert!(ct.is_empty());
    assert_eq!(ct.sweep(t0 + secs(120), 10), 0);
}

#[test]
fn remove_backend_and_flush() {
    let t0 = Instant::now();
    let mut ct = table(16);
    for i in 0..6u8 {
        ct.create(client(i, 1, PROTO_TCP), to_backend(i % 2), Some(SYN), t0).unwrap();
    }
    ct.create(client(9, 1, 17), to_backend(0), None, t0).unwrap();
    assert_eq!(ct.remove_backend(Ipv4Addr::new(10, 1, 0, 0), 8080, PROTO_TCP), 3);
    assert_eq!(ct.remove_backend(Ipv4Addr::new(10, 1, 0, 1), 9999, PROTO_TCP), 0);
    assert_eq!(ct.len(), 4);
    assert!(ct
        .entries(t0, 100)
        .iter()
        .all(|e| e.nat.backend != Ipv4Addr::new(10, 1, 0, 0) || e.original.proto == 17));
    assert_eq!(ct.lookup(&client(0, 1, PROTO_TCP), t0), None);
    assert_eq!(ct.counters().removed, 3);
    assert_eq!(ct.flush(), 4);
    assert!(ct.is_empty());
    assert_eq!(ct.lookup(&client(1, 1, PROTO_TCP), t0), None);
    assert_eq!(ct.counters().flushed, 4);
    // Usable again after a flush.
    let id = ct.create(client(1, 1, PROTO_TCP), to_backend(1), Some(SYN), t0).unwrap();
    assert_eq!(ct.lookup(&client(1, 1, PROTO_TCP), t0), Some((id, Dir::Original)));
}

#[test]
fn entries_are_live_oldest_first_and_limited() {
    let t0 = Instant::now();
    let mut ct = table(16);
    for (i, at) in [(3u16, 5u64), (1, 1), (2, 3), (4, 0)] {
        ct.create(client(1, i, 17), to_backend(1), None, t0 + secs(at)).unwrap();
    }
    let ports = |v: Vec<Entry>| v.iter().map(|e| e.original.sport).collect::<Vec<_>>();
    assert_eq!(ports(ct.entries(t0 + secs(5), 10)), vec![4, 1, 2, 3]);
    assert_eq!(ports(ct.entries(t0 + secs(5), 2)), vec![4, 1]);
    assert_eq!(ports(ct.entries(t0 + secs(5), 0)), Vec::<u16>::new());
    // The entry created at 0 expired at 30.
    assert_eq!(ports(ct.entries(t0 + secs(30), 10)), vec![1, 2, 3]);
}
#[test]
fn index_grows_past_the_reserve_and_finds_both_directions() {
    let t0 = Instant::now();
    let cfg = ConntrackConfig { max_entries: 2000, ..ConntrackConfig::default() };
    let mut ct = Conntrack::with_reserve(cfg, 4);
    let key = |i: u16| client((i / 500) as u8, i, PROTO_TCP);
    let ids: Vec<EntryId> = (0..2000)
        .map(|i| {
            let id = ct.create(key(i), to_backend((i % 3) as u8), Some(SYN), t0).unwrap();
            ct.update(id, Dir::Reply, Some(SYN_ACK), 60, t0);
            ct.update(id, Dir::Original, Some(ACK), 60, t0);
            id
        })
        .collect();
    assert!(ct.create(key(3000), to_backend(0), Some(SYN), t0).is_err());
    for i in (0..2000u16).step_by(2) {
        assert!(ct.remove(ids[usize::from(i)]));
    }
    for i in 0..2000u16 {
        let id = ids[usize::from(i)];
        let found = ct.lookup(&key(i), t0);
        if i % 2 == 0 {
            assert_eq!(found, None);
        } else {
            assert_eq!(found, Some((id, Dir::Original)));
            let reply = ct.get(id).unwrap().reply();
            let h = ct.hash(&reply);
            ct.prefetch_index(h);
            ct.prefetch_entry(h);
            assert_eq!(ct.lookup_hashed(&reply, h, t0), Some((id, Dir::Reply)));
        }
    }
    assert_eq!(ct.index.len(), 2 * ct.len());
}

#[test]
fn bytes_per_entry_is_reported() {
    let b = Conntrack::bytes_per_entry();
    assert!(b >= std::mem::size_of::<Entry>() + 2 * std::mem::size_of::<FlowKey>());
    assert!(b < 256, "{b}");
}

// ---- Model-based property test ----

/// Owner ports the model uses, and each one's share.
const PORTS: u16 = 3;
const SHARE: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Create {
        client: u8,
        sport: u16,
        backend: u8,
        snat: Option<u16>,
        tcp: bool,
        flags: u8,
        owner: Option<u16>,
    },
    Lookup {
        client: u8,
        sport: u16,
        backend: u8,
        snat: Option<u16>,
        tcp: bool,
        reply: bool,
    },
    Update {
        pick: usize,
        reply: bool,
        flags: u8,
        len: u16,
    },
    Advance {
        secs: u64,
    },
    Sweep {
        budget: usize,
    },
    Remove {
        pick: usize,
    },
    RemoveBackend {
        backend: u8,
        tcp: bool,
    },
    Flush,
    RemovePort {
        port: u16,
    },
}

fn flags() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![SYN, SYN_ACK, ACK, FIN_ACK, RST, RST | ACK, 0])
}

fn op() -> impl Strategy<Value = Op> {
    let snat = prop::option::weighted(0.3, 0u16..3);
    prop_oneof![
        6 => (0u8..4, 0u16..3, 0u8..3, snat.clone(), any::<bool>(), flags(), prop::option::of(0u16..PORTS)).prop_map(
            |(client, sport, backend, snat, tcp, flags, owner)| Op::Create { client, sport, backend, snat, tcp, flags, owner }
        ),
        6 => (0u8..4, 0u16..3, 0u8..3, snat, any::<bool>(), any::<bool>()).prop_map(
            |(client, sport, backend, snat, tcp, reply)| Op::Lookup { client, sport, backend, snat, tcp, reply }
        ),
        6 => (any::<usize>(), any::<bool>(), flags(), 0u16..1500)
            .prop_map(|(pick, reply, flags, len)| Op::Update { pick, reply, flags, len }),
        3 => prop::sample::select(vec![0u64, 1, 5, 29, 30, 60, 119, 121, 500]).prop_map(|secs| Op::Advance { secs }),
        2 => prop::sample::select(vec![0usize, 1, 3, 10, usize::MAX]).prop_map(|budget| Op::Sweep { budget }),
        2 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        1 => (0u8..3, any::<bool>()).prop_map(|(backend, tcp)| Op::RemoveBackend { backend, tcp }),
        1 => Just(Op::Flush),
        1 => (0u16..PORTS).prop_map(|port| Op::RemovePort { port }),
    ]
}

fn flow(client: u8, sport: u16, backend: u8, snat: Option<u16>, tcp: bool) -> (FlowKey, Nat) {
    let proto = if tcp { PROTO_TCP } else { 17 };
    let k = self::client(client, 1000 + sport, proto);
    let nat = Nat {
        snat: snat.map(|p| (Ipv4Addr::new(10, 0, 0, 254), 61000 + p)),
        ..to_backend(backend)
    };
    (k, nat)
}

#[derive(Debug)]
struct Model {
    /// id -> (original, reply, expires, owner)
    entries: BTreeMap<EntryId, (FlowKey, FlowKey, Instant, Option<PortId>)>,
    index: BTreeMap<FlowKey, (EntryId, Dir)>,
}

impl Model {
    fn remove(&mut self, id: EntryId) {
        let (o, r, _, _) = self.entries.remove(&id).unwrap();
        self.index.remove(&o);
        self.index.remove(&r);
    }

    /// Drops model entries the table no longer holds (an id may hold a new entry: a
    /// reused id, possibly for the same 5-tuple, differs in its expiry); each must have
    /// been expired, or be one of `droppable` (at most `dropped` of those).
    /// Returns how many.
    fn sync_dropping(
        &mut self,
        ct: &Conntrack,
        now: Instant,
        droppable: &[EntryId],
        dropped: u64,
    ) -> usize {
        let gone: Vec<EntryId> = self
            .entries
            .iter()
            .filter(|(id, (o, _, exp, _))| {
                ct.get(**id).map(|e| (e.original, e.expires)) != Some((*o, *exp))
            })
            .map(|(id, _)| *id)
            .collect();
        let mut live_gone = 0;
        for &id in &gone {
            if now < self.entries[&id].2 {
                assert!(droppable.contains(&id), "live entry {id} vanished");
                live_gone += 1;
            }
            self.remove(id);
        }
        assert!(live_gone <= dropped, "{live_gone} live entries gone, {dropped} early drops");
        gone.len()
    }

    fn sync(&mut self, ct: &Conntrack, now: Instant) -> usize {
        self.sync_dropping(ct, now, &[], 0)
    }

    fn owned(&self, p: PortId) -> usize {
        self.entries.values().filter(|e| e.3 == Some(p)).count()
    }
}

fn run(ops: Vec<Op>, max: usize) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut ct = Conntrack::new(ConntrackConfig {
        max_entries: max,
        max_per_port: SHARE,
        ..ConntrackConfig::default()
    });
    let mut m = Model { entries: BTreeMap::new(), index: BTreeMap::new() };
    for op in ops {
        match op {
            Op::Create { client, sport, backend, snat, tcp, flags, owner } => {
                let owner = owner.map(PortId);
                let (k, nat) = flow(client, sport, backend, snat, tcp);
                let reply = reply_key(&k, &nat);
                let droppable: Vec<EntryId> = m
                    .entries
                    .keys()
                    .copied()
                    .filter(|id| ct.get(*id).is_some_and(|e| e.is_early_droppable()))
                    .collect();
                let early = ct.counters().early_drop;
                let res = ct.create_for(owner, k, nat, tcp.then_some(flags), now);
                let dropped = ct.counters().early_drop - early;
                let valid = !tcp || flags == SYN || flags == ACK;
                if !valid {
                    assert_eq!(res, Err(CreateError::InvalidTcp(flags)));
                    continue;
                }
                let live_clash = [k, reply]
                    .into_iter()
                    .find(|key| m.index.get(key).is_some_and(|(id, _)| now < m.entries[id].2));
                // Whatever the outcome, the table may have dropped expired entries (and
                // early-dropped one unassured entry).
                m.sync_dropping(&ct, now, &droppable, dropped);
                if let Some(key) = live_clash {
                    assert_eq!(res, Err(CreateError::Clash(key)));
                    continue;
                }
                match res {
                    Ok(id) => {
                        assert!(m.entries.len() < max);
                        let e = ct.get(id).unwrap();
                        assert_eq!((e.original, e.reply(), e.owner), (k, reply, owner));
                        if let Some(p) = owner {
                            assert!(m.owned(p) < SHARE);
                        }
                        m.entries.insert(id, (k, reply, e.expires, owner));
                        m.index.insert(k, (id, Dir::Original));
                        m.index.insert(reply, (id, Dir::Reply));
                    }
                    Err(CreateError::Full(n)) => {
                        assert_eq!(n, max);
                        assert_eq!(m.entries.len(), max);
                        // The reclaim slice and the early-drop scan covered the whole
                        // (small) table.
                        assert!(m.entries.values().all(|e| now < e.2));
                        assert_eq!(dropped, 0);
                        assert!(m
                            .entries
                            .keys()
                            .all(|id| !ct.get(*id).unwrap().is_early_droppable()));
                    }
                    Err(CreateError::PortLimit(p)) => {
                        assert_eq!(Some(p), owner);
                        assert_eq!(m.owned(p), SHARE);
                        assert!(m.entries.values().all(|e| e.3 != owner || now < e.2));
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            Op::Lookup { client, sport, backend, snat, tcp, reply } => {
                let (k, nat) = flow(client, sport, backend, snat, tcp);
                let key = if reply { reply_key(&k, &nat) } else { k };
                let got = ct.lookup(&key, now);
                match m.index.get(&key).copied() {
                    Some((id, dir)) if now < m.entries[&id].2 => {
                        assert_eq!(got, Some((id, dir)))
                    }
                    Some((id, _)) => {
                        assert_eq!(got, None);
                        m.remove(id);
                    }
                    None => assert_eq!(got, None),
                }
            }
            Op::Update { pick, reply, flags, len } => {
                if m.entries.is_empty() {
                    continue;
                }
                let id = *m.entries.keys().nth(pick % m.entries.len()).unwrap();
                let dir = if reply { Dir::Reply } else { Dir::Original };
                let before = *ct.get(id).unwrap();
                let is_tcp = before.original.proto == PROTO_TCP;
                ct.update(id, dir, is_tcp.then_some(flags), usize::from(len), now);
                let after = *ct.get(id).unwrap();
                assert_eq!(after.packets[dir.index()], before.packets[dir.index()] + 1);
                assert_eq!(after.bytes[dir.index()], before.bytes[dir.index()] + u64::from(len));
                assert_eq!(after.last_seen, now);
                if !is_tcp {
                    // UDP's timeout, computed independently.
                    let assured = after.packets[1] > 0;
                    assert_eq!(after.state, CtState::Udp { assured });
                    assert_eq!(after.expires, now + secs(if assured { 120 } else { 30 }));
                }
                m.entries.get_mut(&id).unwrap().2 = after.expires;
            }
            Op::Advance { secs: s } => now += secs(s),
            Op::Sweep { budget } => {
                let n = ct.sweep(now, budget);
                assert!(n <= budget);
                assert_eq!(m.sync(&ct, now), n);
                if budget >= max {
                    assert!(m.entries.values().all(|e| now < e.2));
                }
            }
            Op::Remove { pick } => {
                if m.entries.is_empty() {
                    assert!(!ct.remove(pick as EntryId % 8));
                    continue;
                }
                let id = *m.entries.keys().nth(pick % m.entries.len()).unwrap();
                assert!(ct.remove(id));
                m.remove(id);
                assert!(!ct.remove(id));
            }
            Op::RemoveBackend { backend, tcp } => {
                let ip = Ipv4Addr::new(10, 1, 0, backend);
                let proto = if tcp { PROTO_TCP } else { 17 };
                let expect: Vec<EntryId> = m
                    .entries
                    .iter()
                    .filter(|(id, _)| {
                        let e = ct.get(**id).unwrap();
                        e.nat.backend == ip && e.original.proto == proto
                    })
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(ct.remove_backend(ip, 8080, proto), expect.len());
                for id in expect {
                    m.remove(id);
                }
            }
            Op::Flush => {
                assert_eq!(ct.flush(), m.entries.len());
                m.entries.clear();
                m.index.clear();
            }
            Op::RemovePort { port } => {
                let expect: Vec<EntryId> = m
                    .entries
                    .iter()
                    .filter(|(_, e)| e.3 == Some(PortId(port)))
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(ct.remove_port(PortId(port)), expect.len());
                for id in expect {
                    m.remove(id);
                }
            }
        }
        for p in 0..PORTS {
            assert_eq!(ct.port_len(PortId(p)), m.owned(PortId(p)), "port {p}");
        }
        assert_eq!(ct.shared_counts().len(), ct.len());
        assert_eq!(ct.len(), m.entries.len());
        assert_eq!(ct.index.len(), 2 * ct.len());
        let c = ct.counters();
        assert_eq!(c.created, ct.len() as u64 + c.expired + c.removed + c.flushed + c.early_drop);
        let live = m.entries.values().filter(|e| now < e.2).count();
        assert_eq!(ct.entries(now, usize::MAX).len(), live);
    }
}

proptest! {
    #[test]
    fn behaves_like_a_model(ops in prop::collection::vec(op(), 1..200), max in 1usize..12) {
        run(ops, max);
    }
}
