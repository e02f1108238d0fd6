//! kube-proxy-style Service rules for the kernel peer of the benchmarks, and the time it takes
//! to load them.
//!
//! A fair comparison with a Kubernetes node needs the packet path a node really has: ClusterIP
//! traffic crossing kube-proxy's NAT rules. This module owns the two layouts kube-proxy
//! writes, rendered from a small [`Service`] model:
//!
//! - the iptables layout (`KUBE-SERVICES` → `KUBE-SVC-*` → `KUBE-SEP-*`, a linear list of
//!   Service matches, random endpoint choice with `statistic`), as `iptables-restore` input;
//! - the nftables layout (`table ip kube-proxy`, one `service-ips` verdict map lookup, random
//!   endpoint choice with `numgen`), as `nft -f` input.
//!
//! Both come as a full ruleset and as a partial sync that adds one Service, as kube-proxy does
//! when a single Service changes. [`load`] and [`add_one`] install them with one of three
//! [`Tool`]s inside a network namespace the caller created (never the process's own) and
//! report the wall time of the tool process alone.
//!
//! Names differ from kube-proxy's only in the hash (FNV-1a 64 in hex rather than base32 of
//! SHA-256) and in the nftables chain names, which carry the hash alone.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use podswitch_lab::topology::ScratchDir;
use vswitch::sys::netns::NetNs;

/// The mark kube-proxy sets on packets that need masquerading (bit 14).
pub const MASQ_MARK: &str = "0x4000";

/// The pod network: traffic from outside it to a Service is masqueraded, as kube-proxy does
/// with a cluster CIDR configured. A /12, so 50,000 synthetic Services' endpoints fit.
pub const CLUSTER_CIDR: &str = "10.240.0.0/12";

/// The port synthetic endpoints listen on (the Service's `targetPort`).
pub const SYNTHETIC_TARGET_PORT: u16 = 8080;

/// The most Services [`synthetic_services`] can produce while keeping every endpoint inside
/// [`CLUSTER_CIDR`].
pub const SYNTHETIC_MAX: usize = 300_000;

/// Endpoints per synthetic Service.
const SYNTHETIC_ENDPOINTS: usize = 2;

/// The first synthetic ClusterIP; the rest follow it inside 10.96.0.0/12.
const FIRST_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 0);

/// How often a running tool is checked for completion; bounds the timing's resolution.
const POLL: Duration = Duration::from_millis(1);

/// The nftables table kube-proxy owns.
const NFT_TABLE: &str = "ip kube-proxy";

/// Transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    #[allow(dead_code, reason = "UDP Services render like TCP ones; the scenarios measure TCP")]
    Udp,
}

impl Proto {
    /// The protocol's name as both iptables and nft spell it.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One Service port: a ClusterIP, port and protocol, and the endpoints behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The ClusterIP.
    pub vip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// The protocol of the port.
    pub proto: Proto,
    /// Endpoint addresses and target ports, in the order the rules list them.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

impl Service {
    /// The name in rule comments, standing in for kube-proxy's `namespace/name:port`.
    fn display_name(&self) -> String {
        format!("bench/{}:{}-{}", self.vip, self.proto.name(), self.port)
    }

    fn hash(&self) -> String {
        hash16(&format!("{}:{}/{}", self.vip, self.port, self.proto.name()))
    }

    fn endpoint_hash(&self, (ip, port): (Ipv4Addr, u16)) -> String {
        hash16(&format!("{}:{}/{}->{ip}:{port}", self.vip, self.port, self.proto.name()))
    }

    /// The iptables chain that picks an endpoint for this Service.
    pub fn svc_chain(&self) -> String {
        format!("KUBE-SVC-{}", self.hash())
    }

    /// The iptables chain that DNATs to one endpoint of this Service.
    pub fn sep_chain(&self, endpoint: (Ipv4Addr, u16)) -> String {
        format!("KUBE-SEP-{}", self.endpoint_hash(endpoint))
    }

    /// The nftables chain that picks an endpoint for this Service.
    pub fn nft_service_chain(&self) -> String {
        format!("service-{}", self.hash())
    }

    /// The nftables chain that DNATs to one endpoint of this Service.
    pub fn nft_endpoint_chain(&self, endpoint: (Ipv4Addr, u16)) -> String {
        format!("endpoint-{}", self.endpoint_hash(endpoint))
    }
}

/// FNV-1a 64 of `s`, as 16 uppercase hex digits.
fn hash16(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// `n` Services, the same for the same `n`: ClusterIPs counting up from 10.96.1.0, TCP port 80,
/// two endpoints each on port [`SYNTHETIC_TARGET_PORT`], counting up from 10.244.0.1 with
/// host parts 1 to 250 in each /24.
///
/// # Panics
///
/// If `n` exceeds [`SYNTHETIC_MAX`].
pub fn synthetic_services(n: usize) -> Vec<Service> {
    assert!(n <= SYNTHETIC_MAX, "at most {SYNTHETIC_MAX} synthetic services, asked for {n}");
    let first_vip = u32::from(FIRST_VIP);
    let pod_base = u32::from(Ipv4Addr::new(10, 244, 0, 0));
    (0..n)
        .map(|i| {
            let endpoints = (0..SYNTHETIC_ENDPOINTS)
                .map(|k| {
                    let e = (i * SYNTHETIC_ENDPOINTS + k) as u32;
                    let ip = Ipv4Addr::from(pod_base + (e / 250) * 256 + e % 250 + 1);
                    (ip, SYNTHETIC_TARGET_PORT)
                })
                .collect();
            Service {
                vip: Ipv4Addr::from(first_vip + i as u32),
                port: 80,
                proto: Proto::Tcp,
                endpoints,
            }
        })
        .collect()
}

/// The `statistic` probability kube-proxy gives the `i`-th of `n` endpoint rules: the share
/// of what the earlier rules left over.
fn probability(i: usize, n: usize) -> String {
    format!("{:.10}", 1.0 / (n - i) as f64)
}

/// One Service's iptables text: its chain declarations, its `KUBE-SERVICES` rule and the
/// rules of its own chains.
struct IptablesService {
    declarations: String,
    services_rule: String,
    rules: String,
}

fn iptables_service(s: &Service) -> IptablesService {
    let svc = s.svc_chain();
    let name = s.display_name();
    let proto = s.proto.name();
    let matches = format!("-m {proto} -p {proto} -d {} --dport {}", s.vip, s.port);
    let mut declarations = format!(":{svc} - [0:0]\n");
    let services_rule =
        format!("-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" {matches} -j {svc}\n");
    let mut rules = format!(
        "-A {svc} -m comment --comment \"{name} cluster IP\" {matches} ! -s {CLUSTER_CIDR} \
         -j KUBE-MARK-MASQ\n"
    );
    let n = s.endpoints.len();
    for (i, &ep) in s.endpoints.iter().enumerate() {
        let sep = s.sep_chain(ep);
        let _ = write!(rules, "-A {svc} -m comment --comment \"{name} -> {}:{}\"", ep.0, ep.1);
        if i + 1 < n {
            let _ =
                write!(rules, " -m statistic --mode random --probability {}", probability(i, n));
        }
        let _ = writeln!(rules, " -j {sep}");
        let _ = writeln!(declarations, ":{sep} - [0:0]");
    }
    for &(ip, port) in &s.endpoints {
        let sep = s.sep_chain((ip, port));
        let _ = writeln!(
            rules,
            "-A {sep} -m comment --comment \"{name}\" -s {ip}/32 -j KUBE-MARK-MASQ"
        );
        let _ = writeln!(
            rules,
            "-A {sep} -m comment --comment \"{name}\" -m {proto} -p {proto} \
             -j DNAT --to-destination {ip}:{port}"
        );
    }
    IptablesService { declarations, services_rule, rules }
}

/// The full `nat` table of kube-proxy's iptables mode for `services`, as `iptables-restore`
/// input. Loading it replaces the whole `nat` table. A Service without endpoints gets its
/// chains and `KUBE-SERVICES` rule but no endpoint jump (kube-proxy rejects such traffic in
/// the `filter` table, which this layout leaves alone).
pub fn iptables_restore(services: &[Service]) -> String {
    let parts: Vec<IptablesService> = services.iter().map(iptables_service).collect();
    let mut out = String::from(
        "*nat\n\
         :PREROUTING ACCEPT [0:0]\n\
         :INPUT ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n\
         :KUBE-MARK-MASQ - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n",
    );
    for p in &parts {
        out.push_str(&p.declarations);
    }
    let _ = write!(
        out,
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}\n"
    );
    for p in &parts {
        out.push_str(&p.services_rule);
    }
    for p in &parts {
        out.push_str(&p.rules);
    }
    out.push_str("COMMIT\n");
    out
}

/// `iptables-restore --noflush` input that adds one Service to a loaded
/// [`iptables_restore`] ruleset: declares only the Service's new chains, appends one rule to
/// `KUBE-SERVICES` and fills the new chains.
pub fn iptables_add_one(service: &Service) -> String {
    let p = iptables_service(service);
    format!("*nat\n{}{}{}COMMIT\n", p.declarations, p.services_rule, p.rules)
}

/// One Service's nft commands: endpoint chains first (the Service chain's verdicts refer to
/// them), then the Service chain, then its `service-ips` element.
fn nft_service(s: &Service) -> String {
    let svc = s.nft_service_chain();
    let proto = s.proto.name();
    let mut out = String::new();
    for &(ip, port) in &s.endpoints {
        let ep = s.nft_endpoint_chain((ip, port));
        let _ = write!(
            out,
            "add chain {NFT_TABLE} {ep}\n\
             add rule {NFT_TABLE} {ep} ip saddr {ip} jump mark-for-masquerade\n\
             add rule {NFT_TABLE} {ep} meta l4proto {proto} dnat to {ip}:{port}\n"
        );
    }
    let _ = write!(
        out,
        "add chain {NFT_TABLE} {svc}\n\
         add rule {NFT_TABLE} {svc} ip daddr {} {proto} dport {} ip saddr != {CLUSTER_CIDR} \
         jump mark-for-masquerade\n",
        s.vip, s.port
    );
    if !s.endpoints.is_empty() {
        let verdicts: Vec<String> = s
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, &ep)| format!("{i} : goto {}", s.nft_endpoint_chain(ep)))
            .collect();
        let _ = writeln!(
            out,
            "add rule {NFT_TABLE} {svc} numgen random mod {} vmap {{ {} }}",
            s.endpoints.len(),
            verdicts.join(" , ")
        );
    }
    let _ = writeln!(
        out,
        "add element {NFT_TABLE} service-ips {{ {} . {proto} . {} : goto {svc} }}",
        s.vip, s.port
    );
    out
}

/// kube-proxy's nftables-mode ruleset for `services`, as `nft -f` input. It starts by
/// creating and deleting `table ip kube-proxy`, so loading it replaces whatever that table
/// held, in one transaction. A Service without endpoints gets a chain with no endpoint
/// verdict.
pub fn nft_ruleset(services: &[Service]) -> String {
    let mut out = format!(
        "add table {NFT_TABLE}\n\
         delete table {NFT_TABLE}\n\
         add table {NFT_TABLE} {{ comment \"rules for kube-proxy\" ; }}\n\
         add chain {NFT_TABLE} mark-for-masquerade\n\
         add rule {NFT_TABLE} mark-for-masquerade mark set mark or {MASQ_MARK}\n\
         add chain {NFT_TABLE} masquerading\n\
         add rule {NFT_TABLE} masquerading mark and {MASQ_MARK} == 0 return\n\
         add rule {NFT_TABLE} masquerading mark set mark xor {MASQ_MARK}\n\
         add rule {NFT_TABLE} masquerading masquerade fully-random\n\
         add map {NFT_TABLE} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n\
         add chain {NFT_TABLE} services\n\
         add rule {NFT_TABLE} services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add chain {NFT_TABLE} nat-prerouting {{ type nat hook prerouting priority dstnat ; }}\n\
         add rule {NFT_TABLE} nat-prerouting jump services\n\
         add chain {NFT_TABLE} nat-output {{ type nat hook output priority -100 ; }}\n\
         add rule {NFT_TABLE} nat-output jump services\n\
         add chain {NFT_TABLE} nat-postrouting {{ type nat hook postrouting priority srcnat ; }}\n\
         add rule {NFT_TABLE} nat-postrouting jump masquerading\n"
    );
    for s in services {
        out.push_str(&nft_service(s));
    }
    out
}

/// `nft -f` input that adds one Service to a loaded [`nft_ruleset`]: its new chains and one
/// `service-ips` element.
pub fn nft_add_one(service: &Service) -> String {
    nft_service(service)
}

/// The program that loads a ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    /// `iptables-restore` of the nf_tables backend (iptables-nft).
    IptablesNft,
    /// `iptables-legacy-restore` (the x_tables kernel interface).
    IptablesLegacy,
    /// `nft` with kube-proxy's nftables layout.
    Nft,
}

impl Tool {
    /// Every tool, in reporting order.
    #[cfg(test)]
    pub const ALL: [Tool; 3] = [Tool::IptablesNft, Tool::IptablesLegacy, Tool::Nft];

    /// A short name for reports.
    pub fn label(&self) -> &'static str {
        match self {
            Tool::IptablesNft => "iptables-nft",
            Tool::IptablesLegacy => "iptables-legacy",
            Tool::Nft => "nft",
        }
    }

    /// The loading binary.
    fn binary(&self) -> &'static str {
        match self {
            Tool::IptablesNft => "iptables-restore",
            Tool::IptablesLegacy => "iptables-legacy-restore",
            Tool::Nft => "nft",
        }
    }

    /// The binary that lists what is loaded.
    fn lister(&self) -> &'static str {
        match self {
            Tool::IptablesNft => "iptables-save",
            Tool::IptablesLegacy => "iptables-legacy-save",
            Tool::Nft => "nft",
        }
    }

    /// `Ok` when the loading and listing binaries are executables on `PATH`; otherwise a
    /// message naming the missing one.
    pub fn available(&self) -> Result<(), String> {
        for bin in [self.binary(), self.lister()] {
            find_on_path(bin).ok_or_else(|| format!("{bin} not found on PATH"))?;
        }
        Ok(())
    }
}

fn find_on_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(bin)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Loads `services` as a full ruleset with `tool` inside `ns`, replacing the previous one
/// (the `nat` table for the iptables tools, `table ip kube-proxy` for nft). Returns the wall
/// time of the tool process, from spawn to exit, measured to about a millisecond; rendering
/// is not included. Fails if `ns` is the process's own or init's namespace, if the tool is
/// missing or fails (the error carries its stderr), or with `TimedOut` after `timeout`, when
/// the tool has been killed.
pub fn load(
    ns: &NetNs,
    tool: Tool,
    services: &[Service],
    timeout: Duration,
) -> io::Result<Duration> {
    let text = match tool {
        Tool::IptablesNft | Tool::IptablesLegacy => iptables_restore(services),
        Tool::Nft => nft_ruleset(services),
    };
    run_loader(ns, tool, &text, false, timeout)
}

/// Adds one more Service to what [`load`] installed, the way kube-proxy's partial sync does
/// (`--noflush` for the iptables tools). Returns the wall time of the tool process; fails as
/// [`load`] does.
pub fn add_one(
    ns: &NetNs,
    tool: Tool,
    service: &Service,
    timeout: Duration,
) -> io::Result<Duration> {
    let text = match tool {
        Tool::IptablesNft | Tool::IptablesLegacy => iptables_add_one(service),
        Tool::Nft => nft_add_one(service),
    };
    run_loader(ns, tool, &text, true, timeout)
}

/// How many Services are loaded in `ns` by `tool`'s layout: `KUBE-SVC-*` chains in the `nat`
/// table, or elements of the `service-ips` map. Fails as [`load`] does.
pub fn loaded_services(ns: &NetNs, tool: Tool, timeout: Duration) -> io::Result<usize> {
    podswitch_lab::traffic::refuse_root(ns)?;
    tool.available().map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
    let scratch = ScratchDir::new("kube-rules")?;
    let args: &[&str] = match tool {
        Tool::IptablesNft | Tool::IptablesLegacy => &["-t", "nat"],
        Tool::Nft => &["list", "map", "ip", "kube-proxy", "service-ips"],
    };
    let (_, stdout) = run_in(ns, tool.lister(), args, None, scratch.path(), timeout)?;
    Ok(match tool {
        Tool::IptablesNft | Tool::IptablesLegacy => {
            stdout.lines().filter(|l| l.starts_with(":KUBE-SVC-")).count()
        }
        Tool::Nft => stdout.matches(": goto service-").count(),
    })
}

fn run_loader(
    ns: &NetNs,
    tool: Tool,
    text: &str,
    partial: bool,
    timeout: Duration,
) -> io::Result<Duration> {
    podswitch_lab::traffic::refuse_root(ns)?;
    tool.available().map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
    let scratch = ScratchDir::new("kube-rules")?;
    let rules = scratch.path().join("rules");
    std::fs::write(&rules, text)?;
    let rules_arg = rules.to_string_lossy().into_owned();
    let (elapsed, _) = match tool {
        Tool::IptablesNft | Tool::IptablesLegacy => {
            let args: &[&str] = if partial { &["-w", "--noflush"] } else { &["-w"] };
            run_in(ns, tool.binary(), args, Some(&rules), scratch.path(), timeout)?
        }
        Tool::Nft => run_in(ns, "nft", &["-f", &rules_arg], None, scratch.path(), timeout)?,
    };
    Ok(elapsed)
}

/// Runs `bin args` as a child of a thread inside `ns`, with `stdin` (or nothing) on its
/// standard input and its output collected in files under `dir`, so no pipe can fill up.
/// Returns the process's wall time and its stdout; fails with its stderr if it exits
/// unsuccessfully, or kills it and fails with `TimedOut` after `timeout`.
fn run_in(
    ns: &NetNs,
    bin: &str,
    args: &[&str],
    stdin: Option<&Path>,
    dir: &Path,
    timeout: Duration,
) -> io::Result<(Duration, String)> {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let input = match stdin {
        Some(p) => Stdio::from(File::open(p)?),
        None => Stdio::null(),
    };
    let out = Stdio::from(File::create(&out_path)?);
    let err = Stdio::from(File::create(&err_path)?);
    let (mut child, start) = ns.run(|| {
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(input).stdout(out).stderr(err);
        let start = Instant::now();
        cmd.spawn().map(|c| (c, start))
    })??;
    let deadline = start + timeout;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{bin} did not finish within {timeout:?} and was killed: {}",
                    stderr.trim()
                ),
            ));
        }
        std::thread::sleep(POLL);
    };
    let elapsed = start.elapsed();
    if !status.success() {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        return Err(io::Error::other(format!(
            "{bin} {} failed ({status}): {}",
            args.join(" "),
            stderr.trim()
        )));
    }
    Ok((elapsed, std::fs::read_to_string(&out_path)?))
}

#[cfg(test)]
mod tests;
