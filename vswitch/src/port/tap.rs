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

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use super::{Port, PortId, PortKind, TxOutcome};
use crate::packet::{Batch, VnetHdr};

/// A TAP device's fd, driven as a port.
#[derive(Debug)]
pub struct TapPort {
    file: File,
    kind: PortKind,
    vnet: bool,
}

impl TapPort {
    /// Wraps the fd of a TAP device opened non-blocking without packet information
    /// (`IFF_TAP | IFF_NO_PI`); `vnet` when it was opened with `IFF_VNET_HDR`.
    pub fn new(file: File, kind: PortKind, vnet: bool) -> TapPort {
        TapPort { file, kind, vnet }
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
        for &i in indices {
            let Some(pkt) = pkts.get(usize::from(i)) else { continue };
            let frame = pkt.data();
            let mut hdr = [0u8; VnetHdr::LEN];
            pkt.meta.vnet.write(&mut hdr);
            loop {
                let written = if self.vnet {
                    self.file.write_vectored(&[IoSlice::new(&hdr), IoSlice::new(frame)])
                } else {
                    self.file.write(frame)
                };
                match written {
                    Ok(_) => {
                        out.sent += 1;
                        out.bytes += frame.len() as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.raw_os_error() == Some(libc::ENOBUFS) =>
                    {
                        out.queue_full += 1
                    }
                    Err(_) => out.errors += 1,
                }
                break;
            }
        }
        out
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}
