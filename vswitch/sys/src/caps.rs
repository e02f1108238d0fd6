//! Capabilities: the daemon gives up, once its privileged start-up is done, every
//! capability it does not use while running ([`RUNNING`]), from its effective, permitted,
//! inheritable, ambient and bounding sets, and sets `PR_SET_NO_NEW_PRIVS`, so neither a bug
//! in the switch nor anything it could be tricked into executing holds the rest.
//!
//! Capabilities belong to a *thread*: `capset(2)` and `PR_CAPBSET_DROP` change only the
//! caller's, and threads inherit the sets of the thread that spawned them. So
//! [`drop_all_but`] must run while the process still has a single thread, before the
//! workers, the control server and the DNS responder are spawned; everything they do after
//! that is done with [`RUNNING`] only.

use std::io;

/// `CAP_NET_BIND_SERVICE`.
pub const CAP_NET_BIND_SERVICE: u32 = 10;
/// `CAP_NET_ADMIN`.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_NET_RAW`.
pub const CAP_NET_RAW: u32 = 13;
/// `CAP_IPC_LOCK`.
pub const CAP_IPC_LOCK: u32 = 14;
/// `CAP_SYS_ADMIN`.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_BPF` (Linux 5.8).
pub const CAP_BPF: u32 = 39;

/// What the running switch uses, each for what the code calls (see docs/security.md):
/// - `CAP_NET_ADMIN`: rtnetlink (links, addresses, routes, moving devices between
///   namespaces), `TUNSETIFF` and the TAP offload ioctls, ethtool, attaching XDP programs
///   (`bpf_link_create`), the pods' sysctls;
/// - `CAP_NET_RAW`: AF_XDP sockets, the AF_PACKET socket that watches an AF_XDP port's
///   host end, the overlay's raw IPv4 socket;
/// - `CAP_SYS_ADMIN`: `setns(2)` into a pod's network namespace (every `port add`), which
///   nothing narrower allows;
/// - `CAP_BPF`: creating the XSKMAP and loading the XDP programs of AF_XDP ports (also
///   allowed by `CAP_SYS_ADMIN`; kept so the need is explicit);
/// - `CAP_IPC_LOCK`: the AF_XDP UMEM is locked memory (charged to `RLIMIT_MEMLOCK`
///   without it);
/// - `CAP_NET_BIND_SERVICE`: the DNS responder's port 53, bound when it starts.
pub const RUNNING: &[u32] =
    &[CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK, CAP_SYS_ADMIN, CAP_BPF];

const CAP_SETPCAP: u32 = 8;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted) sets as bit masks.
fn get() -> io::Result<(u64, u64)> {
    let mut h = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let mut d = [CapData::default(); 2];
    // SAFETY: `h` is a valid header and `d` has room for the two words version 3 writes;
    // both outlive the call.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    Ok((join(d[0].effective, d[1].effective), join(d[0].permitted, d[1].permitted)))
}

fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, &c| m | 1 << c)
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

/// Sets `PR_SET_NO_NEW_PRIVS`, clears the ambient set, drops from the bounding set every
/// capability not in `keep`, and leaves `keep` (as far as the thread had them) as the
/// effective and permitted sets, with an empty inheritable set. Returns the capabilities
/// kept, as a mask. Call while the process has one thread (see the module doc).
pub fn drop_all_but(keep: &[u32]) -> io::Result<u64> {
    let check = |r: libc::c_int, what: &str| {
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        Ok(())
    };
    // SAFETY: prctl with integer arguments only; no memory is passed.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, "PR_SET_NO_NEW_PRIVS")?;
    // SAFETY: as above. EINVAL before Linux 4.3 (no ambient set): nothing to clear.
    let r = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        check(r, "PR_CAP_AMBIENT_CLEAR_ALL")?;
    }
    let keep = mask(keep);
    let (effective, permitted) = get()?;
    if effective & 1 << CAP_SETPCAP != 0 {
        for cap in (0..=last_cap()).filter(|c| keep & 1 << c == 0) {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            check(r, &format!("PR_CAPBSET_DROP {cap}"))?;
        }
    }
    let kept = permitted & keep;
    let mut h = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let d = [
        CapData { effective: kept as u32, permitted: kept as u32, inheritable: 0 },
        CapData { effective: (kept >> 32) as u32, permitted: (kept >> 32) as u32, inheritable: 0 },
    ];
    // SAFETY: `h` is a valid header and `d` the two words version 3 reads; both outlive
    // the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) } as libc::c_int, "capset")?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_the_running_set() {
        assert_eq!(mask(&[0, 12, 39]), 1 | 1 << 12 | 1 << 39);
        let running = mask(RUNNING);
        assert_eq!(running.count_ones(), 6);
        assert_eq!(running & 1 << CAP_SETPCAP, 0);
        assert!(last_cap() >= CAP_BPF);
    }

    #[test]
    fn a_thread_drops_its_own_capabilities_only() {
        let (_, before) = get().unwrap();
        let t = std::thread::spawn(|| {
            let kept = drop_all_but(&[CAP_NET_ADMIN]).unwrap();
            (kept, get().unwrap())
        });
        let (kept, (eff, perm)) = t.join().unwrap();
        assert_eq!(kept, before & 1 << CAP_NET_ADMIN);
        assert_eq!((eff, perm), (kept, kept));
        // This thread kept its own.
        assert_eq!(get().unwrap().1, before);
    }
}
