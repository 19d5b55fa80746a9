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
        .args(["--auth-key-iterations", "999"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("run ooda");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 1000"));
}

type Bodies = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A stand-in gateway whose prelogin offers `iterations` rounds over the salt "salt"; it keeps the
/// sign-in bodies it gets.
async fn stand_in_gateway(iterations: u32) -> (std::net::SocketAddr, Bodies) {
    use axum::routing::post;
    let bodies = Bodies::default();
    let kept = bodies.clone();
    let app = axum::Router::new()
        .route(
            "/api/auth/prelogin",
            post(move || async move {
                axum::Json(serde_json::json!({ "kdf": "pbkdf2-sha256", "iterations": iterations, "salt": "c2FsdA==" }))
            }),
        )
        .route(
            "/api/auth/login",
            post(move |axum::Json(body): axum::Json<serde_json::Value>| async move {
                kept.lock().expect("bodies").push(body);
                axum::Json(serde_json::json!({ "token": "a-session" }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, bodies)
}

/// `ooda login` against `gateway` with `password` on standard input: (success, stdout, stderr).
async fn ooda_login(gateway: std::net::SocketAddr, password: &str) -> (bool, String, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ooda"))
        .args(["login", "--gateway", &format!("http://{gateway}"), "--email", "Alice@Acme.Example", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ooda login");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, format!("{password}\n").as_bytes()).await.expect("password");
    drop(stdin);
    let output = child.wait_with_output().await.expect("ooda login");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8");
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[tokio::test]
async fn ooda_login_sends_the_auth_key_never_the_password_and_refuses_weak_derivations() {
    let password = "correct horse battery staple";
    // A gateway (or whoever answers in its place) offering a cheap derivation gets nothing.
    let (weak, bodies) = stand_in_gateway(100_000).await;
    let (ok, _, stderr) = ooda_login(weak, password).await;
    assert!(!ok && stderr.contains("weaker than pbkdf2-sha256 with 600000 rounds"), "{stderr}");
    assert!(bodies.lock().unwrap().is_empty(), "no sign-in was sent");

    let (fair, bodies) = stand_in_gateway(600_000).await;
    let (ok, stdout, stderr) = ooda_login(fair, password).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "a-session\n", "the token alone on standard output");
    let sent = bodies.lock().unwrap().clone();
    let expected = ooda::accounts::AuthKey::derive(password, b"salt", 600_000).expect("a key").to_base64();
    assert_eq!(sent, [serde_json::json!({ "email": "alice@acme.example", "authKey": expected })]);
    assert!(!sent[0].to_string().contains(password));
}
