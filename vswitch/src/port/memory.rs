//! In-memory ports: frames are pushed into an rx queue and collected from a tx queue. Used by
//! pipeline tests (the switch's behaviour with no kernel involved) and by the in-memory
//! benchmarks. Both queues are shared handles, so a test keeps one end while the worker owns
//! the port.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use super::{Port, PortId, PortKind, TxOutcome};
use crate::packet::Batch;

/// The test's end of a [`MemoryPort`].
#[derive(Debug, Clone, Default)]
pub struct MemoryPortHandle {
    rx: Arc<Mutex<VecDeque<Vec<u8>>>>,
    tx: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl MemoryPortHandle {
    /// Queues a frame for the switch to receive.
    pub fn inject(&self, frame: &[u8]) {
        self.rx.lock().expect("memory port lock").push_back(frame.to_vec());
    }

    /// Takes every frame the switch has sent on this port so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.tx.lock().expect("memory port lock").drain(..).collect()
    }
}

/// A port backed by two in-memory queues.
#[derive(Debug)]
pub struct MemoryPort {
    handle: MemoryPortHandle,
}

impl MemoryPort {
    /// A new port and the handle that feeds and drains it.
    pub fn new() -> (MemoryPort, MemoryPortHandle) {
        let handle = MemoryPortHandle::default();
        (MemoryPort { handle: handle.clone() }, handle)
    }
}

impl Port for MemoryPort {
    fn kind(&self) -> PortKind {
        PortKind::Memory
    }

    fn rx_burst(&mut self, batch: &mut Batch, in_port: PortId) -> io::Result<usize> {
        let mut rx = self.handle.rx.lock().expect("memory port lock");
        let mut n = 0;
        while !batch.is_full() {
            let Some(frame) = rx.pop_front() else { break };
            if batch.push_frame(in_port, &frame) {
                n += 1;
            }
        }
        Ok(n)
    }

    fn tx_burst(&mut self, batch: &Batch, indices: &[u16]) -> TxOutcome {
        let mut tx = self.handle.tx.lock().expect("memory port lock");
        let mut out = TxOutcome::default();
        for &i in indices {
            if let Some(p) = batch.packets().get(usize::from(i)) {
                tx.push_back(p.data().to_vec());
                out.sent += 1;
                out.bytes += p.len() as u64;
            }
        }
        out
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
}
