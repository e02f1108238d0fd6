//! The limits and defaults both ends of the control API agree on: how long a port name and a
//! request line may be, which MTUs a port may have, where the socket is by default.

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/podswitch/podswitch.sock";

/// Longest port name.
pub const MAX_PORT_NAME_LEN: usize = 128;

/// Smallest MTU IPv4 allows (RFC 791).
pub const MIN_MTU: u32 = 68;
/// Largest MTU a port buffer carries (the dataplane's `packet::MAX_FRAME_LEN` holds it).
pub const MAX_MTU: u32 = 9000;

/// Longest request line the server reads: room for a `service_apply` of the largest Service
/// table (65,536 Services of a few endpoints is about 16 MB of JSON).
pub const MAX_REQUEST_LEN: usize = 64 << 20;
