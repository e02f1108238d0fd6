//! Helpers for this crate's own tests: the one root check they skip on, and throwaway
//! network namespaces with unique names (so tests run in parallel and leave nothing behind).

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
    NamedNetNs::create(&crate::netns::unique_name(tag)).unwrap()
}
