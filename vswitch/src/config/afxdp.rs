//! The `[afxdp]` section: the UMEM frames of every AF_XDP socket, for receive and for
//! transmit.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Fewest UMEM frames on either side of an AF_XDP socket.
pub const MIN_AFXDP_FRAMES: u32 = 64;
/// Most UMEM frames on either side of an AF_XDP socket (64 MiB with 2 KiB frames).
pub const MAX_AFXDP_FRAMES: u32 = 32_768;

/// The UMEM of each AF_XDP socket (one per queue of a port): frames set aside for receive
/// (the fill and rx rings' size) and for transmit (the tx and completion rings' size). The
/// socket's memory is `(rx_frames + tx_frames)` × the frame size (2 KiB up to MTU 1,774,
/// 4 KiB above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfxdpConfig {
    /// Frames the kernel can receive into before the worker takes any: how many packets a
    /// queue holds while its worker is busy elsewhere. When they run out the kernel drops
    /// (`xsk_fill_ring_empty` in the port's `device_drops`).
    pub rx_frames: u32,
    /// Frames queued for transmit and not yet completed.
    pub tx_frames: u32,
}

impl Default for AfxdpConfig {
    fn default() -> Self {
        AfxdpConfig {
            rx_frames: crate::sys::xsk::DEFAULT_RING_SIZE,
            tx_frames: crate::sys::xsk::DEFAULT_RING_SIZE,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AfxdpSection {
    #[serde(default = "default_afxdp_frames")]
    rx_frames: u32,
    #[serde(default = "default_afxdp_frames")]
    tx_frames: u32,
}

impl Default for AfxdpSection {
    fn default() -> Self {
        AfxdpSection { rx_frames: default_afxdp_frames(), tx_frames: default_afxdp_frames() }
    }
}

fn default_afxdp_frames() -> u32 {
    crate::sys::xsk::DEFAULT_RING_SIZE
}

impl AfxdpSection {
    pub(super) fn validate(&self) -> Result<AfxdpConfig, ConfigError> {
        for (key, v) in [("afxdp.rx_frames", self.rx_frames), ("afxdp.tx_frames", self.tx_frames)] {
            if !(MIN_AFXDP_FRAMES..=MAX_AFXDP_FRAMES).contains(&v) || !v.is_power_of_two() {
                return Err(invalid(
                    key,
                    format!(
                        "must be a power of two from {MIN_AFXDP_FRAMES} to {MAX_AFXDP_FRAMES}, got {v}"
                    ),
                ));
            }
        }
        Ok(AfxdpConfig { rx_frames: self.rx_frames, tx_frames: self.tx_frames })
    }
}
