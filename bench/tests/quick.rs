//! The harness end to end: `bench tcp-throughput --quick` against the kernel peer and
//! podswitch builds both topologies, measures real traffic through each, and writes a results
//! file and a report that hold both columns with non-zero figures.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn quick_tcp_throughput_reports_kernel_and_podswitch() {
    if !vswitch::sys::process::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = TempDir(std::env::temp_dir().join(format!("psw-bench-test-{}", std::process::id())));
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["tcp-throughput", "--quick", "--peers", "kernel,podswitch", "--out"])
        .arg(&dir.0)
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stdout}\n{stderr}");
    let files: Vec<PathBuf> =
        std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().path()).collect();
    let json = files.iter().find(|p| p.extension().is_some_and(|e| e == "json")).expect("json");
    let md = files.iter().find(|p| p.extension().is_some_and(|e| e == "md")).expect("report");
    let run: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(run["quick"], true);
    let scenarios = run["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 1, "{run}");
    let sc = &scenarios[0];
    assert_eq!(sc["id"], "tcp-throughput");
    let ids: Vec<&str> =
        sc["columns"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["kernel", "podswitch"]);
    for c in sc["columns"].as_array().unwrap() {
        assert_eq!(c["status"]["state"], "measured", "{c}");
    }
    let metric = sc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "TCP, 1 stream")
        .expect("TCP, 1 stream measured");
    for id in ["kernel", "podswitch"] {
        let v = metric["values"][id].as_array().unwrap();
        assert_eq!(v.len(), 3, "three runs of {id}");
        assert!(v.iter().all(|x| x.as_f64().unwrap() > 0.0), "{id}: {v:?}");
    }
    let report = std::fs::read_to_string(md).unwrap();
    assert!(report.contains("| metric | kernel bridge (veth) | podswitch (TAP) |"), "{report}");
    assert!(report.contains("| TCP, 1 stream, Gbit/s |"), "{report}");
}
