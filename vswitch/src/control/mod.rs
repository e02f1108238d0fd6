//! The control plane: the Unix-socket JSON API through which users, the CNI plugin and the
//! tests attach pods and read state.
//!
//! - [`api`]: the request/response types, shared by server and clients.
//! - [`server`]: socket and framing; no packet or table code.
//! - [`controller`]: what each request does; talks to the worker only through commands.
//! - [`client`]: the client side.
//! - [`render`]: replies as text for people (`ctl`, the lab).

pub mod api;
pub mod client;
pub mod controller;
pub mod render;
pub mod server;
