//! What the benchmarks share: names for a run, the release `ooda` as a child process, waiting
//! on the control plane, raw HTTP/1.1 connections, and the arithmetic and provenance of reports.
//! Each benchmark includes it as `mod common`. The client and free ports are the test kit's,
//! which the cluster tests use too.

#![allow(dead_code)] // Each benchmark uses its own part.

#[path = "../../tests/kit/mod.rs"]
pub mod kit;

#[allow(unused_imports)] // Each benchmark uses its own part.
pub use kit::{client, free_port, platform_account};

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::Instant;

/// The deadline for things the control plane does on its own.
pub const SETTLE: Duration = Duration::from_secs(60);
/// Labels what a run creates, so the operator manages only it and clean-up finds it.
pub const TEST_LABEL: &str = "ooda.run/test";

pub type Sender = SendRequest<Empty<Bytes>>;

/// The run's namespace for the operator and gateway (Lease, accounts, keys, credentials),
/// labelled with the run so clean-up finds it.
pub async fn create_home(client: &Client, name: &str, run: &str) {
    let home: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": { TEST_LABEL: run } } }))
            .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &home)
        .await
        .expect("create the home namespace");
}

/// Six hex digits, unique enough for names on one cluster.
pub fn run_id() -> String {
    let mut bytes = [0u8; 3];
    getrandom::fill(&mut bytes).expect("randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The release `ooda` binary, logging warnings and errors to `log`; killed when dropped.
pub fn ooda(kubeconfig: &Path, log: &Path) -> Command {
    ooda_build(Path::new(env!("CARGO_BIN_EXE_ooda")), kubeconfig, log)
}

/// As [`ooda`], from another build of it (`binary`), to measure a change side by side.
pub fn ooda_build(binary: &Path, kubeconfig: &Path, log: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .kill_on_drop(true);
    command
}

/// A run's release operator (managing the run's organisations) and gateway, both ready.
pub struct Started {
    pub operator: tokio::process::Child,
    pub gateway: tokio::process::Child,
    /// The gateway's public listener.
    pub addr: SocketAddr,
}

/// Starts the operator and the gateway of run `run` (`bench` names their logs) with the
/// configuration file `config` and ooda's namespace `home`; `gateway_args` are added to the
/// gateway's (`--insecure-http` always is).
pub async fn start_ooda(
    kubeconfig: &Path,
    bench: &str,
    run: &str,
    home: &str,
    config: &str,
    gateway_args: &[&str],
) -> Started {
    let (operator_http, addr, gateway_http) = (free_port(), free_port(), free_port());
    let log = |part: &str| log_path(bench, part, run);
    let operator = ooda(kubeconfig, &log("operator"))
        .args(["operator", "--config", config, "--namespace", home, "--http-addr", &operator_http.to_string()])
        .args(["--organisation-selector", &format!("{TEST_LABEL}={run}")])
        .spawn()
        .expect("start the operator");
    let gateway = ooda(kubeconfig, &log("gateway"))
        .args(["gateway", "--config", config, "--namespace", home, "--insecure-http"])
        .args(["--listen", &addr.to_string(), "--http-addr", &gateway_http.to_string()])
        .args(gateway_args)
        .spawn()
        .expect("start the gateway");
    wait_answers(operator_http, "operator", |body| body.starts_with("leader:")).await;
    wait_answers(gateway_http, "gateway", |body| body == "gateway ready").await;
    Started { operator, gateway, addr }
}

/// Where [`start_ooda`] has `part` (`operator`, `gateway`) of run `run` of `bench` log.
pub fn log_path(bench: &str, part: &str, run: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ooda-bench-{bench}-{part}-{run}.log"))
}

/// Waits, by watch, until `condition` holds for the named object; returns it (`None` if the
/// condition holds for its absence).
pub async fn wait_for<K>(api: &Api<K>, name: &str, condition: impl Condition<K>) -> Option<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(SETTLE, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(object)) => object,
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => panic!("{name} did not reach the expected state within {SETTLE:?}"),
    }
}

pub async fn connect(addr: SocketAddr) -> Option<(Sender, Connection<TokioIo<TcpStream>, Empty<Bytes>>)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or_default()
}

/// Milliseconds, with decimals only where they matter.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    match ms {
        ..10.0 => format!("{ms:.2} ms"),
        ..100.0 => format!("{ms:.1} ms"),
        _ => format!("{ms:.0} ms"),
    }
}

pub fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

/// `commit <hash>`, and whether the working tree differs from it.
pub fn checkout(repo: &Path) -> String {
    let Some(commit) = command_output("git", &["rev-parse", "--short", "HEAD"], repo) else {
        return "commit unknown".into();
    };
    let changed = command_output("git", &["status", "--porcelain"], repo).is_some_and(|s| !s.is_empty());
    format!("commit {commit}{}", if changed { " with local changes" } else { "" })
}

/// What a command prints, if it succeeds.
pub fn command_output(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let output = std::process::Command::new(program).args(args).current_dir(dir).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Polls a plain HTTP endpoint of ours until its body passes `ready`.
pub async fn wait_answers(addr: SocketAddr, what: &str, ready: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            let mut response = String::new();
            let request = format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_ok()
                && stream.read_to_string(&mut response).await.is_ok()
                && response.split_once("\r\n\r\n").is_some_and(|(_, body)| ready(body))
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} on {addr} not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The S3 credentials Secret the example configuration names, in ooda's namespace `home` (the
/// local S3 takes any key); without it deleting a project with a site would wait.
pub async fn add_s3_credentials(client: &Client, home: &str) {
    let credentials: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": { "name": "ooda-sites-s3" },
        "stringData": { ooda::sites::ACCESS_KEY_ID: "bench", ooda::sites::SECRET_ACCESS_KEY: "bench-secret" },
    }))
    .expect("secret");
    Api::namespaced(client.clone(), home)
        .create(&PostParams::default(), &credentials)
        .await
        .expect("create the S3 credentials Secret");
}

/// Creates the organisation `manifest` and waits until it is Ready.
pub async fn ready_organisation(client: &Client, manifest: serde_json::Value) {
    let org: ooda::crd::Organisation = serde_json::from_value(manifest).expect("organisation");
    let name = org.metadata.name.clone().expect("a name");
    let orgs: Api<ooda::crd::Organisation> = Api::all(client.clone());
    orgs.create(&PostParams::default(), &org).await.expect("create organisation");
    wait_for(&orgs, &name, |o: Option<&ooda::crd::Organisation>| {
        o.and_then(|o| o.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
}

/// What a benchmark run starts from: the checkout, the bed's kubeconfig and a client, the run's
/// id, and its home namespace `ooda-bench-<bench>-<run>` (with the S3 credentials the example
/// configuration names) for the operator and gateway.
pub struct Run {
    pub repo: PathBuf,
    pub kubeconfig: PathBuf,
    pub client: Client,
    pub id: String,
    pub home: String,
}

pub async fn start_run(bench: &str) -> Run {
    let (repo, kubeconfig) = checkout_and_kubeconfig();
    let client = client(&kubeconfig).await;
    let id = run_id();
    let home = format!("ooda-bench-{bench}-{id}");
    create_home(&client, &home, &id).await;
    add_s3_credentials(&client, &home).await;
    Run { repo, kubeconfig, client, id, home }
}

/// The checkout under test and the bed's kubeconfig (`OODA_KUBECONFIG`, or the checkout's
/// `.local/kubeconfig`). Read at run time: the target directory is shared between clones.
pub fn checkout_and_kubeconfig() -> (PathBuf, PathBuf) {
    let repo = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kubeconfig = std::env::var_os("OODA_KUBECONFIG").map(PathBuf::from).unwrap_or(repo.join(".local/kubeconfig"));
    (repo, kubeconfig)
}
