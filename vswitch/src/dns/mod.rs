//! The cluster DNS responder: answers `<service>.<namespace>.svc.<cluster-domain>` A queries
//! from the Service table, so pods resolve Services without a CoreDNS deployment.
//!
//! What it owns: the names ([`NameTable`], an immutable snapshot built from the
//! [`ServiceSpec`]s), the answer to one DNS message ([`answer`]), and the responder's sockets
//! and threads ([`server::DnsServer`]). What it does not: which address pods send their
//! queries to. The responder listens on a node address like any Service endpoint; the control
//! plane publishes a DNS Service whose VIP NATs to it, so the packet path sees nothing special
//! and this module never runs on it.
//!
//! The wire format is hickory-proto's (parsing, name compression, EDNS); this module decides
//! only what to answer. Behaviour, close to CoreDNS's `kubernetes` plugin:
//!
//! | question | reply |
//! |---|---|
//! | `A` or `ANY` for a Service name | NOERROR, AA, one `A` per distinct VIP, TTL [`TTL`] |
//! | another type for a Service name | NOERROR, AA, no answer, the zone's SOA in authority |
//! | `<cluster-domain>`, `svc.<cluster-domain>`, `<ns>.svc.<cluster-domain>` of a namespace with Services | the same NODATA (the names exist: they have Services below them). `SOA` at the apex is answered |
//! | any other name in the cluster domain | NXDOMAIN, AA, SOA in authority |
//! | a name outside it, a class other than IN/ANY, AXFR/IXFR | REFUSED (no upstream, no zone transfer) |
//! | an opcode other than QUERY | NOTIMP |
//! | zero or several questions, an unreadable body | FORMERR |
//! | EDNS version above 0 | BADVERS |
//! | a response, fewer than 12 bytes | nothing (the caller drops it) |
//!
//! Names compare without regard to ASCII case and the question is echoed as it came (so
//! resolvers that randomize the case of queries, "0x20", see their own spelling). `RD` and
//! `CD` are copied, `RA` is never set. A query with an EDNS OPT gets one back (version 0,
//! payload [`EDNS_UDP_PAYLOAD`], DO copied). A reply too long for the transport (512 bytes
//! over UDP without EDNS, the client's EDNS size capped at [`EDNS_UDP_PAYLOAD`] with it, 65,535
//! over TCP) is sent as header, question and OPT with TC set, so the client retries over TCP.
//!
//! Not answered (yet): SRV (`_port._proto.<svc>...`), PTR for VIPs, pod names
//! (`a-b-c-d.<ns>.pod...`), headless Services (which have no VIP) and forwarding of other
//! names upstream.

pub mod server;

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use rustc_hash::FxHashMap;

use crate::tables::services::ServiceSpec;

/// TTL of the answers, and the negative-caching time of the SOA (as CoreDNS's default).
pub const TTL: u32 = 5;

/// The UDP payload size this responder advertises in EDNS and the most it sends over UDP
/// (the DNS Flag Day 2020 value, which avoids IP fragmentation on common paths).
pub const EDNS_UDP_PAYLOAD: u16 = 1232;

/// Longest cluster domain accepted, in characters: it leaves room for the longest Service
/// name (two 63-character labels and `svc`) within DNS's 253-character limit.
pub const MAX_CLUSTER_DOMAIN_LEN: usize = 253 - (63 + 1 + 63 + 1 + 3 + 1);

/// The transport a query came over; it sets the largest reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the client's EDNS payload size capped at [`EDNS_UDP_PAYLOAD`].
    Udp,
    /// TCP (one message, without its 2-byte length prefix): 65,535 bytes.
    Tcp,
}

/// A cluster domain that is not a dot-separated list of DNS-1123 labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster domain {domain:?}: {reason}")]
pub struct ClusterDomainError {
    /// The domain as given.
    pub domain: String,
    /// What is wrong.
    pub reason: String,
}

/// Checks a cluster domain such as `cluster.local`: one or more DNS-1123 labels (lowercase
/// letters, digits and `-`, 1 to 63 characters, not starting or ending with `-`) separated by
/// dots, at most [`MAX_CLUSTER_DOMAIN_LEN`] characters, no trailing dot.
pub fn check_cluster_domain(domain: &str) -> Result<(), ClusterDomainError> {
    let fail = |reason: String| ClusterDomainError { domain: domain.to_string(), reason };
    if domain.len() > MAX_CLUSTER_DOMAIN_LEN {
        return Err(fail(format!("longer than {MAX_CLUSTER_DOMAIN_LEN} characters")));
    }
    for label in domain.split('.') {
        if !is_label(label) {
            return Err(fail(format!(
                "{label:?} is not a DNS-1123 label (1 to 63 lowercase letters, digits and '-', \
                 not starting or ending with '-')"
            )));
        }
    }
    Ok(())
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The names the responder knows: every Service's `<name>.<namespace>.svc.<cluster-domain>`
/// and its VIPs. Immutable; the control plane builds a new one on every Service change and
/// swaps it in ([`server::SharedNames`]).
#[derive(Clone)]
pub struct NameTable {
    /// The cluster domain, lowercase, no trailing dot.
    domain: String,
    /// Its labels.
    domain_labels: Vec<String>,
    /// The zone's SOA record (owner: the cluster domain).
    soa: Record,
    /// namespace -> service -> distinct VIPs, sorted.
    namespaces: FxHashMap<String, FxHashMap<String, Vec<Ipv4Addr>>>,
    /// Number of Service names.
    len: usize,
}

impl fmt::Debug for NameTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameTable")
            .field("domain", &self.domain)
            .field("names", &self.len)
            .field("namespaces", &self.namespaces.len())
            .finish()
    }
}

impl NameTable {
    /// Builds the table from the Service table's specs for `cluster_domain` (such as
    /// `cluster.local`; see [`check_cluster_domain`]). Specs of one Service (same name and
    /// namespace, one per port) give one name; should they disagree on the VIP, the name gets
    /// each distinct VIP. Specs whose name or namespace is not a DNS-1123 label (which
    /// [`ServiceSpec::validate`] rejects) are left out.
    pub fn from_services<'a>(
        specs: impl IntoIterator<Item = &'a ServiceSpec>,
        cluster_domain: &str,
    ) -> Result<NameTable, ClusterDomainError> {
        check_cluster_domain(cluster_domain)?;
        let domain_name = Name::from_ascii(format!("{cluster_domain}.")).map_err(|e| {
            ClusterDomainError { domain: cluster_domain.to_string(), reason: e.to_string() }
        })?;
        let soa = soa_record(&domain_name).map_err(|e| ClusterDomainError {
            domain: cluster_domain.to_string(),
            reason: e.to_string(),
        })?;
        let mut namespaces: FxHashMap<String, FxHashMap<String, Vec<Ipv4Addr>>> =
            FxHashMap::default();
        let mut len = 0;
        for spec in specs {
            if !is_label(&spec.name) || !is_label(&spec.namespace) {
                continue;
            }
            let services = namespaces.entry(spec.namespace.clone()).or_default();
            let vips = services.entry(spec.name.clone()).or_insert_with(|| {
                len += 1;
                Vec::new()
            });
            if let Err(i) = vips.binary_search(&spec.vip) {
                vips.insert(i, spec.vip);
            }
        }
        Ok(NameTable {
            domain: cluster_domain.to_string(),
            domain_labels: cluster_domain.split('.').map(str::to_string).collect(),
            soa,
            namespaces,
            len,
        })
    }

    /// Sets the VIPs of one Service name (none: the name goes), so a single Service change
    /// costs one hash update instead of a rebuild. Names that are not DNS-1123 labels are
    /// ignored, as in [`NameTable::from_services`].
    pub fn set_service(&mut self, namespace: &str, name: &str, vips: &[Ipv4Addr]) {
        if !is_label(name) || !is_label(namespace) {
            return;
        }
        let mut sorted = vips.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() {
            if let Some(services) = self.namespaces.get_mut(namespace) {
                if services.remove(name).is_some() {
                    self.len -= 1;
                }
                if services.is_empty() {
                    self.namespaces.remove(namespace);
                }
            }
            return;
        }
        let services = self.namespaces.entry(namespace.to_string()).or_default();
        if services.insert(name.to_string(), sorted).is_none() {
            self.len += 1;
        }
    }

    /// The cluster domain (lowercase, no trailing dot).
    pub fn cluster_domain(&self) -> &str {
        &self.domain
    }

    /// The VIPs of `fqdn` (`web.default.svc.cluster.local`, in any case, trailing dot
    /// optional), or `None` if it is no Service name.
    pub fn lookup(&self, fqdn: &str) -> Option<&[Ipv4Addr]> {
        let fqdn = fqdn.strip_suffix('.').unwrap_or(fqdn);
        let labels: Vec<&[u8]> = fqdn.split('.').map(str::as_bytes).collect();
        let rel = self.relative(&labels)?;
        match rel {
            [service, namespace, svc] if svc.eq_ignore_ascii_case(b"svc") => {
                self.service(namespace, service)
            }
            _ => None,
        }
    }

    /// Number of Service names.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no Service name.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The labels in front of the cluster domain, or `None` if `labels` are not in it.
    fn relative<'l, 'b>(&self, labels: &'l [&'b [u8]]) -> Option<&'l [&'b [u8]]> {
        let keep = labels.len().checked_sub(self.domain_labels.len())?;
        let (rel, tail) = labels.split_at(keep);
        let inside =
            tail.iter().zip(&self.domain_labels).all(|(a, b)| a.eq_ignore_ascii_case(b.as_bytes()));
        inside.then_some(rel)
    }

    fn service(&self, namespace: &[u8], service: &[u8]) -> Option<&[Ipv4Addr]> {
        let namespace = lowercase(namespace)?;
        let service = lowercase(service)?;
        self.namespaces.get(&namespace)?.get(&service).map(Vec::as_slice)
    }

    fn has_namespace(&self, namespace: &[u8]) -> bool {
        lowercase(namespace).is_some_and(|ns| self.namespaces.contains_key(&ns))
    }

    /// What the table says about the name with these labels (root label excluded).
    fn resolve(&self, labels: &[&[u8]]) -> Node<'_> {
        let Some(rel) = self.relative(labels) else { return Node::Outside };
        match rel {
            [] => Node::Apex,
            [svc] if svc.eq_ignore_ascii_case(b"svc") => Node::Empty,
            [namespace, svc]
                if svc.eq_ignore_ascii_case(b"svc") && self.has_namespace(namespace) =>
            {
                Node::Empty
            }
            [service, namespace, svc] if svc.eq_ignore_ascii_case(b"svc") => {
                match self.service(namespace, service) {
                    Some(vips) => Node::Service(vips),
                    None => Node::Missing,
                }
            }
            _ => Node::Missing,
        }
    }
}

/// A question's name, as the table sees it.
enum Node<'t> {
    /// Not in the cluster domain.
    Outside,
    /// The cluster domain itself.
    Apex,
    /// A name with Services below it and no records of its own.
    Empty,
    /// A Service name and its VIPs.
    Service(&'t [Ipv4Addr]),
    /// In the cluster domain, and no such name.
    Missing,
}

/// A label, ASCII-lowercased, if it is UTF-8 (anything else matches no table entry).
fn lowercase(label: &[u8]) -> Option<String> {
    std::str::from_utf8(label).ok().map(str::to_ascii_lowercase)
}

/// The zone's SOA, as CoreDNS writes it: `ns.dns.<domain> hostmaster.<domain>`, serial the
/// build time in seconds, refresh 2 h, retry 30 min, expire 1 day, minimum [`TTL`].
fn soa_record(domain: &Name) -> Result<Record, hickory_proto::ProtoError> {
    let mname = Name::from_ascii("ns.dns")?.append_domain(domain)?;
    let rname = Name::from_ascii("hostmaster")?.append_domain(domain)?;
    let serial = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32);
    let soa = SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL);
    Ok(Record::from_rdata(domain.clone(), TTL, RData::SOA(soa)))
}

/// A reply and what the server counts it as.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The message on the wire.
    pub bytes: Vec<u8>,
    /// Its response code.
    pub rcode: ResponseCode,
    /// Whether it was cut down to fit and has TC set.
    pub truncated: bool,
}

/// Answers one DNS message: `query` as received over UDP, or one TCP message without its
/// 2-byte length prefix. Returns the reply, or `None` when the input is no query to answer
/// (shorter than a DNS header, or a response); the caller then drops it. See the module
/// documentation for what is answered how.
pub fn answer(query: &[u8], names: &NameTable, transport: Transport) -> Option<Vec<u8>> {
    respond(query, names, transport).map(|r| r.bytes)
}

pub(crate) fn respond(query: &[u8], names: &NameTable, transport: Transport) -> Option<Reply> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    if header.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut meta = Metadata::response_from_request(&header.metadata);
    if header.metadata.op_code != OpCode::Query {
        return header_only(meta, ResponseCode::NotImp);
    }
    let Ok(request) = Message::from_vec(query) else {
        return header_only(meta, ResponseCode::FormErr);
    };
    if request.queries.len() != 1 {
        return header_only(meta, ResponseCode::FormErr);
    }
    let question = &request.queries[0];

    let mut reply = Message::new(meta.id, MessageType::Response, meta.op_code);
    reply.add_query(question.clone());
    let mut max_len = match transport {
        Transport::Udp => 512,
        Transport::Tcp => usize::from(u16::MAX),
    };
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(EDNS_UDP_PAYLOAD).set_dnssec_ok(edns.flags().dnssec_ok);
        reply.set_edns(ours);
        if transport == Transport::Udp {
            max_len = usize::from(edns.max_payload().clamp(512, EDNS_UDP_PAYLOAD));
        }
        if edns.version() != 0 {
            meta.response_code = ResponseCode::BADVERS;
            reply.metadata = meta;
            return encode(&reply, max_len);
        }
    }

    let qtype = question.query_type();
    let class_ok = matches!(question.query_class(), DNSClass::IN | DNSClass::ANY);
    let transfer = matches!(qtype, RecordType::AXFR | RecordType::IXFR);
    let labels: Vec<&[u8]> = question.name().iter().collect();
    let node = if class_ok && !transfer { names.resolve(&labels) } else { Node::Outside };
    meta.authoritative = true;
    match node {
        Node::Outside => {
            meta.authoritative = false;
            meta.response_code = ResponseCode::Refused;
        }
        Node::Service(vips) if matches!(qtype, RecordType::A | RecordType::ANY) => {
            for vip in vips {
                reply.add_answer(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    RData::A(A(*vip)),
                ));
            }
        }
        Node::Apex if matches!(qtype, RecordType::SOA | RecordType::ANY) => {
            reply.add_answer(names.soa.clone());
        }
        Node::Apex | Node::Empty | Node::Service(_) => {
            reply.add_authority(names.soa.clone());
        }
        Node::Missing => {
            meta.response_code = ResponseCode::NXDomain;
            reply.add_authority(names.soa.clone());
        }
    }
    reply.metadata = meta;
    encode(&reply, max_len)
}

/// A reply of just the header (no question, no EDNS): for queries not understood.
fn header_only(mut meta: Metadata, rcode: ResponseCode) -> Option<Reply> {
    meta.response_code = rcode;
    let mut reply = Message::new(meta.id, MessageType::Response, meta.op_code);
    reply.metadata = meta;
    encode(&reply, 512)
}

/// Encodes `reply`; if it is longer than `max_len`, sends header, question and OPT with TC.
fn encode(reply: &Message, max_len: usize) -> Option<Reply> {
    let rcode = reply.metadata.response_code;
    match reply.to_vec() {
        Ok(bytes) if bytes.len() <= max_len => Some(Reply { bytes, rcode, truncated: false }),
        _ => {
            let short = reply.truncate();
            let bytes = short.to_vec().ok()?;
            Some(Reply { bytes, rcode, truncated: true })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::services::{Algorithm, Endpoint, L4Proto};
    use hickory_proto::op::Query;
    use proptest::prelude::*;

    const DOMAIN: &str = "cluster.local";

    fn spec(name: &str, namespace: &str, vip: [u8; 4], port: u16) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            namespace: namespace.into(),
            vip: Ipv4Addr::from(vip),
            port,
            proto: L4Proto::Tcp,
            endpoints: vec![Endpoint::new(Ipv4Addr::new(10, 244, 1, 5), 8080)],
            algorithm: Algorithm::default(),
            session_affinity_secs: None,
            node_port: None,
        }
    }

    fn table() -> NameTable {
        let specs = [
            spec("web", "default", [10, 96, 0, 20], 80),
            spec("web", "default", [10, 96, 0, 20], 443),
            spec("db", "prod", [10, 96, 3, 1], 5432),
        ];
        NameTable::from_services(&specs, DOMAIN).unwrap()
    }

    struct Q {
        id: u16,
        name: &'static str,
        qtype: RecordType,
        edns: Option<u16>,
    }

    fn q(name: &'static str, qtype: RecordType) -> Q {
        Q { id: 0x1234, name, qtype, edns: None }
    }

    impl Q {
        fn message(&self) -> Message {
            let mut m = Message::new(self.id, MessageType::Query, OpCode::Query);
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(Name::from_ascii(self.name).unwrap(), self.qtype));
            if let Some(size) = self.edns {
                let mut e = Edns::new();
                e.set_max_payload(size);
                m.set_edns(e);
            }
            m
        }

        fn ask(&self, names: &NameTable, transport: Transport) -> Message {
            let bytes = answer(&self.message().to_vec().unwrap(), names, transport)
                .expect("a query gets a reply");
            Message::from_vec(&bytes).unwrap()
        }
    }

    fn a_records(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0,
                other => panic!("not an A record: {other:?}"),
            })
            .collect()
    }

    fn assert_soa_authority(m: &Message) {
        assert_eq!(m.authorities.len(), 1, "{m}");
        let soa = &m.authorities[0];
        assert_eq!(soa.name, Name::from_ascii("cluster.local.").unwrap());
        assert_eq!(soa.ttl, 5);
        let RData::SOA(data) = &soa.data else { panic!("not an SOA: {soa:?}") };
        assert_eq!(data.minimum, 5, "negative caching time");
        assert_eq!(data.mname, Name::from_ascii("ns.dns.cluster.local.").unwrap());
    }

    #[test]
    fn dns_a_query_for_a_service_answers_its_vip() {
        let names = table();
        let r = q("web.default.svc.cluster.local.", RecordType::A).ask(&names, Transport::Udp);
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert!(r.metadata.recursion_desired);
        assert!(!r.metadata.recursion_available);
        assert!(!r.metadata.truncation);
        assert_eq!(r.queries, q("web.default.svc.cluster.local.", RecordType::A).message().queries);
        assert_eq!(a_records(&r), [Ipv4Addr::new(10, 96, 0, 20)], "one A for the two ports");
        assert_eq!(r.answers[0].ttl, 5);
        assert_eq!(r.answers[0].name, Name::from_ascii("web.default.svc.cluster.local.").unwrap());
        assert!(r.authorities.is_empty());
        assert!(r.edns.is_none());
    }

    #[test]
    fn dns_names_compare_without_case_and_the_question_keeps_its_spelling() {
        let names = table();
        let mut query = q("WeB.DeFault.SVC.Cluster.LOCAL", RecordType::A);
        query.id = 7;
        let r = query.ask(&names, Transport::Udp);
        assert_eq!(r.metadata.id, 7);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_records(&r), [Ipv4Addr::new(10, 96, 0, 20)]);
        // The question and the answer's owner keep the query's spelling.
        assert_eq!(r.queries[0].name().to_ascii(), "WeB.DeFault.SVC.Cluster.LOCAL.");
        assert_eq!(r.answers[0].name.to_ascii(), "WeB.DeFault.SVC.Cluster.LOCAL.");
        assert_eq!(
            names.lookup("WEB.default.svc.cluster.local."),
            Some(&[Ipv4Addr::new(10, 96, 0, 20)][..])
        );
        assert_eq!(
            names.lookup("db.prod.svc.cluster.local"),
            Some(&[Ipv4Addr::new(10, 96, 3, 1)][..])
        );
        assert_eq!(names.lookup("db.prod.svc.cluster.example"), None);
        assert_eq!(names.lookup("prod.svc.cluster.local"), None);
    }

    #[test]
    fn dns_any_query_is_answered_like_a() {
        let r = q("db.prod.svc.cluster.local.", RecordType::ANY).ask(&table(), Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_records(&r), [Ipv4Addr::new(10, 96, 3, 1)]);
    }

    #[test]
    fn dns_other_types_of_a_service_name_are_nodata_with_soa() {
        for qtype in [RecordType::AAAA, RecordType::TXT, RecordType::MX, RecordType::SRV] {
            let r = q("web.default.svc.cluster.local.", qtype).ask(&table(), Transport::Udp);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{qtype}");
            assert!(r.metadata.authoritative);
            assert!(r.answers.is_empty(), "{qtype}: {r}");
            assert_soa_authority(&r);
        }
    }

    #[test]
    fn dns_unknown_names_in_the_cluster_domain_are_nxdomain() {
        for name in [
            "nope.default.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "web.default.pod.cluster.local.",
            "x.web.default.svc.cluster.local.",
            "nons.svc.cluster.local.",
            "foo.cluster.local.",
        ] {
            let r = q(name, RecordType::A).ask(&table(), Transport::Udp);
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert!(r.metadata.authoritative, "{name}");
            assert!(r.answers.is_empty(), "{name}");
            assert_soa_authority(&r);
        }
    }

    #[test]
    fn dns_names_with_services_below_them_are_nodata_not_nxdomain() {
        for name in ["default.svc.cluster.local.", "svc.cluster.local.", "cluster.local."] {
            let r = q(name, RecordType::A).ask(&table(), Transport::Udp);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(r.answers.is_empty(), "{name}");
            assert_soa_authority(&r);
        }
        let r = q("cluster.local.", RecordType::SOA).ask(&table(), Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn dns_names_outside_the_cluster_domain_are_refused() {
        for name in ["example.com.", "local.", "svc.cluster.local.example.", "."] {
            let r = q(name, RecordType::A).ask(&table(), Transport::Udp);
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{name}");
            assert!(!r.metadata.authoritative, "{name}");
            assert!(r.answers.is_empty() && r.authorities.is_empty(), "{name}");
        }
        let r = q("cluster.local.", RecordType::AXFR).ask(&table(), Transport::Tcp);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        let mut m = q("web.default.svc.cluster.local.", RecordType::A).message();
        m.queries[0].set_query_class(DNSClass::CH);
        let r = Message::from_vec(&answer(&m.to_vec().unwrap(), &table(), Transport::Udp).unwrap())
            .unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn dns_opcodes_other_than_query_are_notimp() {
        let mut m = q("web.default.svc.cluster.local.", RecordType::A).message();
        m.metadata.op_code = OpCode::Notify;
        let r = Message::from_vec(&answer(&m.to_vec().unwrap(), &table(), Transport::Udp).unwrap())
            .unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(r.metadata.op_code, OpCode::Notify);
        assert_eq!(r.metadata.id, 0x1234);
        assert!(r.answers.is_empty());
    }

    #[test]
    fn dns_zero_or_two_questions_and_broken_bodies_are_formerr() {
        let names = table();
        let mut two = q("web.default.svc.cluster.local.", RecordType::A).message();
        two.add_query(Query::query(
            Name::from_ascii("db.prod.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let mut zero = q("web.default.svc.cluster.local.", RecordType::A).message();
        zero.queries.clear();
        let mut cut =
            q("web.default.svc.cluster.local.", RecordType::A).message().to_vec().unwrap();
        cut.truncate(cut.len() - 3);
        for (what, bytes) in
            [("two", two.to_vec().unwrap()), ("zero", zero.to_vec().unwrap()), ("cut", cut)]
        {
            let r =
                Message::from_vec(&answer(&bytes, &names, Transport::Udp).expect(what)).unwrap();
            assert_eq!(r.metadata.response_code, ResponseCode::FormErr, "{what}");
            assert_eq!(r.metadata.id, 0x1234, "{what}");
            assert!(r.answers.is_empty(), "{what}");
        }
    }

    #[test]
    fn dns_responses_and_short_input_get_no_reply() {
        let names = table();
        let mut m = q("web.default.svc.cluster.local.", RecordType::A).message();
        m.metadata.message_type = MessageType::Response;
        assert!(answer(&m.to_vec().unwrap(), &names, Transport::Udp).is_none());
        assert!(answer(&[], &names, Transport::Udp).is_none());
        assert!(answer(&[0; 11], &names, Transport::Tcp).is_none());
    }

    #[test]
    fn dns_edns_queries_get_an_opt_back() {
        let mut query = q("web.default.svc.cluster.local.", RecordType::A);
        query.edns = Some(4096);
        let r = query.ask(&table(), Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        let edns = r.edns.expect("OPT in the reply");
        assert_eq!(edns.version(), 0);
        assert_eq!(edns.max_payload(), EDNS_UDP_PAYLOAD);
        assert!(!edns.flags().dnssec_ok);

        let mut m = query.message();
        m.edns.as_mut().unwrap().set_version(1);
        let r = Message::from_vec(&answer(&m.to_vec().unwrap(), &table(), Transport::Udp).unwrap())
            .unwrap();
        // BADVERS and BADSIG share the code 16; hickory-proto reads it back as BADSIG.
        assert_eq!(u16::from(r.metadata.response_code), u16::from(ResponseCode::BADVERS));
        assert_eq!(r.edns.map(|e| e.version()), Some(0));
    }

    /// A name with more VIPs than 512 bytes hold (inconsistent specs, but possible).
    fn crowded() -> NameTable {
        let specs: Vec<ServiceSpec> =
            (0..40).map(|i| spec("many", "default", [10, 96, 1, i], 80)).collect();
        NameTable::from_services(&specs, DOMAIN).unwrap()
    }

    #[test]
    fn dns_replies_too_long_for_the_transport_are_truncated() {
        let names = crowded();
        assert_eq!(names.len(), 1);
        let query = q("many.default.svc.cluster.local.", RecordType::A);
        let bytes = query.message().to_vec().unwrap();

        let udp = answer(&bytes, &names, Transport::Udp).unwrap();
        assert!(udp.len() <= 512);
        let r = Message::from_vec(&udp).unwrap();
        assert!(r.metadata.truncation);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.queries.len(), 1);

        let r = query.ask(&names, Transport::Tcp);
        assert!(!r.metadata.truncation);
        assert_eq!(a_records(&r), (0..40).map(|i| Ipv4Addr::new(10, 96, 1, i)).collect::<Vec<_>>());

        // An EDNS client with room gets everything over UDP; one asking for less than 512
        // still gets 512.
        let mut query = q("many.default.svc.cluster.local.", RecordType::A);
        query.edns = Some(1400);
        let r = query.ask(&names, Transport::Udp);
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 40);
        query.edns = Some(100);
        let r = query.ask(&names, Transport::Udp);
        assert!(r.metadata.truncation);
    }

    #[test]
    fn dns_cluster_domain_is_checked() {
        for bad in
            ["", "Cluster.local", "cluster..local", "cluster.local.", "-a.local", "a_b.local"]
        {
            assert!(NameTable::from_services(&[], bad).is_err(), "{bad:?}");
        }
        let long = format!("{}.local", "a".repeat(MAX_CLUSTER_DOMAIN_LEN));
        assert!(check_cluster_domain(&long).is_err());
        let names = NameTable::from_services(&[], "k8s.example.org").unwrap();
        assert!(names.is_empty());
        assert_eq!(names.cluster_domain(), "k8s.example.org");
        let r = q("web.default.svc.cluster.local.", RecordType::A).ask(&names, Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        let r = q("web.default.svc.k8s.example.org.", RecordType::A).ask(&names, Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn dns_table_counts_names_not_ports_and_keeps_distinct_vips() {
        let specs = [
            spec("web", "default", [10, 96, 0, 20], 80),
            spec("web", "default", [10, 96, 0, 20], 443),
            spec("web", "default", [10, 96, 0, 9], 8080),
            spec("web", "other", [10, 96, 0, 21], 80),
            spec("Bad_Name", "default", [10, 96, 0, 22], 80),
        ];
        let names = NameTable::from_services(&specs, DOMAIN).unwrap();
        assert_eq!(names.len(), 2);
        assert_eq!(
            names.lookup("web.default.svc.cluster.local"),
            Some(&[Ipv4Addr::new(10, 96, 0, 9), Ipv4Addr::new(10, 96, 0, 20)][..])
        );
    }

    #[test]
    fn dns_one_service_changes_in_place_like_a_rebuild() {
        let specs = [
            spec("web", "default", [10, 96, 0, 20], 80),
            spec("db", "default", [10, 96, 0, 21], 5432),
        ];
        let mut names = NameTable::from_services(&specs[..1], DOMAIN).unwrap();
        names.set_service("default", "db", &[Ipv4Addr::new(10, 96, 0, 21)]);
        let rebuilt = NameTable::from_services(&specs, DOMAIN).unwrap();
        for n in ["web.default.svc.cluster.local", "db.default.svc.cluster.local"] {
            assert_eq!(names.lookup(n), rebuilt.lookup(n), "{n}");
        }
        assert_eq!(names.len(), 2);
        names.set_service("default", "web", &[]);
        assert_eq!(names.lookup("web.default.svc.cluster.local"), None);
        assert_eq!(names.len(), 1);
        names.set_service("default", "db", &[]);
        names.set_service("default", "db", &[]);
        assert!(names.is_empty());
        names.set_service("default", "Bad_Name", &[Ipv4Addr::new(10, 96, 0, 22)]);
        assert!(names.is_empty(), "not a DNS label");
    }

    proptest! {
        #[test]
        fn dns_answer_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            tcp in any::<bool>(),
        ) {
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            if let Some(reply) = answer(&bytes, &table(), transport) {
                prop_assert!(reply.len() >= 12);
                prop_assert_eq!(&reply[..2], &bytes[..2], "same id");
                prop_assert!(reply[2] & 0x80 != 0, "QR set");
            }
        }

        #[test]
        fn dns_answer_never_panics_on_mangled_queries(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            edns in any::<bool>(),
        ) {
            let mut query = q("web.default.svc.cluster.local.", RecordType::A);
            query.edns = edns.then_some(1232);
            let mut bytes = query.message().to_vec().unwrap();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let _ = answer(&bytes, &table(), Transport::Udp);
        }
    }
}
