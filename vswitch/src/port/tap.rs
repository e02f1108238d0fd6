//! TAP ports: a pod's (or the node's) Ethernet interface whose other side is a file
//! descriptor held by the switch. The pod's kernel sees `eth0`; every frame it sends becomes
//! one `read` here, every `write` here is a frame it receives.
//!
//! The fd is non-blocking: `rx_burst` reads until the batch is full or the kernel says
//! `WouldBlock`, so one wakeup drains a whole burst. TAP fds have no `recvmmsg`, so this is one
//! syscall per frame; `IFF_VNET_HDR` offloads (64 KiB frames per syscall) come with the
//! fast-path work. Device creation lives in `sys::tun`; this file only moves frames.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use super::{Port, PortId, PortKind, TxOutcome};
use crate::packet::Batch;

/// A TAP device's fd, driven as a port.
#[derive(Debug)]
pub struct TapPort {
    file: File,
    kind: PortKind,
}

impl TapPort {
    /// Wraps the fd of a TAP device opened non-blocking without packet information
    /// (`IFF_TAP | IFF_NO_PI`).
    pub fn new(file: File, kind: PortKind) -> TapPort {
        TapPort { file, kind }
    }
}

impl Port for TapPort {
    fn kind(&self) -> PortKind {
        self.kind
    }

    fn rx_burst(&mut self, batch: &mut Batch, in_port: PortId) -> io::Result<usize> {
        let mut n = 0;
        while let Some(pkt) = batch.next_free() {
            match self.file.read(pkt.rx_space()) {
                Ok(len) => {
                    pkt.set_len(len);
                    pkt.meta.in_port = in_port;
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
            loop {
                match self.file.write(frame) {
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
