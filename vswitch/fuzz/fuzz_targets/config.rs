//! The node configuration file (`config.rs`): any text through `Config::parse`, as
//! `podswitch run` and `check-config` read it. A file that is accepted must render back with
//! `Config::to_toml` to text that parses to the same configuration, and its Services and
//! conntrack settings must make a pipeline (with its limits capped, so a huge
//! `max_entries` costs the fuzzer no memory).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(text) else { return };
    let again = config.to_toml();
    match Config::parse(&again) {
        Ok(back) => assert_eq!(back, config, "to_toml round trip:\n{again}"),
        Err(e) => panic!("to_toml wrote what parse refuses: {e}\n{again}"),
    }
    let _ = vswitch::pipeline::conntrack_config(&config.conntrack);
    if let Some(dns) = &config.dns {
        let _ = vswitch::dns::NameTable::from_services(&[], &dns.cluster_domain)
            .expect("an accepted cluster domain builds a name table");
    }
    let mut small = config;
    small.conntrack.max_entries = small.conntrack.max_entries.min(1024);
    small.fdb.max_entries = small.fdb.max_entries.min(1024);
    small.services.max_services = small.services.max_services.min(1024);
    small.ports.max_ports = small.ports.max_ports.min(64);
    if let Some(o) = &mut small.overlay {
        o.max_peers = o.max_peers.min(64);
    }
    let _ = vswitch::pipeline::Pipeline::new(&small);
});
