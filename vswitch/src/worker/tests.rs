use super::*;
use crate::config::{Config, Pinning, WorkerConfig};
use crate::pipeline::testutil::*;
use crate::port::memory::{MemoryPort, MemoryPortHandle};

/// A switch with `workers` workers and three memory ports (single-queue: with two
/// workers, port 1 is polled by worker 1 and ports 0 and 2 by worker 0, so frames
/// between them cross the fabric).
fn start(workers: usize) -> (WorkerHandle, Vec<MemoryPortHandle>) {
    let cfg = Config::for_node("n1", "10.244.1.0/24".parse().unwrap(), "/tmp/unused".into());
    let settings = WorkerConfig { count: workers, pin: Pinning::Off, ..WorkerConfig::single() };
    let w = WorkerHandle::spawn_with(|s| Pipeline::for_worker(&cfg, s), 8, settings).unwrap();
    let mut handles = Vec::new();
    for i in 0..3u16 {
        let (p, h) = MemoryPort::new();
        let neighbor = match i {
            1 => Some((IP_A, MAC_A)),
            2 => Some((IP_B, MAC_B)),
            _ => None,
        };
        w.add_port(PortId(i), vec![Box::new(p)], neighbor, None).unwrap().unwrap();
        handles.push(h);
    }
    (w, handles)
}

fn wait_for(h: &MemoryPortHandle, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(h.take_sent());
        std::thread::sleep(Duration::from_millis(2));
    }
    got
}

fn switches_between_memory_ports_and_counts(workers: usize) {
    let (w, h) = start(workers);
    // A floods (C, a station behind port 2, is unknown), C answers (C learned), then
    // A -> C is unicast. (The pods' own MACs, A and B, are known from the start.)
    h[1].inject(&udp_frame(MAC_A, MAC_C, IP_A, IP_C, 1, 2, b"1"));
    assert_eq!(wait_for(&h[2], 1).len(), 1);
    assert_eq!(wait_for(&h[0], 1).len(), 1, "flood reaches the third port");
    h[2].inject(&udp_frame(MAC_C, MAC_A, IP_C, IP_A, 2, 1, b"2"));
    assert_eq!(wait_for(&h[1], 1).len(), 1);
    // Give the announcement of C time to reach the worker that polls A.
    std::thread::sleep(Duration::from_millis(20));
    h[1].inject(&udp_frame(MAC_A, MAC_C, IP_A, IP_C, 1, 2, b"3"));
    assert_eq!(wait_for(&h[2], 1).len(), 1);
    std::thread::sleep(Duration::from_millis(20));
    assert!(h[0].take_sent().is_empty(), "known unicast is not flooded");
    let stats = w.stats().unwrap();
    let c1 = stats.ports.iter().find(|p| p.id == PortId(1)).unwrap().counters;
    assert_eq!(c1.rx_packets, 2);
    assert_eq!(c1.unknown_unicast, 1);
    assert_eq!(c1.tx_packets, 1);
    if workers == 2 {
        assert_eq!(c1.tx_handoffs, 3, "port 1's frames to ports 0 and 2 crossed over");
    }
    assert_eq!(stats.neighbors, 2);
    let fdb = w.fdb_list().unwrap();
    assert_eq!(fdb.entries.len(), 3, "A and B from attach, C learned: {:?}", fdb.entries);
}

#[test]
fn pods_own_macs_are_known_from_attach_and_come_back_after_a_flush() {
    for workers in [1, 2] {
        let (w, h) = start(workers);
        h[1].inject(&udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"to a silent B"));
        assert_eq!(wait_for(&h[2], 1).len(), 1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(h[0].take_sent().is_empty(), "not flooded");
        w.fdb_flush(None).unwrap();
        assert!(w.fdb_list().unwrap().entries.is_empty());
        let deadline = Instant::now() + Duration::from_secs(3);
        while w.fdb_list().unwrap().entries.len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let ports: Vec<PortId> = w.fdb_list().unwrap().entries.iter().map(|e| e.port).collect();
        assert_eq!(ports, [PortId(1), PortId(2)], "put back by the aging sweep");
    }
}

/// EtherType of the frame a test sends to make the pipeline panic (IEEE local
/// experimental): stands for any bug a pod's frame could trigger.
const PANIC_MARKER: [u8; 2] = [0x88, 0xb5];

pub(super) fn panic_on_marker(batch: &Batch) {
    if batch.packets().iter().any(|p| p.data().get(12..14) == Some(&PANIC_MARKER[..])) {
        panic!("test: a frame of death");
    }
}

#[test]
fn a_panic_in_the_pipeline_costs_its_burst_not_the_worker() {
    for workers in [1, 2] {
        let (w, h) = start(workers);
        let mut death = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"x");
        death[12..14].copy_from_slice(&PANIC_MARKER);
        for i in 1..=3 {
            h[1].inject(&death);
            // Each in a burst of its own: a panic costs the whole burst it is in.
            let deadline = Instant::now() + Duration::from_secs(5);
            while w.health().panics < i && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        h[1].inject(&udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"after"));
        let got = wait_for(&h[2], 1);
        assert_eq!(got.len(), 1, "{workers} workers: still forwarding; {:?}", w.health());
        assert!(got[0].ends_with(b"after"));
        let health = w.health();
        assert!(health.down.is_empty(), "{health:?}");
        assert_eq!(health.panics, 3, "{health:?}");
        let stats = w.stats().unwrap();
        let c1 = stats.ports.iter().find(|p| p.id == PortId(1)).unwrap().counters;
        assert_eq!(c1.drops[DropReason::WorkerPanic as usize], 3, "{workers} workers");
    }
}

#[test]
fn switches_between_memory_ports_and_counts_one_worker() {
    switches_between_memory_ports_and_counts(1);
}

#[test]
fn switches_between_memory_ports_and_counts_two_workers() {
    switches_between_memory_ports_and_counts(2);
}

#[test]
fn stations_learned_by_one_worker_are_known_to_the_other() {
    let (w, h) = start(2);
    // C (a station behind port 2, not a pod the switch attached) talks first, learned
    // by worker 0, which polls port 2; then A -> C must be unicast on worker 1 without a
    // flood.
    let x = MacAddr([0x02, 0, 0, 0, 0, 0x33]);
    h[2].inject(&udp_frame(x, MAC_A, IP_C, IP_A, 2, 1, b"hello"));
    assert_eq!(wait_for(&h[1], 1).len(), 1);
    std::thread::sleep(Duration::from_millis(20));
    h[1].inject(&udp_frame(MAC_A, x, IP_A, IP_C, 1, 2, b"to C"));
    assert_eq!(wait_for(&h[2], 1).len(), 1);
    std::thread::sleep(Duration::from_millis(20));
    assert!(h[0].take_sent().is_empty(), "not flooded: worker 1 knew C");
    let c1 = w.stats().unwrap().ports.iter().find(|p| p.id == PortId(1)).unwrap().counters;
    assert_eq!(c1.unknown_unicast, 0);
}

#[test]
fn arp_for_a_known_pod_is_answered_not_flooded() {
    for workers in [1, 2] {
        let (_w, h) = start(workers);
        h[1].inject(&arp_request(MAC_A, IP_A, IP_B));
        let replies = wait_for(&h[1], 1);
        assert_eq!(replies.len(), 1);
        assert_eq!(&replies[0][6..12], &MAC_B.0);
        std::thread::sleep(Duration::from_millis(20));
        assert!(h[0].take_sent().is_empty() && h[2].take_sent().is_empty());
    }
}

#[test]
fn removing_a_port_flushes_its_state_and_keeps_the_rest() {
    for workers in [1, 2] {
        let (w, h) = start(workers);
        h[2].inject(&udp_frame(MAC_B, MAC_A, IP_B, IP_A, 2, 1, b"learn B"));
        wait_for(&h[1], 1);
        let (ports, counters) = w.remove_port(PortId(2)).unwrap().unwrap();
        assert_eq!(ports.len(), 1, "its one queue came back");
        drop(ports);
        assert_eq!(counters.rx_packets, 1);
        assert!(w.remove_port(PortId(2)).unwrap().is_none());
        let fdb = w.fdb_list().unwrap();
        assert!(fdb.entries.iter().all(|e| e.port != PortId(2)));
        // ARP for B is no longer answered: it is flooded to the remaining port.
        h[1].inject(&arp_request(MAC_A, IP_A, IP_B));
        assert_eq!(wait_for(&h[0], 1).len(), 1);
        let stats = w.stats().unwrap();
        assert_eq!(stats.neighbors, 1);
        // The id can be reused.
        let (p, _h) = MemoryPort::new();
        w.add_port(PortId(2), vec![Box::new(p)], None, None).unwrap().unwrap();
    }
}

#[test]
fn add_port_refuses_used_ids_and_addresses_on_every_worker() {
    for workers in [1, 2] {
        let (w, _h) = start(workers);
        let (p, _) = MemoryPort::new();
        let e = w.add_port(PortId(1), vec![Box::new(p)], None, None).unwrap().unwrap_err();
        assert!(matches!(e, AttachError::InUse(PortId(1))), "{e}");
        let (p, _) = MemoryPort::new();
        let e = w
            .add_port(PortId(5), vec![Box::new(p)], Some((IP_A, MAC_C)), None)
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, AttachError::Neighbor(NeighError::Exists(IP_A))), "{e}");
        assert!(e.to_string().contains("already in use"), "{e}");
        let (p, _) = MemoryPort::new();
        let e = w.add_port(PortId(99), vec![Box::new(p)], None, None).unwrap().unwrap_err();
        assert!(matches!(e, AttachError::BeyondLimit(PortId(99))), "{e}");
        // Refused everywhere: the id is still free on every worker.
        let (p, _) = MemoryPort::new();
        w.add_port(PortId(5), vec![Box::new(p)], None, None).unwrap().unwrap();
        let queues: Vec<Box<dyn Port>> =
            (0..3).map(|_| Box::new(MemoryPort::new().0) as Box<dyn Port>).collect();
        let e = w.add_port(PortId(6), queues, None, None).unwrap().unwrap_err();
        assert!(matches!(e, AttachError::QueueCount { queues: 3, .. }), "{e}");
    }
}
