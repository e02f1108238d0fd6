//! Operating-system plumbing: network namespaces, rtnetlink, the TUN/TAP character device,
//! and signals to child processes. This is where podswitch talks to the kernel about
//! *devices*; packet I/O on them lives in `port/`.
//!
//! Every `unsafe` block of the crate is in here (ports do their I/O through `std::fs::File`
//! on fds created here), each with a `// SAFETY:` line. Kernel ABI constants and structs sit
//! next to the function that uses them.
#![allow(unsafe_code)]

pub mod netlink;
pub mod netns;
pub mod process;
pub mod tun;
