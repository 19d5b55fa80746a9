//! The gateway's preview proxy on the local control plane, next to the same traffic sent directly
//! and through nginx.
//!
//! Starts the real operator and gateway (release builds) in a namespace and organisation of its
//! own, creates a project through the gateway's API, and serves a fixed 64-byte answer from a
//! stand-in dev server (hyper, HTTP/1.1 keep-alive) bound to the project pod's loopback IP and
//! preview port. Then measures:
//!
//! - throughput and latency: 32 keep-alive connections sending GETs back to back for 8 s (after
//!   1 s of warm-up), to the dev server directly, through the gateway's preview proxy and through
//!   nginx as a plain reverse proxy with pooled upstream connections; three rounds, the targets
//!   interleaved in each, so all three see the same machine noise;
//! - proxied traffic while ten sign-ins a second run (PBKDF2 on the gateway), against a round
//!   without them just before;
//! - waking: a second project with a 10 s idle timeout is left to hibernate five times, and each
//!   time one request through the gateway is timed to its response headers, next to the
//!   operator's own `status.lastWake.milliseconds`.
//!
//! Run with `make bench-gateway` (installs nginx if missing; uses the running local cluster or
//! brings one up for the run). The report goes to `benches/reports/gateway-proxy.md` and stdout;
//! the operator's and gateway's logs stay in the temporary directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::wait::{Condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use ooda::accounts::{AccountStore, AuthKey, CLIENT_ITERATIONS, DEFAULT_SERVER_ITERATIONS, Kdf};
use ooda::crd::{Organisation, Phase, Project};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

mod common;

use common::{
    SETTLE, Sender, TEST_LABEL, add_s3_credentials, checkout, checkout_and_kubeconfig, client, command_output, connect,
    create_home, free_port, median, ms, ooda, ooda_build, percentile, platform_account, ratio, ready_organisation,
    run_id, wait_answers, wait_for,
};

/// What the load sends: how many keep-alive connections, each fetching `path` back to back.
struct Shape {
    name: &'static str,
    connections: usize,
    path: &'static str,
    /// The dev server's answer's length.
    bytes: usize,
}

const SHAPES: [Shape; 2] = [
    Shape { name: "small answers", connections: 32, path: "/", bytes: BODY.len() },
    Shape { name: "1 MiB answers, many connections", connections: 256, path: "/large", bytes: LARGE_BYTES },
];
/// The shape of the sign-in runs.
const SMALL: &Shape = &SHAPES[0];
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURED: Duration = Duration::from_secs(8);
const ROUNDS: usize = 3;
const SIGN_INS_PER_SECOND: u32 = 10;
/// The server's rounds per sign-in, side by side: as 0.1 hashed the password itself, and as the
/// gateway hashes the client's auth key now (the client's 600,000 rounds are not the gateway's).
const SCHEMES: [(&str, u32); 2] = [
    ("before: the password, 600,000 rounds on the gateway", CLIENT_ITERATIONS),
    ("after: the client's auth key, 10,000 rounds on the gateway", DEFAULT_SERVER_ITERATIONS),
];
const WAKES: usize = 5;

/// What the stand-in dev server answers to every request.
const BODY: &[u8] = b"ooda gateway benchmark: a small fixed answer from the dev server";
const _: () = assert!(BODY.len() == 64);
/// The length of the dev server's answer on `/large`.
const LARGE_BYTES: usize = 1 << 20;
static LARGE: std::sync::LazyLock<Bytes> = std::sync::LazyLock::new(|| Bytes::from(vec![b'o'; LARGE_BYTES]));

const NGINX: &str = "nginx";
const TUNED_NGINX: &str = "nginx, tuned";
/// The target name of the gateway from another build.
const BASELINE: &str = "gateway (baseline build)";
const TOKEN_HEADER: &str = "x-ooda-preview-token";
const ALICE: &str = "alice@acme.example";
const PASSWORD: &str = "correct horse battery staple";

#[tokio::main]
async fn main() {
    let (repo, kubeconfig) = checkout_and_kubeconfig();
    let client = client(&kubeconfig).await;

    let run = run_id();
    let bench = Arc::new(Bench {
        home: format!("ooda-bench-gw-{run}"),
        org: format!("bench-{run}"),
        operator_http: free_port(),
        gateway: free_port(),
        gateway_http: free_port(),
        operator_log: std::env::temp_dir().join(format!("ooda-bench-operator-{run}.log")),
        gateway_log: std::env::temp_dir().join(format!("ooda-bench-gateway-{run}.log")),
        nginx_dir: std::env::temp_dir().join(format!("ooda-bench-nginx-{run}")),
        load_at_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        checkout: checkout(&repo),
        baseline: std::env::var_os("OODA_BENCH_BASELINE").map(|binary| Baseline {
            binary: binary.into(),
            listen: free_port(),
            http: free_port(),
            log: std::env::temp_dir().join(format!("ooda-bench-gateway-baseline-{run}.log")),
        }),
        client,
        run,
    });
    create_home(&bench.client, &bench.home, &bench.run).await;
    // The example configuration's sites buckets need their credentials Secret in ooda's
    // namespace (any key does for the local S3); without it deleting a project would wait.
    add_s3_credentials(&bench.client, &bench.home).await;

    let config = repo.join("examples/operator-config.yaml");
    let config = config.to_str().expect("utf-8 path");
    let selector = format!("{TEST_LABEL}={}", bench.run);
    let (operator_http, gateway, gateway_http) =
        (bench.operator_http.to_string(), bench.gateway.to_string(), bench.gateway_http.to_string());
    let mut operator = ooda(&kubeconfig, &bench.operator_log)
        .args(["operator", "--config", config, "--http-addr", &operator_http, "--namespace", &bench.home])
        .args(["--organisation-selector", &selector])
        .spawn()
        .expect("start the operator");
    let mut gateway = ooda(&kubeconfig, &bench.gateway_log)
        .args(["gateway", "--config", config, "--listen", &gateway, "--http-addr", &gateway_http])
        .args(["--insecure-http", "--namespace", &bench.home, "--activity-interval", "2s"])
        .spawn()
        .expect("start the gateway");
    // Another build of the gateway beside this one, to measure a change side by side.
    let mut baseline = bench.baseline.as_ref().map(|baseline| {
        ooda_build(&baseline.binary, &kubeconfig, &baseline.log)
            .args(["gateway", "--config", config, "--listen", &baseline.listen.to_string()])
            .args(["--http-addr", &baseline.http.to_string(), "--insecure-http", "--namespace", &bench.home])
            .args(["--activity-interval", "2s"])
            .spawn()
            .expect("start the baseline gateway")
    });

    // Clean up whether or not the measurement panics (its message is printed when it does).
    let outcome = tokio::spawn(measure(bench.clone())).await;
    cleanup(&bench).await;
    let _ = gateway.kill().await;
    if let Some(baseline) = &mut baseline {
        let _ = baseline.kill().await;
    }
    let _ = operator.kill().await;
    let results = outcome.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    let report = report(&bench, &results, &repo).await;
    let out = repo.join("benches/reports/gateway-proxy.md");
    std::fs::write(&out, &report).expect("write report");
    println!("{report}\nreport written to {}", out.display());
}

/// One run's names and addresses.
struct Bench {
    client: Client,
    /// Labels the organisation (the operator manages only it) and the home namespace.
    run: String,
    /// The operator's and gateway's namespace: Lease, accounts, signing keys.
    home: String,
    org: String,
    operator_http: SocketAddr,
    gateway: SocketAddr,
    gateway_http: SocketAddr,
    operator_log: PathBuf,
    gateway_log: PathBuf,
    /// nginx's configuration, error log and temporary files.
    nginx_dir: PathBuf,
    /// `/proc/loadavg` before anything started: other work on the machine adds noise.
    load_at_start: String,
    /// The commit checked out when the run started.
    checkout: String,
    /// Another build of the gateway, run beside this one (`OODA_BENCH_BASELINE`).
    baseline: Option<Baseline>,
}

/// A second gateway from another build, measured as one more target.
struct Baseline {
    binary: PathBuf,
    listen: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
}

impl Bench {
    fn org_namespace(&self) -> String {
        format!("org-{}", self.org)
    }
}

struct Results {
    nginx_version: String,
    /// Per shape and target, one run per round.
    shapes: Vec<(&'static Shape, Vec<TargetRuns>)>,
    quiet: Run,
    /// Per sign-in scheme, a gateway run with sign-ins alongside.
    signing: Vec<Signing>,
    wakes: Vec<Wake>,
}

/// A target's name and its run in each round.
type TargetRuns = (&'static str, Vec<Run>);

struct Signing {
    scheme: &'static str,
    iterations: u32,
    /// One server-side hash at this many rounds, on this machine.
    hash: Duration,
    busy: Run,
    sign_ins: SignIns,
}

async fn measure(b: Arc<Bench>) -> Results {
    wait_answers(b.operator_http, "operator", |body| body.starts_with("leader:")).await;
    wait_answers(b.gateway_http, "gateway", |body| body == "gateway ready").await;
    if let Some(baseline) = &b.baseline {
        wait_answers(baseline.http, "baseline gateway", |body| body == "gateway ready").await;
    }
    ready_organisation(
        &b.client,
        json!({
            "metadata": { "name": b.org, "labels": { TEST_LABEL: b.run } },
            "spec": {
                "jurisdiction": "eu",
                "members": [{ "email": ALICE, "role": "admin" }],
                "quota": { "projects": 10, "cpu": "16", "memory": "32Gi", "storage": "200Gi" },
            }
        }),
    )
    .await;

    let (account, auth_key) = platform_account(ALICE, PASSWORD, DEFAULT_SERVER_ITERATIONS).await;
    let accounts = AccountStore::new(b.client.clone(), &b.home);
    accounts.create(&account).await.expect("add account");
    let api = GatewayApi::sign_in(&b, &auth_key).await;

    let port = free_port().port();
    let (host, token) = api.running_project("bench", port, "15m").await;
    let upstream = SocketAddr::new(pod_ip(&b, "bench").await, port);
    serve(upstream).await;
    let nginx = Nginx::start(upstream, &b.nginx_dir, false);
    let tuned_nginx = Nginx::start(upstream, &b.nginx_dir.join("tuned"), true);
    let through_gateway = |name, gateway: SocketAddr| Target {
        name,
        addr: gateway,
        host: format!("{host}:{}", gateway.port()),
        token: Some(token.clone()),
    };
    let mut targets = vec![
        Target { name: "direct", addr: upstream, host: upstream.to_string(), token: None },
        through_gateway("gateway", b.gateway),
    ];
    if let Some(baseline) = &b.baseline {
        targets.push(through_gateway(BASELINE, baseline.listen));
    }
    for (name, nginx) in [(NGINX, &nginx), (TUNED_NGINX, &tuned_nginx)] {
        targets.push(Target { name, addr: nginx.addr, host: nginx.addr.to_string(), token: None });
    }
    let targets: Vec<Arc<Target>> = targets.into_iter().map(Arc::new).collect();
    for target in &targets {
        answers(target).await;
    }

    let mut shapes = Vec::new();
    for shape in &SHAPES {
        let mut runs: Vec<TargetRuns> = targets.iter().map(|t| (t.name, Vec::new())).collect();
        for round in 1..=ROUNDS {
            for (target, (_, done)) in targets.iter().zip(&mut runs) {
                let run = load(target, shape).await;
                eprintln!(
                    "{}, round {round}/{ROUNDS}: {} {:.0} requests/s, {} errors",
                    shape.name,
                    target.name,
                    run.rps(),
                    run.errors
                );
                done.push(run);
            }
        }
        shapes.push((shape, runs));
    }
    drop((nginx, tuned_nginx));

    let gateway = &targets[1];
    let quiet = load(gateway, SMALL).await;
    eprintln!("gateway {:.0} requests/s without sign-ins", quiet.rps());
    let mut signing = Vec::new();
    for (scheme, iterations) in SCHEMES {
        // alice's account hashed at this scheme's rounds: each sign-in costs the gateway one hash.
        let (account, _) = platform_account(ALICE, PASSWORD, iterations).await;
        accounts.reset_password(&account).await.expect("alice at the scheme's rounds");
        let hash = server_hash(&auth_key, iterations).await;
        let sign_ins = tokio::spawn(sign_in_load(b.gateway, auth_key.clone(), Instant::now() + WARM_UP + MEASURED));
        let busy = load(gateway, SMALL).await;
        let sign_ins = sign_ins.await.expect("sign-ins");
        eprintln!("{scheme}: {:.0} requests/s with {} sign-ins accepted", busy.rps(), sign_ins.accepted.len());
        signing.push(Signing { scheme, iterations, hash, busy, sign_ins });
    }
    // The resets ended alice's sessions: a new one for the wakes.
    let api = GatewayApi::sign_in(&b, &auth_key).await;

    let wakes = wakes(&b, &api).await;
    Results { nginx_version: nginx_version(), shapes, quiet, signing, wakes }
}

fn phase_is(phase: Phase) -> impl Condition<Project> {
    move |p: Option<&Project>| p.and_then(|p| p.status.as_ref()).and_then(|s| s.phase) == Some(phase)
}

async fn pod_ip(b: &Bench, project: &str) -> std::net::IpAddr {
    let pods: Api<Pod> = Api::namespaced(b.client.clone(), &b.org_namespace());
    let pod = wait_for(&pods, &format!("{project}-0"), |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.pod_ip.as_ref()).is_some()
    })
    .await;
    pod.and_then(|p| p.status?.pod_ip).expect("pod IP").parse().expect("an IP address")
}

/// Alice's session with the gateway's REST API.
struct GatewayApi {
    http: reqwest::Client,
    base: String,
    session: String,
    org: String,
    client: Client,
}

impl GatewayApi {
    async fn sign_in(b: &Bench, auth_key: &str) -> Self {
        let http = reqwest::Client::new();
        let base = format!("http://{}/api", b.gateway);
        let answer = http
            .post(format!("{base}/auth/login"))
            .json(&json!({ "email": ALICE, "authKey": auth_key }))
            .send()
            .await
            .expect("sign-in");
        assert_eq!(answer.status(), StatusCode::OK, "sign-in");
        let body: Value = answer.json().await.expect("sign-in answer");
        let session = body["token"].as_str().expect("session token").to_owned();
        // Sessions are checked against the gateway's cache of accounts: after a password reset
        // it may not have the new credential yet.
        let deadline = Instant::now() + SETTLE;
        let me = || http.get(format!("{base}/me")).bearer_auth(&session).send();
        while me().await.ok().map(|r| r.status()) != Some(StatusCode::OK) {
            assert!(Instant::now() < deadline, "the gateway does not accept alice's new session");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { http, base, session, org: b.org.clone(), client: b.client.clone() }
    }

    /// Creates a project through the API, waits until it runs, and returns its preview host and
    /// token.
    async fn running_project(&self, name: &str, port: u16, idle_timeout: &str) -> (String, String) {
        let projects = format!("{}/orgs/{}/projects", self.base, self.org);
        let body = json!({
            "name": name,
            "spec": {
                "ports": [{ "name": "web", "port": port, "preview": true }],
                "lifecycle": { "idleTimeout": idle_timeout },
            }
        });
        let created =
            self.http.post(&projects).bearer_auth(&self.session).json(&body).send().await.expect("create project");
        assert_eq!(created.status(), StatusCode::CREATED, "create project {name}: {:?}", created.text().await);
        let api: Api<Project> = Api::namespaced(self.client.clone(), &format!("org-{}", self.org));
        wait_for(&api, name, phase_is(Phase::Running)).await;
        let preview = self
            .http
            .get(format!("{projects}/{name}/preview"))
            .bearer_auth(&self.session)
            .send()
            .await
            .expect("preview link");
        assert_eq!(preview.status(), StatusCode::OK, "preview link of {name}");
        let preview: Value = preview.json().await.expect("preview answer");
        (preview["host"].as_str().expect("host").to_owned(), preview["token"].as_str().expect("token").to_owned())
    }
}

/// Binds the stand-in dev server on `address` and serves in the background: every request gets
/// the same 64 bytes, but `/large`, which gets 1 MiB.
async fn serve(address: SocketAddr) {
    let listener = TcpListener::bind(address).await.unwrap_or_else(|e| panic!("bind upstream on {address}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let body = if request.uri().path() == "/large" { LARGE.clone() } else { Bytes::from_static(BODY) };
                    Ok::<_, std::convert::Infallible>(
                        Response::builder().header(CONTENT_TYPE, "text/plain").body(Full::new(body)).expect("response"),
                    )
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}

/// nginx as a plain reverse proxy to the dev server, with pooled keep-alive upstream
/// connections; stopped when dropped.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Nginx {
    /// One worker and nginx's default buffers; or, `tuned`, a worker per core and 64 KiB buffers,
    /// as for large answers.
    fn start(upstream: SocketAddr, dir: &Path, tuned: bool) -> Self {
        let addr = free_port();
        std::fs::create_dir_all(dir).expect("nginx directory");
        let d = dir.display();
        let (workers, buffers) =
            if tuned { ("auto", "proxy_buffer_size 64k; proxy_buffers 16 64k;") } else { ("1", "") };
        // Keep-alive without a request limit on either side, as the gateway and the load have; large
        // answers stream from memory rather than spill to temporary files, as the gateway's do.
        let config = format!(
            "daemon off; master_process on; worker_processes {workers};\n\
             pid {d}/nginx.pid; error_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             access_log off; keepalive_requests 1000000;\n\
             client_body_temp_path {d}/client_body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             upstream dev {{ server {upstream}; keepalive 64; keepalive_requests 1000000; }}\n\
             server {{\n\
             listen {addr};\n\
             location / {{ proxy_pass http://dev; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
             proxy_max_temp_file_size 0; {buffers} }}\n\
             }}\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), config).expect("nginx.conf");
        let child = std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx (`make bench-gateway` installs it)");
        Self { child, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master stops its worker on SIGTERM; a kill would leave the worker behind.
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn nginx_version() -> String {
    let output = std::process::Command::new("nginx").arg("-v").output().expect("nginx -v");
    String::from_utf8_lossy(&output.stderr).trim().trim_start_matches("nginx version: ").to_owned()
}

/// Where load goes, and what its requests carry.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    host: String,
    token: Option<String>,
}

impl Target {
    fn request(&self, path: &str) -> Request<Empty<Bytes>> {
        let mut request = Request::get(path).header(HOST, &self.host);
        if let Some(token) = &self.token {
            request = request.header(TOKEN_HEADER, token);
        }
        request.body(Empty::new()).expect("request")
    }
}

/// Sends one request and reads the whole answer, keeping only its length.
async fn exchange(sender: &mut Sender, target: &Target, path: &str) -> Result<(StatusCode, usize), hyper::Error> {
    let response = sender.send_request(target.request(path)).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        length += frame?.data_ref().map_or(0, Bytes::len);
    }
    Ok((status, length))
}

/// Waits until the target serves the dev server's answer (nginx may still be starting).
async fn answers(target: &Target) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((mut sender, connection)) = connect(target.addr).await {
            let driver = tokio::spawn(connection);
            let answer = sender.send_request(target.request("/")).await;
            let answer = match answer {
                Ok(response) => Some((response.status(), response.into_body().collect().await.map(|b| b.to_bytes()))),
                Err(_) => None,
            };
            driver.abort();
            match answer {
                Some((StatusCode::OK, Ok(body))) if body == BODY => return,
                Some((status, body)) => panic!("{}: {status} {body:?}", target.name),
                None => {}
            }
        }
        assert!(Instant::now() < deadline, "{} does not answer on {}", target.name, target.addr);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One target's run: the latency of every request sent after the warm-up, until the end.
#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    /// Answers other than 200 or of another length, failed requests and lost connections.
    errors: u64,
}

impl Run {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / MEASURED.as_secs_f64()
    }
}

async fn load(target: &Arc<Target>, shape: &'static Shape) -> Run {
    let measured_from = Instant::now() + WARM_UP;
    let until = measured_from + MEASURED;
    let connections: Vec<_> =
        (0..shape.connections).map(|_| tokio::spawn(connection(target.clone(), shape, measured_from, until))).collect();
    let mut run = Run::default();
    for connection in connections {
        let done = connection.await.expect("load connection");
        run.latencies.extend(done.latencies);
        run.errors += done.errors;
    }
    run
}

/// One keep-alive connection sending requests back to back (reconnecting if it is lost), driven
/// in the same task as its requests.
async fn connection(target: Arc<Target>, shape: &Shape, measured_from: Instant, until: Instant) -> Run {
    let mut run = Run::default();
    while Instant::now() < until {
        let Some((mut sender, driver)) = connect(target.addr).await else {
            run.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let requests = async {
            while Instant::now() < until {
                if sender.ready().await.is_err() {
                    return;
                }
                let started = Instant::now();
                match exchange(&mut sender, &target, shape.path).await {
                    Ok((StatusCode::OK, length)) if length == shape.bytes && started >= measured_from => {
                        run.latencies.push(started.elapsed());
                    }
                    Ok((StatusCode::OK, length)) if length == shape.bytes => {}
                    Ok(_) => run.errors += 1,
                    Err(_) => return,
                }
            }
        };
        let lost = tokio::select! {
            () = requests => Instant::now() < until,
            _ = driver => true,
        };
        if lost {
            run.errors += 1;
        }
    }
    run
}

#[derive(Default)]
struct SignIns {
    issued: usize,
    accepted: Vec<Duration>,
    /// Answers other than 200 (by status), and requests that got no answer.
    failed: BTreeMap<String, usize>,
    /// Still waiting when the load ended; cancelled, so the gateway stops hashing for them.
    unfinished: usize,
}

impl SignIns {
    fn record(&mut self, (answer, took): (Result<StatusCode, reqwest::Error>, Duration)) {
        let failure = match answer {
            Ok(StatusCode::OK) => return self.accepted.push(took),
            Ok(status) => status.to_string(),
            Err(_) => "no answer".into(),
        };
        *self.failed.entry(failure).or_default() += 1;
    }
}

/// One server-side hash of `auth_key` at `iterations` rounds: the gateway's work per sign-in.
async fn server_hash(auth_key: &str, iterations: u32) -> Duration {
    let key = AuthKey::parse(auth_key).expect("an auth key");
    tokio::task::spawn_blocking(move || {
        let kdf = Kdf::new(iterations).expect("rounds the gateway accepts");
        let started = Instant::now();
        kdf.derive(&key);
        started.elapsed()
    })
    .await
    .expect("hashing")
}

/// Alice signs in `SIGN_INS_PER_SECOND` times a second, each attempt on its own, until `until`.
async fn sign_in_load(gateway: SocketAddr, auth_key: String, until: Instant) -> SignIns {
    let http = reqwest::Client::new();
    let url = format!("http://{gateway}/api/auth/login");
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / SIGN_INS_PER_SECOND);
    let mut attempts = JoinSet::new();
    let mut sign_ins = SignIns::default();
    let end = tokio::time::sleep_until(until);
    tokio::pin!(end);
    loop {
        tokio::select! {
            () = &mut end => break,
            _ = ticker.tick() => {
                sign_ins.issued += 1;
                let attempt = http.post(&url).json(&json!({ "email": ALICE, "authKey": &auth_key })).send();
                attempts.spawn(async move {
                    let started = Instant::now();
                    (attempt.await.map(|r| r.status()), started.elapsed())
                });
            }
            Some(done) = attempts.join_next() => sign_ins.record(done.expect("sign-in")),
        }
    }
    while let Some(done) = attempts.try_join_next() {
        sign_ins.record(done.expect("sign-in"));
    }
    sign_ins.unfinished = attempts.len();
    sign_ins
}

struct Wake {
    /// From sending the request to its response headers, through the gateway.
    first_response: Duration,
    /// The operator's `status.lastWake.milliseconds`: Lease renewal to pod Ready.
    operator_ms: i64,
}

/// A project with a 10 s idle timeout, and a dev server following its pod: each time it has
/// hibernated (and its pod is gone), one request through the gateway wakes it.
async fn wakes(b: &Bench, api: &GatewayApi) -> Vec<Wake> {
    let port = free_port().port();
    let (host, token) = api.running_project("nap", port, "10s").await;
    let follower = follow_pod(b, "nap", port);
    let target =
        Target { name: "nap", addr: b.gateway, host: format!("{host}:{}", b.gateway.port()), token: Some(token) };
    let projects: Api<Project> = Api::namespaced(b.client.clone(), &b.org_namespace());
    let pods: Api<Pod> = Api::namespaced(b.client.clone(), &b.org_namespace());
    let mut woken = Vec::new();
    let mut previous = None;
    for cycle in 1..=WAKES {
        wait_for(&projects, "nap", phase_is(Phase::Hibernated)).await;
        // The terminating pod would still be Ready for a moment: the request must find none.
        wait_for(&pods, "nap-0", |p: Option<&Pod>| p.is_none()).await;
        let (mut sender, connection) = connect(target.addr).await.expect("connect to the gateway");
        let driver = tokio::spawn(connection);
        let started = Instant::now();
        let response = tokio::time::timeout(Duration::from_secs(90), sender.send_request(target.request("/")))
            .await
            .expect("an answer within 90 s")
            .expect("an answer");
        let first_response = started.elapsed();
        assert_eq!(response.status(), StatusCode::OK, "the woken project answers");
        driver.abort();
        let seen = previous.clone();
        let project = wait_for(&projects, "nap", move |p: Option<&Project>| {
            let wake = p.and_then(|p| p.status.as_ref()?.last_wake.as_ref());
            wake.is_some_and(|w| Some(&w.completed_at) != seen.as_ref())
        })
        .await
        .expect("project");
        let wake = project.status.and_then(|s| s.last_wake).expect("last wake");
        eprintln!("wake {cycle}/{WAKES}: first response after {first_response:?}; operator {} ms", wake.milliseconds);
        woken.push(Wake { first_response, operator_ms: wake.milliseconds });
        previous = Some(wake.completed_at);
    }
    follower.abort();
    woken
}

/// Keeps a dev server on whatever IP the project's pod has (a wake gives it a new one).
fn follow_pod(b: &Bench, project: &str, port: u16) -> JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(b.client.clone(), &b.org_namespace());
    let config = watcher::Config::default().fields(&format!("metadata.name={project}-0"));
    tokio::spawn(async move {
        let mut serving: Vec<String> = Vec::new();
        let mut events = std::pin::pin!(watcher(pods, config).applied_objects());
        while let Some(Ok(pod)) = events.next().await {
            let Some(ip) = pod.status.and_then(|s| s.pod_ip) else { continue };
            if !serving.contains(&ip) {
                serve(SocketAddr::new(ip.parse().expect("pod IP"), port)).await;
                serving.push(ip);
            }
        }
    })
}

/// Deletes the run's organisation (its namespace and projects follow, while the operator still
/// runs their finalizers) and the home namespace.
async fn cleanup(b: &Bench) {
    let orgs: Api<Organisation> = Api::all(b.client.clone());
    let namespaces: Api<Namespace> = Api::all(b.client.clone());
    let labelled = ListParams::default().labels(&format!("{TEST_LABEL}={}", b.run));
    for org in orgs.list(&labelled).await.expect("list organisations") {
        orgs.delete(&org.name_any(), &Default::default()).await.expect("delete organisation");
        let namespace = format!("org-{}", org.name_any());
        if let Some(ns) = namespaces.get_opt(&namespace).await.expect("get namespace") {
            let uid = ns.metadata.uid.unwrap_or_default();
            wait_for(&namespaces, &namespace, conditions::is_deleted(&uid)).await;
        }
    }
    namespaces.delete(&b.home, &Default::default()).await.expect("delete the home namespace");
}

/// Requests per second (median of the rounds) and latency percentiles over every round.
struct Summary {
    rps: f64,
    rounds: Vec<f64>,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

fn summarise(runs: &[&Run]) -> Summary {
    let rounds: Vec<f64> = runs.iter().map(|r| r.rps()).collect();
    let mut latencies: Vec<Duration> = runs.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    latencies.sort_unstable();
    Summary {
        rps: median(&rounds),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        errors: runs.iter().map(|r| r.errors).sum(),
        rounds,
    }
}

/// One shape's tables: each target's numbers, then the gateway's over the others'.
fn throughput(shape: &Shape, targets: &[TargetRuns]) -> String {
    let summaries: Vec<(&str, Summary)> =
        targets.iter().map(|(name, runs)| (*name, summarise(&runs.iter().collect::<Vec<_>>()))).collect();
    let mib_per_second = |rps: f64| rps * shape.bytes as f64 / f64::from(1 << 20);
    let rows: String = summaries
        .iter()
        .map(|(name, s)| {
            let rounds = s.rounds.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
            let (rps, p50, p99) = (s.rps, ms(s.p50), ms(s.p99));
            format!("| {name} | {rps:.0} | {:.1} | {rounds} | {p50} | {p99} | {} |\n", mib_per_second(rps), s.errors)
        })
        .collect();
    let gateway = &summaries.iter().find(|(name, _)| *name == "gateway").expect("the gateway ran").1;
    let ratios: String = summaries
        .iter()
        .filter(|(name, _)| *name != "gateway")
        .map(|(name, over)| {
            format!(
                "| gateway / {name} | {} | {} | {} |\n",
                ratio(gateway.rps, over.rps),
                ratio(gateway.p50.as_secs_f64(), over.p50.as_secs_f64()),
                ratio(gateway.p99.as_secs_f64(), over.p99.as_secs_f64()),
            )
        })
        .collect();
    format!(
        "### {}: {} connections, `GET {}` ({} bytes)\n\n\
         | target | requests/s | MiB/s | per round | p50 | p99 | errors |\n|---|---|---|---|---|---|---|\n{rows}\n\
         | ratio | requests/s | p50 | p99 |\n|---|---|---|---|\n{ratios}\n",
        shape.name, shape.connections, shape.path, shape.bytes
    )
}

/// The lines of a log that `matters` picks, and each message once (timestamps dropped).
fn warnings(log: &Path, matters: fn(&str) -> bool) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| matters(l)).collect();
    let mut distinct: Vec<String> = Vec::new();
    for line in &lines {
        let message = line.split_once(' ').map_or(*line, |(_, rest)| rest).trim().to_owned();
        if !distinct.contains(&message) {
            distinct.push(message);
        }
    }
    (lines.len(), distinct)
}

async fn report(b: &Bench, r: &Results, repo: &Path) -> String {
    let throughput: String = r.shapes.iter().map(|(shape, targets)| throughput(shape, targets)).collect();
    let quiet = summarise(&[&r.quiet]);
    let signing_rows: String = r
        .signing
        .iter()
        .map(|s| {
            let busy = summarise(&[&s.busy]);
            let mut accepted = s.sign_ins.accepted.clone();
            accepted.sort_unstable();
            let failed = s.sign_ins.failed.values().sum::<usize>();
            format!(
                "| {} | {:.0} | {} | {} | {} | {} | {} / {} / {} / {} | {} | {} | {:.1} |\n",
                s.scheme,
                busy.rps,
                ms(busy.p50),
                ms(busy.p99),
                busy.errors,
                format_args!(
                    "{} / {} / {}",
                    ratio(busy.rps, quiet.rps),
                    ratio(busy.p50.as_secs_f64(), quiet.p50.as_secs_f64()),
                    ratio(busy.p99.as_secs_f64(), quiet.p99.as_secs_f64())
                ),
                s.sign_ins.issued,
                accepted.len(),
                failed,
                s.sign_ins.unfinished,
                ms(percentile(&accepted, 0.5)),
                ms(s.hash),
                hashing_slots() as f64 / s.hash.as_secs_f64(),
            )
        })
        .collect();
    let refusals: String = r
        .signing
        .iter()
        .filter(|s| !s.sign_ins.failed.is_empty())
        .map(|s| {
            let why = s.sign_ins.failed.iter().map(|(why, n)| format!("{n}× {why}")).collect::<Vec<_>>().join(", ");
            format!("Refused under \"{}\": {why}.\n", s.scheme)
        })
        .collect();
    let p99_ratio = |iterations: u32| {
        let s = r.signing.iter().find(|s| s.iterations == iterations).expect("both schemes ran");
        summarise(&[&s.busy]).p99.as_secs_f64() / quiet.p99.as_secs_f64()
    };
    let (before, after) = (p99_ratio(CLIENT_ITERATIONS), p99_ratio(DEFAULT_SERVER_ITERATIONS));
    let firsts: Vec<f64> = r.wakes.iter().map(|w| w.first_response.as_secs_f64() * 1000.0).collect();
    let operators: Vec<f64> = r.wakes.iter().map(|w| w.operator_ms as f64).collect();
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
    let ooda_warning: fn(&str) -> bool = |l| l.contains(" WARN ") || l.contains(" ERROR ");
    let logs: String = [
        ("gateway", b.gateway_log.clone(), ooda_warning),
        ("operator", b.operator_log.clone(), ooda_warning),
        // Its error log is at level warn: every line counts.
        ("nginx", b.nginx_dir.join("error.log"), |_| true),
        ("nginx, tuned", b.nginx_dir.join("tuned/error.log"), |_| true),
    ]
    .iter()
    .map(|(name, path, matters)| {
        let (count, distinct) = warnings(path, *matters);
        let mut text = format!("- {name}: {count} line(s) at WARN or above (`{}`)\n", path.display());
        for message in distinct.iter().take(5) {
            text += &format!("  - `{}`\n", message.chars().take(300).collect::<String>());
        }
        text
    })
    .collect();
    let kubernetes = b.client.apiserver_version().await.map(|v| v.git_version).unwrap_or_else(|_| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();

    format!(
        "# Gateway preview proxy: throughput, latency, sign-ins and wakes\n\n\
         Generated by `make bench-gateway` on {date}. Machine: {cores} cores ({cpu}), Linux {kernel}, load \
         average {load} before the run. ooda {version} ({checkout}), release build; {rustc}; \
         Kubernetes {kubernetes} (local control plane, kwok pods on loopback IPs); {nginx}.\n\n\
         Everything runs on this one machine: the load generator and the stand-in dev server (hyper, \
         HTTP/1.1, a fixed {body}-byte `text/plain` answer, or 1 MiB on `/large`, bound to the project pod's IP) in the benchmark's \
         tokio runtime, the gateway (`--insecure-http`), nginx (one worker), the operator and the control plane.\n\n\
         ## Throughput and latency\n\n\
         In each shape, keep-alive connections send GETs back to back for {measured} s after {warm} s of \
         warm-up; {ROUNDS} rounds, each running every target in turn. Requests/s is the median over the \
         rounds; percentiles are over every request of every round (send to last body byte).\n\n\
         {throughput}\
         - **direct**: the load generator straight to the dev server: the ceiling of this setup.\n\
         - **gateway**: `Host: <project>--<org>.<previewDomain>` and the `{TOKEN_HEADER}` header: the \
         gateway checks the token against its watch cache, rewrites the headers (hop-by-hop, token, \
         `X-Forwarded-*`), notes activity and forwards to the pod's IP over the upstream connection its \
         downstream connection holds.\n{baseline}\
         - **nginx**: a plain reverse proxy to the same dev server (`keepalive 64` upstream, HTTP/1.1, no \
         request limit per connection, no temporary files for large answers, access log off, one worker, \
         its default buffers): what a proxy with no per-request logic costs here.\n\
         - **nginx, tuned**: the same with a worker per core (as the gateway has a thread per core) and \
         64 KiB buffers (`proxy_buffer_size 64k; proxy_buffers 16 64k`): the strongest plain proxy of the \
         two, for large answers above all.\n\n\
         ## Proxied traffic while people sign in\n\n\
         A gateway run as above without sign-ins, then, in the same run, one per sign-in scheme with alice \
         signing in {SIGN_INS_PER_SECOND} times a second alongside (each a `POST /api/auth/login` with the right \
         auth key, sent on its own whether or not earlier ones have been answered). Before the client derivation \
         the gateway ran PBKDF2 over the password itself with 600,000 rounds per sign-in: the *before* row \
         gives alice's account that many server rounds, which is the same work. *After*, the client derives the \
         auth key (600,000 rounds, on the client's machine, done once by the benchmark here) and the gateway \
         hashes it with its default {after_rounds} rounds.\n\n\
         | gateway run | requests/s | p50 | p99 | errors | with / without (req/s, p50, p99) | sign-ins sent / accepted / refused / unfinished | accepted sign-in p50 | one server hash | most sign-ins/s the hashing slots allow |\n\
         |---|---|---|---|---|---|---|---|---|---|\n\
         | without sign-ins | {q_rps:.0} | {q50} | {q99} | {q_err} | | | | | |\n\
         {signing_rows}\n\
         p99 with {SIGN_INS_PER_SECOND} sign-ins/s over p99 without: **{before:.2}× before, {after:.2}× after** \
         (target ≤ 1.2×). {refusals}The gateway hashes {slots} at a time (its default: half the cores); \
         more wait behind its hashing semaphore rather than take the cores the proxy uses. Every attempt carried \
         the right auth key: a refusal is the limiter's or the gateway's, never the key's.\n\n\
         ## Waking a hibernated project\n\n\
         A second project with a 10 s idle timeout; {WAKES} times: wait (by watch) until it is Hibernated and \
         its pod is gone, then send one `GET /` through the gateway (token header, no `Accept: text/html`, so \
         the gateway holds the request until the project answers) and time it to the response headers.\n\n\
         | measure | median | max | each wake |\n|---|---|---|---|\n\
         | first response through the gateway (client's view) | {f_med:.0} ms | {f_max:.0} ms | {f_all} |\n\
         | `status.lastWake.milliseconds` (operator: Lease renewal to pod Ready) | {o_med:.0} ms | {o_max:.0} ms | {o_all} |\n\n\
         ## Logs\n\n{logs}\n\
         ## How to read this\n\n\
         The ratios matter more than the absolute numbers. Load generator, dev server, proxies and control \
         plane share {cores} cores, so a proxy's CPU comes out of the budget of the load that measures it: the \
         direct row is the most this setup can push, not what the dev server alone could do, and the spread \
         between rounds of one target shows the machine's noise (builds or tests running alongside add to \
         it: see the load average above). Gateway over nginx is the price of the gateway's per-request work \
         (preview-host lookup, constant-time token check, header rewriting, activity bookkeeping, metrics) \
         over a proxy that does none; gateway over direct includes the extra hop itself. Latencies are under \
         saturation (every connection always busy), so p50 is mostly queueing: compare rows with each \
         other, not with a single idle request. The sign-in rows show what key hashing costs the proxy: \
         the semaphore bounds hashing to {slots} core(s), so the drop is the share of the machine hashing is \
         allowed, not hashing escaping its bound. A wake's first response covers the operator's part (the \
         lastWake row: from the gateway's Lease renewal to the operator seeing the pod Ready; it can read a \
         little above the client's view, since the operator notes the end when it reconciles, possibly after \
         the gateway already saw the pod) plus the gateway seeing the Ready pod in its watch cache and reaching \
         the dev server, which the benchmark binds when its own watch sees the new pod IP. kwok makes pods \
         Ready at once: on a real cluster scheduling, volume attachment, container and dev-server start come \
         on top.\n",
        date = Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        cores = std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel = kernel.trim(),
        load = b.load_at_start.split_whitespace().take(3).collect::<Vec<_>>().join(" / "),
        version = env!("CARGO_PKG_VERSION"),
        checkout = b.checkout,
        rustc = command_output("rustc", &["--version"], repo).unwrap_or_else(|| "rustc unknown".into()),
        nginx = r.nginx_version,
        body = BODY.len(),
        baseline = b.baseline.as_ref().map_or(String::new(), |baseline| format!(
            "- **{BASELINE}**: the same gateway from another build (`{}`), running beside this one, \
             to measure a change side by side.\n",
            baseline.binary.display()
        )),
        measured = MEASURED.as_secs(),
        warm = WARM_UP.as_secs(),
        q_rps = quiet.rps,
        q50 = ms(quiet.p50),
        q99 = ms(quiet.p99),
        q_err = quiet.errors,
        after_rounds = DEFAULT_SERVER_ITERATIONS,
        slots = hashing_slots(),
        f_med = median(&firsts),
        f_max = max(&firsts),
        f_all = list(&firsts),
        o_med = median(&operators),
        o_max = max(&operators),
        o_all = list(&operators),
    )
}

/// The gateway's default number of concurrent password hashes (`--hashing-slots`).
fn hashing_slots() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}
