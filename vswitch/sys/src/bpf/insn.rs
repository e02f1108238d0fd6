//! eBPF instruction encoding: [`Insn`] (the kernel's `struct bpf_insn`) with `const fn`
//! constructors in the manner of the kernel's `tools/include/linux/filter.h` macros, and the
//! constants programs are written with (opcode pieces, registers, helper ids, verdicts,
//! context offsets). Pure data, no syscall: the programs built from these are checked by the
//! verifier only when loaded (`super::prog`).

use std::mem::size_of;

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

/// The bytes the kernel reads for `insns` (little-endian, as `llvm-objdump -d` prints them).
#[cfg(test)]
pub(super) fn bytes(insns: &[Insn]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::op::*;
    use super::reg::*;
    use super::*;

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
}
