//! Traffic tools (work in progress).
