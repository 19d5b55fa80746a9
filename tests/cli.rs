//! The `ooda` binary's own checks, which need no cluster.

use std::process::Command;

/// The checkout under test, read when the test runs: build outputs are shared between clones
/// (the target directory lives outside them), so a path compiled in could name another clone.
fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests"))
}

fn ooda() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ooda"))
}

#[test]
fn an_invalid_operator_configuration_stops_start_up_naming_the_setting() {
    let dir = std::env::temp_dir().join(format!("ooda-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let example = std::fs::read_to_string(repo().join("examples/operator-config.yaml")).expect("example config");
    let cases = [
        ("idleTimeout: 15m", "idleTimeout: 5s", "defaults.idleTimeout"),
        ("storageClass: eu-ssd", "storageClass: EU SSD", "jurisdictions.eu.storageClass"),
        ("previewDomain: preview.ooda.localhost", "previewDomain: localhost", "previewDomain"),
        ("regions: [us-east-1]", "regon: [us-east-1]", "unknown field `regon`"),
    ];
    for (from, to, named) in cases {
        assert!(example.contains(from), "the example still has {from:?}");
        let path = dir.join("config.yaml");
        std::fs::write(&path, example.replace(from, to)).expect("write config");
        let output = ooda()
            .args(["operator", "--config", path.to_str().expect("utf-8"), "--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .expect("run ooda");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{to:?} must stop start-up");
        assert!(stderr.contains(named), "{to:?}: the error should name {named:?}: {stderr}");
    }
    let output = ooda().args(["operator", "--config", "/nonexistent/config.yaml"]).output().expect("run ooda");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/config.yaml"));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn crds_prints_both_definitions() {
    let output = ooda().arg("crds").output().expect("run ooda crds");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let documents: Vec<serde_yaml::Value> =
        text.split("\n---\n").map(|d| serde_yaml::from_str(d).expect("YAML")).collect();
    let names: Vec<&str> = documents.iter().filter_map(|d| d["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["organisations.ooda.run", "projects.ooda.run"]);
}

#[test]
fn the_gateway_refuses_plain_http_unless_asked_for_it() {
    let config = repo().join("examples/operator-config.yaml");
    let output = ooda()
        .args(["gateway", "--config", config.to_str().expect("utf-8"), "--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("run ooda");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--tls-cert") && stderr.contains("--insecure-http"), "{stderr}");
    let weak = ooda()
        .args(["gateway", "--config", config.to_str().expect("utf-8"), "--insecure-http"])
        .args(["--password-iterations", "1000"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("run ooda");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 600000"));
}
