//! Ports: where frames enter and leave the switch.
//!
//! A [`Port`] moves frames in bursts between a device and a [`Batch`]: `rx_burst` fills the
//! batch's free buffers, `tx_burst` writes chosen packets of a batch. The pipeline never sees
//! a device, only batches, so a TAP port ([`tap`]), an AF_XDP port on a veth pair
//! ([`afxdp`]), the overlay's UDP sockets ([`overlay`]) and an in-memory port ([`memory`], for
//! tests) fit behind the same trait. Ports that cannot carry offload metadata finish
//! super-frames and partial checksums in software ([`crate::offload::gso`]); the TAP port does the reverse,
//! merging consecutive TCP segments into super-frames for the pod ([`crate::offload::gro`]).
//!
//! Ports are owned by the worker that polls them. Creating the device behind a port
//! (namespaces, netlink) is the control plane's job and happens before the port reaches the
//! worker; dropping the port closes the device.

pub mod afxdp;
pub mod memory;
pub mod node_port_filter;
pub mod overlay;
pub mod overlay_xdp;
pub mod queue_steering;
pub mod tap;

use std::io;
use std::os::fd::RawFd;

use crate::packet::Batch;
pub use crate::packet::PortId;

pub use podswitch_api::protocol::PortKind;

/// Result of one `tx_burst`.
///
/// `sent` and `bytes` count what the device took: a super-frame a port merged from several
/// of the batch's packets (software GRO, [`crate::offload::gro`]) is one frame. `queue_full` and `errors`
/// count the batch's packets that were lost, so a refused super-frame counts each packet it
/// carried. The packets handed to `tx_burst` add up as
/// `sent - gro_frames + gro_merged + queue_full + errors`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOutcome {
    /// Frames written.
    pub sent: u32,
    /// Bytes written.
    pub bytes: u64,
    /// Packets refused because the device queue was full.
    pub queue_full: u32,
    /// Packets refused for any other reason.
    pub errors: u32,
    /// Of `sent`, super-frames merged from two or more packets.
    pub gro_frames: u32,
    /// Packets carried by those `gro_frames`.
    pub gro_merged: u32,
    /// `UDP_SEGMENT` sends that carried a super-frame's datagrams (overlay port; the
    /// datagrams count in `sent`).
    pub gso_sends: u32,
}

impl TxOutcome {
    /// Adds the outcome of another send of the same burst (a port that hands part of a
    /// burst to another path).
    pub fn add(&mut self, o: &TxOutcome) {
        self.sent += o.sent;
        self.bytes += o.bytes;
        self.queue_full += o.queue_full;
        self.errors += o.errors;
        self.gro_frames += o.gro_frames;
        self.gro_merged += o.gro_merged;
        self.gso_sends += o.gso_sends;
    }
}

/// A device the switch sends and receives frames on.
pub trait Port: Send + std::fmt::Debug {
    /// What kind of port this is.
    fn kind(&self) -> PortKind;

    /// Receives frames into `batch`'s free buffers, tagging them with `in_port`, until the
    /// batch is full or the device has nothing more. Returns how many frames were added;
    /// "nothing to read" is `Ok(0)`. An error means the device is unusable.
    fn rx_burst(&mut self, batch: &mut Batch, in_port: PortId) -> io::Result<usize>;

    /// Writes the packets of `batch` at `indices` (in order).
    fn tx_burst(&mut self, batch: &Batch, indices: &[u16]) -> TxOutcome;

    /// A file descriptor that becomes readable when `rx_burst` has frames, for ports the
    /// worker waits on; `None` for ports it must poll.
    fn poll_fd(&self) -> Option<RawFd>;

    /// Drops the device itself counted, before the switch saw the frames (read on the
    /// control path, when stats are asked for). Most devices report none.
    fn device_drops(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
