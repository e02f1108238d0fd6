//! The whole pipeline with state: a node with Services, tracked connections (both
//! directions, NAT, hairpin, NodePort), overlay peers, neighbours and two workers' steering,
//! driven by the input as a sequence of frames, template mutations, time and control-plane
//! changes. Everything is `vswitch::pipeline::harness`; this only hands it the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vswitch::pipeline::harness::run_case(data);
});
