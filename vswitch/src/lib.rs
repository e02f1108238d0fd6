//! podswitch: a polling userspace virtual switch for Kubernetes pod networking.
//!
//! A frame's path through the switch, and the module that owns each step:
//!
//! ```text
//!  pod netns         │ switch (node netns)                                       │ pod netns
//!                    │                                                           │
//!  eth0 (TAP) ──────►│ port::tap    rx_burst into a packet::Batch                │
//!  (or veth ────────►│ port::afxdp  through XDP and an AF_XDP socket)            │
//!  peer node ───────►│ port::overlay (UDP or AF_XDP underlay), NodePort port     │
//!                    │   │                                                       │
//!                    │ pipeline::overlay   decap (overlay port only)             │
//!                    │ pipeline::classify  parse once, fill Meta, drop malformed │
//!                    │ pipeline::steer     Service flows -> the worker that      │
//!                    │                     tracks them (hand-off over the fabric)│
//!                    │ pipeline::l2::learn     src MAC -> port   (tables::fdb)   │
//!                    │ pipeline::nat     Service DNAT/SNAT (tables::conntrack)   │
//!                    │ pipeline::arp     answer for gateway/pods (tables::neigh) │
//!                    │ pipeline::gateway echo for the gateway, route to pods or  │
//!                    │                   into the overlay, the rest to the host  │
//!                    │ pipeline::l2::forward   dst MAC lookup, flood on miss     │
//!                    │ pipeline::output  group by output port                    │
//!                    │   │                                                       │
//!                    │ port::tap    tx_burst ────────────────────────────────────┼──► eth0 (TAP)
//!                    │              (or the host port psw0 -> node's kernel,     │
//!                    │               or VXLAN to a peer node)                    │
//! ```
//!
//! Threading: N worker threads ([`worker`], one per CPU by default, pinned), each polling
//! its own queue of every device with its own tables and counters, run receive → pipeline →
//! transmit on bursts; a packet of a Service connection is steered to the one worker that
//! tracks it ([`pipeline::steer`]), and MAC learning is announced between them. The control
//! plane ([`control`]) runs on its own threads, creates devices ([`sys`]), and changes the
//! workers' state only through commands each applies between bursts. The packet path takes
//! no locks and does not allocate.
//! The cluster DNS responder ([`dns`]) also runs on threads of its own, off the packet path;
//! pods reach it through the Service NAT like any endpoint.
//!
//! `unsafe` is forbidden here: every syscall and `unsafe` block is in the `podswitch-sys`
//! crate (re-exported as [`sys`]), including the prefetch hint the tables use. The control
//! API's types are the `podswitch-api` crate's (re-exported through [`control::api`] and
//! [`cidr`]); the lab is `podswitch-lab`, outside the daemon.
#![forbid(unsafe_code)]

pub use podswitch_api::cidr;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod offload;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod stats;
pub use podswitch_sys as sys;
pub mod tables;
pub mod wire;
pub mod worker;
