//! The cluster DNS responder (`dns/`): whatever a pod sends to the DNS VIP, over UDP or TCP.
//!
//! A name table of the harness's Services plus one name with a hundred VIPs (its answer does
//! not fit 512 bytes, so truncation is reached) answers the input as a query. Checked: a
//! reply echoes the query's ID, has QR set, parses as a DNS message, and fits the transport
//! (at most 1232 bytes over UDP, the largest EDNS size the responder accepts; 65,535 over
//! TCP). The first byte picks the transport and, with its top bit, uses the rest as a name
//! for [`NameTable::lookup`] and as a cluster domain instead.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use vswitch::dns::{answer, check_cluster_domain, NameTable, Transport, EDNS_UDP_PAYLOAD};
use vswitch::tables::services::ServiceSpec;

fn table() -> &'static NameTable {
    static TABLE: OnceLock<NameTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut specs = vswitch::pipeline::harness::services();
        let big = specs[0].clone();
        for i in 0..100u8 {
            specs.push(ServiceSpec {
                name: "big".into(),
                vip: Ipv4Addr::new(10, 96, 1, i),
                port: 1000 + u16::from(i),
                ..big.clone()
            });
        }
        NameTable::from_services(&specs, "cluster.local").expect("a valid domain")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, query)) = data.split_first() else { return };
    let names = table();
    if how & 0x80 != 0 {
        let Ok(s) = std::str::from_utf8(query) else { return };
        let _ = names.lookup(s);
        if check_cluster_domain(s).is_ok() {
            let t = NameTable::from_services(&vswitch::pipeline::harness::services(), s)
                .expect("a checked domain builds a table");
            assert_eq!(t.cluster_domain(), s);
            let mut t = t;
            t.set_service("default", "web", &[Ipv4Addr::new(10, 96, 0, 1)]);
            t.set_service("default", "web", &[]);
        }
        return;
    }
    let (transport, max) = if how & 1 == 0 {
        (Transport::Udp, usize::from(EDNS_UDP_PAYLOAD))
    } else {
        (Transport::Tcp, usize::from(u16::MAX))
    };
    let Some(reply) = answer(query, names, transport) else { return };
    assert!(reply.len() <= max, "{} bytes over {transport:?}", reply.len());
    assert!(reply.len() >= 12 && query.len() >= 2);
    assert_eq!(reply[..2], query[..2], "the reply echoes the query's ID");
    let msg = Message::from_vec(&reply).expect("the reply parses");
    assert_eq!(msg.metadata.message_type, MessageType::Response);
});
