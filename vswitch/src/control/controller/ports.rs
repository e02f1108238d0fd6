//! Ports: `port add` (validate and resolve defaults, claim the address, create the device
//! through [`Devices`], hand it to the workers, record it) and `port del` (the workers let
//! go, the device goes, the address and MAC are free again), and the port list.

use std::io;

use crate::cidr::{Ipv4Cidr, Ipv4IfAddr};
use crate::config::{MAX_MTU, MIN_MTU};
use crate::control::api::*;
use crate::pipeline::port_security::{PortPolicy, MAX_ALLOW_IPS};
use crate::port::afxdp::AfXdpOptions;
use crate::port::{PortId, PortKind};
use crate::sys::tun;
use crate::wire::MacAddr;

use super::devices::PodDevice;
use super::{unavailable, Controller, PortRecord, State, DEFAULT_IFNAME, MAX_PORT_NAME_LEN};

impl Controller {
    /// Validates a port add and resolves its defaults, without changing anything.
    fn plan_port_add(&self, st: &State, args: &PortAddArgs) -> Result<PortRecord, ApiError> {
        validate_port_name(&args.name)?;
        if st.ports.contains_key(&args.name) {
            return Err(ApiError::field(
                ErrorKind::AlreadyExists,
                "args.name",
                format!("a port named {:?} exists", args.name),
            ));
        }
        let Some(slot) = st.ids.iter().position(|used| !used) else {
            return Err(ApiError::new(
                ErrorKind::ResourceExhausted,
                format!("the switch has its maximum of {} ports", self.config.ports.max_ports),
            ));
        };
        let ifname = args.ifname.clone().unwrap_or_else(|| DEFAULT_IFNAME.to_string());
        tun::validate_ifname(&ifname).map_err(|e| {
            ApiError::field(ErrorKind::InvalidArgument, "args.ifname", e.to_string())
        })?;
        let mtu = args.mtu.unwrap_or(self.config.node.mtu);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(ApiError::field(
                ErrorKind::InvalidArgument,
                "args.mtu",
                format!("must be from {MIN_MTU} to {MAX_MTU}, got {mtu}"),
            ));
        }
        let kind = match args.kind {
            PortAddKind::Tap => PortKind::Tap,
            PortAddKind::Afxdp => PortKind::Afxdp,
        };
        if kind == PortKind::Afxdp && AfXdpOptions::for_mtu(mtu).is_none() {
            return Err(ApiError::field(
                ErrorKind::InvalidArgument,
                "args.mtu",
                format!("{mtu} is too large for an afxdp port (one 4 KiB frame per packet)"),
            ));
        }
        let cidr = self.config.node.pod_cidr;
        let ip = match args.ip {
            Some(ip) => {
                if ip.prefix_len != cidr.prefix_len() && ip.prefix_len != 32 {
                    return Err(ApiError::field(
                        ErrorKind::InvalidArgument,
                        "args.ip",
                        format!(
                            "prefix length must be /{} (the pod CIDR's) or /32, got /{}",
                            cidr.prefix_len(),
                            ip.prefix_len
                        ),
                    ));
                }
                if ip.addr == self.config.node.gateway {
                    return Err(ApiError::field(
                        ErrorKind::InvalidArgument,
                        "args.ip",
                        format!("{} is the gateway address", ip.addr),
                    ));
                }
                if !cidr.is_host(ip.addr) {
                    return Err(ApiError::field(
                        ErrorKind::InvalidArgument,
                        "args.ip",
                        format!("{} is not a host address of the pod CIDR {cidr}", ip.addr),
                    ));
                }
                if st.pool.is_used(ip.addr) {
                    return Err(ApiError::field(
                        ErrorKind::AlreadyExists,
                        "args.ip",
                        format!("{} is in use by another port", ip.addr),
                    ));
                }
                Some(ip)
            }
            None => None, // allocated when the add is carried out
        };
        let mac = match args.mac {
            Some(m) => {
                if !m.is_unicast() || m == MacAddr::ZERO {
                    return Err(ApiError::field(
                        ErrorKind::InvalidArgument,
                        "args.mac",
                        format!("{m} is not a unicast MAC"),
                    ));
                }
                m
            }
            None => MacAddr::ZERO, // derived from the address once it is known
        };
        if args.mac.is_some() && st.macs.contains(&mac) {
            return Err(ApiError::field(
                ErrorKind::AlreadyExists,
                "args.mac",
                format!("{mac} is in use by another port or the gateway"),
            ));
        }
        let security = plan_port_security(args)?;
        Ok(PortRecord {
            id: PortId(slot as u16),
            kind,
            netns: Some(args.netns.clone()),
            ifname,
            mac,
            ip,
            mtu,
            pod_steering: None,
            security,
        })
    }

    pub(super) fn port_add(&self, args: PortAddArgs) -> Result<PortInfo, ApiError> {
        let mut guard = self.state();
        let st = &mut *guard;
        let mut rec = self.plan_port_add(st, &args)?;
        let ns = st.devices.open_netns(&args.netns).map_err(|e| {
            let kind = if e.kind() == io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::InvalidArgument
            };
            ApiError::field(kind, "args.netns", e.to_string())
        })?;
        rec.netns = Some(ns.path().display().to_string());
        // Address: claim the requested one or allocate; undone on any failure below.
        let checkpoint = st.pool.checkpoint();
        let ip = match rec.ip {
            Some(ip) => {
                st.pool.claim(ip.addr);
                ip
            }
            None => {
                let addr = st.pool.allocate().ok_or_else(|| {
                    ApiError::new(
                        ErrorKind::ResourceExhausted,
                        format!(
                            "no free address left in the pod CIDR {}",
                            self.config.node.pod_cidr
                        ),
                    )
                })?;
                Ipv4IfAddr { addr, prefix_len: self.config.node.pod_cidr.prefix_len() }
            }
        };
        rec.ip = Some(ip);
        if rec.mac == MacAddr::ZERO {
            let o = ip.addr.octets();
            rec.mac = MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]]);
            if st.macs.contains(&rec.mac) {
                st.pool.undo(ip.addr, checkpoint);
                return Err(ApiError::field(
                    ErrorKind::AlreadyExists,
                    "args.mac",
                    format!("the derived MAC {} is in use; pass --mac", rec.mac),
                ));
            }
        }
        match self.attach(st, &ns, &rec, ip) {
            Ok(pod_steering) => {
                rec.pod_steering = pod_steering;
                st.ids[rec.id.index()] = true;
                st.macs.insert(rec.mac);
                let info = self.info(&args.name, &rec, None);
                st.ports.insert(args.name.clone(), rec);
                Ok(info)
            }
            Err(e) => {
                st.pool.undo(ip.addr, checkpoint);
                Err(e)
            }
        }
    }

    /// Creates the pod's device and hands it to the workers with the pod's address as its
    /// neighbor. A device the workers refuse is deleted again. Returns the pod end's
    /// queue-steering attachment, if any.
    fn attach(
        &self,
        st: &mut State,
        ns: &crate::sys::netns::NetNs,
        rec: &PortRecord,
        ip: Ipv4IfAddr,
    ) -> Result<Option<crate::sys::bpf::TcxLink>, ApiError> {
        let pod = PodDevice {
            id: rec.id,
            kind: rec.kind,
            ifname: &rec.ifname,
            mac: rec.mac,
            ip,
            mtu: rec.mtu,
        };
        let security = match &rec.security {
            Some(allow) => Some(PortPolicy::new(rec.mac, ip.addr, allow).map_err(|e| {
                ApiError::field(ErrorKind::InvalidArgument, "args.allow_ips", e.to_string())
            })?),
            None => None,
        };
        let dev = st.devices.create_pod(ns, &pod)?;
        let handed = self.worker.add_port(rec.id, dev.queues, Some((ip.addr, rec.mac)), security);
        match handed {
            Ok(Ok(())) => Ok(dev.steering),
            Ok(Err(e)) => {
                drop(dev.steering);
                st.devices.delete_pod(rec.id, rec.kind);
                Err(ApiError::new(ErrorKind::Failed, format!("attach: {e}")))
            }
            Err(gone) => {
                drop(dev.steering);
                st.devices.delete_pod(rec.id, rec.kind);
                Err(unavailable(gone))
            }
        }
    }

    pub(super) fn port_del(&self, name: &str) -> Result<PortInfo, ApiError> {
        let mut st = self.state();
        let rec = st.ports.get(name).ok_or_else(|| {
            ApiError::field(ErrorKind::NotFound, "args.name", format!("no port named {name:?}"))
        })?;
        if matches!(rec.kind, PortKind::Host | PortKind::Overlay | PortKind::NodePort) {
            return Err(ApiError::field(
                ErrorKind::InvalidArgument,
                "args.name",
                format!("the {name} port lives as long as the switch"),
            ));
        }
        let id = rec.id;
        let removed = self.worker.remove_port(id).map_err(unavailable)?;
        let rec = st.ports.remove(name).expect("looked up under the same lock");
        // Dropping the port closes the TAP: the pod's interface, its address and routes go.
        // An AF_XDP port's drop detaches its program and closes its socket; its veth goes
        // with the host end, and the pod end's steering program with it (its link with the
        // record).
        drop(removed);
        st.devices.delete_pod(id, rec.kind);
        st.ids[id.index()] = false;
        st.macs.remove(&rec.mac);
        if let Some(ip) = rec.ip {
            st.pool.release(ip.addr);
        }
        Ok(self.info(name, &rec, None))
    }

    fn info(&self, name: &str, rec: &PortRecord, failure: Option<&str>) -> PortInfo {
        PortInfo {
            name: name.to_string(),
            id: rec.id.0,
            kind: rec.kind,
            netns: rec.netns.clone(),
            ifname: rec.ifname.clone(),
            mac: rec.mac,
            ip: rec.ip,
            mtu: rec.mtu,
            state: match failure {
                None => "up".to_string(),
                Some(f) => format!("failed: {f}"),
            },
            port_security: rec.security.is_some(),
            allow_ips: rec.security.clone().unwrap_or_default(),
        }
    }

    pub(super) fn port_list(&self) -> Result<Vec<PortInfo>, ApiError> {
        let snap = self.worker.stats().map_err(unavailable)?;
        let st = self.state();
        let mut v: Vec<PortInfo> = st
            .ports
            .iter()
            .map(|(name, rec)| {
                let failure =
                    snap.ports.iter().find(|p| p.id == rec.id).and_then(|p| p.failed.as_deref());
                self.info(name, rec, failure)
            })
            .collect();
        v.sort_by_key(|p| p.id);
        Ok(v)
    }
}

fn validate_port_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PORT_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            ErrorKind::InvalidArgument,
            "args.name",
            format!(
                "{name:?} is not a valid port name: use 1-{MAX_PORT_NAME_LEN} of [A-Za-z0-9._:-]"
            ),
        ))
    }
}

/// The port-security plan of a `port add`: the allow-list when on, `None` when off. Names
/// the field at fault.
fn plan_port_security(args: &PortAddArgs) -> Result<Option<Vec<Ipv4Cidr>>, ApiError> {
    let bad = |msg: String| ApiError::field(ErrorKind::InvalidArgument, "args.allow_ips", msg);
    if !args.port_security {
        if !args.allow_ips.is_empty() {
            return Err(bad("has no effect with port_security off".into()));
        }
        return Ok(None);
    }
    if args.allow_ips.len() > MAX_ALLOW_IPS {
        return Err(bad(format!("at most {MAX_ALLOW_IPS} entries, got {}", args.allow_ips.len())));
    }
    for (i, c) in args.allow_ips.iter().enumerate() {
        if args.allow_ips[..i].contains(c) {
            return Err(bad(format!("{c} is listed twice")));
        }
    }
    Ok(Some(args.allow_ips.clone()))
}

#[cfg(test)]
mod security_tests {
    use super::*;

    fn args(security: bool, allow: &[&str]) -> PortAddArgs {
        PortAddArgs {
            name: "p".into(),
            netns: "n".into(),
            ip: None,
            mac: None,
            ifname: None,
            mtu: None,
            kind: PortAddKind::Tap,
            port_security: security,
            allow_ips: allow.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn port_security_plans_name_the_field() {
        assert_eq!(plan_port_security(&args(true, &[])).unwrap(), Some(vec![]));
        assert_eq!(plan_port_security(&args(false, &[])).unwrap(), None);
        let one = plan_port_security(&args(true, &["192.0.2.0/24"])).unwrap();
        assert_eq!(one, Some(vec!["192.0.2.0/24".parse().unwrap()]));
        let many: Vec<String> = (0..=MAX_ALLOW_IPS).map(|i| format!("10.{i}.0.0/16")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for bad in [
            args(false, &["192.0.2.0/24"]),
            args(true, &["192.0.2.0/24", "192.0.2.0/24"]),
            args(true, &many),
        ] {
            let e = plan_port_security(&bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("args.allow_ips"), "{e:?}");
        }
    }
}
