//! The control plane: the Unix-socket JSON API through which users, the CNI plugin and the
//! tests attach pods and read state.
//!
//! - [`api`]: the request/response types, shared by server and clients (the
//!   `podswitch-api` crate's `protocol`, re-exported).
//! - [`server`]: socket and framing; no packet or table code.
//! - [`controller`]: what each request does; talks to the worker only through commands.
//! - [`client`]: the client side (also `podswitch-api`'s).
//! - [`render`]: replies as text for people (`ctl`, the lab).

pub use podswitch_api::client;
pub use podswitch_api::protocol as api;
pub mod controller;
pub mod render;
pub mod server;
