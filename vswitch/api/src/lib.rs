//! podswitch's control API as a crate of its own: what the daemon, `podswitch ctl`, the CNI
//! plugin, the lab and the tests exchange over the control socket, and nothing of the
//! dataplane, so a client links this and not the switch.
//!
//! - [`protocol`]: one `Request` enum, one `Reply` enum, one `ApiError`; the framing
//!   (newline-delimited JSON) is documented in `docs/control-api.md`.
//! - [`client`]: the client side of the socket.
//! - [`limits`]: the limits and defaults both ends check (port name, MTU, request length,
//!   socket path).
//! - [`service`]: a Service as the API carries it, and its validation.
//! - [`counters`]: counters as the API reports them.
//! - [`cidr`], [`mac`]: the address types the requests carry.
//!
//! Everything here is plain data and checks: no I/O beyond the client's socket, no `unsafe`.
#![forbid(unsafe_code)]

pub mod cidr;
pub mod client;
pub mod counters;
pub mod limits;
pub mod mac;
pub mod protocol;
pub mod service;
