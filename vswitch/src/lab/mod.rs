//! The self-contained lab (work in progress).
pub mod traffic;
