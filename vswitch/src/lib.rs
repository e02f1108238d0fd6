//! podswitch: a polling userspace virtual switch for Kubernetes pod networking.
//!
//! A frame's path through the switch, and the module that owns each step:
//!
//! ```text
//!  pod netns         │ switch (node netns)                                       │ pod netns
//!                    │                                                           │
//!  eth0 (TAP) ──────►│ port::tap    rx_burst into a packet::Batch                │
//!  (or veth ────────►│ port::afxdp  through XDP and an AF_XDP socket)            │
//!                    │   │                                                       │
//!                    │ pipeline::classify  parse once, fill Meta, drop malformed │
//!                    │ pipeline::l2::learn     src MAC -> port   (tables::fdb)   │
//!                    │ pipeline::arp     answer for gateway/pods (tables::neigh) │
//!                    │ pipeline::gateway echo for the gateway, route to pods,    │
//!                    │                   hand the rest to the host port          │
//!                    │ pipeline::l2::forward   dst MAC lookup, flood on miss     │
//!                    │ pipeline::output  group by output port                    │
//!                    │   │                                                       │
//!                    │ port::tap    tx_burst ────────────────────────────────────┼──► eth0 (TAP)
//!                    │              (or the host port psw0 -> node's kernel)     │
//! ```
//!
//! Threading: one worker thread ([`worker`]) owns the ports, tables and counters and runs
//! receive → pipeline → transmit on bursts. The control plane ([`control`]) runs on its own
//! threads, creates devices ([`sys`]), and changes the worker's state only through commands
//! the worker applies between bursts. The packet path takes no locks and does not allocate.
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
