//! Raw `bpf(2)`: maps, loading XDP programs, socket filters and tc classifiers, and
//! attaching XDP and tc programs through a `bpf_link`, with no C toolchain, no libbpf and no
//! BPF object files.
//!
//! Programs are written here as arrays of [`Insn`] (the kernel's `struct bpf_insn`) built
//! with `const fn` constructors, the way the kernel's own `tools/include/linux/filter.h`
//! macros build them; the simplest podswitch needs is [`xsk_redirect_program`] (5
//! instructions). The verifier checks them at load ([`XdpProgram::load`] and the like); a
//! rejection comes back as an error carrying the verifier's log.
//!
//! Lifetimes: every object is an fd owned by its Rust value. A map or program lives while an
//! fd or an attachment refers to it. [`XdpLink`] attaches through `BPF_LINK_CREATE` rather
//! than the older netlink `IFLA_XDP` way, and [`TcxLink`] through tcx rather than a clsact
//! qdisc with a `cls_bpf` filter: the attachment belongs to the link fd, so dropping the
//! link detaches the program, and a switch that dies leaves no program behind (the kernel
//! closes the fd). Nothing here needs bpffs (`/sys/fs/bpf`), which is not mounted on these
//! machines.
//!
//! Namespaces: `ifindex` arguments are looked up in the network namespace of the calling
//! thread (like netlink), so attach from a thread inside the device's namespace.
//!
//! Encoding note: [`Insn::regs`] packs the destination register in the low nibble and the
//! source register in the high nibble, which is the layout of the C bitfields on a
//! little-endian host (every target podswitch runs on).
//!
//! Layout:
//!
//! - `insn`: instruction encoding ([`Insn`] and its constructors) and the opcode, register,
//!   helper, verdict and context-offset constants programs are written with. Pure.
//! - `xsk_redirect`: the one program assembled here, [`xsk_redirect_program`]; the others
//!   (TAP queue steering, the node-port filter) live with the ports that use them.
//! - `syscall`: the `bpf(2)` call itself and what every object shares (fd ownership, object
//!   names, object info).
//! - `map`: [`BpfMap`]. `prog`: loading programs ([`XdpProgram`], [`SocketFilterProgram`],
//!   [`SchedClsProgram`]), test runs, the verifier log. `link`: attaching them
//!   ([`XdpLink`], [`TcxLink`]).

mod insn;
mod link;
mod map;
mod prog;
mod syscall;
mod xsk_redirect;

pub use insn::{
    helper, op, reg, Insn, SKB_QUEUE_MAPPING, TC_ACT_OK, XDP_ABORTED, XDP_DROP,
    XDP_MD_RX_QUEUE_INDEX, XDP_PASS, XDP_REDIRECT, XDP_TX,
};
pub use link::{tcx_prog_ids, TcxDirection, TcxLink, XdpLink, XdpMode};
pub use map::{BpfMap, MapKind};
pub use prog::{prog_loaded, SchedClsProgram, SocketFilterProgram, XdpProgram};
pub use xsk_redirect::xsk_redirect_program;
