//! rtnetlink client (work in progress).
