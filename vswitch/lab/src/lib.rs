//! The lab: topologies built from scratch in fresh network namespaces, and traffic tools that
//! measure real traffic between them. `podswitch lab` (the demonstration, [`demo`]) is built
//! from them, and so are the behaviour tests (`tests/`) and the benchmarks (`bench/`), so
//! every datapath, podswitch or a kernel peer, is set up and measured by the same code.
//!
//! - [`topology`]: a node running podswitch (as a child process) with pods attached through
//!   the control API or the CNI plugin; the kernel's bridge node; an underlay; the kernel's
//!   VXLAN node; pods on veth pairs.
//! - [`traffic`]: ping, verified TCP transfers, throughput, request/response latency,
//!   connection rate, UDP floods; each refuses the caller's own namespace and is bounded.
//! - [`demo`]: `podswitch lab` itself.
//!
//! It is not part of the switch's library: the daemon never runs any of it. It talks to the
//! switch only as any client does, over the control socket (`podswitch-api`), and uses the
//! switch's library only for its configuration type and header views.
#![forbid(unsafe_code)]

pub mod demo;
pub mod topology;
pub mod traffic;

pub use demo::{main, LabArgs};
