//! The switch's command line: `run`, `ctl`, `check-config`. Parsing and printing only; every
//! `ctl` command is one control API request (see `control::api`). The `podswitch` binary
//! (package `vswitch/cli`) is these commands plus `lab`, which lives in `podswitch-lab`
//! because the lab links this library; [`main`] is the switch alone, for the test binaries.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::cidr::{Ipv4Cidr, Ipv4IfAddr};
use crate::config::{Config, DEFAULT_SOCKET};
use crate::control::api::*;
use crate::control::client::{self, ClientError};
use crate::control::render::render;
use crate::wire::MacAddr;

/// podswitch: a userspace virtual switch for Kubernetes pod networking.
#[derive(Debug, Parser)]
#[command(name = "podswitch", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The switch's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the switch in the current network namespace until SIGINT/SIGTERM, then remove
    /// everything it created.
    Run {
        /// Node configuration file (see config/node.example.toml).
        #[arg(long, short, env = "PODSWITCH_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print it with every default filled in.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Talk to a running switch over its control socket.
    Ctl(CtlArgs),
}

/// Options of `ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Control socket of the switch.
    #[arg(long, env = "PODSWITCH_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Print the reply (or error) as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// The switch's identity and port count.
    Status,
    /// Pod ports.
    #[command(subcommand)]
    Port(PortCommand),
    /// The MAC table.
    #[command(subcommand)]
    Fdb(FdbCommand),
    /// Per-port counters and drops by reason, and table counters.
    Stats,
    /// Overlay peers: the other nodes, their underlay addresses and pod CIDRs.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Services: ClusterIPs load-balanced over endpoints.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// A Service's endpoints.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Tracked connections through Services.
    #[command(subcommand)]
    Conntrack(ConntrackCommand),
}

/// `IP:PORT`, an endpoint that is ready and not terminating, weight 1.
fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let a: std::net::SocketAddrV4 =
        s.parse().map_err(|_| format!("{s:?} is not IPv4:PORT (e.g. 10.244.1.5:8080)"))?;
    Ok(Endpoint { ip: *a.ip(), port: a.port(), ready: true, terminating: false, weight: 1 })
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Add a Service (or replace the one with this namespace and name).
    Add {
        /// Service name.
        name: String,
        /// Its namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// VIP:PORT/PROTO, e.g. 10.96.0.20:80/tcp.
        #[arg(long)]
        vip: crate::tables::services::ServiceKey,
        /// An endpoint IP:PORT (repeat for more).
        #[arg(long = "endpoint", value_parser = parse_endpoint)]
        endpoints: Vec<Endpoint>,
        /// random, round-robin or maglev.
        #[arg(long, default_value = "maglev")]
        algorithm: Algorithm,
        /// Keep a client on one endpoint for this many seconds (ClientIP affinity).
        #[arg(long)]
        affinity_secs: Option<u32>,
        /// Also take connections to the node's address on this port (30000-32767).
        #[arg(long)]
        node_port: Option<u16>,
    },
    /// Remove a Service.
    Del {
        /// Service name.
        name: String,
        /// Its namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// List Services.
    List,
    /// Replace the whole Service table from a JSON file (an array of Services, or
    /// {"services": [...]}): all or nothing.
    Apply {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// Replace a Service's endpoints.
    Set {
        /// Service name.
        name: String,
        /// Its namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// An endpoint IP:PORT (repeat for more; none empties the Service).
        #[arg(long = "endpoint", value_parser = parse_endpoint)]
        endpoints: Vec<Endpoint>,
        /// Which of the Service's ports, when it has several.
        #[arg(long)]
        port: Option<u16>,
        /// That port's protocol (tcp or udp).
        #[arg(long)]
        proto: Option<crate::tables::services::L4Proto>,
    },
}

#[derive(Debug, Subcommand)]
enum ConntrackCommand {
    /// List tracked connections.
    List {
        /// Most entries.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Forget every tracked connection.
    Flush,
    /// Table size, limit and counters.
    Stats,
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Add a peer node (or replace the one with this name).
    Add {
        /// Peer name (its node name).
        name: String,
        /// Its underlay address.
        #[arg(long)]
        ip: std::net::Ipv4Addr,
        /// Its pod CIDR.
        #[arg(long)]
        pod_cidr: crate::cidr::Ipv4Cidr,
        /// Inner destination MAC toward it (a Linux vxlan device's MAC; default: what a
        /// podswitch node with that pod CIDR uses).
        #[arg(long)]
        vtep_mac: Option<MacAddr>,
    },
    /// Remove a peer; traffic to its pods stops at once.
    Del {
        /// Peer name.
        name: String,
    },
    /// List peers.
    List,
}

#[derive(Debug, Subcommand)]
enum PortCommand {
    /// Create a pod's interface in its namespace and attach it.
    Add {
        /// Unique port name (e.g. the pod name).
        name: String,
        /// The pod's network namespace (name under /run/netns, or a path).
        #[arg(long)]
        netns: String,
        /// Address/prefix (default: next free address of the pod CIDR).
        #[arg(long)]
        ip: Option<Ipv4IfAddr>,
        /// MAC (default: 0a:58 + the address bytes).
        #[arg(long)]
        mac: Option<MacAddr>,
        /// Interface name in the pod.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// MTU (default: the node's).
        #[arg(long)]
        mtu: Option<u32>,
        /// Device: `tap`, or `afxdp` (a veth pair whose host end the switch drives through
        /// AF_XDP).
        #[arg(long, default_value = "tap")]
        kind: PortAddKind,
        /// One more IPv4 source (CIDR) the pod may send from; repeat for more (at most 16).
        #[arg(long = "allow-ip", value_name = "CIDR")]
        allow_ip: Vec<Ipv4Cidr>,
        /// Turn port security off for this port: its frames are not checked at all.
        #[arg(long, conflicts_with = "allow_ip")]
        no_port_security: bool,
    },
    /// Detach a port and remove its interface.
    Del {
        /// Port name.
        name: String,
    },
    /// List ports.
    List,
}

#[derive(Debug, Subcommand)]
enum FdbCommand {
    /// List learned MACs.
    List,
    /// Forget learned MACs (all, or one port's).
    Flush {
        /// Only this port's entries.
        #[arg(long)]
        port: Option<String>,
    },
}

/// The switch without the lab: the entry point of the test binaries (`psw-test-switch`).
pub fn main() -> ExitCode {
    run(Cli::parse().command)
}

/// Runs one of the switch's commands; the exit status is the process's.
pub fn run(command: Command) -> ExitCode {
    match command {
        Command::Run { config } => match Config::load(&config) {
            Err(e) => {
                eprintln!("podswitch: {e}");
                ExitCode::from(2)
            }
            Ok(cfg) => match crate::daemon::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("podswitch: {e}");
                    ExitCode::FAILURE
                }
            },
        },
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(cfg) => {
                print!("{}", cfg.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podswitch: {e}");
                ExitCode::from(2)
            }
        },
        Command::Ctl(args) => ctl(args),
    }
}

fn ctl(args: CtlArgs) -> ExitCode {
    let req = match args.command {
        CtlCommand::Status => Request::Status,
        CtlCommand::Port(PortCommand::Add {
            name,
            netns,
            ip,
            mac,
            ifname,
            mtu,
            kind,
            allow_ip,
            no_port_security,
        }) => Request::PortAdd(PortAddArgs {
            name,
            netns,
            ip,
            mac,
            ifname: Some(ifname),
            mtu,
            kind,
            port_security: !no_port_security,
            allow_ips: allow_ip,
        }),
        CtlCommand::Port(PortCommand::Del { name }) => Request::PortDel(PortDelArgs { name }),
        CtlCommand::Port(PortCommand::List) => Request::PortList,
        CtlCommand::Fdb(FdbCommand::List) => Request::FdbList,
        CtlCommand::Fdb(FdbCommand::Flush { port }) => Request::FdbFlush(FdbFlushArgs { port }),
        CtlCommand::Stats => Request::Stats,
        CtlCommand::Peer(PeerCommand::Add { name, ip, pod_cidr, vtep_mac }) => {
            Request::PeerAdd(PeerAddArgs { name, ip, pod_cidr, vtep_mac })
        }
        CtlCommand::Peer(PeerCommand::Del { name }) => Request::PeerDel(PeerDelArgs { name }),
        CtlCommand::Peer(PeerCommand::List) => Request::PeerList,
        CtlCommand::Service(ServiceCommand::Add {
            name,
            namespace,
            vip,
            endpoints,
            algorithm,
            affinity_secs,
            node_port,
        }) => Request::ServiceAdd(ServiceSpec {
            name,
            namespace,
            vip: vip.vip,
            port: vip.port,
            proto: vip.proto,
            endpoints,
            algorithm,
            session_affinity_secs: affinity_secs,
            node_port,
        }),
        CtlCommand::Service(ServiceCommand::Del { name, namespace }) => {
            Request::ServiceDel(ServiceRefArgs { namespace, name })
        }
        CtlCommand::Service(ServiceCommand::List) => Request::ServiceList,
        CtlCommand::Service(ServiceCommand::Apply { file }) => match read_services(&file) {
            Ok(services) => Request::ServiceApply(ServiceApplyArgs { services }),
            Err(e) => {
                eprintln!("podswitch: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        },
        CtlCommand::Endpoint(EndpointCommand::Set { name, namespace, endpoints, port, proto }) => {
            Request::EndpointSet(EndpointSetArgs { namespace, name, port, proto, endpoints })
        }
        CtlCommand::Conntrack(ConntrackCommand::List { limit }) => {
            Request::ConntrackList(ConntrackListArgs { limit: Some(limit) })
        }
        CtlCommand::Conntrack(ConntrackCommand::Flush) => Request::ConntrackFlush,
        CtlCommand::Conntrack(ConntrackCommand::Stats) => Request::ConntrackStats,
    };
    match client::call(&args.socket, &req) {
        Ok(reply) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&reply).expect("replies serialize"));
            } else {
                print!("{}", render(&reply));
            }
            ExitCode::SUCCESS
        }
        Err(ClientError::Api(e)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&Response::Error(e.clone()))
                        .expect("errors serialize")
                );
            }
            eprintln!("podswitch: error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("podswitch: {e}");
            ExitCode::from(3)
        }
    }
}

/// A Service file: a list of Services, or a map with a `services` list.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ServiceFile {
    List(Vec<ServiceSpec>),
    Wrapped { services: Vec<ServiceSpec> },
}

/// Services from a JSON or YAML file (YAML when the name ends in `.yaml` or `.yml`): a list,
/// or a map with a `services` list.
fn read_services(path: &std::path::Path) -> Result<Vec<ServiceSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    parse_services(&text, yaml)
}

fn parse_services(text: &str, yaml: bool) -> Result<Vec<ServiceSpec>, String> {
    let file: ServiceFile = if yaml {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())?
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    Ok(match file {
        ServiceFile::List(l) | ServiceFile::Wrapped { services: l } => l,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_files_in_json_and_yaml_give_the_same_services() {
        let json = r#"{"services":[{"name":"web","namespace":"default","vip":"10.96.0.20",
            "port":80,"proto":"tcp","endpoints":[{"ip":"10.244.1.5","port":8080}],
            "node_port":30080}]}"#;
        let yaml = "services:\n  - name: web\n    namespace: default\n    vip: 10.96.0.20\n    port: 80\n    proto: tcp\n    endpoints:\n      - ip: 10.244.1.5\n        port: 8080\n    node_port: 30080\n";
        let a = parse_services(json, false).unwrap();
        let b = parse_services(yaml, true).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].node_port, Some(30_080));
        let list =
            "- name: web\n  namespace: default\n  vip: 10.96.0.20\n  port: 80\n  endpoints: []\n";
        assert_eq!(parse_services(list, true).unwrap().len(), 1);
        assert!(parse_services("- name: web\n  bogus: 1\n", true).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_flag_values_are_named() {
        let e = Cli::try_parse_from([
            "podswitch",
            "ctl",
            "port",
            "add",
            "p",
            "--netns",
            "n",
            "--ip",
            "10.0.0.1",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--ip"), "{e}");
        let e = Cli::try_parse_from([
            "podswitch",
            "ctl",
            "port",
            "add",
            "p",
            "--netns",
            "n",
            "--mac",
            "zz",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--mac"), "{e}");
    }
}
