//! Operating-system plumbing: network namespaces, rtnetlink, the TUN/TAP character device,
//! signals to child processes, raw `bpf(2)` (maps, XDP programs and their
//! attachment), and the batched datagram syscalls (`recvmmsg`/`sendmmsg`)
//! the overlay port uses. Ports decide what to send and receive; the raw calls live here.
//!
//! Every `unsafe` block of the workspace is in this crate (ports do their I/O through
//! `std::fs::File` or these wrappers on fds created here), each with a `// SAFETY:` line; the
//! crates above it (`podswitch-api`, `vswitch`, `podswitch-lab`) forbid `unsafe`. Kernel ABI
//! constants and structs sit next to the function that uses them. It depends on no other
//! podswitch crate.

pub mod bpf;
pub mod caps;
pub mod ethtool;
pub mod mmsg;
pub mod netlink;
pub mod netns;
pub mod packet;
pub mod prefetch;
pub mod process;
pub mod tun;
pub mod xsk;

#[cfg(test)]
mod test_support;
