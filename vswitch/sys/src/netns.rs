//! Network namespaces: open one by name or path, run code inside one, create and delete
//! named ones the way `ip netns` does (a bind mount of the namespace at `/run/netns/NAME`),
//! so everything podswitch creates can be inspected with `ip netns exec`.
//!
//! The invariant to keep in mind: a namespace is a property of a *thread*. `setns` here only
//! ever runs on a thread that was spawned for the purpose ([`NetNs::run`], [`NetNs::spawn`]),
//! never on a caller's thread, so no caller silently changes namespace. Sockets, netlink
//! handles and TAP devices created on such a thread stay in that namespace for their whole
//! life, and child processes spawned from it start in it.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where named namespaces are mounted (the iproute2 convention).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// `NSFS_MAGIC` from `<linux/magic.h>`: the file system namespace files live on.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// An open handle on a network namespace.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    path: PathBuf,
}

impl NetNs {
    /// Opens a namespace by name (looked up in [`NETNS_RUN_DIR`], as `ip netns` names it) or
    /// by path (anything containing a `/`, such as `/proc/1234/ns/net` or a CNI `CNI_NETNS`).
    pub fn open(spec: &str) -> io::Result<NetNs> {
        if spec.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty namespace name"));
        }
        let path = if spec.contains('/') {
            PathBuf::from(spec)
        } else {
            Path::new(NETNS_RUN_DIR).join(spec)
        };
        // O_NONBLOCK: opening a FIFO put where a namespace was expected returns at once
        // instead of waiting for a writer (the check below then refuses it).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open network namespace {}: {e}", path.display()),
                )
            })?;
        let fd = OwnedFd::from(file);
        // SAFETY: `statfs` is a plain C struct for which all-zero bytes are valid.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatfs writes at most size_of::<statfs>() bytes into `st`, which is valid
        // for writes, and only reads the fd, valid and owned by `fd` for the call.
        let r = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
        let on_nsfs = r == 0 && st.f_type as i64 == NSFS_MAGIC;
        if !on_nsfs {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a network namespace", path.display()),
            ));
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which is valid and
        // owned by `fd` for the duration of the call.
        let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a network namespace", path.display()),
            ));
        }
        Ok(NetNs { fd, path })
    }

    /// [`NetNs::open`] for a pod's namespace, given by a pod's runtime or an API client:
    /// also refuses a relative path (it would depend on the daemon's working directory)
    /// and the switch's own network namespace (a "pod" there would take over the node's
    /// own interfaces and routes). Never blocks: a FIFO, a directory, a regular file or
    /// any other file that is not a network namespace is refused after a non-blocking
    /// open. Errors say what was wrong with `spec`; `NotFound` if nothing is there.
    pub fn open_pod(spec: &str) -> io::Result<NetNs> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if spec.contains('/') {
            if !spec.starts_with('/') {
                return Err(invalid(format!(
                    "{spec:?} is a relative path: give an absolute path or a name in {NETNS_RUN_DIR}"
                )));
            }
        } else {
            validate_name(spec)?;
        }
        let ns = NetNs::open(spec)?;
        let own = NetNs::open("/proc/self/ns/net")?;
        if ns.identity()? == own.identity()? {
            return Err(invalid(format!(
                "{} is the switch's own network namespace, not a pod's",
                ns.path.display()
            )));
        }
        Ok(ns)
    }

    /// The namespace's identity: the device and inode of its nsfs file.
    fn identity(&self) -> io::Result<(u64, u64)> {
        let m = File::from(self.fd.try_clone()?).metadata()?;
        Ok((m.dev(), m.ino()))
    }

    /// The namespace of the calling thread.
    pub fn current() -> io::Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the *calling* thread into this namespace. Only for threads dedicated to it (see
    /// the module doc); prefer [`NetNs::run`] or [`NetNs::spawn`].
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: setns only reads the fd, which stays valid while `self` is borrowed.
        let rc = unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot enter network namespace {}: {e}", self.path.display()),
            ));
        }
        Ok(())
    }

    /// Runs `f` on a short-lived thread inside this namespace and returns its result. A panic
    /// in `f` is propagated to the caller.
    pub fn run<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|s| {
            let handle = s.spawn(|| -> io::Result<R> {
                self.enter()?;
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Spawns a long-lived named thread that runs `f` inside this namespace. Returns once the
    /// thread has entered it, so a failure to enter is reported here rather than inside `f`.
    pub fn spawn<F, R>(&self, name: &str, f: F) -> io::Result<std::thread::JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let fd = self.fd.try_clone()?;
        let path = self.path.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let handle = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            let ns = NetNs { fd, path };
            match ns.enter() {
                Ok(()) => {
                    let _ = tx.send(Ok(()));
                    drop(ns);
                    f()
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    // The thread must not run `f` outside the namespace; park the result type
                    // by unwinding with a message the join will carry.
                    panic!("thread did not enter its network namespace");
                }
            }
        })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(io::Error::other("namespace thread exited before entering")),
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A named namespace created by podswitch (`ip netns add` equivalent) and deleted when
/// dropped, unless [`NamedNetNs::keep`] was called.
#[derive(Debug)]
pub struct NamedNetNs {
    ns: NetNs,
    name: String,
    delete_on_drop: bool,
}

impl NamedNetNs {
    /// Creates `/run/netns/NAME` holding a new, empty network namespace (only `lo`, down).
    /// Fails with `AlreadyExists` when the name is taken.
    pub fn create(name: &str) -> io::Result<NamedNetNs> {
        validate_name(name)?;
        std::fs::create_dir_all(NETNS_RUN_DIR)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
        })?;
        let mounted = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<()> {
                // SAFETY: unshare affects only this (scoped, about to exit) thread.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                bind_mount(Path::new("/proc/thread-self/ns/net"), &path)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace creation thread panicked")))
        });
        if let Err(e) = mounted {
            let _ = std::fs::remove_file(&path);
            return Err(io::Error::new(e.kind(), format!("cannot create namespace {name}: {e}")));
        }
        match NetNs::open(name) {
            Ok(ns) => Ok(NamedNetNs { ns, name: name.to_string(), delete_on_drop: true }),
            Err(e) => {
                let _ = delete_named(name);
                Err(e)
            }
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the namespace in place when this handle is dropped.
    pub fn keep(mut self) -> NetNs {
        self.delete_on_drop = false;
        let fd = self.ns.fd.try_clone().expect("dup of a namespace fd");
        NetNs { fd, path: self.ns.path.clone() }
    }
}

impl std::ops::Deref for NamedNetNs {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        &self.ns
    }
}

impl Drop for NamedNetNs {
    fn drop(&mut self) {
        if self.delete_on_drop {
            let _ = delete_named(&self.name);
        }
    }
}

/// Deletes a named namespace (`ip netns del`): unmounts and removes `/run/netns/NAME`. The
/// namespace itself disappears once no process, thread or fd holds it any more.
pub fn delete_named(name: &str) -> io::Result<()> {
    validate_name(name)?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    let umount_err = (rc != 0).then(io::Error::last_os_error);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match umount_err {
            Some(u) => Err(u),
            None => Ok(()),
        },
        Err(e) => Err(e),
    }
}

/// Lists the names in [`NETNS_RUN_DIR`].
pub fn list_named() -> io::Result<Vec<String>> {
    match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => {
            let mut names: Vec<String> = dir
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn validate_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid namespace name {name:?}: use 1-64 of [A-Za-z0-9._-]"),
        ))
    }
}

fn bind_mount(src: &Path, dst: &Path) -> io::Result<()> {
    let src = CString::new(src.as_os_str().as_bytes())?;
    let dst = CString::new(dst.as_os_str().as_bytes())?;
    let fstype = c"none";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; `data` is
    // allowed to be null for a bind mount.
    let rc = unsafe {
        libc::mount(src.as_ptr(), dst.as_ptr(), fstype.as_ptr(), libc::MS_BIND, std::ptr::null())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<tag>-<pid>-<n>` (for namespaces and files).
pub fn unique_name(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Creates a named namespace with `lo` up (deleted when the guard drops).
pub fn netns_with_lo(name: &str) -> io::Result<NamedNetNs> {
    let ns = NamedNetNs::create(name)?;
    let mut nl = crate::netlink::Netlink::open_in(&ns)?;
    let lo = nl
        .link_get("lo")?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no lo in a new namespace"))?;
    nl.link_set_up(lo.index, true)?;
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::needs_root;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("pod-1.a_b").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn open_rejects_non_namespaces() {
        let e = NetNs::open("/proc/self/status").unwrap_err();
        assert!(e.to_string().contains("not a network namespace"), "{e}");
        let e = NetNs::open("definitely-not-a-namespace-xyz").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn pod_namespaces_are_checked_without_blocking() {
        let e = NetNs::open_pod("run/netns/x").unwrap_err();
        assert!(e.to_string().contains("relative path"), "{e}");
        let e = NetNs::open_pod("./x").unwrap_err();
        assert!(e.to_string().contains("relative path"), "{e}");
        assert!(NetNs::open_pod("..").is_err());
        let dir = std::env::temp_dir().join(format!("pswns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let fifo = dir.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Nobody writes to the FIFO: a blocking open would hang this test.
        for p in [&dir, &file, &fifo] {
            let e = NetNs::open_pod(p.to_str().unwrap()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{}: {e}", p.display());
            assert!(e.to_string().contains("not a network namespace"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let e = NetNs::open_pod("/proc/self/ns/net").unwrap_err();
        assert!(e.to_string().contains("own network namespace"), "{e}");
        let e = NetNs::open_pod("/proc/self/ns/mnt").unwrap_err();
        assert!(e.to_string().contains("not a network namespace"), "{e}");
    }

    #[test]
    fn create_run_and_delete() {
        needs_root!();
        let name = format!("pswut-{}", std::process::id());
        let outer = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        {
            let ns = NamedNetNs::create(&name).unwrap();
            assert_eq!(NamedNetNs::create(&name).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
            let inner = ns.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap()).unwrap();
            assert_ne!(inner, outer);
            // The caller's thread is untouched.
            assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), outer);
            let again = NetNs::open_pod(&name).unwrap();
            let via_open =
                again.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap()).unwrap();
            assert_eq!(via_open, inner);
            let h =
                ns.spawn("t", || std::fs::read_link("/proc/thread-self/ns/net").unwrap()).unwrap();
            assert_eq!(h.join().unwrap(), inner);
            assert!(list_named().unwrap().contains(&name));
        }
        assert!(!Path::new(NETNS_RUN_DIR).join(&name).exists());
    }
}
