//! Operating-system plumbing: network namespaces, rtnetlink, and the TUN/TAP character
//! device. This is where podswitch talks to the kernel about *devices*; packet I/O on them
//! lives in `port/`.
//!
//! Every `unsafe` block of the crate outside `port/` is in here, each with a `// SAFETY:`
//! line. Kernel ABI constants and structs sit next to the one function that uses them.
#![allow(unsafe_code)]

pub mod netlink;
pub mod netns;
pub mod process;
pub mod tun;
