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

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Opcode pieces (`<linux/bpf_common.h>`, `<linux/bpf.h>`): an instruction's `code` is a
/// class | size | mode (loads and stores) or a class | operation | source (ALU and jumps).
pub mod op {
    /// Class: load (only `ld_imm64` is used).
    pub const BPF_LD: u8 = 0x00;
    /// Class: load from memory into a register.
    pub const BPF_LDX: u8 = 0x01;
    /// Class: store an immediate into memory.
    pub const BPF_ST: u8 = 0x02;
    /// Class: store a register into memory.
    pub const BPF_STX: u8 = 0x03;
    /// Class: 32-bit arithmetic.
    pub const BPF_ALU: u8 = 0x04;
    /// Class: 64-bit jumps.
    pub const BPF_JMP: u8 = 0x05;
    /// Class: 32-bit jumps.
    pub const BPF_JMP32: u8 = 0x06;
    /// Class: 64-bit arithmetic.
    pub const BPF_ALU64: u8 = 0x07;

    /// Size: 4 bytes.
    pub const BPF_W: u8 = 0x00;
    /// Size: 2 bytes.
    pub const BPF_H: u8 = 0x08;
    /// Size: 1 byte.
    pub const BPF_B: u8 = 0x10;
    /// Size: 8 bytes.
    pub const BPF_DW: u8 = 0x18;

    /// Mode: 64-bit immediate (`ld_imm64`, two instruction slots).
    pub const BPF_IMM: u8 = 0x00;
    /// Mode: memory at register + offset.
    pub const BPF_MEM: u8 = 0x60;
    /// Mode: packet load at an absolute offset (socket filters; result in r0, host order).
    pub const BPF_ABS: u8 = 0x20;
    /// Mode: packet load at `src + imm` (socket filters; result in r0, host order).
    pub const BPF_IND: u8 = 0x40;

    /// Source: the immediate.
    pub const BPF_K: u8 = 0x00;
    /// Source: the source register.
    pub const BPF_X: u8 = 0x08;

    /// ALU: `dst += src`.
    pub const BPF_ADD: u8 = 0x00;
    /// ALU: `dst -= src`.
    pub const BPF_SUB: u8 = 0x10;
    /// ALU: `dst *= src`.
    pub const BPF_MUL: u8 = 0x20;
    /// ALU: `dst /= src` (unsigned).
    pub const BPF_DIV: u8 = 0x30;
    /// ALU: `dst |= src`.
    pub const BPF_OR: u8 = 0x40;
    /// ALU: `dst &= src`.
    pub const BPF_AND: u8 = 0x50;
    /// ALU: `dst <<= src`.
    pub const BPF_LSH: u8 = 0x60;
    /// ALU: `dst >>= src` (logical).
    pub const BPF_RSH: u8 = 0x70;
    /// ALU: `dst = -dst`.
    pub const BPF_NEG: u8 = 0x80;
    /// ALU: `dst %= src` (unsigned).
    pub const BPF_MOD: u8 = 0x90;
    /// ALU: `dst ^= src`.
    pub const BPF_XOR: u8 = 0xa0;
    /// ALU: `dst = src`.
    pub const BPF_MOV: u8 = 0xb0;
    /// ALU: `dst >>= src` (arithmetic).
    pub const BPF_ARSH: u8 = 0xc0;
    /// ALU: byte swap (`BPF_END`; source bit: to big-endian).
    pub const BPF_END: u8 = 0xd0;

    /// Jump: always (`goto`).
    pub const BPF_JA: u8 = 0x00;
    /// Jump if `dst == src`.
    pub const BPF_JEQ: u8 = 0x10;
    /// Jump if `dst > src` (unsigned).
    pub const BPF_JGT: u8 = 0x20;
    /// Jump if `dst >= src` (unsigned).
    pub const BPF_JGE: u8 = 0x30;
    /// Jump if `dst & src`.
    pub const BPF_JSET: u8 = 0x40;
    /// Jump if `dst != src`.
    pub const BPF_JNE: u8 = 0x50;
    /// Jump if `dst > src` (signed).
    pub const BPF_JSGT: u8 = 0x60;
    /// Jump if `dst >= src` (signed).
    pub const BPF_JSGE: u8 = 0x70;
    /// Helper call.
    pub const BPF_CALL: u8 = 0x80;
    /// Return `r0`.
    pub const BPF_EXIT: u8 = 0x90;
    /// Jump if `dst < src` (unsigned).
    pub const BPF_JLT: u8 = 0xa0;
    /// Jump if `dst <= src` (unsigned).
    pub const BPF_JLE: u8 = 0xb0;
    /// Jump if `dst < src` (signed).
    pub const BPF_JSLT: u8 = 0xc0;
    /// Jump if `dst <= src` (signed).
    pub const BPF_JSLE: u8 = 0xd0;

    /// `src_reg` of an `ld_imm64` whose immediate is a map fd, replaced by the map's address
    /// at load time.
    pub const BPF_PSEUDO_MAP_FD: u8 = 1;
}

/// Register numbers. `r0` is the return value, `r1`-`r5` carry helper arguments (and `r1` the
/// program's context on entry), `r6`-`r9` survive helper calls, `r10` is the read-only frame
/// pointer.
pub mod reg {
    /// Return value.
    pub const R0: u8 = 0;
    /// First argument / context.
    pub const R1: u8 = 1;
    /// Second argument.
    pub const R2: u8 = 2;
    /// Third argument.
    pub const R3: u8 = 3;
    /// Fourth argument.
    pub const R4: u8 = 4;
    /// Fifth argument.
    pub const R5: u8 = 5;
    /// Callee-saved.
    pub const R6: u8 = 6;
    /// Callee-saved.
    pub const R7: u8 = 7;
    /// Callee-saved.
    pub const R8: u8 = 8;
    /// Callee-saved.
    pub const R9: u8 = 9;
    /// Frame pointer (read-only); the stack is the 512 bytes below it.
    pub const R10: u8 = 10;
}

/// Helper function ids (`enum bpf_func_id` in `<linux/bpf.h>`).
pub mod helper {
    /// `void *bpf_map_lookup_elem(map, key)`.
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `long bpf_map_update_elem(map, key, value, flags)`.
    pub const MAP_UPDATE_ELEM: i32 = 2;
    /// `long bpf_map_delete_elem(map, key)`.
    pub const MAP_DELETE_ELEM: i32 = 3;
    /// `u64 bpf_ktime_get_ns(void)`.
    pub const KTIME_GET_NS: i32 = 5;
    /// `long bpf_redirect(ifindex, flags)`.
    pub const REDIRECT: i32 = 23;
    /// `long bpf_redirect_map(map, key, flags)`: the low two bits of `flags` are returned
    /// when the slot is empty.
    pub const REDIRECT_MAP: i32 = 51;
}

/// XDP verdict: error (dropped, traced as an exception).
pub const XDP_ABORTED: i32 = 0;
/// XDP verdict: drop.
pub const XDP_DROP: i32 = 1;
/// XDP verdict: continue into the kernel's stack.
pub const XDP_PASS: i32 = 2;
/// XDP verdict: send back out of the receiving device.
pub const XDP_TX: i32 = 3;
/// XDP verdict: redirected (by `bpf_redirect*`).
pub const XDP_REDIRECT: i32 = 4;

/// Offset of `rx_queue_index` in `struct xdp_md` (data, data_end, data_meta,
/// ingress_ifindex, rx_queue_index, ...: all u32).
pub const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// tc verdict: let the frame go on (what tcx calls `TCX_PASS`).
pub const TC_ACT_OK: i32 = 0;

/// Offset of `queue_mapping` in `struct __sk_buff` (len, pkt_type, mark, queue_mapping:
/// all u32). A tc program may write it; the kernel ignores values from `0xffff` up.
pub const SKB_QUEUE_MAPPING: i16 = 12;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register in the low nibble, source register in the high nibble.
    pub regs: u8,
    /// Signed offset (memory access or jump distance in instructions).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

const _: () = assert!(size_of::<Insn>() == 8);

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { code, regs: (dst & 0x0f) | ((src & 0x0f) << 4), off, imm }
    }

    /// The destination register.
    pub const fn dst(&self) -> u8 {
        self.regs & 0x0f
    }

    /// The source register.
    pub const fn src(&self) -> u8 {
        self.regs >> 4
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub const fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(op::BPF_ALU64 | op::BPF_MOV | op::BPF_K, dst, 0, 0, imm)
    }

    /// `dst = src` (64-bit).
    pub const fn mov64_reg(dst: u8, src: u8) -> Insn {
        Insn::new(op::BPF_ALU64 | op::BPF_MOV | op::BPF_X, dst, src, 0, 0)
    }

    /// `dst <op>= imm` (64-bit), `op` one of [`op::BPF_ADD`], [`op::BPF_AND`], ...
    pub const fn alu64_imm(op: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(op::BPF_ALU64 | op | op::BPF_K, dst, 0, 0, imm)
    }

    /// `dst <op>= src` (64-bit).
    pub const fn alu64_reg(op: u8, dst: u8, src: u8) -> Insn {
        Insn::new(op::BPF_ALU64 | op | op::BPF_X, dst, src, 0, 0)
    }

    /// `dst <op>= imm` (32-bit: the upper half is zeroed).
    pub const fn alu32_imm(op: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(op::BPF_ALU | op | op::BPF_K, dst, 0, 0, imm)
    }

    /// `dst <op>= src` (32-bit).
    pub const fn alu32_reg(op: u8, dst: u8, src: u8) -> Insn {
        Insn::new(op::BPF_ALU | op | op::BPF_X, dst, src, 0, 0)
    }

    /// `r0 = packet[imm]` (`size` bytes, network to host order), for socket filters: the
    /// context must be in r6; r1-r5 are clobbered; out of bounds ends the program with 0.
    pub const fn ld_abs(size: u8, imm: i32) -> Insn {
        Insn::new(op::BPF_LD | size | op::BPF_ABS, 0, 0, 0, imm)
    }

    /// `r0 = packet[src + imm]`, as [`Insn::ld_abs`].
    pub const fn ld_ind(size: u8, src: u8, imm: i32) -> Insn {
        Insn::new(op::BPF_LD | size | op::BPF_IND, 0, src, 0, imm)
    }

    /// `dst = *(size *)(src + off)`, `size` one of [`op::BPF_B`], [`op::BPF_H`],
    /// [`op::BPF_W`], [`op::BPF_DW`].
    pub const fn ldx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(op::BPF_LDX | size | op::BPF_MEM, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub const fn stx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(op::BPF_STX | size | op::BPF_MEM, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub const fn st_imm(size: u8, dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(op::BPF_ST | size | op::BPF_MEM, dst, 0, off, imm)
    }

    /// `if dst <op> imm goto +off` (64-bit compare), `op` one of [`op::BPF_JEQ`],
    /// [`op::BPF_JNE`], [`op::BPF_JGT`], ...; `off` counts instructions after this one.
    pub const fn jmp_imm(op: u8, dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(op::BPF_JMP | op | op::BPF_K, dst, 0, off, imm)
    }

    /// `if dst <op> src goto +off` (64-bit compare).
    pub const fn jmp_reg(op: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(op::BPF_JMP | op | op::BPF_X, dst, src, off, 0)
    }

    /// `goto +off`.
    pub const fn ja(off: i16) -> Insn {
        Insn::new(op::BPF_JMP | op::BPF_JA, 0, 0, off, 0)
    }

    /// `dst = map` (`ld_imm64` with [`op::BPF_PSEUDO_MAP_FD`]: two instruction slots, which
    /// count as two in jump offsets).
    pub const fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [
            Insn::new(op::BPF_LD | op::BPF_DW | op::BPF_IMM, dst, op::BPF_PSEUDO_MAP_FD, 0, fd),
            Insn::new(0, 0, 0, 0, 0),
        ]
    }

    /// `r0 = helper(r1, ..., r5)`, `helper` from [`helper`].
    pub const fn call(helper: i32) -> Insn {
        Insn::new(op::BPF_JMP | op::BPF_CALL, 0, 0, 0, helper)
    }

    /// `return r0`.
    pub const fn exit() -> Insn {
        Insn::new(op::BPF_JMP | op::BPF_EXIT, 0, 0, 0, 0)
    }
}

/// The program AF_XDP ports attach: redirect every frame to the AF_XDP socket registered in
/// `xsks` (an [`MapKind::XskMap`]) under the frame's rx queue index; `XDP_PASS` (on into the
/// kernel) when that slot is empty.
///
/// ```text
/// r2 = *(u32 *)(r1 + 16)        ; ctx->rx_queue_index
/// r1 = xsks                     ; ld_imm64, 2 slots
/// r3 = XDP_PASS                 ; flags: returned when the slot is empty
/// call bpf_redirect_map
/// exit
/// ```
pub fn xsk_redirect_program(xsks: &BpfMap) -> Vec<Insn> {
    xsk_redirect_insns(xsks.fd())
}

fn xsk_redirect_insns(map_fd: RawFd) -> Vec<Insn> {
    let [map_lo, map_hi] = Insn::ld_map_fd(reg::R1, map_fd);
    vec![
        Insn::ldx(op::BPF_W, reg::R2, reg::R1, XDP_MD_RX_QUEUE_INDEX),
        map_lo,
        map_hi,
        Insn::mov64_imm(reg::R3, XDP_PASS),
        Insn::call(helper::REDIRECT_MAP),
        Insn::exit(),
    ]
}

// --- Kernel ABI --------------------------------------------------------------------------
// One `#[repr(C)]` struct per command for the part of `union bpf_attr` it uses. The syscall
// takes the size we pass; the kernel zero-fills the rest of its (larger) union.

/// `enum bpf_cmd`.
const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_PROG_QUERY: u32 = 16;
const BPF_LINK_CREATE: u32 = 28;

/// `enum bpf_map_type`.
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_DEVMAP: u32 = 14;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;

/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_PROG_TYPE_SOCKET_FILTER` (also what a TUN device's steering program is).
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_SCHED_CLS`: a tc classifier (what tcx runs).
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_XDP` in `enum bpf_attach_type`.
const BPF_XDP: u32 = 37;
/// `BPF_TCX_INGRESS` in `enum bpf_attach_type` (Linux 6.6 and later; values as the
/// kernel's BTF has them, older `<linux/bpf.h>` copies lack them).
const BPF_TCX_INGRESS: u32 = 46;
/// `BPF_TCX_EGRESS` in `enum bpf_attach_type` (Linux 6.6 and later).
const BPF_TCX_EGRESS: u32 = 47;
/// `BPF_ANY`: create or replace.
const BPF_ANY: u64 = 0;
/// `XDP_FLAGS_SKB_MODE` (`<linux/if_link.h>`).
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `BPF_OBJ_NAME_LEN`.
const BPF_OBJ_NAME_LEN: usize = 16;
/// Verifier log buffer used when a load fails (the log of a rejected small program fits).
const VERIFIER_LOG_LEN: usize = 256 * 1024;

/// `union bpf_attr` for `BPF_MAP_CREATE` (up to `map_name`).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; BPF_OBJ_NAME_LEN],
}

/// `union bpf_attr` for `BPF_MAP_*_ELEM`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD` (up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; BPF_OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const _: () = assert!(size_of::<ProgLoadAttr>() == 72);

/// `union bpf_attr` for `BPF_PROG_TEST_RUN` (up to `duration`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
}

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

/// `union bpf_attr` for `BPF_PROG_GET_FD_BY_ID`.
#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`: type, id, tag.
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
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

/// Calls `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// Every pointer stored in `attr` must be valid for what the kernel does with it for `cmd`
/// (reads of the stated lengths, writes of the stated lengths) for the duration of the call.
unsafe fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed `T` of the size passed; pointers inside
    // it are valid per this function's contract.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd as libc::c_int, attr as *mut T, size_of::<T>() as u32)
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of an fd the kernel just returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` is a fresh descriptor returned by bpf(2), owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// An object name as the kernel accepts it: at most 15 bytes of `[A-Za-z0-9_.]` (others
/// become `_`), NUL-terminated.
fn obj_name(name: &str) -> [u8; BPF_OBJ_NAME_LEN] {
    let mut out = [0u8; BPF_OBJ_NAME_LEN];
    for (o, b) in out.iter_mut().zip(name.bytes().take(BPF_OBJ_NAME_LEN - 1)) {
        *o = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' { b } else { b'_' };
    }
    out
}

fn context(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The kinds of map podswitch creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH`.
    Hash,
    /// `BPF_MAP_TYPE_ARRAY` (key: u32 index).
    Array,
    /// `BPF_MAP_TYPE_XSKMAP` (key: u32 queue, value: u32 AF_XDP socket fd; lookups from
    /// userspace are not supported by the kernel).
    XskMap,
    /// `BPF_MAP_TYPE_DEVMAP` (key: u32, value: u32 ifindex).
    DevMap,
}

impl MapKind {
    fn raw(self) -> u32 {
        match self {
            MapKind::Hash => BPF_MAP_TYPE_HASH,
            MapKind::Array => BPF_MAP_TYPE_ARRAY,
            MapKind::XskMap => BPF_MAP_TYPE_XSKMAP,
            MapKind::DevMap => BPF_MAP_TYPE_DEVMAP,
        }
    }
}

/// A BPF map, freed when the last fd or program referring to it goes.
#[derive(Debug)]
pub struct BpfMap {
    fd: OwnedFd,
    kind: MapKind,
    key_size: u32,
    value_size: u32,
}

impl BpfMap {
    /// Creates a map. `name` is for `bpftool` listings (cut to 15 bytes).
    pub fn create(
        kind: MapKind,
        name: &str,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> io::Result<BpfMap> {
        let mut attr = MapCreateAttr {
            map_type: kind.raw(),
            key_size,
            value_size,
            max_entries,
            map_name: obj_name(name),
            ..Default::default()
        };
        // SAFETY: MAP_CREATE reads only the attr itself, which holds no pointers.
        let fd = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) }.map_err(|e| {
            context(e, format_args!("BPF_MAP_CREATE {kind:?} {name} ({max_entries} entries)"))
        })?;
        Ok(BpfMap { fd: owned(fd), kind, key_size, value_size })
    }

    fn check(&self, key: &[u8], value: Option<usize>) -> io::Result<()> {
        if key.len() != self.key_size as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("map key is {} bytes, the map's are {}", key.len(), self.key_size),
            ));
        }
        match value {
            Some(len) if len != self.value_size as usize => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("map value is {len} bytes, the map's are {}", self.value_size),
            )),
            _ => Ok(()),
        }
    }

    /// Sets `key` to `value`, creating or replacing the entry (`BPF_ANY`).
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.check(key, Some(value.len()))?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            flags: BPF_ANY,
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes at `key` and value_size bytes at `value`;
        // both slices have exactly those lengths (checked above) and outlive the call.
        unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }
            .map_err(|e| context(e, format_args!("BPF_MAP_UPDATE_ELEM on {:?} map", self.kind)))?;
        Ok(())
    }

    /// Removes `key`'s entry; `NotFound` when there is none.
    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        self.check(key, None)?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes at `key`, which has that length (checked).
        unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) }
            .map_err(|e| context(e, format_args!("BPF_MAP_DELETE_ELEM on {:?} map", self.kind)))?;
        Ok(())
    }

    /// Reads `key`'s value into `value`; false when there is no entry.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check(key, Some(value.len()))?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes at `key` and writes value_size bytes at
        // `value`; both have exactly those lengths (checked) and are borrowed for the call.
        match unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(context(e, format_args!("BPF_MAP_LOOKUP_ELEM on {:?} map", self.kind))),
        }
    }

    /// The map's fd (for [`Insn::ld_map_fd`]).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The map's kind.
    pub fn kind(&self) -> MapKind {
        self.kind
    }
}

/// A loaded XDP program, unloaded when this fd and every attachment are gone.
#[derive(Debug)]
pub struct XdpProgram {
    fd: OwnedFd,
}

impl XdpProgram {
    /// Loads an XDP program (licence "GPL"). On verifier rejection the error message carries
    /// the verifier log.
    pub fn load(name: &str, insns: &[Insn]) -> io::Result<XdpProgram> {
        load_program(BPF_PROG_TYPE_XDP, BPF_XDP, "xdp", name, insns).map(|fd| XdpProgram { fd })
    }

    /// The program's fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The program's kernel-wide id (what `ip link` shows as `prog/xdp id N`).
    pub fn id(&self) -> io::Result<u32> {
        let mut info = ProgInfoHead::default();
        obj_info(self.fd.as_raw_fd(), &mut info).map_err(|e| context(e, "BPF_OBJ_GET_INFO"))?;
        Ok(info.id)
    }
}

/// A loaded socket-filter program (a TUN device's queue-steering program is one), unloaded
/// when this fd and every attachment are gone.
#[derive(Debug)]
pub struct SocketFilterProgram {
    fd: OwnedFd,
}

impl SocketFilterProgram {
    /// Loads a socket-filter program (licence "GPL"); a verifier rejection carries the log.
    pub fn load(name: &str, insns: &[Insn]) -> io::Result<SocketFilterProgram> {
        load_program(BPF_PROG_TYPE_SOCKET_FILTER, 0, "socket filter", name, insns)
            .map(|fd| SocketFilterProgram { fd })
    }

    /// Runs the program once on `packet` (`BPF_PROG_TEST_RUN`) and returns what it returned.
    /// The kernel treats the first 14 bytes as an Ethernet header and starts the program's
    /// packet after them.
    pub fn test_run(&self, packet: &[u8]) -> io::Result<u32> {
        test_run(self.fd.as_raw_fd(), packet, None)
    }

    /// The program's fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A loaded tc classifier (`BPF_PROG_TYPE_SCHED_CLS`), attached with [`TcxLink`]; unloaded
/// when this fd and every attachment are gone.
#[derive(Debug)]
pub struct SchedClsProgram {
    fd: OwnedFd,
}

impl SchedClsProgram {
    /// Loads a tc classifier (licence "GPL"); a verifier rejection carries the log.
    pub fn load(name: &str, insns: &[Insn]) -> io::Result<SchedClsProgram> {
        load_program(BPF_PROG_TYPE_SCHED_CLS, 0, "tc classifier", name, insns)
            .map(|fd| SchedClsProgram { fd })
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`, the program's packet starts
    /// at the Ethernet header) and returns what it returned.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        test_run(self.fd.as_raw_fd(), frame, None)
    }

    /// The program's fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The program's kernel-wide id.
    pub fn id(&self) -> io::Result<u32> {
        let mut info = ProgInfoHead::default();
        obj_info(self.fd.as_raw_fd(), &mut info).map_err(|e| context(e, "BPF_OBJ_GET_INFO"))?;
        Ok(info.id)
    }
}

/// `BPF_PROG_TEST_RUN` of program `fd` on `packet`, with `ctx` (a `struct __sk_buff` head)
/// passed in and read back when given. Returns the program's return value.
fn test_run(fd: RawFd, packet: &[u8], ctx: Option<&mut [u8]>) -> io::Result<u32> {
    let (ctx_ptr, ctx_len) = match ctx {
        Some(c) => (c.as_mut_ptr() as u64, c.len() as u32),
        None => (0, 0),
    };
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat: 1,
        ctx_size_in: ctx_len,
        ctx_size_out: ctx_len,
        ctx_in: ctx_ptr,
        ctx_out: ctx_ptr,
        ..Default::default()
    };
    // SAFETY: the kernel reads data_size_in bytes at data_in (the borrowed slice), and reads
    // then writes at most ctx_size bytes at ctx (an exclusively borrowed slice of that
    // length); data_out is null.
    unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) }
        .map_err(|e| context(e, "BPF_PROG_TEST_RUN"))?;
    Ok(attr.retval)
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

/// Loads a program of `prog_type`; on verifier rejection loads it again with a log, whose
/// text the error then carries.
fn load_program(
    prog_type: u32,
    attach: u32,
    what: &str,
    name: &str,
    insns: &[Insn],
) -> io::Result<OwnedFd> {
    {
        match load_with_log(prog_type, attach, what, name, insns, None) {
            Ok(p) => Ok(p),
            Err(e) => {
                // Load again with a log: the failure path pays for the verifier's text.
                let mut log = vec![0u8; VERIFIER_LOG_LEN];
                let again = load_with_log(prog_type, attach, what, name, insns, Some(&mut log));
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let text = text.trim();
                match again {
                    Ok(p) => Ok(p),
                    Err(_) if text.is_empty() => Err(e),
                    Err(_) => Err(io::Error::new(e.kind(), format!("{e}; verifier log:\n{text}"))),
                }
            }
        }
    }
}

fn load_with_log(
    prog_type: u32,
    attach: u32,
    what: &str,
    name: &str,
    insns: &[Insn],
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    {
        const LICENSE: &[u8] = b"GPL\0";
        let (log_level, log_size, log_buf) = match log {
            Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level,
            log_size,
            log_buf,
            prog_name: obj_name(name),
            expected_attach_type: attach,
            ..Default::default()
        };
        // SAFETY: the kernel reads insn_cnt instructions at `insns` (the slice's length), the
        // NUL-terminated licence, and writes at most log_size bytes into the log buffer, all
        // of which are borrowed for the duration of the call.
        let fd = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) }.map_err(|e| {
            context(e, format_args!("BPF_PROG_LOAD {what} {name} ({} insns)", insns.len()))
        })?;
        Ok(owned(fd))
    }
}

/// True while a program with kernel-wide id `id` exists (loaded and held by an fd, a link or
/// an attachment). Programs are freed after an RCU grace period, so a program whose last
/// holder just went may be reported for a moment longer.
pub fn prog_loaded(id: u32) -> io::Result<bool> {
    let mut attr = GetFdByIdAttr { id, ..Default::default() };
    // SAFETY: GET_FD_BY_ID reads only the attr itself, which holds no pointers.
    match unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) } {
        Ok(fd) => {
            drop(owned(fd));
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(context(e, format_args!("BPF_PROG_GET_FD_BY_ID {id}"))),
    }
}

/// Reads the head of an object's info struct (`BPF_OBJ_GET_INFO_BY_FD`); the kernel fills at
/// most `size_of::<T>()` bytes.
fn obj_info<T>(fd: RawFd, info: &mut T) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes (the size of `*info`, which is plain
    // integer data) at `info`, which is exclusively borrowed for the call.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(())
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
    use super::op::*;
    use super::reg::*;
    use super::*;
    use crate::sys::netlink::Netlink;
    use crate::sys::netns::{NamedNetNs, NetNs};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn bytes(insns: &[Insn]) -> Vec<u8> {
        insns
            .iter()
            .flat_map(|i| {
                let mut b = vec![i.code, i.regs];
                b.extend_from_slice(&i.off.to_le_bytes());
                b.extend_from_slice(&i.imm.to_le_bytes());
                b
            })
            .collect()
    }

    #[test]
    fn instructions_encode_like_the_kernel_macros() {
        // Expected bytes as `llvm-objdump -d` prints them for the same instructions.
        let cases: &[(Insn, [u8; 8])] = &[
            (Insn::mov64_imm(R0, 2), [0xb7, 0x00, 0, 0, 0x02, 0, 0, 0]),
            (Insn::mov64_reg(R1, R6), [0xbf, 0x61, 0, 0, 0, 0, 0, 0]),
            (Insn::alu64_imm(BPF_ADD, R1, 14), [0x07, 0x01, 0, 0, 0x0e, 0, 0, 0]),
            (Insn::alu64_imm(BPF_AND, R2, 0xff), [0x57, 0x02, 0, 0, 0xff, 0, 0, 0]),
            (Insn::alu64_imm(BPF_LSH, R3, 8), [0x67, 0x03, 0, 0, 0x08, 0, 0, 0]),
            (Insn::alu64_imm(BPF_RSH, R3, 8), [0x77, 0x03, 0, 0, 0x08, 0, 0, 0]),
            (Insn::alu64_reg(BPF_ADD, R2, R3), [0x0f, 0x32, 0, 0, 0, 0, 0, 0]),
            (Insn::ldx(BPF_W, R2, R1, 16), [0x61, 0x12, 0x10, 0, 0, 0, 0, 0]),
            (Insn::ldx(BPF_B, R4, R2, 12), [0x71, 0x24, 0x0c, 0, 0, 0, 0, 0]),
            (Insn::ldx(BPF_H, R4, R2, 12), [0x69, 0x24, 0x0c, 0, 0, 0, 0, 0]),
            (Insn::ldx(BPF_DW, R0, R10, -8), [0x79, 0xa0, 0xf8, 0xff, 0, 0, 0, 0]),
            (Insn::stx(BPF_DW, R10, R1, -8), [0x7b, 0x1a, 0xf8, 0xff, 0, 0, 0, 0]),
            (Insn::st_imm(BPF_W, R10, -4, 0), [0x62, 0x0a, 0xfc, 0xff, 0, 0, 0, 0]),
            (Insn::jmp_imm(BPF_JEQ, R1, 0, 2), [0x15, 0x01, 0x02, 0, 0, 0, 0, 0]),
            (Insn::jmp_imm(BPF_JNE, R0, 0, 1), [0x55, 0x00, 0x01, 0, 0, 0, 0, 0]),
            (Insn::jmp_imm(BPF_JGT, R3, 1500, 5), [0x25, 0x03, 0x05, 0, 0xdc, 0x05, 0, 0]),
            (Insn::jmp_reg(BPF_JGT, R3, R2, 4), [0x2d, 0x23, 0x04, 0, 0, 0, 0, 0]),
            (Insn::jmp_reg(BPF_JGE, R3, R2, -3), [0x3d, 0x23, 0xfd, 0xff, 0, 0, 0, 0]),
            (Insn::ja(7), [0x05, 0x00, 0x07, 0, 0, 0, 0, 0]),
            (Insn::call(helper::REDIRECT_MAP), [0x85, 0x00, 0, 0, 0x33, 0, 0, 0]),
            (Insn::call(helper::MAP_LOOKUP_ELEM), [0x85, 0x00, 0, 0, 0x01, 0, 0, 0]),
            (Insn::exit(), [0x95, 0x00, 0, 0, 0, 0, 0, 0]),
        ];
        for (insn, want) in cases {
            assert_eq!(bytes(&[*insn]), want, "{insn:?}");
        }
        assert_eq!(
            bytes(&Insn::ld_map_fd(R1, 5)),
            [0x18, 0x11, 0, 0, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let i = Insn::mov64_reg(R9, R10);
        assert_eq!((i.dst(), i.src()), (R9, R10));
    }

    #[test]
    fn the_xsk_program_is_the_documented_five_instructions() {
        // Without a kernel map: the encoding is checked with a made-up fd number.
        let insns = xsk_redirect_insns(7);
        assert_eq!(insns.len(), 6, "5 instructions, ld_imm64 takes 2 slots");
        assert_eq!(
            bytes(&insns),
            [
                0x61, 0x12, 0x10, 0, 0, 0, 0, 0, // r2 = *(u32 *)(r1 + 16)
                0x18, 0x11, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // r1 = map[fd 7]
                0xb7, 0x03, 0, 0, 2, 0, 0, 0, // r3 = XDP_PASS
                0x85, 0, 0, 0, 51, 0, 0, 0, // call bpf_redirect_map
                0x95, 0, 0, 0, 0, 0, 0, 0, // exit
            ]
        );
    }

    #[test]
    fn names_are_made_acceptable_to_the_kernel() {
        assert_eq!(&obj_name("xsks")[..5], b"xsks\0");
        assert_eq!(&obj_name("psx-1234.5")[..11], b"psx_1234.5\0");
        let long = obj_name("a_very_long_program_name");
        assert_eq!(&long[..15], b"a_very_long_pro");
        assert_eq!(long[15], 0);
    }

    fn is_root() -> bool {
        crate::sys::process::is_root()
    }

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
    fn maps_update_lookup_and_delete() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let m = BpfMap::create(MapKind::Hash, "psw_test", 4, 8, 16).unwrap();
        let mut v = [0u8; 8];
        assert!(!m.lookup(&7u32.to_ne_bytes(), &mut v).unwrap());
        m.update(&7u32.to_ne_bytes(), &42u64.to_ne_bytes()).unwrap();
        assert!(m.lookup(&7u32.to_ne_bytes(), &mut v).unwrap());
        assert_eq!(u64::from_ne_bytes(v), 42);
        m.delete(&7u32.to_ne_bytes()).unwrap();
        assert!(!m.lookup(&7u32.to_ne_bytes(), &mut v).unwrap());
        assert_eq!(m.delete(&7u32.to_ne_bytes()).unwrap_err().kind(), io::ErrorKind::NotFound);
        let e = m.update(&[0u8; 3], &[0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = m.lookup(&[0u8; 4], &mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let a = BpfMap::create(MapKind::Array, "psw_arr", 4, 4, 4).unwrap();
        a.update(&3u32.to_ne_bytes(), &9u32.to_ne_bytes()).unwrap();
        let mut w = [0u8; 4];
        assert!(a.lookup(&3u32.to_ne_bytes(), &mut w).unwrap());
        assert_eq!(u32::from_ne_bytes(w), 9);
        BpfMap::create(MapKind::DevMap, "psw_dev", 4, 4, 4).unwrap();
        BpfMap::create(MapKind::XskMap, "psw_xsk", 4, 4, 4).unwrap();
    }

    #[test]
    fn programs_load_attach_and_detach_by_drop() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
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
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
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

    #[test]
    fn a_rejected_program_reports_the_verifier_log() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // Returns without setting r0: the verifier refuses to read an uninitialised register.
        let e = XdpProgram::load("psw_bad", &[Insn::exit()]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("verifier log"), "{msg}");
        assert!(msg.contains("R0 !read_ok"), "{msg}");
    }
}
