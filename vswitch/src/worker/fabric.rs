//! The fabric between workers: bounded lock-free rings that carry packets and MAC table
//! announcements from one worker to another, a shared pool of spare packet buffers, and the
//! wake-up that tells a sleeping worker its rings have something.
//!
//! Every worker has one inbox with three rings:
//! - `steer`: classified packets whose flow's connection is tracked by this worker (flow
//!   steering); it runs the table stages on them and transmits.
//! - `tx`: finished packets for a port whose only queue this worker owns; it only writes
//!   them.
//! - `learn`: MAC table changes another worker saw.
//!
//! Packets cross by moving their buffer, not by copying it: the sender puts a spare buffer
//! from the pool into the batch slot it empties, the receiver returns the buffer its own
//! slot held. The pool and the rings are bounded and filled once at start; when the pool is
//! empty or a ring is full the packet is dropped and counted (`handoff_full`), the packet
//! path never allocates or blocks. Drops are rare because receiving is gated on the pool: a
//! worker takes a burst from a port only while the pool could take a full burst from every
//! worker ([`Fabric::can_receive`]). When a worker falls behind, its buffers stay in its
//! inbox, the others stop reading their devices, and the backlog waits in the devices' own
//! queues, which push back on the senders (a TAP's qdisc, TCP's small queues) as the
//! kernel's own queues do. The rings are crossbeam's array channels used only with
//! `try_send`/`try_recv`: a compare-and-swap on a slot, no lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::packet::Packet;
use crate::port::PortId;
use crate::tables::fdb::FdbKey;

/// Spare buffers in the pool per worker (each holds a 64 KiB super-frame: 16 MiB per
/// worker). Bounds the packets in flight between workers.
pub const POOL_PER_WORKER: usize = 256;

/// Announcements one inbox holds; more are dropped (the station is relearned or announced
/// again on its next refresh).
pub const LEARN_RING: usize = 1024;

// Wake-up sets are kept in a `u64`: one bit per worker.
const _: () = assert!(crate::config::MAX_WORKERS <= 64);

/// One ring: both ends, so any worker can send and the owner receives.
#[derive(Debug)]
struct Ring<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
}

impl<T> Ring<T> {
    fn new(cap: usize) -> Ring<T> {
        let (tx, rx) = crossbeam_channel::bounded(cap);
        Ring { tx, rx }
    }
}

/// One worker's inbox.
#[derive(Debug)]
pub struct Inbox {
    steer: Ring<Packet>,
    tx: Ring<Packet>,
    learn: Ring<(FdbKey, PortId)>,
    /// Set by the worker just before it may block in `epoll_wait`.
    sleeping: AtomicBool,
    waker: Arc<Waker>,
}

/// The rings and spare buffers shared by all workers.
#[derive(Debug)]
pub struct Fabric {
    inboxes: Box<[Inbox]>,
    pool: Ring<Packet>,
}

impl Fabric {
    /// A fabric for workers woken through `wakers` (one per worker, in worker order). With
    /// one worker there is nothing to carry: no buffers are allocated.
    pub fn new(wakers: Vec<Arc<Waker>>) -> Arc<Fabric> {
        let n = wakers.len();
        let buffers = if n > 1 { POOL_PER_WORKER * n } else { 0 };
        let pool = Ring::new(buffers.max(1));
        for _ in 0..buffers {
            let _ = pool.tx.try_send(Packet::new());
        }
        let inboxes = wakers
            .into_iter()
            .map(|waker| Inbox {
                steer: Ring::new(buffers.max(1)),
                tx: Ring::new(buffers.max(1)),
                learn: Ring::new(if n > 1 { LEARN_RING } else { 1 }),
                sleeping: AtomicBool::new(false),
                waker,
            })
            .collect();
        Arc::new(Fabric { inboxes, pool })
    }

    /// How many workers the fabric joins.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// A spare buffer, if the pool has one.
    #[inline]
    pub fn spare(&self) -> Option<Packet> {
        self.pool.rx.try_recv().ok()
    }

    /// Whether the pool has room for a full burst from every worker: receive only then.
    #[inline]
    pub fn can_receive(&self) -> bool {
        self.pool.rx.len() >= crate::packet::BATCH_SIZE * self.inboxes.len()
    }

    /// Gives a buffer back to the pool.
    #[inline]
    pub fn recycle(&self, pkt: Packet) {
        // The pool holds every buffer it ever handed out, so it is never full here.
        let _ = self.pool.tx.try_send(pkt);
    }

    /// Sends a classified packet to worker `to` for the table stages; gives it back when
    /// the ring is full.
    #[inline]
    pub fn steer(&self, to: usize, pkt: Packet) -> Result<(), Packet> {
        self.inboxes[to].steer.tx.try_send(pkt).map_err(|e| e.into_inner())
    }

    /// Sends a finished packet to worker `to` to write out of a port whose queue it owns;
    /// gives it back when the ring is full.
    #[inline]
    pub fn transmit(&self, to: usize, pkt: Packet) -> Result<(), Packet> {
        self.inboxes[to].tx.tx.try_send(pkt).map_err(|e| e.into_inner())
    }

    /// Announces a MAC table change to every worker but `from`; false if some inbox was
    /// full.
    pub fn announce(&self, from: usize, key: FdbKey, port: PortId) -> bool {
        let mut all = true;
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != from {
                all &= inbox.learn.tx.try_send((key, port)).is_ok();
            }
        }
        all
    }

    /// The next packet steered to worker `me`.
    #[inline]
    pub fn next_steered(&self, me: usize) -> Option<Packet> {
        self.inboxes[me].steer.rx.try_recv().ok()
    }

    /// The next packet for worker `me` to transmit.
    #[inline]
    pub fn next_transmit(&self, me: usize) -> Option<Packet> {
        self.inboxes[me].tx.rx.try_recv().ok()
    }

    /// The next announcement for worker `me`.
    #[inline]
    pub fn next_announced(&self, me: usize) -> Option<(FdbKey, PortId)> {
        self.inboxes[me].learn.rx.try_recv().ok()
    }

    /// Whether worker `me` has anything waiting.
    #[inline]
    pub fn has_work(&self, me: usize) -> bool {
        let i = &self.inboxes[me];
        !i.steer.rx.is_empty() || !i.tx.rx.is_empty() || !i.learn.rx.is_empty()
    }

    /// Worker `me` is about to block: true if it may (nothing arrived meanwhile). Pairs
    /// with [`Fabric::wake`]: a sender that pushes after this sees the flag and wakes it.
    pub fn prepare_sleep(&self, me: usize) -> bool {
        self.inboxes[me].sleeping.store(true, Ordering::SeqCst);
        if self.has_work(me) {
            self.inboxes[me].sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Worker `me` is awake again.
    pub fn awake(&self, me: usize) {
        self.inboxes[me].sleeping.store(false, Ordering::Relaxed);
    }

    /// Wakes every worker in `set` (a bit per worker) that is asleep; called once per batch
    /// after its packets were sent.
    pub fn wake(&self, mut set: u64) {
        while set != 0 {
            let i = set.trailing_zeros() as usize;
            set &= set - 1;
            if let Some(inbox) = self.inboxes.get(i) {
                if inbox.sleeping.swap(false, Ordering::SeqCst) {
                    let _ = inbox.waker.wake();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};

    fn fabric(n: usize) -> (Arc<Fabric>, Vec<Poll>) {
        let polls: Vec<Poll> = (0..n).map(|_| Poll::new().unwrap()).collect();
        let wakers =
            polls.iter().map(|p| Arc::new(Waker::new(p.registry(), Token(0)).unwrap())).collect();
        (Fabric::new(wakers), polls)
    }

    #[test]
    fn packets_move_between_workers_and_buffers_come_back() {
        let (f, _polls) = fabric(2);
        let total = POOL_PER_WORKER * 2;
        let mut p = f.spare().unwrap();
        assert!(p.fill_from(&[7u8; 60]));
        f.steer(1, p).unwrap();
        assert!(f.has_work(1) && !f.has_work(0));
        let got = f.next_steered(1).unwrap();
        assert_eq!(got.data(), &[7u8; 60]);
        f.recycle(got);
        // Every buffer can be taken once, then the pool is empty until one comes back.
        let all: Vec<Packet> = std::iter::from_fn(|| f.spare()).collect();
        assert_eq!(all.len(), total);
        assert!(f.spare().is_none());
        for p in all {
            f.recycle(p);
        }
        assert!(f.spare().is_some());
    }

    #[test]
    fn full_rings_give_the_packet_back() {
        let (f, _polls) = fabric(2);
        let mut sent = 0;
        while let Some(p) = f.spare() {
            if f.transmit(0, p).is_err() {
                break;
            }
            sent += 1;
        }
        assert_eq!(sent, POOL_PER_WORKER * 2, "the ring holds the whole pool");
        assert!(f.next_transmit(0).is_some());
    }

    #[test]
    fn announcements_reach_every_other_worker() {
        let (f, _polls) = fabric(3);
        let key = FdbKey::new(None, crate::wire::MacAddr([2, 0, 0, 0, 0, 1]));
        assert!(f.announce(1, key, PortId(4)));
        assert_eq!(f.next_announced(0), Some((key, PortId(4))));
        assert_eq!(f.next_announced(2), Some((key, PortId(4))));
        assert_eq!(f.next_announced(1), None);
    }

    #[test]
    fn a_sleeping_worker_is_woken_once() {
        let (f, mut polls) = fabric(2);
        assert!(f.prepare_sleep(1));
        f.steer(1, f.spare().unwrap()).unwrap();
        f.wake(0b10);
        let mut events = mio::Events::with_capacity(4);
        polls[1].poll(&mut events, Some(std::time::Duration::from_secs(5))).unwrap();
        assert_eq!(events.iter().count(), 1, "the waker fired");
        // Something waiting: the worker must not block.
        assert!(!f.prepare_sleep(1));
    }
}
