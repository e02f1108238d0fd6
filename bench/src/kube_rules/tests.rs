//! Unit tests of the kube-proxy rule layouts, and (as root) loading them into a namespace.

use super::*;
use podswitch_lab::topology::{netns_with_lo, unique_name};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use vswitch::sys::netlink::Netlink;
use vswitch::sys::process::is_root;

const TIMEOUT: Duration = Duration::from_secs(30);

fn count_prefix(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

#[test]
fn synthetic_services_are_deterministic_and_in_range() {
    let a = synthetic_services(300);
    assert_eq!(a, synthetic_services(300));
    assert_eq!(a[0].vip, Ipv4Addr::new(10, 96, 1, 0));
    assert_eq!(a[299].vip, Ipv4Addr::new(10, 96, 2, 43));
    assert_eq!(
        a[0].endpoints,
        vec![(Ipv4Addr::new(10, 244, 0, 1), 8080), (Ipv4Addr::new(10, 244, 0, 2), 8080)]
    );
    assert_eq!(a[125].endpoints[0].0, Ipv4Addr::new(10, 244, 1, 1));
    for s in &a {
        assert_eq!((s.port, s.proto, s.endpoints.len()), (80, Proto::Tcp, 2));
        for (ip, _) in &s.endpoints {
            let o = ip.octets();
            assert!(o[0] == 10 && o[1] == 244 && (1..=250).contains(&o[3]), "{ip}");
        }
    }
    let last = synthetic_services(SYNTHETIC_MAX).pop().unwrap();
    let o = last.endpoints[1].0.octets();
    assert!(o[0] == 10 && (244..=255).contains(&o[1]), "{o:?}");
}

#[test]
fn iptables_layout_counts() {
    let services = synthetic_services(3);
    let text = iptables_restore(&services);
    assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"));
    assert_eq!(count_prefix(&text, ":KUBE-SVC-"), 3);
    assert_eq!(count_prefix(&text, ":KUBE-SEP-"), 6);
    assert_eq!(count_prefix(&text, "-A KUBE-SERVICES "), 3);
    assert_eq!(count_prefix(&text, "-A KUBE-SVC-"), 3 * 3);
    assert_eq!(count_prefix(&text, "-A KUBE-SEP-"), 6 * 2);
    assert_eq!(text.matches("-j DNAT --to-destination ").count(), 6);
    assert_eq!(text.matches("--probability 0.5000000000 ").count(), 3);
    assert_eq!(text.matches("-m statistic").count(), 3);
    for s in &services {
        let svc = s.svc_chain();
        assert_eq!(svc.len(), "KUBE-SVC-".len() + 16);
        let jumps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc} ")) && l.contains("-j KUBE-SEP-"))
            .collect();
        assert_eq!(jumps.len(), 2);
        assert!(jumps[0].contains("--probability 0.5000000000"), "{}", jumps[0]);
        assert!(!jumps[1].contains("statistic"), "{}", jumps[1]);
        let (ip, port) = s.endpoints[1];
        assert!(text.contains(&format!(
            "-A {} -m comment --comment \"{}\" -s {ip}/32 -j KUBE-MARK-MASQ\n",
            s.sep_chain(s.endpoints[1]),
            s.display_name()
        )));
        assert!(text.contains(&format!("-j DNAT --to-destination {ip}:{port}\n")));
    }
    for jump in ["-A PREROUTING ", "-A OUTPUT ", "-A POSTROUTING "] {
        assert_eq!(count_prefix(&text, jump), 1, "{jump}");
    }
    assert!(text.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n"));
    assert!(text.contains("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n"));
    assert_eq!(text.matches("-j MASQUERADE").count(), 1);
}

#[test]
fn probabilities_follow_kube_proxy() {
    let s = Service {
        vip: Ipv4Addr::new(10, 96, 0, 10),
        port: 53,
        proto: Proto::Udp,
        endpoints: (1..=4).map(|i| (Ipv4Addr::new(10, 244, 9, i), 53)).collect(),
    };
    let text = iptables_restore(std::slice::from_ref(&s));
    let probs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("--probability ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap())
        .collect();
    assert_eq!(probs, ["0.2500000000", "0.3333333333", "0.5000000000"]);
    assert!(text.contains("-m udp -p udp -d 10.96.0.10 --dport 53"));
    assert!(nft_ruleset(&[s]).contains("numgen random mod 4 vmap { 0 : goto endpoint-"));
}

#[test]
fn names_are_deterministic_and_distinct() {
    let a = synthetic_services(50);
    let b = synthetic_services(50);
    assert_eq!(iptables_restore(&a), iptables_restore(&b));
    assert_eq!(nft_ruleset(&a), nft_ruleset(&b));
    let mut names: Vec<String> = a
        .iter()
        .flat_map(|s| {
            std::iter::once(s.svc_chain()).chain(s.endpoints.iter().map(|&e| s.sep_chain(e)))
        })
        .collect();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total);
    assert_eq!(hash16("x"), hash16("x"));
    assert!(hash16("x").chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
}

#[test]
fn iptables_add_one_touches_only_new_chains() {
    let services = synthetic_services(4);
    let new = &services[3];
    let text = iptables_add_one(new);
    let full = iptables_restore(&services[..3]);
    assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"));
    let mut own = vec![new.svc_chain()];
    own.extend(new.endpoints.iter().map(|&e| new.sep_chain(e)));
    let declared: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(declared, own);
    for chain in &own {
        assert!(!full.contains(chain.as_str()), "{chain} already in the full ruleset");
    }
    for line in text.lines().filter(|l| l.starts_with("-A ")) {
        let chain = line.split(' ').nth(1).unwrap();
        assert!(chain == "KUBE-SERVICES" || own.iter().any(|c| c == chain), "{line}");
    }
    assert_eq!(count_prefix(&text, "-A KUBE-SERVICES "), 1);
    assert!(!text.contains(":KUBE-SERVICES"), "would flush KUBE-SERVICES");
}

#[test]
fn nft_layout_counts() {
    let services = synthetic_services(3);
    let text = nft_ruleset(&services);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["add table ip kube-proxy", "delete table ip kube-proxy"]);
    assert_eq!(text.matches("add chain ip kube-proxy service-").count(), 3);
    assert_eq!(text.matches("add chain ip kube-proxy endpoint-").count(), 6);
    assert_eq!(text.matches("add element ip kube-proxy service-ips ").count(), 3);
    assert_eq!(text.matches("numgen random mod 2 vmap").count(), 3);
    assert_eq!(text.matches(" dnat to 10.244.").count(), 6);
    assert!(text.contains("ip daddr . meta l4proto . th dport vmap @service-ips"));
    assert!(text.contains("hook prerouting priority dstnat"));
    assert!(text.contains("hook output priority -100"));
    assert!(text.contains("hook postrouting priority srcnat"));
    for s in &services {
        let svc = s.nft_service_chain();
        let first_use = text.find(&format!(" {svc} ")).unwrap();
        for &ep in &s.endpoints {
            let decl =
                text.find(&format!("add chain ip kube-proxy {}\n", s.nft_endpoint_chain(ep)));
            assert!(decl.unwrap() < first_use, "endpoint chain after its service chain");
        }
    }
}

#[test]
fn nft_add_one_touches_only_new_chains() {
    let services = synthetic_services(4);
    let new = &services[3];
    let text = nft_add_one(new);
    let full = nft_ruleset(&services[..3]);
    assert!(!text.contains("table ip kube-proxy\n") && !text.contains("delete"));
    let mut own = vec![new.nft_service_chain()];
    own.extend(new.endpoints.iter().map(|&e| new.nft_endpoint_chain(e)));
    for chain in &own {
        assert!(!full.contains(chain.as_str()));
    }
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words[1] {
            "chain" | "rule" => assert!(own.iter().any(|c| c == words[4]), "{line}"),
            "element" => assert_eq!(words[4], "service-ips"),
            other => panic!("unexpected command {other} in {line}"),
        }
    }
    assert_eq!(text.matches("add element ").count(), 1);
    assert_eq!(text.matches("add chain ").count(), 3);
}

/// Skips (returning false) unless root with all three tools.
fn privileged(test: &str) -> bool {
    if !is_root() {
        println!("{test}: skipped (needs root)");
        return false;
    }
    for tool in Tool::ALL {
        if let Err(e) = tool.available() {
            println!("{test}: skipped ({e})");
            return false;
        }
    }
    true
}

#[test]
fn nft_syntax_checks() {
    if !privileged("nft_syntax_checks") {
        return;
    }
    let ns = netns_with_lo(&unique_name("pswkr")).unwrap();
    let dir = ScratchDir::new("kube-rules-check").unwrap();
    let file = dir.path().join("rules");
    std::fs::write(&file, nft_ruleset(&synthetic_services(5))).unwrap();
    let file = file.to_string_lossy().into_owned();
    run_in(&ns, "nft", &["-c", "-f", &file], None, dir.path(), TIMEOUT).unwrap();
}

#[test]
fn refuses_the_root_namespace() {
    if !privileged("refuses_the_root_namespace") {
        return;
    }
    let own = NetNs::open("/proc/self/ns/net").unwrap();
    for tool in Tool::ALL {
        let e = load(&own, tool, &synthetic_services(1), TIMEOUT).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    }
}

#[test]
fn timeout_kills_the_tool() {
    if !privileged("timeout_kills_the_tool") {
        return;
    }
    let ns = netns_with_lo(&unique_name("pswkr")).unwrap();
    let dir = ScratchDir::new("kube-rules-timeout").unwrap();
    let started = Instant::now();
    let e = run_in(&ns, "sleep", &["5"], None, dir.path(), Duration::from_millis(100)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("sleep"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn load_and_add_one_per_tool() {
    if !privileged("load_and_add_one_per_tool") {
        return;
    }
    let services = synthetic_services(101);
    let (base, extra) = services.split_at(100);
    for tool in Tool::ALL {
        let ns = netns_with_lo(&unique_name("pswkr")).unwrap();
        let loaded = load(&ns, tool, base, TIMEOUT).unwrap();
        assert_eq!(loaded_services(&ns, tool, TIMEOUT).unwrap(), 100, "{}", tool.label());
        let reloaded = load(&ns, tool, base, TIMEOUT).unwrap();
        assert_eq!(loaded_services(&ns, tool, TIMEOUT).unwrap(), 100, "{}", tool.label());
        let added = add_one(&ns, tool, &extra[0], TIMEOUT).unwrap();
        assert_eq!(loaded_services(&ns, tool, TIMEOUT).unwrap(), 101, "{}", tool.label());
        println!(
            "{:<16} load 100 services: {:>8.2?}  reload: {:>8.2?}  add one: {:>8.2?}",
            tool.label(),
            loaded,
            reloaded,
            added
        );
    }
}

/// Connects to `vip` repeatedly from inside `ns`, where both endpoints are local
/// addresses with a listener on the target port, and returns the endpoint address each
/// accepted connection arrived on.
fn connect_through(ns: &NetNs, s: &Service, tries: usize) -> Vec<Ipv4Addr> {
    let listener = ns
        .run(|| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SYNTHETIC_TARGET_PORT)))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let to = SocketAddr::V4(SocketAddrV4::new(s.vip, s.port));
    let mut seen = Vec::new();
    for _ in 0..tries {
        let _client =
            ns.run(|| TcpStream::connect_timeout(&to, Duration::from_secs(2))).unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let accepted = loop {
            match listener.accept() {
                Ok((a, _)) => break a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        match accepted.local_addr().unwrap() {
            SocketAddr::V4(a) => {
                assert_eq!(a.port(), SYNTHETIC_TARGET_PORT);
                seen.push(*a.ip());
            }
            other => panic!("accepted on {other}"),
        }
        let both = s.endpoints.iter().all(|(ip, _)| seen.contains(ip));
        if both {
            break;
        }
    }
    seen
}

#[test]
fn dnat_reaches_both_endpoints() {
    if !privileged("dnat_reaches_both_endpoints") {
        return;
    }
    let services = synthetic_services(3);
    let target = &services[1];
    for tool in Tool::ALL {
        let ns = netns_with_lo(&unique_name("pswkr")).unwrap();
        let mut nl = Netlink::open_in(&ns).unwrap();
        let lo = nl.link_get("lo").unwrap().unwrap().index;
        for &(ip, _) in &target.endpoints {
            nl.addr_add(lo, ip, 32).unwrap();
        }
        nl.route_add(Ipv4Addr::new(10, 96, 0, 0), 12, None, lo).unwrap();
        let to = SocketAddr::V4(SocketAddrV4::new(target.vip, target.port));
        let before = ns.run(|| TcpStream::connect_timeout(&to, Duration::from_millis(300)));
        assert!(before.unwrap().is_err(), "{} answers before any rules", target.vip);
        load(&ns, tool, &services, TIMEOUT).unwrap();
        let seen = connect_through(&ns, target, 64);
        for addr in &seen {
            assert!(target.endpoints.iter().any(|(ip, _)| ip == addr), "{addr}");
        }
        for (ip, _) in &target.endpoints {
            assert!(seen.contains(ip), "{}: {ip} never chosen in {seen:?}", tool.label());
        }
        println!("{}: {} connections through {}", tool.label(), seen.len(), target.vip);
    }
}
