//! TAP ports: a pod's (or the node's) Ethernet interface whose other side is a file
//! descriptor held by the switch. The pod's kernel sees `eth0`; every frame it sends becomes
//! one `read` here, every `write` here is a frame it receives.
//!
//! The fd is non-blocking: `rx_burst` reads until the batch is full or the kernel says
//! `WouldBlock`, so one wakeup drains a whole burst. TAP fds have no `recvmmsg`, so this is one
//! syscall per frame. With offloads (`IFF_VNET_HDR` + `TUNSETOFFLOAD`), each frame comes with
//! a virtio-net header (`readv` of header and frame into the packet, no copy) and may be a
//! TCP super-frame of up to 64 KiB with a partial checksum: one syscall then moves what would
//! be 45 frames. The header travels in `meta.vnet` and is written back in front of the frame
//! on the way out (`writev`). Device creation lives in `sys::tun`; this file only moves frames.
//!
//! On the way out, a TAP with virtio-net headers merges consecutive in-order TCP/IPv4
//! segments of one flow within a burst into one super-frame ([`super::gro`]): the pod's
//! kernel then takes up to 64 KiB per `writev` and per trip through its stack, as it would
//! from a NIC with GRO. That is what the overlay delivers: one MTU-sized frame per VXLAN
//! datagram.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use super::{Port, PortId, PortKind, TxOutcome};
use crate::offload::gro::{Gro, GroFrame};
use crate::packet::{Batch, VnetHdr};

/// A TAP device's fd, driven as a port.
#[derive(Debug)]
pub struct TapPort {
    file: File,
    kind: PortKind,
    vnet: bool,
    /// Merges TCP segments on transmit (with `vnet` only: a super-frame needs its header).
    gro: Gro,
}

impl TapPort {
    /// Wraps the fd of a TAP device opened non-blocking without packet information
    /// (`IFF_TAP | IFF_NO_PI`); `vnet` when it was opened with `IFF_VNET_HDR` (the switch
    /// always opens them so, with `TUNSETOFFLOAD`; a super-frame written to a TAP is accepted
    /// whatever offloads the reader announced).
    pub fn new(file: File, kind: PortKind, vnet: bool) -> TapPort {
        TapPort { file, kind, vnet, gro: Gro::new() }
    }
}

/// Writes one frame (with its virtio-net header when `vnet`) and counts the outcome.
fn write_frame(file: &mut File, vnet: bool, f: GroFrame<'_>, out: &mut TxOutcome) {
    let mut hdr = [0u8; VnetHdr::LEN];
    f.vnet.write(&mut hdr);
    loop {
        let written = if vnet {
            file.write_vectored(&[IoSlice::new(&hdr), IoSlice::new(f.frame)])
        } else {
            file.write(f.frame)
        };
        match written {
            Ok(_) => {
                out.sent += 1;
                out.bytes += f.frame.len() as u64;
                if f.segments > 1 {
                    out.gro_frames += 1;
                    out.gro_merged += f.segments;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                out.queue_full += f.segments
            }
            Err(_) => out.errors += f.segments,
        }
        break;
    }
}

impl Port for TapPort {
    fn kind(&self) -> PortKind {
        self.kind
    }

    fn rx_burst(&mut self, batch: &mut Batch, in_port: PortId) -> io::Result<usize> {
        let mut n = 0;
        let mut hdr = [0u8; VnetHdr::LEN];
        while let Some(pkt) = batch.next_free() {
            let read = if self.vnet {
                let space = pkt.rx_space();
                let mut bufs = [IoSliceMut::new(&mut hdr), IoSliceMut::new(space)];
                self.file.read_vectored(&mut bufs).map(|len| len.saturating_sub(VnetHdr::LEN))
            } else {
                self.file.read(pkt.rx_space())
            };
            match read {
                Ok(len) => {
                    pkt.set_len(len);
                    pkt.meta.in_port = in_port;
                    if self.vnet {
                        pkt.meta.vnet = VnetHdr::parse(&hdr);
                    }
                    batch.commit();
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return if n > 0 { Ok(n) } else { Err(e) },
            }
        }
        Ok(n)
    }

    fn tx_burst(&mut self, batch: &Batch, indices: &[u16]) -> TxOutcome {
        let mut out = TxOutcome::default();
        let pkts = batch.packets();
        let frames = indices
            .iter()
            .filter_map(|&i| pkts.get(usize::from(i)))
            .map(|p| (p.data(), p.meta.vnet));
        let (file, vnet) = (&mut self.file, self.vnet);
        if vnet {
            self.gro.coalesce(frames, |f| write_frame(file, vnet, f, &mut out));
        } else {
            for (frame, v) in frames {
                write_frame(file, vnet, GroFrame { vnet: v, frame, segments: 1 }, &mut out);
            }
        }
        out
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}
