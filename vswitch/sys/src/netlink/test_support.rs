//! Test helpers shared by the netlink modules' tests: throwaway namespaces, polling, and a
//! hand-made attribute encoder independent of [`super::message::Request`].

use std::time::Duration;

use super::message::align4;
use super::{LinkInfo, Netlink};
use crate::netns::NamedNetNs;

/// A fresh namespace with a name unique to this process and test; deleted on drop.
pub(super) fn test_ns() -> NamedNetNs {
    crate::test_support::test_ns("pswnl")
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

pub(super) use crate::test_support::needs_root;

/// One attribute, encoded by hand: header, payload, padding.
pub(super) fn nlattr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize(align4(v.len()), 0);
    v
}
