//! Keeps the dependency direction of ARCHITECTURE.md true:
//! protocol ← storage ← actors ← engine ← tests, and
//! protocol ← sim ← (engine, tests, bench), with sim below everything stateful;
//! the bench harness depends on no engine crate (only its tests start one);
//! audit (the verifiable audit log's pure core) depends on no switchboard crate;
//! reports (the reports' projection, pure) on protocol and actors only.

use std::collections::{HashMap, HashSet};
use std::process::Command;

#[test]
fn internal_crates_depend_only_downwards() {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let allowed: HashMap<&str, HashSet<&str>> = HashMap::from([
        ("switchboard-protocol", HashSet::new()),
        ("switchboard-storage", HashSet::from(["switchboard-protocol"])),
        ("switchboard-actors", HashSet::from(["switchboard-protocol", "switchboard-storage"])),
        // Simulated Meta, customers and agents speak only the wire formats.
        ("switchboard-sim", HashSet::from(["switchboard-protocol"])),
        (
            "switchboard-engine",
            HashSet::from([
                "switchboard-protocol",
                "switchboard-storage",
                "switchboard-actors",
                "switchboard-sim",
                "switchboard-audit",
                "switchboard-reports",
            ]),
        ),
        (
            "switchboard-tests",
            HashSet::from([
                "switchboard-protocol",
                "switchboard-storage",
                "switchboard-actors",
                "switchboard-sim",
                "switchboard-engine",
                "switchboard-audit",
                "switchboard-reports",
            ]),
        ),
        // The harness speaks to a server only through its public interfaces.
        ("switchboard-bench", HashSet::from(["switchboard-protocol", "switchboard-sim"])),
        // Measures the timer shards from inside, so it is a package apart.
        ("switchboard-bench-timers", HashSet::from(["switchboard-actors", "switchboard-bench"])),
        // Calls the pure routing module directly, so it is a package apart too.
        ("switchboard-bench-routing", HashSet::from(["switchboard-actors", "switchboard-protocol"])),
        // Calls the co-pilot's pure machine directly (its state is a storage record type).
        (
            "switchboard-bench-copilot",
            HashSet::from(["switchboard-actors", "switchboard-protocol", "switchboard-storage"]),
        ),
        // Pure: hashing, proofs, signatures and the export format, no IO but its key file.
        ("switchboard-audit", HashSet::new()),
        // Measures the audit core alone.
        ("switchboard-bench-audit", HashSet::from(["switchboard-audit"])),
        // The reports' projection, pure: the event log's types and the
        // business-hours and disposition rules of the actors.
        ("switchboard-reports", HashSet::from(["switchboard-protocol", "switchboard-actors"])),
        // Measures the projection alone.
        (
            "switchboard-bench-reports",
            HashSet::from(["switchboard-protocol", "switchboard-actors", "switchboard-reports"]),
        ),
    ]);
    // Only tests may start an in-process engine: (package, dev-dependency).
    let dev_allowed: HashSet<(&str, &str)> = HashSet::from([("switchboard-bench", "switchboard-engine")]);
    let packages = metadata["packages"].as_array().unwrap();
    assert_eq!(packages.len(), allowed.len(), "a crate was added: extend this test and ARCHITECTURE.md");
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let permitted = &allowed[name];
        for dependency in package["dependencies"].as_array().unwrap() {
            let target = dependency["name"].as_str().unwrap();
            if target.starts_with("switchboard-") {
                let dev = dependency["kind"].as_str() == Some("dev");
                assert!(
                    permitted.contains(target) || (dev && dev_allowed.contains(&(name, target))),
                    "{name} must not depend on {target}{}",
                    if dev { " (even for its tests)" } else { "" }
                );
            }
        }
    }
    let forbidden_io = ["tokio", "reqwest", "redb", "axum"];
    let protocol = packages.iter().find(|package| package["name"] == "switchboard-protocol").unwrap();
    for dependency in protocol["dependencies"].as_array().unwrap() {
        let target = dependency["name"].as_str().unwrap();
        assert!(!forbidden_io.contains(&target), "protocol must stay pure data, but depends on {target}");
    }
    let actors = packages.iter().find(|package| package["name"] == "switchboard-actors").unwrap();
    for dependency in actors["dependencies"].as_array().unwrap() {
        let target = dependency["name"].as_str().unwrap();
        assert!(!["reqwest", "axum", "tokio-tungstenite"].contains(&target), "actors must open no socket: {target}");
    }
    let sim = packages.iter().find(|package| package["name"] == "switchboard-sim").unwrap();
    for dependency in sim["dependencies"].as_array().unwrap() {
        let target = dependency["name"].as_str().unwrap();
        assert!(!["redb", "ractor"].contains(&target), "sim must stay outside the store and the actors: {target}");
    }
}
