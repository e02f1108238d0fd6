//! Test helpers shared by the netlink modules' tests: throwaway namespaces, polling, the
//! root check, and a hand-made attribute encoder independent of [`super::message::Request`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::message::align4;
use super::{LinkInfo, Netlink};
use crate::sys::netns::NamedNetNs;

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh namespace with a name unique to this process and test; deleted on drop.
pub(super) fn test_ns() -> NamedNetNs {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    NamedNetNs::create(&format!("pswnl-{}-{n}", std::process::id())).unwrap()
}

pub(super) fn link(nl: &mut Netlink, name: &str) -> LinkInfo {
    nl.link_get(name).unwrap().unwrap_or_else(|| panic!("no link {name}"))
}

/// Polls `f` for up to two seconds (carrier changes are propagated asynchronously).
pub(super) fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Returns from the test, saying so, unless running as root.
macro_rules! needs_root {
    () => {
        if !$crate::sys::netlink::test_support::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}
pub(super) use needs_root;

/// One attribute, encoded by hand: header, payload, padding.
pub(super) fn nlattr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize(align4(v.len()), 0);
    v
}
