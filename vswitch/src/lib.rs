//! podswitch: a polling userspace virtual switch for Kubernetes pod networking.
#![deny(unsafe_code)]

pub mod lab;
pub mod packet;
pub mod port;
pub mod stats;
pub mod sys;
pub mod wire;
