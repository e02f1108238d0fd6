//! TUN/TAP device (work in progress).
