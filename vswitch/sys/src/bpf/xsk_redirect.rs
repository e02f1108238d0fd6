//! The XDP program AF_XDP ports attach ([`xsk_redirect_program`]): five instructions that
//! hand each frame to the AF_XDP socket of its rx queue. Kept apart from the encoding it is
//! written with (`super::insn`) and the syscalls that load it (`super::prog`), as the other
//! programs podswitch assembles are kept with the ports that use them.

use std::os::fd::RawFd;

use super::insn::{helper, op, reg, Insn, XDP_MD_RX_QUEUE_INDEX, XDP_PASS};
use super::map::BpfMap;

/// The program AF_XDP ports attach: redirect every frame to the AF_XDP socket registered in
/// `xsks` (an [`MapKind::XskMap`](super::MapKind::XskMap)) under the frame's rx queue index; `XDP_PASS` (on into the
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::insn::bytes;

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
}
