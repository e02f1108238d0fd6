//! What each CNI command does against the switch's control API and the IPAM delegate.
//!
//! The switch is the source of truth for ports: a port named after the attachment
//! ([`port_name`]) exists exactly while the attachment does, so DEL, CHECK and GC need no
//! state of the plugin's own. Addresses come from the IPAM delegate or, without an `ipam`
//! section, from the switch's own allocator (which the port's removal releases).
//!
//! ADD undoes what it did when a later step fails (the IPAM lease is released, the port
//! removed), so a failed ADD leaves nothing behind. The switch serializes port changes and
//! IPAM plugins lock their stores, so concurrent invocations for different containers need
//! no coordination here.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;

use podswitch_api::cidr::{Ipv4Cidr, Ipv4IfAddr};
use podswitch_api::client::{Client, ClientError};
use podswitch_api::limits::MAX_PORT_NAME_LEN;
use podswitch_api::protocol::{
    ErrorKind, PortAddArgs, PortAddKind, PortDelArgs, PortInfo, Reply, Request, StatusReply,
};
use podswitch_sys::netlink::Netlink;
use podswitch_sys::netns::NetNs;

use crate::config::{invalid, NetConf, PortType};
use crate::ipam::{fit_to_node, Delegate, Lease, CHECK_SINCE, STATUS_GC_SINCE};
use crate::spec::{code, CniError, CniResult, Env, Interface, IpConfig, Route};

/// Prefix of the names of ports the plugin creates; GC only ever removes ports with it.
pub const PORT_PREFIX: &str = "cni:";

/// The switch port name of an attachment: `cni:<containerID>:<ifname>`, or, when that is
/// longer than the switch allows, `cni::<hash of the container id>:<ifname>` (an empty id
/// field, which no real container id produces).
pub fn port_name(container_id: &str, ifname: &str) -> String {
    let plain = format!("{PORT_PREFIX}{container_id}:{ifname}");
    if plain.len() <= MAX_PORT_NAME_LEN {
        return plain;
    }
    let h1 = fnv1a64(0xcbf2_9ce4_8422_2325, container_id.as_bytes());
    let h2 = fnv1a64(0x6c62_272e_07bb_0142, container_id.as_bytes());
    format!("{PORT_PREFIX}:{h1:016x}{h2:016x}:{ifname}")
}

/// The container id and interface of a port named by [`port_name`]; `None` for other ports
/// and for hashed names.
pub fn parse_port_name(name: &str) -> Option<(&str, &str)> {
    let (id, ifname) = name.strip_prefix(PORT_PREFIX)?.rsplit_once(':')?;
    crate::spec::validate_container_id(id).ok()?;
    Some((id, ifname))
}

fn fnv1a64(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn switch_error(what: &str, e: ClientError) -> CniError {
    match e {
        ClientError::Connect { .. } | ClientError::Io(_) => CniError::new(
            code::TRY_AGAIN,
            "podswitch is not reachable; try again later",
            format!("{what}: {e}"),
        ),
        ClientError::Api(a) if a.kind == ErrorKind::Unavailable => CniError::new(
            code::TRY_AGAIN,
            "podswitch is not serving requests; try again later",
            format!("{what}: {a}"),
        ),
        ClientError::Api(a) => {
            let kind = serde_json::to_value(a.kind)
                .ok()
                .and_then(|k| k.as_str().map(str::to_string))
                .unwrap_or_default();
            CniError::new(
                code::SWITCH_REFUSED,
                format!("podswitch refused {what}"),
                format!("{kind}: {a}"),
            )
        }
        ClientError::Protocol(p) => {
            CniError::new(code::SWITCH_REFUSED, format!("podswitch answered {what} oddly"), p)
        }
    }
}

fn unexpected(what: &str, reply: &Reply) -> CniError {
    CniError::new(
        code::SWITCH_REFUSED,
        format!("podswitch answered {what} oddly"),
        format!("{reply:?}"),
    )
}

fn mismatch(details: impl Into<String>) -> CniError {
    CniError::new(code::CHECK_FAILED, "the attachment differs from what ADD created", details)
}

fn kernel(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(code::KERNEL, format!("{what} failed"), e.to_string())
}

fn status(sw: &mut Client) -> Result<StatusReply, CniError> {
    match sw.call(&Request::Status).map_err(|e| switch_error("status", e))? {
        Reply::Status(s) => Ok(s),
        other => Err(unexpected("status", &other)),
    }
}

fn port_list(sw: &mut Client) -> Result<Vec<PortInfo>, CniError> {
    match sw.call(&Request::PortList).map_err(|e| switch_error("port_list", e))? {
        Reply::Ports { ports } => Ok(ports),
        other => Err(unexpected("port_list", &other)),
    }
}

/// Removes a port; a port that is already gone counts as removed.
fn port_del(sw: &mut Client, name: &str) -> Result<(), CniError> {
    match sw.call(&Request::PortDel(PortDelArgs { name: name.to_string() })) {
        Ok(_) => Ok(()),
        Err(ClientError::Api(e)) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(switch_error("port_del", e)),
    }
}

/// A connection to the switch, or `None` when nothing listens on the socket: a switch that
/// is not running has no ports (they close with its process).
fn connect_if_running(conf: &NetConf) -> Result<Option<Client>, CniError> {
    match Client::connect(&conf.socket) {
        Ok(c) => Ok(Some(c)),
        Err(ClientError::Connect { .. }) => Ok(None),
        Err(e) => Err(switch_error("connect", e)),
    }
}

/// A route of a result as destination network and next hop (`gw` defaults to `gateway`).
fn route_target(r: &Route, gateway: Ipv4Addr) -> Result<Option<(Ipv4Cidr, Ipv4Addr)>, String> {
    if r.dst.contains(':') {
        return Ok(None);
    }
    let dst: Ipv4IfAddr = r.dst.parse().map_err(|e| format!("route {}: {e}", r.dst))?;
    let gw = match &r.gw {
        Some(g) => g.parse().map_err(|e| format!("route {} gw {g}: {e}", r.dst))?,
        None => gateway,
    };
    Ok(Some((dst.subnet(), gw)))
}

/// ADD: lease an address, have the switch create and attach the port, add the IPAM
/// plugin's extra routes, and return the result.
pub fn add(env: &Env, conf: &NetConf) -> Result<CniResult, CniError> {
    let netns = env.netns.clone().unwrap_or_default();
    let ifname = env.ifname().to_string();
    let name = port_name(env.container_id(), &ifname);
    let mut sw = Client::connect(&conf.socket).map_err(|e| switch_error("connect", e))?;
    let node = status(&mut sw)?;
    if port_list(&mut sw)?.iter().any(|p| p.name == name) {
        return Err(CniError::new(
            code::ALREADY_ATTACHED,
            "the attachment exists",
            format!("port {name} is attached; DEL it before adding it again"),
        ));
    }
    let leased = match &conf.ipam {
        None => None,
        Some(i) => {
            let d = Delegate::negotiate(&i.plugin_type, env, conf.cni_version)?;
            let lease = d.add(env, conf)?;
            Some((d, lease))
        }
    };
    let release = |leased: &Option<(Delegate, Lease)>| {
        if let Some((d, _)) = leased {
            let _ = d.call("DEL", env, None, conf);
        }
    };
    let ip = match &leased {
        None => None,
        Some((_, lease)) => match fit_to_node(lease, node.pod_cidr, node.gateway) {
            Ok(ip) => Some(ip),
            Err(e) => {
                release(&leased);
                return Err(e);
            }
        },
    };
    let port = match sw.call(&Request::PortAdd(PortAddArgs {
        name: name.clone(),
        netns: netns.clone(),
        ip,
        mac: None,
        ifname: Some(ifname.clone()),
        mtu: conf.mtu,
        kind: match conf.port_type {
            PortType::Tap => PortAddKind::Tap,
            PortType::AfXdp => PortAddKind::Afxdp,
        },
        port_security: true,
        allow_ips: Vec::new(),
    })) {
        Ok(Reply::Port(p)) => p,
        Ok(other) => {
            let _ = port_del(&mut sw, &name);
            release(&leased);
            return Err(unexpected("port_add", &other));
        }
        Err(e) => {
            release(&leased);
            return Err(switch_error("port_add", e));
        }
    };
    let mut routes = vec![Route {
        dst: "0.0.0.0/0".into(),
        gw: Some(node.gateway.to_string()),
        ..Route::default()
    }];
    if let Some((_, lease)) = &leased {
        match extra_routes(&netns, &ifname, lease, node.gateway) {
            Ok(extra) => routes.extend(extra),
            Err(e) => {
                let _ = port_del(&mut sw, &name);
                release(&leased);
                return Err(e);
            }
        }
    }
    let Some(addr) = port.ip else {
        let _ = port_del(&mut sw, &name);
        release(&leased);
        return Err(CniError::new(
            code::SWITCH_REFUSED,
            "podswitch gave the port no address",
            name,
        ));
    };
    let dns = match &leased {
        Some((_, lease)) if conf.dns.is_empty() => lease.dns.clone(),
        _ => conf.dns.clone(),
    };
    let mut result = conf.prev_result.clone().unwrap_or(CniResult {
        cni_version: String::new(),
        interfaces: Vec::new(),
        ips: Vec::new(),
        routes: Vec::new(),
        dns: Default::default(),
    });
    result.interfaces.push(Interface {
        name: ifname,
        mac: port.mac.to_string(),
        mtu: Some(port.mtu),
        sandbox: netns,
        ..Interface::default()
    });
    result.ips.push(IpConfig {
        address: addr.to_string(),
        gateway: Some(node.gateway.to_string()),
        interface: Some(result.interfaces.len() - 1),
    });
    result.routes.extend(routes);
    if result.dns.is_empty() {
        result.dns = dns;
    }
    Ok(result.for_version(conf.cni_version))
}

/// Installs the routes of an IPAM lease other than the default route (which the switch
/// installs through its gateway) in the pod's namespace; returns them as result routes.
fn extra_routes(
    netns: &str,
    ifname: &str,
    lease: &Lease,
    gateway: Ipv4Addr,
) -> Result<Vec<Route>, CniError> {
    let mut wanted = Vec::new();
    for r in &lease.routes {
        let Some((dst, gw)) = route_target(r, gateway).map_err(|e| invalid("ipam", e))? else {
            continue;
        };
        if dst.prefix_len() == 0 {
            if gw != gateway {
                return Err(invalid(
                    "ipam",
                    format!("default route via {gw}, but the switch's gateway is {gateway}"),
                ));
            }
            continue;
        }
        wanted.push((dst, gw));
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let ns = NetNs::open(netns).map_err(|e| kernel("opening the pod's namespace", e))?;
    let mut nl = Netlink::open_in(&ns).map_err(|e| kernel("netlink in the pod's namespace", e))?;
    let index = nl
        .link_get(ifname)
        .map_err(|e| kernel("looking up the pod's interface", e))?
        .ok_or_else(|| kernel("looking up the pod's interface", format!("{ifname} is gone")))?
        .index;
    let mut out = Vec::new();
    for (dst, gw) in wanted {
        nl.route_add(dst.network(), dst.prefix_len(), Some(gw), index)
            .map_err(|e| kernel(&format!("adding the route {dst} via {gw}"), e))?;
        out.push(Route { dst: dst.to_string(), gw: Some(gw.to_string()), ..Route::default() });
    }
    Ok(out)
}

/// DEL: remove the port (if the switch has it) and release the lease (if the IPAM plugin
/// has one). Succeeds when either is already gone, and when the namespace is.
pub fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let name = port_name(env.container_id(), env.ifname());
    if let Some(mut sw) = connect_if_running(conf)? {
        port_del(&mut sw, &name)?;
    }
    if let Some(i) = &conf.ipam {
        let d = Delegate::negotiate(&i.plugin_type, env, conf.cni_version)?;
        d.call("DEL", env, None, conf)?;
    }
    Ok(())
}

fn same_namespace(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// CHECK: the port exists in the switch as the result describes it, and the interface, its
/// MAC, its address and the result's routes exist in the namespace. The MTU is not compared:
/// a chained plugin (tuning) may change it.
pub fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| invalid("prevResult", "missing; CHECK needs the result of ADD"))?;
    let netns = env.netns.as_deref().unwrap_or_default();
    let ifname = env.ifname();
    let (idx, iface) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == ifname && !i.sandbox.is_empty())
        .ok_or_else(|| mismatch(format!("prevResult has no interface {ifname} in a sandbox")))?;
    let ip: Ipv4IfAddr = prev
        .ips
        .iter()
        .find(|ip| ip.interface == Some(idx))
        .and_then(|ip| ip.address.parse().ok())
        .ok_or_else(|| mismatch(format!("prevResult has no IPv4 address for {ifname}")))?;
    let name = port_name(env.container_id(), ifname);
    let mut sw = Client::connect(&conf.socket).map_err(|e| switch_error("connect", e))?;
    let node = status(&mut sw)?;
    let port = port_list(&mut sw)?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| mismatch(format!("port {name} is not attached to podswitch")))?;
    if port.state != "up" {
        return Err(mismatch(format!("port {name} is {}", port.state)));
    }
    if !port.netns.as_deref().is_some_and(|n| same_namespace(n, netns)) {
        return Err(mismatch(format!(
            "port {name} lives in namespace {:?}, not {netns}",
            port.netns.as_deref().unwrap_or("(the switch's)")
        )));
    }
    if port.ifname != ifname || port.ip != Some(ip) {
        return Err(mismatch(format!(
            "port {name} is {} with {:?} in the switch; the result says {ifname} with {ip}",
            port.ifname,
            port.ip.map(|i| i.to_string())
        )));
    }
    if !iface.mac.is_empty() && !iface.mac.eq_ignore_ascii_case(&port.mac.to_string()) {
        return Err(mismatch(format!(
            "port {name} has MAC {}; the result says {}",
            port.mac, iface.mac
        )));
    }
    let ns = NetNs::open(netns).map_err(|e| mismatch(format!("namespace {netns}: {e}")))?;
    let mut nl = Netlink::open_in(&ns).map_err(|e| kernel("netlink in the pod's namespace", e))?;
    let link = nl
        .link_get(ifname)
        .map_err(|e| kernel("reading the pod's interface", e))?
        .ok_or_else(|| mismatch(format!("interface {ifname} is missing from {netns}")))?;
    if !link.up {
        return Err(mismatch(format!("interface {ifname} in {netns} is down")));
    }
    if link.mac != Some(port.mac.0) {
        return Err(mismatch(format!(
            "interface {ifname} in {netns} has MAC {}; the switch's port has {}",
            link.mac.map(|m| podswitch_api::mac::MacAddr(m).to_string()).unwrap_or_default(),
            port.mac
        )));
    }
    let addrs = nl.addr_list(Some(link.index)).map_err(|e| kernel("reading addresses", e))?;
    if !addrs.iter().any(|a| a.addr == ip.addr && a.prefix_len == ip.prefix_len) {
        let have: Vec<String> =
            addrs.iter().map(|a| format!("{}/{}", a.addr, a.prefix_len)).collect();
        return Err(mismatch(format!(
            "address {ip} is missing from {ifname} in {netns} (it has: {})",
            if have.is_empty() { "none".to_string() } else { have.join(", ") }
        )));
    }
    let routes = nl.route_list().map_err(|e| kernel("reading routes", e))?;
    for r in prev.routes.iter() {
        let Some((dst, gw)) = route_target(r, node.gateway).map_err(mismatch)? else { continue };
        let found = routes.iter().any(|k| {
            k.dst == dst.network()
                && k.prefix_len == dst.prefix_len()
                && k.gateway == Some(gw)
                && k.oif == Some(link.index)
        });
        if !found {
            return Err(mismatch(format!(
                "route {dst} via {gw} dev {ifname} is missing from {netns}"
            )));
        }
    }
    if let Some(i) = &conf.ipam {
        let d = Delegate::negotiate(&i.plugin_type, env, conf.cni_version)?;
        if d.version >= CHECK_SINCE {
            d.call("CHECK", env, None, conf)?;
        }
    }
    Ok(())
}

/// STATUS: the switch answers, and the IPAM plugin (when it speaks STATUS) is ready.
pub fn status_cmd(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let not_available =
        |details: String| CniError::new(code::NOT_AVAILABLE, "podswitch is not available", details);
    let mut sw = Client::connect(&conf.socket).map_err(|e| not_available(e.to_string()))?;
    match sw.call(&Request::Status) {
        Ok(Reply::Status(_)) => {}
        Ok(other) => return Err(not_available(format!("unexpected status reply {other:?}"))),
        Err(e) => return Err(not_available(e.to_string())),
    }
    if let Some(i) = &conf.ipam {
        let d = Delegate::negotiate(&i.plugin_type, env, conf.cni_version)
            .map_err(|e| not_available(e.to_string()))?;
        if d.version >= STATUS_GC_SINCE {
            d.call("STATUS", env, None, conf)?;
        }
    }
    Ok(())
}

/// GC: remove the plugin's ports whose attachments are not in `cni.dev/valid-attachments`,
/// and their leases (through the IPAM plugin's own GC when it speaks 1.1.0, else one DEL per
/// removed port).
pub fn gc(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        invalid("cni.dev/valid-attachments", "missing; GC needs the list of valid attachments")
    })?;
    let keep: HashSet<String> =
        valid.iter().map(|a| port_name(&a.container_id, &a.ifname)).collect();
    let mut first_error = None;
    let mut removed = Vec::new();
    if let Some(mut sw) = connect_if_running(conf)? {
        for p in port_list(&mut sw)? {
            if !p.name.starts_with(PORT_PREFIX) || keep.contains(&p.name) {
                continue;
            }
            match port_del(&mut sw, &p.name) {
                Ok(()) => removed.push(p.name),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
    }
    if let Some(i) = &conf.ipam {
        let d = Delegate::negotiate(&i.plugin_type, env, conf.cni_version)?;
        if d.version >= STATUS_GC_SINCE {
            if let Err(e) = d.call("GC", env, None, conf) {
                first_error = first_error.or(Some(e));
            }
        } else {
            for name in &removed {
                if let Some(attachment) = parse_port_name(name) {
                    if let Err(e) = d.call("DEL", env, Some(attachment), conf) {
                        first_error = first_error.or(Some(e));
                    }
                }
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_round_trip_and_long_ids_are_hashed() {
        let n = port_name("abc123", "eth0");
        assert_eq!(n, "cni:abc123:eth0");
        assert_eq!(parse_port_name(&n), Some(("abc123", "eth0")));
        let long = "x".repeat(200);
        let h = port_name(&long, "eth0");
        assert!(h.len() <= MAX_PORT_NAME_LEN && h.starts_with("cni::"), "{h}");
        assert_eq!(h, port_name(&long, "eth0"));
        assert_ne!(h, port_name(&"y".repeat(200), "eth0"));
        assert_eq!(parse_port_name(&h), None);
        assert_eq!(parse_port_name("pod1"), None);
        let id64 = "f".repeat(64);
        assert_eq!(parse_port_name(&port_name(&id64, "net1")), Some((id64.as_str(), "net1")));
    }

    #[test]
    fn routes_default_to_the_gateway() {
        let gw = Ipv4Addr::new(10, 244, 1, 1);
        let r = Route { dst: "10.96.0.0/12".into(), ..Route::default() };
        let (dst, via) = route_target(&r, gw).unwrap().unwrap();
        assert_eq!((dst.to_string(), via), ("10.96.0.0/12".to_string(), gw));
        let v6 = Route { dst: "::/0".into(), ..Route::default() };
        assert_eq!(route_target(&v6, gw).unwrap(), None);
    }
}
