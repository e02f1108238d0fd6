//! TAP devices: creating the kernel's TAP interface for a pod port, and the per-device
//! ioctls on its file descriptor (offloads, virtio-net header size). Also the one place that
//! knows the kernel's rules for interface names ([`validate_ifname`]), which the rtnetlink
//! client shares.
//!
//! A TAP device is an Ethernet interface whose "wire" is a file descriptor: every frame the
//! kernel transmits on it can be read from the fd, and every frame written to the fd is
//! received by the kernel as if it came off the wire. podswitch opens `/dev/net/tun`, binds
//! the fd to a new interface with `TUNSETIFF`, and from then on the fd *is* the port. The
//! devices are never made persistent: the kernel deletes the interface when the last fd on it
//! is closed, so a crashed or stopped switch leaves no stale interfaces behind.
//!
//! The device is created in the network namespace of the *calling thread*; to create one
//! inside a pod's namespace, call [`TapDevice::create`] from [`NetNs::run`]. The fd keeps
//! working from any namespace afterwards, even if the interface is moved to another one
//! (which is how a pod port is built: create here, move into the pod as `eth0`).
//!
//! Packet I/O is not here: [`TapDevice::into_file`] hands the fd to `port/`.
//!
//! [`NetNs::run`]: super::netns::NetNs::run

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// The TUN/TAP clone device.
const TUN_PATH: &str = "/dev/net/tun";

/// `IFNAMSIZ` from `<linux/if.h>`: interface names are at most this long including the NUL.
const IFNAMSIZ: usize = 16;

/// Offload flag for [`TapDevice::set_offload`]: the reader accepts frames with partial
/// checksums (`TUN_F_CSUM` in `<linux/if_tun.h>`). The others require it.
pub const TUN_F_CSUM: u32 = libc::TUN_F_CSUM;
/// Offload flag: the reader accepts TCP-over-IPv4 segmentation offload (TSO) frames.
pub const TUN_F_TSO4: u32 = libc::TUN_F_TSO4;
/// Offload flag: the reader accepts TCP-over-IPv6 segmentation offload frames.
pub const TUN_F_TSO6: u32 = libc::TUN_F_TSO6;
/// Offload flag: the reader accepts TSO frames with the ECN (CWR) bit set.
pub const TUN_F_TSO_ECN: u32 = libc::TUN_F_TSO_ECN;
/// Offload flag: the reader accepts UDP-over-IPv4 segmentation offload (USO) frames.
pub const TUN_F_USO4: u32 = libc::TUN_F_USO4;
/// Offload flag: the reader accepts UDP-over-IPv6 segmentation offload frames.
pub const TUN_F_USO6: u32 = libc::TUN_F_USO6;

/// `struct ifreq` from `<linux/if.h>` as `TUNSETIFF` uses it: the interface name, then
/// `ifr_flags` (a `short`) at the start of the 24-byte union, the rest unused.
#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: u16,
    _unused: [u8; 22],
}

// The kernel copies a whole `struct ifreq` in and out: ours must be exactly that big.
const _: () = assert!(std::mem::size_of::<IfReqFlags>() == std::mem::size_of::<libc::ifreq>());

/// Options for a new TAP device.
#[derive(Debug, Clone, Copy, Default)]
pub struct TapOptions {
    /// Prefix every frame read or written with a `struct virtio_net_hdr` (`IFF_VNET_HDR`),
    /// which carries checksum and segmentation offload metadata.
    pub vnet_hdr: bool,
    /// Create a multi-queue device (`IFF_MULTI_QUEUE`), so more fds can be attached later.
    pub multi_queue: bool,
}

/// A TAP device, owned through its file descriptor: the interface exists as long as this
/// fd (or the [`File`] made from it) is open.
#[derive(Debug)]
pub struct TapDevice {
    fd: OwnedFd,
    name: String,
}

impl TapDevice {
    /// Creates a TAP device named `name` (`IFF_TAP | IFF_NO_PI`, plus `IFF_VNET_HDR` and
    /// `IFF_MULTI_QUEUE` as `opts` says) in the calling thread's network namespace.
    ///
    /// The name is checked with [`validate_ifname`] first (`InvalidInput`). If any network
    /// device of that name already exists in the namespace the call fails with
    /// `AlreadyExists`; it never attaches to an existing device. The fd is non-blocking and
    /// close-on-exec. The device is not persistent: it disappears when the last fd closes.
    pub fn create(name: &str, opts: TapOptions) -> io::Result<TapDevice> {
        TapDevice::open(name, opts, true)
    }

    /// Opens one more queue of the multi-queue TAP device `name`, which exists in the calling
    /// thread's network namespace and was created with [`TapOptions::multi_queue`] and the
    /// same `opts`: the kernel spreads the device's outgoing frames over its queues by flow
    /// (a flow goes to the queue its last incoming frame came from), and any queue may send.
    pub fn open_queue(name: &str, opts: TapOptions) -> io::Result<TapDevice> {
        if !opts.multi_queue {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TAP device {name}: another queue needs multi_queue"),
            ));
        }
        TapDevice::open(name, opts, false)
    }

    /// Creates the device (`exclusive`) or attaches to the existing one.
    fn open(name: &str, opts: TapOptions, exclusive: bool) -> io::Result<TapDevice> {
        validate_ifname(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open {TUN_PATH}: {e}")))?;

        // IFF_TUN_EXCL makes TUNSETIFF fail with EBUSY when the name is taken by any device,
        // instead of attaching to an existing TAP device of that name.
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if exclusive {
            flags |= libc::IFF_TUN_EXCL;
        }
        if opts.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if opts.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let mut req = IfReqFlags { name: [0; IFNAMSIZ], flags: flags as u16, _unused: [0; 22] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());

        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` has its exact size and
        // layout (asserted above) and outlives the call, and `file` is an open fd.
        let rc =
            unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReqFlags) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) => io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "cannot create TAP device {name}: a network device of that name \
                         already exists in this namespace ({e})"
                    ),
                ),
                _ => io::Error::new(
                    e.kind(),
                    format!("cannot create TAP device {name} (TUNSETIFF): {e}"),
                ),
            });
        }
        Ok(TapDevice { fd: OwnedFd::from(file), name: name.to_string() })
    }

    /// The interface name given to the kernel at creation. (Renaming the interface later,
    /// or moving it to another namespace under a new name, does not change this.)
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Turns the device into a [`File`] owning its fd: `read` returns one frame, `write`
    /// sends one frame. The fd is non-blocking, so a read with nothing queued fails with
    /// `WouldBlock`. The device is deleted when the file is closed.
    pub fn into_file(self) -> File {
        File::from(self.fd)
    }

    /// Tells the kernel which offloads the reader of this fd can handle (`TUNSETOFFLOAD`): a
    /// combination of the `TUN_F_*` constants, 0 for none. Needs [`TapOptions::vnet_hdr`]
    /// for anything but 0 to be useful.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value, not as a pointer; the fd is open.
        let rc = unsafe {
            libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETOFFLOAD, libc::c_ulong::from(flags))
        };
        self.checked(rc, format_args!("TUNSETOFFLOAD {flags:#x}"))
    }

    /// Lets the eBPF program `prog_fd` (a socket filter) choose the queue of every frame the
    /// device sends to its readers (`TUNSETSTEERINGEBPF`): the kernel takes its return value
    /// modulo the number of queues. Replaces the default choice (by flow, following the
    /// queue a flow's last incoming frame came from).
    pub fn set_steering_program(&self, prog_fd: RawFd) -> io::Result<()> {
        /// `_IOR('T', 224, int)`.
        const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;
        let fd: libc::c_int = prog_fd;
        // SAFETY: TUNSETSTEERINGEBPF reads one `int` through the pointer, which points at
        // `fd`, alive across the call; the device fd is open.
        let rc = unsafe {
            libc::ioctl(self.fd.as_raw_fd(), TUNSETSTEERINGEBPF, &fd as *const libc::c_int)
        };
        self.checked(rc, "TUNSETSTEERINGEBPF")
    }

    /// Sets the size of the virtio-net header that prefixes each frame
    /// (`TUNSETVNETHDRSZ`): 10 for `struct virtio_net_hdr`, 12 for the `_mrg_rxbuf` variant.
    /// The kernel rejects sizes below 10 with `InvalidInput`.
    pub fn set_vnet_hdr_size(&self, size: i32) -> io::Result<()> {
        let size_arg: libc::c_int = size;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which points at
        // `size_arg`, alive across the call; the fd is open.
        let rc = unsafe {
            libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size_arg as *const libc::c_int)
        };
        self.checked(rc, format_args!("TUNSETVNETHDRSZ {size}"))
    }

    /// The result of an ioctl on this device: `rc` below 0 becomes the OS error, named
    /// with `what` and the device.
    fn checked(&self, rc: libc::c_int, what: impl std::fmt::Display) -> io::Result<()> {
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("{what} on TAP device {}: {e}", self.name),
            ));
        }
        Ok(())
    }
}

impl AsFd for TapDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Checks `name` against the kernel's rules for network interface names (`dev_valid_name`
/// in `net/core/dev.c`): 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace (the
/// kernel's `isspace`, which includes byte 0xA0), no NUL. A `%` is rejected too: the kernel
/// would read it as a template (`tap%d`) and pick a different name than the one asked for.
/// Fails with `InvalidInput` naming the problem.
pub fn validate_ifname(name: &str) -> io::Result<()> {
    let problem = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() >= IFNAMSIZ {
        Some(format!("it is {} bytes long, the kernel allows at most {}", name.len(), IFNAMSIZ - 1))
    } else if name == "." || name == ".." {
        Some("it is reserved".to_string())
    } else if name.contains('/') {
        Some("it contains '/'".to_string())
    } else if name.contains(':') {
        Some("it contains ':'".to_string())
    } else if name.contains('\0') {
        Some("it contains a NUL byte".to_string())
    } else if name.contains('%') {
        Some("it contains '%', which the kernel treats as a name template".to_string())
    } else if name.chars().any(char::is_whitespace) || name.bytes().any(|b| b == 0xa0) {
        Some("it contains whitespace".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}: {p}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Netlink;
    use crate::netns::NamedNetNs;
    use crate::test_support::needs_root;
    use std::io::Read;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh namespace with a name unique to this process and test.
    fn test_ns() -> NamedNetNs {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        NamedNetNs::create(&format!("pswtap-{}-{n}", std::process::id())).unwrap()
    }

    #[test]
    fn names_are_validated() {
        for good in ["eth0", "tap-1.a_b", "x", &"x".repeat(15), "é1"] {
            assert!(validate_ifname(good).is_ok(), "{good:?} rejected");
        }
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (&"x".repeat(16), "16 bytes"),
            ("ééééééé12", "16 bytes"),
            (".", "reserved"),
            ("..", "reserved"),
            ("a/b", "'/'"),
            ("a:0", "':'"),
            ("a\0b", "NUL"),
            ("tap%d", "template"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("a\u{b}b", "whitespace"),
            ("à", "whitespace"), // UTF-8 C3 A0: the kernel's isspace(0xA0)
        ];
        for (bad, why) in cases {
            let e = validate_ifname(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
            assert!(e.to_string().contains("invalid interface name"), "{e}");
        }
        // Bad names are refused before the kernel is asked, root or not.
        let e = TapDevice::create("bad name", TapOptions::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn create_read_and_vanish_on_close() {
        needs_root!();
        let ns = test_ns();
        let file = ns
            .run(|| {
                let tap = TapDevice::create("tap0", TapOptions::default()).unwrap();
                assert_eq!(tap.name(), "tap0");
                // SAFETY: F_GETFD only reads the flags of an fd that `tap` keeps open.
                let fd_flags = unsafe { libc::fcntl(tap.as_fd().as_raw_fd(), libc::F_GETFD) };
                assert!(fd_flags >= 0 && fd_flags & libc::FD_CLOEXEC != 0, "{fd_flags:#x}");
                let mut file = tap.into_file();
                let mut buf = [0u8; 2048];
                let e = file.read(&mut buf).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
                file
            })
            .unwrap();
        // Seen from the namespace: a TAP ("tun" kind), created down.
        let mut nl = Netlink::open_in(&ns).unwrap();
        let link = nl.link_get("tap0").unwrap().expect("tap0 exists");
        assert_eq!(link.kind.as_deref(), Some("tun"));
        assert!(!link.up);
        // The fd, now held on this thread outside the namespace, owns the device: closing it
        // deletes it.
        drop(file);
        assert_eq!(nl.link_get("tap0").unwrap(), None, "tap0 survived its fd");
    }

    #[test]
    fn duplicate_names_fail_clearly() {
        needs_root!();
        let ns = test_ns();
        ns.run(|| {
            let _tap = TapDevice::create("dup0", TapOptions::default()).unwrap();
            let e = TapDevice::create("dup0", TapOptions::default()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
            assert!(e.to_string().contains("dup0") && e.to_string().contains("already exists"));
            // A non-TAP device of that name is no different.
            let e = TapDevice::create("lo", TapOptions::default()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        })
        .unwrap();
    }

    #[test]
    fn vnet_hdr_offloads_and_multi_queue() {
        needs_root!();
        let ns = test_ns();
        ns.run(|| {
            let tap = TapDevice::create("vnet0", TapOptions { vnet_hdr: true, multi_queue: true })
                .unwrap();
            tap.set_vnet_hdr_size(12).unwrap();
            tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN).unwrap();
            tap.set_offload(TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6).unwrap();
            tap.set_offload(0).unwrap();
            let e = tap.set_vnet_hdr_size(4).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("TUNSETVNETHDRSZ 4 on TAP device vnet0"), "{e}");
            let e = tap.set_offload(0x8000_0000).unwrap_err();
            assert!(e.to_string().contains("TUNSETOFFLOAD 0x80000000"), "{e}");
        })
        .unwrap();
    }
}
