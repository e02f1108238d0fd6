//! Loading programs: [`XdpProgram`], [`SocketFilterProgram`] and [`SchedClsProgram`], each
//! an fd owning a verified program, with the verifier's log in the error when it refuses
//! one; test runs (`BPF_PROG_TEST_RUN`); and [`prog_loaded`], whether a program id still
//! exists. Attaching them is `super::link`'s.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::insn::Insn;
use super::syscall::*;

/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_PROG_TYPE_SOCKET_FILTER` (also what a TUN device's steering program is).
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_SCHED_CLS`: a tc classifier (what tcx runs).
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// Verifier log buffer used when a load fails (the log of a rejected small program fits).
const VERIFIER_LOG_LEN: usize = 256 * 1024;

/// `union bpf_attr` for `BPF_PROG_LOAD` (up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; BPF_OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const _: () = assert!(size_of::<ProgLoadAttr>() == 72);

/// `union bpf_attr` for `BPF_PROG_TEST_RUN` (up to `duration`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
}

/// `union bpf_attr` for `BPF_PROG_GET_FD_BY_ID`.
#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The head of `struct bpf_prog_info`: type, id, tag.
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
}

/// A loaded XDP program, unloaded when this fd and every attachment are gone.
#[derive(Debug)]
pub struct XdpProgram {
    fd: OwnedFd,
}

impl XdpProgram {
    /// Loads an XDP program (licence "GPL"). On verifier rejection the error message carries
    /// the verifier log.
    pub fn load(name: &str, insns: &[Insn]) -> io::Result<XdpProgram> {
        load_program(BPF_PROG_TYPE_XDP, BPF_XDP, "xdp", name, insns).map(|fd| XdpProgram { fd })
    }

    /// The program's fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The program's kernel-wide id (what `ip link` shows as `prog/xdp id N`).
    pub fn id(&self) -> io::Result<u32> {
        let mut info = ProgInfoHead::default();
        obj_info(self.fd.as_raw_fd(), &mut info).map_err(|e| context(e, "BPF_OBJ_GET_INFO"))?;
        Ok(info.id)
    }
}

/// A loaded socket-filter program (a TUN device's queue-steering program is one), unloaded
/// when this fd and every attachment are gone.
#[derive(Debug)]
pub struct SocketFilterProgram {
    fd: OwnedFd,
}

impl SocketFilterProgram {
    /// Loads a socket-filter program (licence "GPL"); a verifier rejection carries the log.
    pub fn load(name: &str, insns: &[Insn]) -> io::Result<SocketFilterProgram> {
        load_program(BPF_PROG_TYPE_SOCKET_FILTER, 0, "socket filter", name, insns)
            .map(|fd| SocketFilterProgram { fd })
    }

    /// Runs the program once on `packet` (`BPF_PROG_TEST_RUN`) and returns what it returned.
    /// The kernel treats the first 14 bytes as an Ethernet header and starts the program's
    /// packet after them.
    pub fn test_run(&self, packet: &[u8]) -> io::Result<u32> {
        test_run(self.fd.as_raw_fd(), packet, None)
    }

    /// The program's fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A loaded tc classifier (`BPF_PROG_TYPE_SCHED_CLS`), attached with [`TcxLink`](super::TcxLink); unloaded
/// when this fd and every attachment are gone.
#[derive(Debug)]
pub struct SchedClsProgram {
    fd: OwnedFd,
}

impl SchedClsProgram {
    /// Loads a tc classifier (licence "GPL"); a verifier rejection carries the log.
    pub fn load(name: &str, insns: &[Insn]) -> io::Result<SchedClsProgram> {
        load_program(BPF_PROG_TYPE_SCHED_CLS, 0, "tc classifier", name, insns)
            .map(|fd| SchedClsProgram { fd })
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`, the program's packet starts
    /// at the Ethernet header) and returns what it returned.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        test_run(self.fd.as_raw_fd(), frame, None)
    }

    /// The program's fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The program's kernel-wide id.
    pub fn id(&self) -> io::Result<u32> {
        let mut info = ProgInfoHead::default();
        obj_info(self.fd.as_raw_fd(), &mut info).map_err(|e| context(e, "BPF_OBJ_GET_INFO"))?;
        Ok(info.id)
    }
}

/// `BPF_PROG_TEST_RUN` of program `fd` on `packet`, with `ctx` (a `struct __sk_buff` head)
/// passed in and read back when given. Returns the program's return value.
fn test_run(fd: RawFd, packet: &[u8], ctx: Option<&mut [u8]>) -> io::Result<u32> {
    let (ctx_ptr, ctx_len) = match ctx {
        Some(c) => (c.as_mut_ptr() as u64, c.len() as u32),
        None => (0, 0),
    };
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat: 1,
        ctx_size_in: ctx_len,
        ctx_size_out: ctx_len,
        ctx_in: ctx_ptr,
        ctx_out: ctx_ptr,
        ..Default::default()
    };
    // SAFETY: the kernel reads data_size_in bytes at data_in (the borrowed slice), and reads
    // then writes at most ctx_size bytes at ctx (an exclusively borrowed slice of that
    // length); data_out is null.
    unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) }
        .map_err(|e| context(e, "BPF_PROG_TEST_RUN"))?;
    Ok(attr.retval)
}

/// Loads a program of `prog_type`; on verifier rejection loads it again with a log, whose
/// text the error then carries.
fn load_program(
    prog_type: u32,
    attach: u32,
    what: &str,
    name: &str,
    insns: &[Insn],
) -> io::Result<OwnedFd> {
    {
        match load_with_log(prog_type, attach, what, name, insns, None) {
            Ok(p) => Ok(p),
            Err(e) => {
                // Load again with a log: the failure path pays for the verifier's text.
                let mut log = vec![0u8; VERIFIER_LOG_LEN];
                let again = load_with_log(prog_type, attach, what, name, insns, Some(&mut log));
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let text = text.trim();
                match again {
                    Ok(p) => Ok(p),
                    Err(_) if text.is_empty() => Err(e),
                    Err(_) => Err(io::Error::new(e.kind(), format!("{e}; verifier log:\n{text}"))),
                }
            }
        }
    }
}

fn load_with_log(
    prog_type: u32,
    attach: u32,
    what: &str,
    name: &str,
    insns: &[Insn],
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    {
        const LICENSE: &[u8] = b"GPL\0";
        let (log_level, log_size, log_buf) = match log {
            Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level,
            log_size,
            log_buf,
            prog_name: obj_name(name),
            expected_attach_type: attach,
            ..Default::default()
        };
        // SAFETY: the kernel reads insn_cnt instructions at `insns` (the slice's length), the
        // NUL-terminated licence, and writes at most log_size bytes into the log buffer, all
        // of which are borrowed for the duration of the call.
        let fd = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) }.map_err(|e| {
            context(e, format_args!("BPF_PROG_LOAD {what} {name} ({} insns)", insns.len()))
        })?;
        Ok(owned(fd))
    }
}

/// True while a program with kernel-wide id `id` exists (loaded and held by an fd, a link or
/// an attachment). Programs are freed after an RCU grace period, so a program whose last
/// holder just went may be reported for a moment longer.
pub fn prog_loaded(id: u32) -> io::Result<bool> {
    let mut attr = GetFdByIdAttr { id, ..Default::default() };
    // SAFETY: GET_FD_BY_ID reads only the attr itself, which holds no pointers.
    match unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) } {
        Ok(fd) => {
            drop(owned(fd));
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(context(e, format_args!("BPF_PROG_GET_FD_BY_ID {id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::needs_root;

    #[test]
    fn a_rejected_program_reports_the_verifier_log() {
        needs_root!();
        // Returns without setting r0: the verifier refuses to read an uninitialised register.
        let e = XdpProgram::load("psw_bad", &[Insn::exit()]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("verifier log"), "{msg}");
        assert!(msg.contains("R0 !read_ok"), "{msg}");
    }
}
