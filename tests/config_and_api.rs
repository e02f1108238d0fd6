//! Bad configuration and bad API input are refused with an error that names the key or
//! field, the daemon never starts half-configured, and a running switch is not disturbed by
//! a bad request.

use std::process::Command;

use podswitch_tests::topology::{netns_with_lo, unique_name, ScratchDir};
use podswitch_tests::*;
use vswitch::control::api::{Request, Response};
use vswitch::control::client::Client;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");

const GOOD: &str = "[node]\nname = \"n1\"\npod_cidr = \"10.244.1.0/24\"\n";

#[test]
fn bad_config_is_refused_naming_the_key_and_nothing_is_created() {
    require_root!();
    let dir = ScratchDir::new("pst-cfg").unwrap();
    let ns = netns_with_lo(&unique_name("pst-cfg")).unwrap();
    let sock = dir.path().join("s.sock");
    let control = format!("[control]\nsocket = {:?}\n", sock.display().to_string());
    let cases = [
        (format!("{GOOD}{control}[fdb]\nmax_entires = 5\n"), "max_entires"),
        (
            format!("[node]\nname = \"n1\"\npod_cidr = \"10.244.1.7/24\"\n{control}"),
            "node.pod_cidr",
        ),
        (format!("{GOOD}mtu = 100000\n{control}"), "node.mtu"),
        (
            format!("{GOOD}{control}[host_port]\nname = \"way-too-long-for-an-ifname\"\n"),
            "host_port.name",
        ),
        (format!("{GOOD}{control}[fdb]\naging_secs = \"soon\"\n"), "fdb.aging_secs"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = ns
            .run(|| Command::new(EXE).arg("run").arg("--config").arg(&path).output())
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(stderr.contains(key), "case {i}: error does not name {key}: {stderr}");
        assert_eq!(links(&ns), vec!["lo"], "case {i}: something was created");
        assert!(!sock.exists(), "case {i}: a control socket was created");
    }
    let out = Command::new(EXE)
        .arg("check-config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/node.example.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_api_requests_name_the_field_and_change_nothing() {
    require_root!();
    let n = node(EXE, 2);
    let mut c = Client::connect(n.switch.socket()).unwrap();
    let cases = [
        (r#"{"command":"port_add","args":{"name":"x","netns":"y","mtu":"big"}}"#, Some("args.mtu")),
        (
            r#"{"command":"port_add","args":{"name":"x","netns":"y","ip":"10.244.1.300/24"}}"#,
            Some("args.ip"),
        ),
        (
            r#"{"command":"port_add","args":{"name":"x","netns":"y","mac":"01:00:5e:00:00:01"}}"#,
            Some("args.mac"),
        ),
        (r#"{"command":"port_add","args":{"name":"x","netns":"y","mtu":20}}"#, Some("args.mtu")),
        (r#"{"command":"port_add","args":{"name":"x"}}"#, None),
        (r#"{"command":"port_add","args":{"name":"x","netns":"y","colour":"red"}}"#, None),
        (r#"{"command":"fdb_flush","args":{"port":"nope"}}"#, Some("args.port")),
        (r#"{"command":"self_destruct"}"#, None),
        ("this is not json", None),
    ];
    for (line, field) in cases {
        let resp = c.call_raw(line).unwrap();
        let Ok(Response::Error(e)) = serde_json::from_str::<Response>(&resp) else {
            panic!("{line} was not refused: {resp}")
        };
        if let Some(f) = field {
            assert_eq!(e.field.as_deref(), Some(f), "{line}: {e:?}");
        }
        assert!(!e.message.is_empty());
    }
    // The same connection still works, and so does the switch.
    assert!(c.call(&Request::Status).is_ok());
    ping_ok(&n.pods[0].ns, n.pods[1].ip);
    assert_eq!(stats(&n).ports.len(), 3);
}

#[test]
fn the_ctl_cli_speaks_json_and_names_bad_flags() {
    require_root!();
    let n = node(EXE, 1);
    let sock = n.switch.socket().to_str().unwrap().to_string();
    let ctl = |args: &[&str]| {
        Command::new(EXE).arg("ctl").arg("--socket").arg(&sock).args(args).output().unwrap()
    };
    let out = ctl(&["port", "list", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> =
        v["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["psw0", "pod1"]);
    for args in [&["stats", "--json"][..], &["fdb", "list", "--json"], &["status", "--json"]] {
        let out = ctl(args);
        assert!(out.status.success(), "{args:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    }
    let out = ctl(&["port", "add", "p2", "--netns", "x", "--ip", "10.244.1.9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ip"));
    let out = ctl(&["port", "add", "p2", "--netns", "no-such-ns-anywhere", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["field"], "args.netns");
    let out = ctl(&["fdb", "flush"]);
    assert!(out.status.success());
    let out = Command::new(EXE)
        .args(["ctl", "--socket", "/nonexistent/psw.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_second_switch_on_the_same_socket_is_refused_and_the_first_keeps_running() {
    require_root!();
    let n = node(EXE, 2);
    let ns = netns_with_lo(&unique_name("pst-second")).unwrap();
    let dir = ScratchDir::new("pst-second").unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, n.config.to_toml()).unwrap();
    let out = ns
        .run(|| Command::new(EXE).arg("run").arg("--config").arg(&cfg).output())
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already listening"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(links(&ns), vec!["lo"], "the refused switch removed its host port");
    ping_ok(&n.pods[0].ns, n.pods[1].ip);
}
