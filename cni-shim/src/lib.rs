//! `podswitch-cni`: the Container Network Interface plugin that attaches pods to podswitch.
//!
//! A container runtime executes the binary with the `CNI_*` environment and the network
//! configuration on stdin; [`run`] turns that into an answer on stdout (a result, a version
//! list, or an error object) and an exit status, exactly as CNI spec 1.1.0 (and 1.0.0)
//! describes. The plugin keeps no state: the switch's ports, named after their attachments,
//! and the IPAM plugin's store are the record of what is attached.
//!
//! - [`spec`]: the spec's data: versions, environment, errors and codes, results.
//! - [`config`]: the network configuration, checked field by field.
//! - [`ipam`]: running the IPAM plugin, version negotiation, result conversion.
//! - [`commands`]: ADD, DEL, CHECK, STATUS and GC against the switch's control API.
//!
//! It links the switch's API crate (`podswitch-api`: requests, replies, limits, the socket
//! client) and its OS crate (`podswitch-sys`: netlink and namespaces, for CHECK), never the
//! dataplane.

pub mod commands;
pub mod config;
pub mod ipam;
pub mod spec;

use std::io::{Read, Write};
use std::process::ExitCode;

use config::NetConf;
use spec::{code, CniError, Command, Env, Version, VersionInfo, LATEST, SUPPORTED_VERSIONS};

/// What the process prints and whether it exits successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One JSON object, or nothing.
    pub stdout: String,
    /// Exit status 0 (else 1, with an error object on stdout).
    pub success: bool,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome { stdout, success: true }
    }

    fn error(e: &CniError, version: Version) -> Outcome {
        Outcome { stdout: e.to_json(version), success: false }
    }
}

/// Runs one plugin invocation: `get` reads environment variables, `stdin` is what the runtime
/// wrote (or why it could not be read).
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: std::io::Result<&[u8]>) -> Outcome {
    let stdin = match stdin {
        Ok(s) => s,
        Err(e) => {
            let err = CniError::new(code::IO_FAILURE, "cannot read stdin", e.to_string());
            return Outcome::error(&err, LATEST);
        }
    };
    let env = match Env::from_vars(get) {
        Ok(env) => env,
        Err(e) => return Outcome::error(&e, config::reply_version(stdin)),
    };
    if env.command == Command::Version {
        return Outcome::ok(version_info(stdin));
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return Outcome::error(&e, config::reply_version(stdin)),
    };
    let done = match env.command {
        Command::Add => commands::add(&env, &conf)
            .map(|r| serde_json::to_string(&r).expect("results serialize")),
        Command::Del => commands::del(&env, &conf).map(|()| String::new()),
        Command::Check => commands::check(&env, &conf).map(|()| String::new()),
        Command::Status => commands::status_cmd(&env, &conf).map(|()| String::new()),
        Command::Gc => commands::gc(&env, &conf).map(|()| String::new()),
        Command::Version => unreachable!("answered above"),
    };
    match done {
        Ok(out) => Outcome::ok(out),
        Err(e) => Outcome::error(&e, conf.cni_version),
    }
}

/// The answer to VERSION, in the format of the version the runtime asked with when this
/// plugin speaks it.
fn version_info(stdin: &[u8]) -> String {
    let info = VersionInfo {
        cni_version: config::reply_version(stdin).to_string(),
        supported_versions: SUPPORTED_VERSIONS.iter().map(Version::to_string).collect(),
    };
    serde_json::to_string(&info).expect("version info serializes")
}

/// The plugin process: reads the environment and stdin, runs [`run`], writes its answer to
/// stdout. The `podswitch-cni` binary is this, and so is the copy the behaviour tests build.
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin).map(|_| ());
    let outcome = run(&|k| std::env::var(k).ok(), read.map(|()| stdin.as_slice()));
    let mut out = std::io::stdout().lock();
    if !outcome.stdout.is_empty() {
        let _ = writeln!(out, "{}", outcome.stdout);
    }
    let _ = out.flush();
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoke(vars: &[(&str, &str)], stdin: &str) -> Outcome {
        let vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        run(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()), Ok(stdin.as_bytes()))
    }

    fn error_code(o: &Outcome) -> u64 {
        assert!(!o.success, "{o:?}");
        serde_json::from_str::<serde_json::Value>(&o.stdout).unwrap()["code"].as_u64().unwrap()
    }

    #[test]
    fn version_lists_what_is_supported() {
        let o = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
        assert!(o.success);
        assert_eq!(o.stdout, r#"{"cniVersion":"1.0.0","supportedVersions":["1.0.0","1.1.0"]}"#);
        let o = invoke(&[("CNI_COMMAND", "VERSION")], "");
        assert!(o.stdout.starts_with(r#"{"cniVersion":"1.1.0""#), "{}", o.stdout);
    }

    #[test]
    fn bad_invocations_get_the_spec_codes() {
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"podswitch-cni","socket":"/nonexistent/podswitch.sock"}"#;
        assert_eq!(error_code(&invoke(&[], conf)), 4);
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert_eq!(error_code(&invoke(&add[..3], conf)), 4);
        assert_eq!(error_code(&invoke(&add, "{")), 6);
        assert_eq!(error_code(&invoke(&add, r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#)), 1);
        let o = invoke(&add, conf);
        assert_eq!(error_code(&o), 11);
        assert!(o.stdout.starts_with(r#"{"cniVersion":"1.0.0""#), "{}", o.stdout);
        let o = invoke(&[("CNI_COMMAND", "STATUS")], conf);
        assert_eq!(error_code(&o), 50);
        let del = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")];
        assert!(invoke(&del, conf).success, "DEL with no switch running succeeds");
    }
}
