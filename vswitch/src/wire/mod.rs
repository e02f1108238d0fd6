//! Zero-copy packet views (work in progress).
