//! Operating-system plumbing: network namespaces, rtnetlink, the TUN/TAP character device,
//! signals to child processes, raw `bpf(2)` (maps, XDP programs and their
//! attachment), and the batched datagram syscalls (`recvmmsg`/`sendmmsg`)
//! the overlay port uses. Ports decide what to send and receive; the raw calls live here.
//!
//! Every `unsafe` block of the crate is in here (ports do their I/O through `std::fs::File`
//! or these wrappers on fds created here), each with a `// SAFETY:` line. Kernel ABI
//! constants and structs sit next to the function that uses them.
#![allow(unsafe_code)]

pub mod bpf;
pub mod caps;
pub mod ethtool;
pub mod mmsg;
pub mod netlink;
pub mod netns;
pub mod packet;
pub mod process;
pub mod tun;
pub mod xsk;
