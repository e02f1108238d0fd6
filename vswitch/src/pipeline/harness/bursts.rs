//! Bursts: frames queued per worker, run through the pipeline with steering between the
//! workers, then through the transmit side, with the per-burst checks.

use super::*;

impl Harness {
    /// Queues a frame on worker `w`'s burst (running the bursts first when it is full).
    pub(super) fn push(
        &mut self,
        w: usize,
        port: PortId,
        tunnel: Option<Ipv4Addr>,
        vnet: VnetHdr,
        frame: &[u8],
    ) {
        if frame.len() > MAX_FRAME_LEN {
            return;
        }
        if self.workers[w].batch.is_full() {
            self.run_bursts();
        }
        let at = if port == OVERLAY { 8 } else { 0 };
        let (ip_ok, l4_ok) = frame
            .get(at..)
            .and_then(checksums)
            .map_or((false, false), |(i, l)| (i, l && vnet == VnetHdr::default()));
        let worker = &mut self.workers[w];
        if !worker.batch.push_frame(port, frame) {
            return;
        }
        let pkt = worker.batch.packets_mut().last_mut().expect("just pushed");
        pkt.meta.tunnel = tunnel;
        pkt.meta.vnet = vnet;
        worker.info.push(Ingress { len: frame.len(), ip_ok, l4_ok });
    }

    /// Runs the pending bursts of both workers (with steering between them) and checks the
    /// invariants.
    pub(super) fn run_bursts(&mut self) {
        for w in 0..self.workers.len() {
            if !self.workers[w].batch.is_empty() {
                self.run_burst(w, None);
            }
        }
    }

    /// [`Harness::run_bursts`], returning each packet's decision and frame, in order (steered
    /// ones last).
    pub(super) fn run_bursts_out(&mut self) -> Vec<(Action, Vec<u8>)> {
        let mut out = Vec::new();
        for w in 0..self.workers.len() {
            if !self.workers[w].batch.is_empty() {
                self.run_burst(w, Some(&mut out));
            }
        }
        out
    }

    pub(super) fn take_spare(&mut self) -> Packet {
        self.spare.pop().unwrap_or_default()
    }

    pub(super) fn run_burst(&mut self, w: usize, mut out: Option<&mut Vec<(Action, Vec<u8>)>>) {
        let before: Vec<Vec<PortCounters>> = if self.checking {
            self.workers.iter().map(|w| w.counters.clone()).collect()
        } else {
            Vec::new()
        };
        self.summary.bursts += 1;
        let now = self.now;
        // Every stage on the receiving worker; what the steer stage marked for the other
        // worker is moved there, as the worker does after the pipeline.
        let other = 1 - w;
        let mut handed: Vec<(Packet, Ingress)> = Vec::new();
        {
            let worker = &mut self.workers[w];
            worker.pipeline.run(
                &mut worker.batch,
                &mut worker.counters,
                now,
                Entry::Port,
                &self.live,
            );
            worker.pipeline.announced.clear();
        }
        for i in 0..self.workers[w].batch.len() {
            let worker = &self.workers[w];
            let Action::Steer(to) = worker.batch.packets()[i].meta.action else { continue };
            assert_eq!(usize::from(to), other, "step {}: steered to {to}", self.step);
            let spare = self.take_spare();
            let worker = &mut self.workers[w];
            let in_port = worker.batch.packets()[i].meta.in_port;
            match worker.batch.take(i, spare) {
                Ok(mut pkt) => {
                    pkt.meta.action = Action::Continue;
                    worker.counters[in_port.index()].steered += 1;
                    handed.push((pkt, worker.info[i]));
                }
                Err(spare) => self.spare.push(spare),
            }
        }
        self.summary.steered += handed.len();
        let worker = &self.workers[w];
        let mut drops = Vec::new();
        if self.checking {
            drops = self.check_batch(&worker.batch, &worker.info);
            self.tx.transmit(&worker.batch, &self.live, self.step);
        }
        if let Some(out) = out.as_deref_mut() {
            for pkt in worker.batch.packets() {
                if pkt.meta.action != Action::Handed {
                    out.push((pkt.meta.action, pkt.data().to_vec()));
                }
            }
        }
        let worker = &mut self.workers[w];
        worker.batch.clear();
        worker.info.clear();
        // The handed packets, on their worker, as from its inbox: no second classification.
        if !handed.is_empty() {
            let mut inbox = self.inbox.take().unwrap_or_else(pooled_batch);
            inbox.clear();
            let mut info = Vec::with_capacity(handed.len());
            for (pkt, i) in handed {
                if let Ok(empty) = inbox.push_packet(pkt) {
                    self.spare.push(empty);
                }
                info.push(i);
            }
            let worker = &mut self.workers[other];
            worker.pipeline.run(&mut inbox, &mut worker.counters, now, Entry::Steered, &self.live);
            worker.pipeline.announced.clear();
            if self.checking {
                drops.extend(self.check_batch(&inbox, &info));
                self.tx.transmit(&inbox, &self.live, self.step);
            }
            if let Some(out) = out {
                for pkt in inbox.packets() {
                    out.push((pkt.meta.action, pkt.data().to_vec()));
                }
            }
            self.inbox = Some(inbox);
        }
        self.summary.dropped += drops.iter().map(|(_, _, n)| n).sum::<usize>();
        if self.checking {
            self.check_counters(&before, &drops);
            self.check_tables();
        }
    }

    pub(super) fn vnet_of(ctl: Ctl, bytes: &[u8], frame: &[u8]) -> VnetHdr {
        match ctl >> 6 {
            1 => {
                let l3 = l3_of(frame).unwrap_or(14);
                let ihl = usize::from(frame.get(l3).map_or(5, |b| b & 0x0f)) * 4;
                let at = match frame.get(l3 + 9) {
                    Some(6) => 16,
                    _ => 6,
                };
                VnetHdr {
                    flags: VnetHdr::NEEDS_CSUM,
                    csum_start: (l3 + ihl) as u16,
                    csum_offset: at,
                    ..Default::default()
                }
            }
            2 => {
                let l3 = l3_of(frame).unwrap_or(14);
                let ihl = usize::from(frame.get(l3).map_or(5, |b| b & 0x0f)) * 4;
                let size = u16::from_le_bytes([
                    bytes.first().copied().unwrap_or(0),
                    bytes.get(1).copied().unwrap_or(0),
                ]);
                VnetHdr {
                    flags: VnetHdr::NEEDS_CSUM,
                    gso_type: VnetHdr::GSO_TCPV4,
                    hdr_len: (l3 + ihl + 20) as u16,
                    gso_size: size,
                    csum_start: (l3 + ihl) as u16,
                    csum_offset: 16,
                }
            }
            3 => {
                let mut raw = [0u8; VnetHdr::LEN];
                for (d, s) in raw.iter_mut().zip(bytes) {
                    *d = *s;
                }
                VnetHdr::parse(&raw)
            }
            _ => VnetHdr::default(),
        }
    }

    pub(super) fn arrive(
        &mut self,
        ctl: Ctl,
        vnet: &[u8],
        port: PortId,
        tunnel: Option<Ipv4Addr>,
        frame: &[u8],
    ) {
        if !self.live.contains(&port) {
            // A removed port is not polled.
            return;
        }
        let w = usize::from(ctl >> 4 & 1);
        // TAP ports (host, pods) carry offload metadata; AF_XDP and the overlay do not.
        let tap = port.0 <= 4;
        let vnet = if tap { Self::vnet_of(ctl, vnet, frame) } else { VnetHdr::default() };
        let tunnel = if port == OVERLAY {
            tunnel.or(Some(match ctl >> 6 {
                0 | 1 => PEER2,
                2 => PEER3,
                _ => Ipv4Addr::new(192, 168, 0, 99),
            }))
        } else {
            None
        };
        self.push(w, port, tunnel, vnet, frame);
        self.summary.frames += 1;
        if ctl & 0x20 != 0 {
            self.run_bursts();
        }
    }
}
