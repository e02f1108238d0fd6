//! Helpers for this crate's own tests: the one root check they skip on, and throwaway
//! network namespaces with unique names (so tests run in parallel and leave nothing behind).

use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::NamedNetNs;

/// Returns from the test, saying so, unless running as root.
macro_rules! needs_root {
    () => {
        if !$crate::process::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}
pub(crate) use needs_root;

/// A fresh namespace named `<tag>-<pid>-<n>`, untouched (`lo` down); deleted on drop.
pub(crate) fn test_ns(tag: &str) -> NamedNetNs {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    NamedNetNs::create(&format!("{tag}-{}-{n}", std::process::id())).unwrap()
}
