//! Text for people: how `ctl` and the lab print control API replies (status, ports, counters,
//! tables, Services). Shared by the command line and the lab, so it lives below both.

use crate::control::api::*;

/// The workers' line of `status`: how many run, which are down, what panics cost.
fn render_workers(s: &StatusReply) -> String {
    let mut line = format!("workers      {}", s.workers);
    if !s.workers_down.is_empty() {
        let down: Vec<String> = s.workers_down.iter().map(|w| w.to_string()).collect();
        line += &format!(", DOWN: {} (their ports move no frames)", down.join(", "));
    }
    if s.worker_panics > 0 {
        line += &format!(", {} bursts dropped by pipeline panics", s.worker_panics);
    }
    line + "\n"
}

/// Renders a reply as text for people.
pub fn render(reply: &Reply) -> String {
    match reply {
        Reply::Status(s) => format!(
            "node         {}\npod CIDR     {}\ngateway      {} ({})\nmtu          {}\nhost port    {}\nports        {} of {}\nuptime       {} s\nversion      {} (API {})\n",
            s.node,
            s.pod_cidr,
            s.gateway,
            s.gateway_mac,
            s.mtu,
            s.host_port.as_deref().unwrap_or("(none)"),
            s.ports,
            s.max_ports,
            s.uptime_secs,
            s.version,
            s.api_version
        ) + &render_workers(s) + &s
            .overlay
            .as_ref()
            .map(|o| {
                format!(
                    "overlay      {} vni {} udp {} underlay mtu {}, {} of {} peers\n",
                    o.underlay_ip, o.vni, o.udp_port, o.underlay_mtu, o.peers, o.max_peers
                )
            })
            .unwrap_or_default(),
        Reply::Port(p) => format!(
            "{} {} ifname={} mac={} ip={} mtu={} netns={} state={} port_security={}\n",
            p.name,
            kind_name(p),
            p.ifname,
            p.mac,
            p.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            p.mtu,
            p.netns.as_deref().unwrap_or("-"),
            p.state,
            port_security(p)
        ),
        Reply::Ports { ports } => {
            let rows: Vec<Vec<String>> = ports
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        kind_name(p).into(),
                        p.ifname.clone(),
                        p.mac.to_string(),
                        p.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                        p.mtu.to_string(),
                        p.netns.clone().unwrap_or_else(|| "-".into()),
                        p.state.clone(),
                        port_security(p),
                    ]
                })
                .collect();
            table(&["NAME", "KIND", "IFNAME", "MAC", "IP", "MTU", "NETNS", "STATE", "PORT SECURITY"], &rows)
        }
        Reply::Fdb(f) => {
            let rows: Vec<Vec<String>> = f
                .entries
                .iter()
                .map(|e| vec![e.mac.to_string(), e.vlan.to_string(), e.port.clone(), format!("{:.1}", e.age_secs)])
                .collect();
            let mut s = table(&["MAC", "VLAN", "PORT", "AGE(s)"], &rows);
            s += &format!(
                "{} of {} entries, aging {} s; learned {} moves {} limit hits {} aged {} flushed {}\n",
                f.size,
                f.max_entries,
                f.aging_secs,
                f.counters.learned,
                f.counters.moves,
                f.counters.learn_limit_hits,
                f.counters.aged,
                f.counters.flushed
            );
            s
        }
        Reply::Flushed { removed } => format!("removed {removed} entries\n"),
        Reply::Service(s) => format!("{}\n", service_line(s)),
        Reply::Services { services } => {
            let rows: Vec<Vec<String>> = services
                .iter()
                .map(|s| {
                    vec![
                        format!("{}/{}", s.namespace, s.name),
                        s.key().to_string(),
                        format!("{:?}", s.algorithm).to_lowercase(),
                        s.endpoints
                            .iter()
                            .map(|e| format!("{}:{}", e.ip, e.port))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            table(&["SERVICE", "VIP", "ALGORITHM", "ENDPOINTS"], &rows)
        }
        Reply::Applied { services, elapsed_us } => {
            format!("{services} Services in effect ({elapsed_us} µs)\n")
        }
        Reply::Conntrack { entries } => {
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    vec![
                        e.proto.clone(),
                        e.client.clone(),
                        e.service.clone(),
                        e.endpoint.clone(),
                        e.state.clone(),
                        format!("{:.0}", e.expires_in_secs),
                    ]
                })
                .collect();
            table(&["PROTO", "CLIENT", "SERVICE", "ENDPOINT", "STATE", "EXPIRES(s)"], &rows)
        }
        Reply::ConntrackStats(c) => format!(
            "{} of {} connections tracked ({} bytes each); {:?}\n",
            c.entries, c.max_entries, c.bytes_per_entry, c.counters
        ),
        Reply::Peer(p) => {
            format!("{} ip={} pod_cidr={} vtep_mac={}\n", p.name, p.ip, p.pod_cidr, p.vtep_mac)
        }
        Reply::Peers { peers } => {
            let rows: Vec<Vec<String>> = peers
                .iter()
                .map(|p| vec![p.name.clone(), p.ip.to_string(), p.pod_cidr.to_string(), p.vtep_mac.to_string()])
                .collect();
            table(&["NAME", "UNDERLAY IP", "POD CIDR", "VTEP MAC"], &rows)
        }
        Reply::Stats(st) => {
            let rows: Vec<Vec<String>> = st
                .ports
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.rx_packets.to_string(),
                        p.rx_bytes.to_string(),
                        p.tx_packets.to_string(),
                        p.tx_bytes.to_string(),
                        p.flooded.to_string(),
                        p.arp_replies.to_string(),
                        (p.drops.values().sum::<u64>() + p.device_drops.values().sum::<u64>())
                            .to_string(),
                    ]
                })
                .collect();
            let mut s = table(&["PORT", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "FLOODED", "ARP REPLIES", "DROPS"], &rows);
            for p in &st.ports {
                for (reason, n) in &p.drops {
                    s += &format!("  {}: dropped {n} ({reason})\n", p.name);
                }
            }
            s += &format!(
                "fdb: {} entries; learned {} moves {} limit hits {} aged {} flushed {}; neighbors {}\n",
                st.fdb_size, st.fdb.learned, st.fdb.moves, st.fdb.learn_limit_hits, st.fdb.aged, st.fdb.flushed, st.neighbors
            );
            s
        }
    }
}

/// `on`, `on +CIDR,CIDR` with an allow-list, or `off`.
fn port_security(p: &PortInfo) -> String {
    match (p.port_security, p.allow_ips.is_empty()) {
        (false, _) => "off".into(),
        (true, true) => "on".into(),
        (true, false) => {
            let list: Vec<String> = p.allow_ips.iter().map(ToString::to_string).collect();
            format!("on +{}", list.join(","))
        }
    }
}

fn kind_name(p: &PortInfo) -> &'static str {
    match p.kind {
        crate::port::PortKind::Tap => "tap",
        crate::port::PortKind::Host => "host",
        crate::port::PortKind::Memory => "memory",
        crate::port::PortKind::Overlay => "overlay",
        crate::port::PortKind::Afxdp => "afxdp",
        crate::port::PortKind::NodePort => "node_port",
    }
}

/// Formats rows as an aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s += c;
            } else {
                s += &format!("{c:<w$}  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

fn service_line(s: &ServiceSpec) -> String {
    let node_port = s.node_port.map(|p| format!(" node-port {p}")).unwrap_or_default();
    format!(
        "{}/{} {}{node_port} {:?} endpoints {}",
        s.namespace,
        s.name,
        s.key(),
        s.algorithm,
        s.endpoints.iter().map(|e| format!("{}:{}", e.ip, e.port)).collect::<Vec<_>>().join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
