//! Software offloads between the kernel's super-frames and wire-sized segments, shared by the
//! ports (which segment or merge at their edge) and the gateway stage (which sizes a
//! super-frame's segments against the overlay MTU). Pure packet code: no device, no syscall.
//!
//! - [`gso`]: TCP/IPv4 segmentation of a super-frame, and completion of partial checksums.
//! - [`gro`]: merging consecutive TCP segments of a flow into super-frames for a TAP pod;
//!   only segments whose checksums are known good are merged.

pub mod gro;
pub mod gso;
