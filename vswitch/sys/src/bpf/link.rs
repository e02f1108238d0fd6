//! Attaching programs through a `bpf_link`: XDP ([`XdpLink`], skb or native mode) and tc
//! classifiers through tcx ([`TcxLink`], ingress or egress), each detached when its link fd
//! goes; and [`tcx_prog_ids`], what a tcx hook runs.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::prog::{SchedClsProgram, XdpProgram};
use super::syscall::*;

/// `BPF_TCX_INGRESS` in `enum bpf_attach_type` (Linux 6.6 and later; values as the
/// kernel's BTF has them, older `<linux/bpf.h>` copies lack them).
const BPF_TCX_INGRESS: u32 = 46;
/// `BPF_TCX_EGRESS` in `enum bpf_attach_type` (Linux 6.6 and later).
const BPF_TCX_EGRESS: u32 = 47;
/// `XDP_FLAGS_SKB_MODE` (`<linux/if_link.h>`).
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `union bpf_attr` for `BPF_PROG_QUERY` (up to `revision`, which the kernel writes for
/// tcx queries whatever size it was given).
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

const _: () = assert!(size_of::<QueryAttr>() == 64);

/// `union bpf_attr` for `BPF_LINK_CREATE` (the common head).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// The head of `struct bpf_link_info`, XDP variant: type, id, prog_id, then (8-byte aligned
/// union) `xdp.ifindex`.
#[repr(C)]
#[derive(Default)]
struct LinkInfoXdp {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    _pad2: u32,
}

/// The head of `struct bpf_link_info`, tcx variant: type, id, prog_id, then
/// `tcx.ifindex` and `tcx.attach_type`.
#[repr(C)]
#[derive(Default)]
struct LinkInfoTcx {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    attach_type: u32,
}

/// A tc hook of a device: where its received frames enter the stack, or where frames to be
/// sent enter the device's queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcxDirection {
    /// `BPF_TCX_INGRESS`.
    Ingress,
    /// `BPF_TCX_EGRESS`: before the kernel picks the transmit queue.
    Egress,
}

impl TcxDirection {
    fn attach_type(self) -> u32 {
        match self {
            TcxDirection::Ingress => BPF_TCX_INGRESS,
            TcxDirection::Egress => BPF_TCX_EGRESS,
        }
    }
}

impl std::fmt::Display for TcxDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcxDirection::Ingress => "ingress",
            TcxDirection::Egress => "egress",
        })
    }
}

/// A tc classifier attached to a device through tcx (a `bpf_link`, Linux 6.6 and later, no
/// qdisc needed): detached when dropped, when the process dies, or when the device goes.
/// Other tcx programs on the same hook run too (this one is appended).
#[derive(Debug)]
pub struct TcxLink {
    fd: OwnedFd,
    ifindex: u32,
    direction: TcxDirection,
}

impl TcxLink {
    /// Attaches `prog` to `direction` of the device with index `ifindex` in the calling
    /// thread's network namespace. A kernel without tcx refuses with `InvalidInput`
    /// (`EINVAL`).
    pub fn attach(
        prog: &SchedClsProgram,
        ifindex: u32,
        direction: TcxDirection,
    ) -> io::Result<TcxLink> {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.fd() as u32,
            target_ifindex: ifindex,
            attach_type: direction.attach_type(),
            flags: 0,
        };
        // SAFETY: LINK_CREATE reads only the attr itself, which holds no pointers.
        let fd = unsafe { sys_bpf(BPF_LINK_CREATE, &mut attr) }
            .map_err(|e| context(e, format_args!("tcx {direction} attach to ifindex {ifindex}")))?;
        Ok(TcxLink { fd: owned(fd), ifindex, direction })
    }

    /// The device's interface index (in the namespace it was attached from).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The hook.
    pub fn direction(&self) -> TcxDirection {
        self.direction
    }

    /// The id of the program the link holds (it holds it until dropped).
    pub fn prog_id(&self) -> io::Result<u32> {
        Ok(self.info()?.prog_id)
    }

    /// The index of the device the program is attached to, as the kernel reports it now:
    /// the device's index in its current namespace, `None` once the device is gone (the
    /// link then holds nothing attached).
    pub fn device(&self) -> io::Result<Option<u32>> {
        Ok(Some(self.info()?.ifindex).filter(|&i| i != 0))
    }

    fn info(&self) -> io::Result<LinkInfoTcx> {
        let mut info = LinkInfoTcx::default();
        obj_info(self.fd.as_raw_fd(), &mut info).map_err(|e| context(e, "BPF_OBJ_GET_INFO"))?;
        Ok(info)
    }
}

/// The ids of the tcx programs on `direction` of the device with index `ifindex` in the
/// calling thread's namespace, in the order they run (`BPF_PROG_QUERY`). A kernel without
/// tcx refuses with `InvalidInput`; a device that does not exist is an error naming
/// `ENODEV`.
pub fn tcx_prog_ids(ifindex: u32, direction: TcxDirection) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: direction.attach_type(),
        prog_ids: ids.as_mut_ptr() as u64,
        count: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most `count` u32s at prog_ids (the vector has that many),
    // and writes count, attach_flags and revision into the attr, which covers them.
    unsafe { sys_bpf(BPF_PROG_QUERY, &mut attr) }
        .map_err(|e| context(e, format_args!("tcx {direction} query of ifindex {ifindex}")))?;
    ids.truncate(attr.count as usize);
    Ok(ids)
}

/// Where an XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Generic XDP, after the kernel has built an skb: works on every device, slower.
    Skb,
    /// In the driver, before any skb exists (veth supports it).
    Native,
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpMode::Skb => "skb",
            XdpMode::Native => "native",
        })
    }
}

/// An attachment through a bpf_link: detached when dropped (and when the process dies).
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    ifindex: u32,
    mode: XdpMode,
}

impl XdpLink {
    /// Attaches `prog` to the device with index `ifindex` in the calling thread's network
    /// namespace. Fails with `ResourceBusy` when the device already has an XDP program in
    /// that mode.
    pub fn attach(prog: &XdpProgram, ifindex: u32, mode: XdpMode) -> io::Result<XdpLink> {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: match mode {
                XdpMode::Skb => XDP_FLAGS_SKB_MODE,
                XdpMode::Native => XDP_FLAGS_DRV_MODE,
            },
        };
        // SAFETY: LINK_CREATE reads only the attr itself, which holds no pointers.
        let fd = unsafe { sys_bpf(BPF_LINK_CREATE, &mut attr) }.map_err(|e| {
            context(e, format_args!("XDP attach ({mode} mode) to ifindex {ifindex}"))
        })?;
        Ok(XdpLink { fd: owned(fd), ifindex, mode })
    }

    /// The device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode it was attached in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The id of the program the link holds, as the kernel reports it now.
    pub fn prog_id(&self) -> io::Result<u32> {
        let mut info = LinkInfoXdp::default();
        obj_info(self.fd.as_raw_fd(), &mut info).map_err(|e| context(e, "BPF_OBJ_GET_INFO"))?;
        Ok(info.prog_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::insn::reg::*;
    use crate::bpf::insn::{Insn, TC_ACT_OK, XDP_PASS};
    use crate::bpf::map::{BpfMap, MapKind};
    use crate::bpf::prog::prog_loaded;
    use crate::bpf::xsk_redirect::xsk_redirect_program;
    use crate::netlink::Netlink;
    use crate::netns::{NamedNetNs, NetNs};
    use crate::test_support::needs_root;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A throwaway namespace holding a veth pair `xa`/`xb` (both up); deleted on drop, which
    /// deletes the pair and with it any attachment.
    struct VethNs {
        ns: NamedNetNs,
        xa: u32,
    }

    fn veth_ns() -> VethNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("pswbpf-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ns = NamedNetNs::create(&name).unwrap();
        let mut nl = Netlink::open_in(&ns).unwrap();
        nl.veth_add("xa", "xb", None).unwrap();
        let xa = nl.link_get("xa").unwrap().unwrap().index;
        let xb = nl.link_get("xb").unwrap().unwrap().index;
        nl.link_set_up(xa, true).unwrap();
        nl.link_set_up(xb, true).unwrap();
        VethNs { ns, xa }
    }

    #[test]
    fn programs_load_attach_and_detach_by_drop() {
        needs_root!();
        let pass = XdpProgram::load("psw_pass", &[Insn::mov64_imm(R0, XDP_PASS), Insn::exit()])
            .expect("load a return-XDP_PASS program");
        let xsks = BpfMap::create(MapKind::XskMap, "psw_xsks", 4, 4, 4).unwrap();
        let redirect = XdpProgram::load("psw_xsk", &xsk_redirect_program(&xsks))
            .expect("the verifier accepts the XSK redirect program");
        assert_ne!(pass.id().unwrap(), redirect.id().unwrap());
        let pass_id = pass.id().unwrap();
        assert!(prog_loaded(pass_id).unwrap());

        let v = veth_ns();
        let attach = |p: &XdpProgram, mode| v.ns.run(|| XdpLink::attach(p, v.xa, mode)).unwrap();
        let link = attach(&pass, XdpMode::Skb).expect("attach in skb mode");
        assert_eq!((link.ifindex(), link.mode()), (v.xa, XdpMode::Skb));
        assert_eq!(link.prog_id().unwrap(), pass.id().unwrap());
        // The slot is taken while the link lives...
        let busy = attach(&redirect, XdpMode::Skb).unwrap_err();
        assert_eq!(busy.kind(), io::ErrorKind::ResourceBusy, "{busy}");
        assert!(busy.to_string().contains("skb mode"), "{busy}");
        // ...and free once it is dropped.
        drop(link);
        let link = attach(&redirect, XdpMode::Skb).expect("re-attach after the drop");
        assert_eq!(link.prog_id().unwrap(), redirect.id().unwrap());
        drop(link);
        // veth also runs XDP in its driver.
        let native = attach(&redirect, XdpMode::Native).expect("native XDP on veth");
        drop(native);
        // A device that does not exist is named in the error.
        let e = v.ns.run(|| XdpLink::attach(&pass, 999_999, XdpMode::Skb)).unwrap().unwrap_err();
        assert!(e.to_string().contains("ifindex 999999"), "{e}");
        // Once its last fd is closed the program goes (after an RCU grace period).
        drop(pass);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while prog_loaded(pass_id).unwrap() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!prog_loaded(pass_id).unwrap(), "program {pass_id} unloaded");
    }

    #[test]
    fn tc_programs_attach_through_tcx_follow_their_device_and_detach_by_drop() {
        needs_root!();
        let ok = [Insn::mov64_imm(R0, TC_ACT_OK), Insn::exit()];
        let a = SchedClsProgram::load("psw_tc_a", &ok).expect("load a tc program");
        let b = SchedClsProgram::load("psw_tc_b", &ok).unwrap();
        let (a_id, b_id) = (a.id().unwrap(), b.id().unwrap());
        let v = veth_ns();
        let egress = |ns: &NetNs, i| ns.run(|| tcx_prog_ids(i, TcxDirection::Egress)).unwrap();
        assert_eq!(egress(&v.ns, v.xa).unwrap(), [] as [u32; 0]);
        let attach = |p: &SchedClsProgram, dir| v.ns.run(|| TcxLink::attach(p, v.xa, dir)).unwrap();
        let la = attach(&a, TcxDirection::Egress).expect("tcx attach");
        assert_eq!((la.ifindex(), la.direction()), (v.xa, TcxDirection::Egress));
        assert_eq!((la.prog_id().unwrap(), la.device().unwrap()), (a_id, Some(v.xa)));
        // A second program runs after the first; ingress is a hook of its own.
        let lb = attach(&b, TcxDirection::Egress).unwrap();
        assert_eq!(egress(&v.ns, v.xa).unwrap(), [a_id, b_id]);
        let ingress = v.ns.run(|| tcx_prog_ids(v.xa, TcxDirection::Ingress)).unwrap().unwrap();
        assert!(ingress.is_empty(), "{ingress:?}");
        drop(lb);
        assert_eq!(egress(&v.ns, v.xa).unwrap(), [a_id]);
        // The attachment moves with its device to another namespace...
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("pswtcx-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let other = NamedNetNs::create(&name).unwrap();
        Netlink::open_in(&v.ns).unwrap().link_move_to_netns(v.xa, &other, Some("moved")).unwrap();
        let moved = Netlink::open_in(&other).unwrap().link_get("moved").unwrap().unwrap().index;
        assert_eq!(egress(&other, moved).unwrap(), [a_id]);
        assert_eq!(la.device().unwrap(), Some(moved));
        // ...and goes with the link's drop, or with the device.
        drop(la);
        assert_eq!(egress(&other, moved).unwrap(), [] as [u32; 0]);
        let la = other.run(|| TcxLink::attach(&a, moved, TcxDirection::Egress)).unwrap().unwrap();
        let mut nl = Netlink::open_in(&other).unwrap();
        nl.link_del(moved).unwrap();
        assert_eq!(la.device().unwrap(), None);
        assert_eq!(la.prog_id().unwrap(), a_id, "the link holds its program until dropped");
        // A device that does not exist.
        let e = egress(&other, 999_999).unwrap_err();
        assert!(e.to_string().contains("ifindex 999999: No such device"), "{e}");
    }
}
