//! Published sites on the local control plane: publishing a large site through the gateway, and
//! serving its files through the gateway next to reading them from S3 directly, on two S3
//! servers side by side: moto (the bed's, in Python) and s3s-fs (in Rust, objects in files).
//!
//! Starts s3s-fs (the binary `OODA_S3S_FS` names; `scripts/build-s3s-fs.sh` builds it at
//! `S3S_FS_VERSION` of `scripts/versions.env`, patched to set TCP_NODELAY on the connections it
//! accepts) on 127.0.0.1 and a free port, its objects in a directory of its own under the
//! temporary directory and the benchmark's credentials required (SigV4), and creates in it the
//! buckets `examples/operator-config.yaml` names. moto is the bed's, on
//! 127.0.0.1:`OODA_S3_PORT` (else the example's endpoint). For each server, the real operator
//! and gateway (release builds) run in a namespace and organisation of their own, with a copy of
//! the example configuration whose endpoints are that server, and the S3 credentials Secret it
//! names. The benchmark creates a project through each gateway's API, and generates a site in
//! memory: 1,000 files of varied sizes adding up to 50 MB (.html, .css, .js with compressible
//! text, .png with incompressible bytes), the same on every run. Then measures, the two servers
//! taking turns:
//!
//! - publishing: the site as a tar and as a tar.gz archive, three times each to each server,
//!   interleaved (each publish is a new version), the archive built before the clock starts and
//!   streamed as the request body; timed to the gateway's `201 Created`. Each gateway's resident
//!   memory (VmRSS, and its peak VmHWM) is read from `/proc` before and after, to show it streams;
//! - serving: 16 workers sending GETs back to back for 5 s (after 1 s of warm-up) for a 2 KB
//!   .html and a 256 KB .png, through the gateway (keep-alive connections, the site's host name)
//!   and straight from S3 with the AWS SDK (the client the gateway itself uses); three rounds,
//!   every target of both servers in each.
//!
//! Throughout, the CPU time of the gateway, the S3 server, the benchmark and the rest of the
//! machine is read from `/proc`: moto (Python) is the bottleneck on its side, and the machine is
//! shared.
//!
//! Run with `make bench-sites` (builds s3s-fs, uses the running local cluster and its moto, or
//! brings them up for the run). The report goes to `benches/reports/sites.md` and stdout; the
//! operators', gateways' and s3s-fs's logs stay in the temporary directory, s3s-fs's objects do
//! not.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::Credentials;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::conditions;
use kube::{Client, ResourceExt};
use ooda::accounts::{AccountStore, DEFAULT_SERVER_ITERATIONS};
use ooda::config::{OperatorConfig, SitesStorage};
use ooda::crd::{Organisation, Phase, Project};
use ooda::sites::{ACCESS_KEY_ID, Bucket, SECRET_ACCESS_KEY};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

mod common;

use common::{
    Sender, Started, TEST_LABEL, checkout, checkout_and_kubeconfig, client, command_output, connect, create_home,
    free_port, log_path, median, ms, percentile, platform_account, ratio, ready_organisation, run_id, start_ooda,
    wait_for,
};

/// Files of the generated site, and what they add up to.
const FILES: usize = 1_000;
const SITE_BYTES: usize = 50_000_000;
/// Publishes of each archive format to each server.
const PUBLISHES: usize = 3;
/// The pieces an archive is streamed to the gateway in.
const UPLOAD_CHUNK: usize = 64 << 10;
const CONNECTIONS: usize = 16;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURED: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;
/// Throughput and sizes are in decimal megabytes.
const MB: f64 = 1e6;

/// The files the serving measurement asks for; both are part of the generated site.
const SMALL: Served = Served { path: "index.html", size: 2 << 10 };
const LARGE: Served = Served { path: "img/hero.png", size: 256 << 10 };

const JURISDICTION: &str = "eu";
const PROJECT: &str = "site";
const ALICE: &str = "alice@acme.example";
const PASSWORD: &str = "correct horse battery staple";
/// Any credentials do for moto; s3s-fs is started to require these. The Secret and the
/// benchmark's own S3 client use them.
const S3_ACCESS_KEY: &str = "ooda-bench";
const S3_SECRET_KEY: &str = "ooda-bench-secret";

/// The S3 servers measured side by side.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    /// The bed's: moto, a mock of AWS in Python (Werkzeug).
    Moto,
    /// Started by the benchmark: s3s-fs, the s3s project's S3 server on a directory (Rust, hyper).
    S3sFs,
}

impl Server {
    const ALL: [Server; 2] = [Server::Moto, Server::S3sFs];

    fn name(self) -> &'static str {
        match self {
            Self::Moto => "moto",
            Self::S3sFs => "s3s-fs",
        }
    }

    /// In the run's names: organisations, namespaces, labels.
    fn tag(self) -> &'static str {
        match self {
            Self::Moto => "moto",
            Self::S3sFs => "s3s",
        }
    }
}

#[tokio::main]
async fn main() {
    let (repo, kubeconfig) = checkout_and_kubeconfig();
    let client = client(&kubeconfig).await;
    let example_path = repo.join("examples/operator-config.yaml");
    let example_text = std::fs::read_to_string(&example_path).expect("the example configuration");
    let example = OperatorConfig::load(&example_path).expect("the example configuration");
    let storage = example.jurisdictions[JURISDICTION].sites.clone().expect("sites storage in the EU");
    let buckets: BTreeSet<String> =
        example.jurisdictions.values().filter_map(|j| j.sites.as_ref()).map(|s| s.bucket.clone()).collect();
    let example_endpoint = format!("endpoint: {}", storage.endpoint);
    assert!(example_text.contains(&example_endpoint), "the example configuration names the local S3");

    let run = run_id();
    let info = RunInfo {
        load_at_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        checkout: checkout(&repo),
    };
    let moto: SocketAddr = match std::env::var("OODA_S3_PORT") {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port.parse().expect("OODA_S3_PORT is a port"))),
        Err(_) => {
            storage.endpoint.trim_start_matches("http://").parse().expect("the local S3 endpoint is http://IP:port")
        }
    };
    let s3s_fs = S3sFs::start(&run, &storage, &buckets, &repo).await;

    let ticks_per_second = command_output("getconf", &["CLK_TCK"], &repo).and_then(|t| t.parse().ok()).unwrap_or(100.0);
    let mut benches = Vec::new();
    let mut processes = Vec::new();
    let mut children = Vec::new();
    for server in Server::ALL {
        let s3 = match server {
            Server::Moto => moto,
            Server::S3sFs => s3s_fs.addr,
        };
        let pass = format!("{run}-{}", server.tag());
        let mut storage = storage.clone();
        storage.endpoint = format!("http://{s3}");
        // The example with every jurisdiction's endpoint on this server.
        let config = std::env::temp_dir().join(format!("ooda-bench-sites-config-{pass}.yaml"));
        std::fs::write(&config, example_text.replace(&example_endpoint, &format!("endpoint: {}", storage.endpoint)))
            .expect("write the configuration");
        let (home, client) = (format!("ooda-bench-sites-{pass}"), client.clone());
        create_home(&client, &home, &pass).await;
        // The operator and the gateway read it when they start.
        add_s3_credentials(&client, &home, &storage).await;
        let started = start_ooda(&kubeconfig, "sites", &pass, &home, config.to_str().expect("utf-8 path"), &[]).await;
        let b = Arc::new(Bench {
            server,
            home,
            org: format!("bench-{pass}"),
            gateway: started.addr,
            operator_log: log_path("sites", "operator", &pass),
            gateway_log: log_path("sites", "gateway", &pass),
            sites_domain: example.sites_domain.clone().expect("a sites domain"),
            s3,
            bucket: Bucket::new(&storage, credentials()),
            config,
            client,
            run: pass,
        });
        b.bucket.client.head_bucket().bucket(&b.bucket.name).send().await.unwrap_or_else(|e| {
            panic!("bucket {} on {} {} (`make cluster-up` starts moto): {e:?}", b.bucket.name, server.name(), b.s3)
        });
        processes.push(Processes {
            benchmark: std::process::id(),
            gateway: started.gateway.id().expect("the gateway's pid"),
            s3: match server {
                Server::Moto => listener_pid(b.s3),
                Server::S3sFs => s3s_fs.child.id(),
            },
            ticks_per_second,
        });
        children.push(started);
        benches.push(b);
    }

    // Clean up whether or not the measurement panics (its message is printed when it does).
    let outcome = tokio::spawn(measure(benches.clone(), processes.clone())).await;
    let mut left = Vec::new();
    for b in &benches {
        left.push(cleanup(b).await);
    }
    let s3_after: Vec<Option<Memory>> = processes.iter().map(|p| p.s3.and_then(memory_of)).collect();
    for Started { mut operator, mut gateway, .. } in children {
        let _ = gateway.kill().await;
        let _ = operator.kill().await;
    }
    for b in &benches {
        delete_home(b).await;
    }
    let s3s_fs_run = S3sFsRun { version: s3s_fs.version.clone(), log: s3s_fs.log.clone() };
    s3s_fs.stop().await;
    for b in &benches {
        let _ = std::fs::remove_file(&b.config);
    }
    let results = outcome.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    let report = report(&benches, &results, &left, &s3_after, &info, &s3s_fs_run, &repo).await;
    let out = repo.join("benches/reports/sites.md");
    std::fs::write(&out, &report).expect("write report");
    println!("{report}\nreport written to {}", out.display());
}

/// What the benchmark and its S3 client sign with.
fn credentials() -> Credentials {
    Credentials::new(S3_ACCESS_KEY, S3_SECRET_KEY, None, None, "ooda-bench")
}

/// s3s-fs, started for the run: on 127.0.0.1 and a free port, its objects in a directory of its
/// own, SigV4 with the benchmark's credentials required. Killed when dropped.
struct S3sFs {
    child: tokio::process::Child,
    addr: SocketAddr,
    data: PathBuf,
    /// What `s3s-fs --version` prints.
    version: String,
    log: PathBuf,
}

/// What the report says of s3s-fs once it is stopped.
struct S3sFsRun {
    version: String,
    log: PathBuf,
}

impl S3sFs {
    /// Starts it and creates `buckets` in it (with the client the gateway uses).
    async fn start(run: &str, storage: &SitesStorage, buckets: &BTreeSet<String>, repo: &Path) -> Self {
        let binary = std::env::var("OODA_S3S_FS")
            .expect("OODA_S3S_FS names the s3s-fs binary (`make bench-sites` builds it with scripts/build-s3s-fs.sh)");
        let version = command_output(&binary, &["--version"], repo)
            .unwrap_or_else(|| panic!("{binary} --version: is OODA_S3S_FS the s3s-fs binary?"));
        let addr = free_port();
        let data = std::env::temp_dir().join(format!("ooda-bench-s3s-fs-{run}"));
        std::fs::create_dir_all(&data).expect("s3s-fs's directory");
        let log = std::env::temp_dir().join(format!("ooda-bench-s3s-fs-{run}.log"));
        let mut child = tokio::process::Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&data)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            // It logs to standard output.
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("s3s-fs exited ({status}); see {}", log.display());
            }
            assert!(Instant::now() < deadline, "s3s-fs not listening on {addr} after 10 s; see {}", log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for name in buckets {
            let mut storage = storage.clone();
            storage.endpoint = format!("http://{addr}");
            storage.bucket.clone_from(name);
            let bucket = Bucket::new(&storage, credentials());
            bucket
                .client
                .create_bucket()
                .bucket(name)
                .send()
                .await
                .unwrap_or_else(|e| panic!("create bucket {name} on s3s-fs {addr}: {e:?}"));
        }
        Self { child, addr, data, version, log }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// One server's part of the run: names and addresses.
struct Bench {
    server: Server,
    client: Client,
    /// Labels the organisation (the operator manages only it) and the home namespace.
    run: String,
    /// The operator's and gateway's namespace: Lease, accounts, signing keys, S3 credentials.
    home: String,
    org: String,
    gateway: SocketAddr,
    operator_log: PathBuf,
    gateway_log: PathBuf,
    /// Sites are served on `<project>--<org>.<sites_domain>`.
    sites_domain: String,
    /// The S3 server, and the EU bucket on it as the benchmark reads it directly.
    s3: SocketAddr,
    bucket: Bucket,
    /// The operator's and gateway's configuration: the example's, with this server's endpoint.
    config: PathBuf,
}

impl Bench {
    fn org_namespace(&self) -> String {
        format!("org-{}", self.org)
    }
}

/// What the report says of the run as a whole.
struct RunInfo {
    /// `/proc/loadavg` before anything started: other work on the machine adds noise.
    load_at_start: String,
    /// The commit checked out when the run started.
    checkout: String,
}

/// The Secret the configuration names, in the home namespace, with the benchmark's credentials.
async fn add_s3_credentials(client: &Client, home: &str, storage: &SitesStorage) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": storage.credentials_secret },
        "stringData": { ACCESS_KEY_ID: S3_ACCESS_KEY, SECRET_ACCESS_KEY: S3_SECRET_KEY },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), home)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the S3 credentials Secret");
}

struct Results {
    site: Site,
    /// One per server, in the order of `Server::ALL`.
    servers: Vec<ServerResults>,
}

struct ServerResults {
    /// The gateway's memory just after it reported ready, before publishing, after publishing
    /// and after serving.
    memory: [Memory; 4],
    publishes: Vec<Publish>,
    /// Per target, one run per round.
    targets: Vec<(Arc<Target>, Vec<Run>)>,
    /// What the S3 server says it is (moto's Server header).
    server_header: Option<String>,
    /// The S3 server's memory when the run started.
    s3_before: Option<Memory>,
    /// Whether the S3 server closes each connection after one answer.
    closes_connections: Option<bool>,
}

/// Both servers' organisations, accounts and projects, then publishing and serving, the servers
/// taking turns.
async fn measure(benches: Vec<Arc<Bench>>, processes: Vec<Processes>) -> Results {
    let mut apis = Vec::new();
    let mut idle = Vec::new();
    let mut s3_before = Vec::new();
    for (b, p) in benches.iter().zip(&processes) {
        idle.push(memory(p.gateway));
        s3_before.push(p.s3.and_then(memory_of));
        ready_organisation(
            &b.client,
            json!({
                "metadata": { "name": b.org, "labels": { TEST_LABEL: b.run } },
                "spec": {
                    "jurisdiction": JURISDICTION,
                    "members": [{ "email": ALICE, "role": "admin" }],
                    "quota": { "projects": 10, "cpu": "16", "memory": "32Gi", "storage": "200Gi" },
                }
            }),
        )
        .await;
        let (account, auth_key) = platform_account(ALICE, PASSWORD, DEFAULT_SERVER_ITERATIONS).await;
        AccountStore::new(b.client.clone(), &b.home).create(&account).await.expect("add account");
        let api = GatewayApi::sign_in(b, &auth_key).await;
        api.running_project(b).await;
        apis.push(api);
    }

    let site = tokio::task::spawn_blocking(Site::generate).await.expect("generating the site");
    let before: Vec<Memory> = processes.iter().map(|p| memory(p.gateway)).collect();
    let mut publishes: Vec<Vec<Publish>> = benches.iter().map(|_| Vec::new()).collect();
    for round in 1..=PUBLISHES {
        for archive in &site.archives {
            for (i, (api, p)) in apis.iter().zip(&processes).enumerate() {
                let start = p.cpu();
                let (took, answer) = api.publish(archive).await;
                let cpu = busy(&start, &p.cpu());
                assert_eq!(
                    (answer["files"].as_u64(), answer["bytes"].as_u64()),
                    (Some(FILES as u64), Some(SITE_BYTES as u64)),
                    "the whole site is published: {answer}"
                );
                let version = answer["version"].as_i64().expect("version");
                eprintln!(
                    "publish {round}/{PUBLISHES} to {}: {} as v{version} in {took:.2?}",
                    benches[i].server.name(),
                    archive.format
                );
                publishes[i].push(Publish { format: archive.format, bytes: archive.bytes.len(), version, took, cpu });
            }
        }
    }
    let published: Vec<Memory> = processes.iter().map(|p| memory(p.gateway)).collect();

    let mut targets: Vec<Vec<(Arc<Target>, Vec<Run>)>> = Vec::new();
    for (b, done) in benches.iter().zip(&publishes) {
        let live = done.last().expect("publishes").version;
        let mut server_targets = Vec::new();
        for file in [SMALL, LARGE] {
            let contents = site.contents(file.path).to_vec();
            let key = format!("{}/{PROJECT}/v{live}/{}", b.org, file.path);
            let host = format!("{PROJECT}--{}.{}:{}", b.org, b.sites_domain, b.gateway.port());
            for via in [Via::Gateway { addr: b.gateway, host }, Via::Direct { bucket: b.bucket.clone(), key }] {
                let target = Arc::new(Target { server: b.server, file, via });
                answers(&target, &contents).await;
                server_targets.push((target, Vec::new()));
            }
        }
        targets.push(server_targets);
    }
    for round in 1..=ROUNDS {
        for (server_targets, p) in targets.iter_mut().zip(&processes) {
            for (target, done) in server_targets.iter_mut() {
                let run = load(target, p).await;
                eprintln!(
                    "round {round}/{ROUNDS}: {} {} {} {:.0} requests/s, {} errors",
                    target.server.name(),
                    target.file.path,
                    target.via.name(),
                    run.rps(),
                    run.errors
                );
                done.push(run);
            }
        }
    }

    let mut servers = Vec::new();
    for (i, ((b, p), (publishes, targets))) in
        benches.iter().zip(&processes).zip(publishes.into_iter().zip(targets)).enumerate()
    {
        servers.push(ServerResults {
            memory: [idle[i], before[i], published[i], memory(p.gateway)],
            publishes,
            targets,
            server_header: match b.server {
                Server::Moto => server_header(b.s3).await,
                Server::S3sFs => None,
            },
            s3_before: s3_before[i],
            closes_connections: closes_connections(b.s3, &b.bucket.name).await,
        });
    }
    Results { site, servers }
}

/// One HTTP/1.0 GET, the whole response as text.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut response = Vec::new();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    stream.read_to_end(&mut response).await.ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// What moto says it is (it runs on Werkzeug).
async fn server_header(addr: SocketAddr) -> Option<String> {
    let response = http_get(addr, "/moto-api/").await?;
    let (head, _) = response.split_once("\r\n\r\n")?;
    head.lines().find_map(|l| l.strip_prefix("Server: ").map(str::to_owned))
}

/// Whether an S3 server closes the connection after answering one HTTP/1.1 request (a HEAD of
/// `bucket`, unsigned: any answer will do), so that every S3 request costs a new TCP connection.
async fn closes_connections(addr: SocketAddr, bucket: &str) -> Option<bool> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(format!("HEAD /{bucket} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).await.ok()?;
            if n == 0 {
                return Some(true);
            }
            head.extend_from_slice(&buffer[..n]);
        }
        let says_close = String::from_utf8_lossy(&head).to_ascii_lowercase().contains("\r\nconnection: close");
        // A server that keeps the connection sends nothing more; one that closes it ends it.
        let ends =
            matches!(tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await, Ok(Ok(0)));
        Some(says_close || ends)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.ok().flatten()
}

/// Alice's session with the gateway's REST API.
struct GatewayApi {
    http: reqwest::Client,
    base: String,
    session: String,
    org: String,
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
        Self { http, base, session, org: b.org.clone() }
    }

    /// Creates the project through the API and waits until it runs (and so is in the gateway's
    /// cache).
    async fn running_project(&self, b: &Bench) {
        let created = self
            .http
            .post(format!("{}/orgs/{}/projects", self.base, self.org))
            .bearer_auth(&self.session)
            .json(&json!({ "name": PROJECT, "spec": {} }))
            .send()
            .await
            .expect("create project");
        assert_eq!(created.status(), StatusCode::CREATED, "create project: {:?}", created.text().await);
        let projects: Api<Project> = Api::namespaced(b.client.clone(), &b.org_namespace());
        wait_for(&projects, PROJECT, |p: Option<&Project>| {
            p.and_then(|p| p.status.as_ref()).and_then(|s| s.phase) == Some(Phase::Running)
        })
        .await;
    }

    /// Streams `archive` as the body of a publish; the time to the gateway's answer, and the
    /// answer.
    async fn publish(&self, archive: &Archive) -> (Duration, Value) {
        let bytes = archive.bytes.clone();
        let chunks = (0..bytes.len())
            .step_by(UPLOAD_CHUNK)
            .map(move |at| Ok::<_, std::io::Error>(bytes.slice(at..(at + UPLOAD_CHUNK).min(bytes.len()))));
        let started = Instant::now();
        let answer = self
            .http
            .post(format!("{}/orgs/{}/projects/{PROJECT}/publish", self.base, self.org))
            .bearer_auth(&self.session)
            .header(CONTENT_TYPE, archive.content_type)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .expect("publish");
        let status = answer.status();
        let body: Value = answer.json().await.expect("publish answer");
        let took = started.elapsed();
        assert_eq!(status, StatusCode::CREATED, "publish {}: {body}", archive.format);
        (took, body)
    }
}

/// The generated site and its archives.
struct Site {
    files: Vec<(String, Vec<u8>)>,
    archives: [Archive; 2],
}

struct Archive {
    format: &'static str,
    content_type: &'static str,
    bytes: Bytes,
}

impl Site {
    /// `FILES` files adding up to `SITE_BYTES`: the two served ones, and the rest with sizes
    /// spread evenly on a log scale over three orders of magnitude (scaled to the total) and
    /// extensions drawn at random.
    fn generate() -> Self {
        let mut rng = Rng(0x00da_5175);
        let mut files = vec![
            (SMALL.path.to_owned(), contents(&mut rng, "html", SMALL.size)),
            (LARGE.path.to_owned(), contents(&mut rng, "png", LARGE.size)),
        ];
        let weights: Vec<f64> = (files.len()..FILES).map(|_| 1000f64.powf(rng.unit())).collect();
        let rest = SITE_BYTES - SMALL.size - LARGE.size;
        let scale = rest as f64 / weights.iter().sum::<f64>();
        let mut sizes: Vec<usize> = weights.iter().map(|w| ((w * scale) as usize).max(1)).collect();
        let short = rest - sizes.iter().sum::<usize>();
        *sizes.last_mut().expect("files") += short;
        for (i, size) in sizes.into_iter().enumerate() {
            let (extension, path) = match rng.below(4) {
                0 => ("html", format!("pages/page-{i:03}.html")),
                1 => ("css", format!("assets/style-{i:03}.css")),
                2 => ("js", format!("assets/app-{i:03}.js")),
                _ => ("png", format!("img/photo-{i:03}.png")),
            };
            files.push((path, contents(&mut rng, extension, size)));
        }
        let tar = tar(&files);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&tar).expect("compress");
        let tar_gz = gzip.finish().expect("compress");
        let archives = [
            Archive { format: "tar", content_type: "application/x-tar", bytes: tar.into() },
            Archive { format: "tar.gz", content_type: "application/gzip", bytes: tar_gz.into() },
        ];
        Self { files, archives }
    }

    fn contents(&self, path: &str) -> &[u8] {
        self.files.iter().find(|(p, _)| p == path).map(|(_, data)| data.as_slice()).expect("a file of the site")
    }
}

/// Text for .html, .css and .js (words and numbers: it compresses about as well as real assets),
/// random bytes behind a PNG signature for .png (compressed already, like real images).
fn contents(rng: &mut Rng, extension: &str, size: usize) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "site", "publish", "static", "version", "bucket", "gateway", "stream", "archive", "header", "footer", "button",
        "margin", "padding", "color", "function", "return", "const", "value", "index", "style", "script", "display",
        "border", "content",
    ];
    let mut out = Vec::with_capacity(size + 16);
    let head: &[u8] = match extension {
        "png" => b"\x89PNG\r\n\x1a\n",
        "html" => b"<!doctype html>\n",
        "css" => b"/* ooda benchmark */\n",
        _ => b"\"use strict\";\n",
    };
    out.extend_from_slice(head);
    while out.len() < size {
        if extension == "png" {
            out.extend_from_slice(&rng.next().to_le_bytes());
        } else if rng.below(4) == 0 {
            out.extend_from_slice(rng.below(100_000).to_string().as_bytes());
            out.push(b';');
        } else {
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
            out.push(if rng.below(10) == 0 { b'\n' } else { b' ' });
        }
    }
    out.truncate(size);
    out
}

/// A plain tar archive of the files (GNU headers, mode 0644).
fn tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SITE_BYTES + files.len() * 1024 + 1024);
    for (path, data) in files {
        let mut header = tokio_tar::Header::new_gnu();
        header.set_path(path).expect("a short relative path");
        header.set_entry_type(tokio_tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// splitmix64: the same seed gives the same site on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Publish {
    format: &'static str,
    /// The archive's size.
    bytes: usize,
    version: i64,
    took: Duration,
    cpu: CpuUse,
}

/// A process's resident memory and its peak so far, in kB as `/proc` reports them.
#[derive(Clone, Copy)]
struct Memory {
    rss: u64,
    peak: u64,
}

fn memory(pid: u32) -> Memory {
    memory_of(pid).unwrap_or_else(|| panic!("VmRSS and VmHWM in /proc/{pid}/status"))
}

/// `None` once the process is gone.
fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix(" kB")?.parse().ok());
    Some(Memory { rss: field("VmRSS:")?, peak: field("VmHWM:")? })
}

/// The processes whose CPU time the benchmark follows.
#[derive(Clone, Copy)]
struct Processes {
    benchmark: u32,
    gateway: u32,
    /// The S3 server: moto when `ss` can tell which process listens on its port, s3s-fs always.
    s3: Option<u32>,
    ticks_per_second: f64,
}

/// CPU seconds used so far, and when they were read.
struct CpuSample {
    at: Instant,
    benchmark: f64,
    gateway: f64,
    s3: Option<f64>,
    /// Every process on the machine (all cores together).
    machine: f64,
}

/// Cores kept busy between two samples (1.0 is one core all the time).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    benchmark: f64,
    gateway: f64,
    s3: Option<f64>,
    /// Everything else: the operator, the control plane, and whatever else runs on the machine.
    others: Option<f64>,
}

impl Processes {
    fn cpu(&self) -> CpuSample {
        let seconds = |pid: u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // utime and stime: the 14th and 15th fields, the 12th and 13th after the command.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / self.ticks_per_second)
        };
        CpuSample {
            at: Instant::now(),
            benchmark: seconds(self.benchmark).expect("the benchmark's CPU time"),
            gateway: seconds(self.gateway).expect("the gateway's CPU time"),
            s3: self.s3.and_then(seconds),
            machine: machine_busy_ticks() / self.ticks_per_second,
        }
    }
}

/// Ticks all cores spent on anything but idling and waiting for I/O, from `/proc/stat`.
fn machine_busy_ticks() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let total = stat.lines().next().and_then(|l| l.strip_prefix("cpu ")).expect("the cpu line of /proc/stat");
    // user nice system idle iowait irq softirq steal (guest time is counted in user already).
    let ticks: Vec<f64> = total.split_whitespace().take(8).map(|t| t.parse().expect("ticks")).collect();
    ticks.iter().sum::<f64>() - ticks[3] - ticks[4]
}

fn busy(from: &CpuSample, to: &CpuSample) -> CpuUse {
    let wall = (to.at - from.at).as_secs_f64();
    let (benchmark, gateway) = ((to.benchmark - from.benchmark) / wall, (to.gateway - from.gateway) / wall);
    let s3 = from.s3.zip(to.s3).map(|(from, to)| (to - from) / wall);
    let machine = (to.machine - from.machine) / wall;
    CpuUse { benchmark, gateway, s3, others: s3.map(|s3| (machine - benchmark - gateway - s3).max(0.0)) }
}

/// The process listening on `addr`, as `ss` reports it.
fn listener_pid(addr: SocketAddr) -> Option<u32> {
    let filter = format!("sport = :{}", addr.port());
    let output = std::process::Command::new("ss").args(["-Hltnp", &filter]).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split("pid=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A file the serving measurement asks for.
#[derive(Clone, Copy)]
struct Served {
    path: &'static str,
    size: usize,
}

/// Where the GETs for a file go.
struct Target {
    server: Server,
    file: Served,
    via: Via,
}

enum Via {
    /// The gateway, on keep-alive connections, with the site's host name.
    Gateway { addr: SocketAddr, host: String },
    /// The object in the bucket, with the AWS SDK client the gateway uses (one client shared
    /// by the workers, as the gateway shares its own).
    Direct { bucket: Bucket, key: String },
}

impl Via {
    fn name(&self) -> &'static str {
        match self {
            Self::Gateway { .. } => "gateway",
            Self::Direct { .. } => "direct",
        }
    }
}

/// Sends one GET for `path` to the gateway and reads the whole answer.
async fn exchange(sender: &mut Sender, host: &str, path: &str) -> Result<(StatusCode, Bytes), hyper::Error> {
    let request = Request::get(format!("/{path}")).header(HOST, host).body(Empty::new()).expect("request");
    let response = sender.send_request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// The object straight from the bucket.
async fn direct_get(bucket: &Bucket, key: &str) -> Option<Bytes> {
    let object = bucket.client.get_object().bucket(&bucket.name).key(key).send().await.ok()?;
    Some(object.body.collect().await.ok()?.into_bytes())
}

/// Waits until the target serves `contents` (the gateway sees a new version by watch).
async fn answers(target: &Target, contents: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = match &target.via {
            Via::Gateway { addr, host } => match connect(*addr).await {
                Some((mut sender, connection)) => {
                    let driver = tokio::spawn(connection);
                    let answer = exchange(&mut sender, host, target.file.path).await.ok();
                    driver.abort();
                    answer
                }
                None => None,
            },
            Via::Direct { bucket, key } => direct_get(bucket, key).await.map(|body| (StatusCode::OK, body)),
        };
        match answer {
            Some((StatusCode::OK, body)) if body == contents => return,
            answer => assert!(
                Instant::now() < deadline,
                "{} {}: {:?}",
                target.via.name(),
                target.file.path,
                answer.map(|(status, body)| (status, body.len()))
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One target's run: the latency of every request sent after the warm-up, until the end.
#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    /// Answers other than 200 with the whole file, failed requests and lost connections.
    errors: u64,
    /// Over the measured part.
    cpu: CpuUse,
}

impl Run {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / MEASURED.as_secs_f64()
    }

    fn record(&mut self, started: Instant, measured_from: Instant, whole: bool) {
        if !whole {
            self.errors += 1;
        } else if started >= measured_from {
            self.latencies.push(started.elapsed());
        }
    }
}

async fn load(target: &Arc<Target>, processes: &Processes) -> Run {
    let measured_from = Instant::now() + WARM_UP;
    let until = measured_from + MEASURED;
    let workers: Vec<_> =
        (0..CONNECTIONS).map(|_| tokio::spawn(worker(target.clone(), measured_from, until))).collect();
    tokio::time::sleep_until(measured_from).await;
    let start = processes.cpu();
    let mut run = Run::default();
    for worker in workers {
        let done = worker.await.expect("load worker");
        run.latencies.extend(done.latencies);
        run.errors += done.errors;
    }
    run.cpu = busy(&start, &processes.cpu());
    run
}

/// Sends GETs back to back until `until`: on one keep-alive connection to the gateway
/// (reconnecting if it is lost, driven in the same task as its requests), or through the
/// shared SDK client.
async fn worker(target: Arc<Target>, measured_from: Instant, until: Instant) -> Run {
    let mut run = Run::default();
    let size = target.file.size;
    let (addr, host) = match &target.via {
        Via::Gateway { addr, host } => (*addr, host),
        Via::Direct { bucket, key } => {
            while Instant::now() < until {
                let started = Instant::now();
                let body = direct_get(bucket, key).await;
                run.record(started, measured_from, body.is_some_and(|b| b.len() == size));
            }
            return run;
        }
    };
    while Instant::now() < until {
        let Some((mut sender, driver)) = connect(addr).await else {
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
                match exchange(&mut sender, host, target.file.path).await {
                    Ok((status, body)) => {
                        run.record(started, measured_from, status == StatusCode::OK && body.len() == size)
                    }
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

/// Deletes the run's organisation (its namespace and project follow, while the operator still
/// runs their finalizers, which purge the published objects); returns how many objects are left
/// under the organisation's prefix in the bucket.
async fn cleanup(b: &Bench) -> usize {
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
    b.bucket.list(&format!("{}/", b.org)).await.expect("list the bucket").len()
}

/// Deletes the home namespace, once its operator is stopped (a running one would log the renewals
/// of its Lease failing).
async fn delete_home(b: &Bench) {
    let namespaces: Api<Namespace> = Api::all(b.client.clone());
    namespaces.delete(&b.home, &Default::default()).await.expect("delete the home namespace");
}

/// Requests per second (median of the rounds) and latency percentiles over every round.
struct Summary {
    rps: f64,
    rounds: Vec<f64>,
    p50: Duration,
    p99: Duration,
    errors: u64,
    /// The S3 server's and everything else's share of a core, mean over the rounds.
    s3: Option<f64>,
    others: Option<f64>,
    /// CPU time per request (median over the rounds) of the benchmark (the load generator, and
    /// the S3 client of the direct target), of the gateway and of the S3 server.
    benchmark_per_request: Duration,
    gateway_per_request: Duration,
    s3_per_request: Option<Duration>,
}

fn summarise(runs: &[Run]) -> Summary {
    let rounds: Vec<f64> = runs.iter().map(Run::rps).collect();
    let mut latencies: Vec<Duration> = runs.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    latencies.sort_unstable();
    let per_request = |cores: fn(&CpuUse) -> Option<f64>| {
        let seconds: Option<Vec<f64>> = runs.iter().map(|r| Some(cores(&r.cpu)? / r.rps())).collect();
        Some(Duration::from_secs_f64(median(&seconds?)))
    };
    Summary {
        rps: median(&rounds),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        errors: runs.iter().map(|r| r.errors).sum(),
        s3: mean(runs.iter().map(|r| r.cpu.s3)),
        others: mean(runs.iter().map(|r| r.cpu.others)),
        benchmark_per_request: per_request(|c| Some(c.benchmark)).expect("always known"),
        gateway_per_request: per_request(|c| Some(c.gateway)).expect("always known"),
        s3_per_request: per_request(|c| c.s3),
        rounds,
    }
}

/// The mean, if every value is known.
fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Vec<f64> = values.collect::<Option<_>>()?;
    Some(values.iter().sum::<f64>() / values.len() as f64)
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / MB)
}

/// `/proc`'s kB (KiB) in MB.
fn mb_of_kb(kb: u64) -> String {
    mb(kb as f64 * 1024.0)
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Cores kept busy, as a share of one core.
fn cores(cpu: Option<f64>) -> String {
    cpu.map_or_else(|| "?".into(), |c| format!("{:.0}%", c * 100.0))
}

/// The 1, 5 and 15 minute load averages of a `/proc/loadavg`.
fn load_average(loadavg: &str) -> String {
    loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" / ")
}

/// The WARN and ERROR lines of a log, and each message once (timestamps dropped).
fn warnings(log: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    let mut distinct: Vec<String> = Vec::new();
    for line in &lines {
        let message = line.split_once(' ').map_or(*line, |(_, rest)| rest).trim().to_owned();
        if !distinct.contains(&message) {
            distinct.push(message);
        }
    }
    (lines.len(), distinct)
}

/// What the site holds, by extension, and the spread of its file sizes.
fn site_table(site: &Site) -> String {
    let mut rows = String::new();
    for extension in ["html", "css", "js", "png"] {
        let files: Vec<usize> = site
            .files
            .iter()
            .filter(|(path, _)| path.ends_with(&format!(".{extension}")))
            .map(|(_, data)| data.len())
            .collect();
        rows += &format!("| .{extension} | {} | {} |\n", files.len(), mb(files.iter().sum::<usize>() as f64));
    }
    let mut sizes: Vec<usize> = site.files.iter().map(|(_, data)| data.len()).collect();
    sizes.sort_unstable();
    format!(
        "| files | count | size |\n|---|---|---|\n{rows}| all | {} | {} |\n\n\
         File sizes: smallest {} bytes, median {} bytes, largest {} bytes.",
        sizes.len(),
        mb(sizes.iter().sum::<usize>() as f64),
        sizes[0],
        sizes[sizes.len() / 2],
        sizes[sizes.len() - 1],
    )
}

/// The median time of a server's publishes of `format`, in seconds.
fn publish_median(publishes: &[Publish], format: &str) -> f64 {
    let seconds: Vec<f64> = publishes.iter().filter(|p| p.format == format).map(|p| p.took.as_secs_f64()).collect();
    median(&seconds)
}

/// The file system a path is on, from `/proc/mounts` (the longest mount point above it).
fn file_system(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((*fields.get(1)?, *fields.get(2)?))
        })
        .filter(|(point, _)| path.starts_with(point))
        .max_by_key(|(point, _)| point.len())
        .map_or_else(|| "file system unknown".into(), |(point, kind)| format!("{kind} on {point}"))
}

/// `left`: objects left in each server's bucket after the clean-up; `s3_after`: each server's
/// memory then.
async fn report(
    benches: &[Arc<Bench>],
    r: &Results,
    left: &[usize],
    s3_after: &[Option<Memory>],
    info: &RunInfo,
    s3s_fs: &S3sFsRun,
    repo: &Path,
) -> String {
    let [tar, tar_gz] = &r.site.archives;
    let servers: Vec<(&Bench, &ServerResults)> = benches.iter().map(|b| &**b).zip(&r.servers).collect();
    let summaries: Vec<Vec<(&Target, Summary)>> =
        r.servers.iter().map(|s| s.targets.iter().map(|(t, runs)| (&**t, summarise(runs))).collect()).collect();
    let rps = |server: usize, file: Served, via: &str| {
        summaries[server]
            .iter()
            .find(|(t, _)| t.file.path == file.path && t.via.name() == via)
            .map_or(f64::NAN, |(_, s)| s.rps)
    };
    // Per server: site MB/s publishing the tar and the tar.gz, requests/s of the four targets.
    let headline: Vec<[f64; 6]> = r
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            [
                SITE_BYTES as f64 / MB / publish_median(&s.publishes, tar.format),
                SITE_BYTES as f64 / MB / publish_median(&s.publishes, tar_gz.format),
                rps(i, SMALL, "gateway"),
                rps(i, SMALL, "direct"),
                rps(i, LARGE, "gateway"),
                rps(i, LARGE, "direct"),
            ]
        })
        .collect();
    let s3_publishing: Vec<Option<f64>> =
        r.servers.iter().map(|s| mean(s.publishes.iter().map(|p| p.cpu.s3))).collect();
    let s3_serving: Vec<Option<f64>> =
        summaries.iter().map(|targets| mean(targets.iter().map(|(_, s)| s.s3))).collect();
    let mut summary_rows: String = servers
        .iter()
        .enumerate()
        .map(|(i, (b, _))| {
            let [tar, tar_gz, small_gateway, small_direct, large_gateway, large_direct] = headline[i];
            format!(
                "| {} | {tar:.1} | {tar_gz:.1} | {} | {small_gateway:.0} | {small_direct:.0} | {large_gateway:.0} \
                 | {large_direct:.0} | {} |\n",
                b.server.name(),
                cores(s3_publishing[i]),
                cores(s3_serving[i]),
            )
        })
        .collect();
    let speedups: Vec<String> = (0..6).map(|column| ratio(headline[1][column], headline[0][column])).collect();
    summary_rows += &format!(
        "| s3s-fs / moto | {} | {} | – | {} | {} | {} | {} | – |\n",
        speedups[0], speedups[1], speedups[2], speedups[3], speedups[4], speedups[5]
    );

    let publish_rows: String = servers
        .iter()
        .flat_map(|(b, s)| {
            r.site.archives.iter().map(move |archive| {
                let runs: Vec<&Publish> = s.publishes.iter().filter(|p| p.format == archive.format).collect();
                let seconds: Vec<f64> = runs.iter().map(|p| p.took.as_secs_f64()).collect();
                let median = median(&seconds);
                let each = seconds.iter().map(|s| format!("{s:.2} s")).collect::<Vec<_>>().join(", ");
                format!(
                    "| {} | {} | {} | {median:.2} s | {each} | {:.1} | {:.1} | {} |\n",
                    b.server.name(),
                    archive.format,
                    mb(archive.bytes.len() as f64),
                    SITE_BYTES as f64 / MB / median,
                    archive.bytes.len() as f64 / MB / median,
                    cores(mean(runs.iter().map(|p| p.cpu.s3))),
                )
            })
        })
        .collect();
    let publish_runs: String = servers
        .iter()
        .flat_map(|(b, s)| {
            s.publishes.iter().map(move |p| {
                let seconds = p.took.as_secs_f64();
                format!(
                    "| {} | v{} | {} | {seconds:.2} s | {:.1} | {:.1} | {} | {} | {} | {} |\n",
                    b.server.name(),
                    p.version,
                    p.format,
                    SITE_BYTES as f64 / MB / seconds,
                    p.bytes as f64 / MB / seconds,
                    cores(Some(p.cpu.gateway)),
                    cores(p.cpu.s3),
                    cores(Some(p.cpu.benchmark)),
                    cores(p.cpu.others),
                )
            })
        })
        .collect();

    let n = r.servers[0].publishes.len();
    let memory_rows: String = [
        "idle, just after it reported ready",
        "before publishing (organisation, sign-in, project)",
        &format!("after its {n} publishes") as &str,
        "after serving",
    ]
    .iter()
    .enumerate()
    .map(|(moment, label)| {
        let columns: String = r
            .servers
            .iter()
            .map(|s| format!(" {} | {} |", mb_of_kb(s.memory[moment].rss), mb_of_kb(s.memory[moment].peak)))
            .collect();
        format!("| {label} |{columns}\n")
    })
    .collect();
    let memory_header: String =
        servers.iter().map(|(b, _)| format!(" {0}: VmRSS | {0}: VmHWM |", b.server.name())).collect();
    let streaming: String = servers
        .iter()
        .map(|(b, s)| {
            let [_, before, published, _] = s.memory;
            let growth = published.peak.saturating_sub(before.peak) as f64 * 1024.0;
            let share = growth / tar.bytes.len() as f64;
            let verdict = if share < 0.25 {
                "far below the archive's size: it streams"
            } else {
                "**not** far below the archive's size: something holds archives (or much of them) in memory"
            };
            format!(
                "- {}'s gateway: its peak grew by {} ({:.0}% of one tar archive) to {}, {verdict}.\n",
                b.server.name(),
                mb(growth),
                share * 100.0,
                mb_of_kb(published.peak),
            )
        })
        .collect();
    let uploaded: usize = r.servers.iter().flat_map(|s| s.publishes.iter().map(|p| p.bytes)).sum();

    let serving_rows: String = summaries
        .iter()
        .flatten()
        .map(|(t, s)| {
            let rounds = s.rounds.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
            format!(
                "| {} | {} ({} bytes) | {} | {:.0} | {rounds} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                t.server.name(),
                t.file.path,
                t.file.size,
                t.via.name(),
                s.rps,
                s.rps * t.file.size as f64 / MB,
                ms(s.p50),
                ms(s.p99),
                s.errors,
                cores(s.s3),
                cores(s.others),
                s.s3_per_request.map_or_else(|| "?".into(), micros),
                match t.via {
                    Via::Gateway { .. } => micros(s.gateway_per_request),
                    Via::Direct { .. } => "–".into(),
                },
                micros(s.benchmark_per_request),
            )
        })
        .collect();
    let ratio_rows: String = summaries
        .iter()
        .flat_map(|targets| targets.chunks(2))
        .map(|pair| {
            let [(t, gateway), (_, direct)] = pair else { unreachable!("gateway and direct per file") };
            format!(
                "| {} | {} | {} | {} | {} |\n",
                t.server.name(),
                t.file.path,
                ratio(gateway.rps, direct.rps),
                ratio(gateway.p50.as_secs_f64(), direct.p50.as_secs_f64()),
                ratio(gateway.p99.as_secs_f64(), direct.p99.as_secs_f64()),
            )
        })
        .collect();
    let connections: String = servers
        .iter()
        .map(|(b, s)| match s.closes_connections {
            Some(true) => format!(
                "- {} closes the connection after every answer: each S3 request, the gateway's and the \
                 benchmark's, opens a new TCP connection.\n",
                b.server.name()
            ),
            Some(false) => format!(
                "- {} keeps connections open: the SDK clients (the gateway's and the benchmark's) reuse \
                 pooled keep-alive connections.\n",
                b.server.name()
            ),
            None => format!("- {}: did not answer the connection probe.\n", b.server.name()),
        })
        .collect();
    let cleanup_rows: String = servers
        .iter()
        .zip(left)
        .map(|((b, _), left)| format!("- {}: {left} object(s) left under `{}/`.\n", b.server.name(), b.org))
        .collect();
    let log_files: Vec<(String, PathBuf)> = servers
        .iter()
        .flat_map(|(b, _)| {
            [
                (format!("gateway ({})", b.server.name()), b.gateway_log.clone()),
                (format!("operator ({})", b.server.name()), b.operator_log.clone()),
            ]
        })
        .chain([(
            "s3s-fs (the connection probe's unsigned HEAD is refused as AccessDenied, and logged)".to_owned(),
            s3s_fs.log.clone(),
        )])
        .collect();
    let logs: String = log_files
        .iter()
        .map(|(name, path)| {
            let (count, distinct) = warnings(path);
            let mut text = format!("- {name}: {count} line(s) at WARN or above (`{}`)\n", path.display());
            for message in distinct.iter().take(5) {
                text += &format!("  - `{}`\n", message.chars().take(300).collect::<String>());
            }
            text
        })
        .collect();
    // The S3 server's CPU per GetObject of a file, from its direct row.
    let s3_cost = |server: usize, file: Served| {
        summaries[server]
            .iter()
            .find(|(t, _)| t.file.path == file.path && t.via.name() == "direct")
            .and_then(|(_, s)| s.s3_per_request)
            .map_or_else(|| "?".into(), micros)
    };
    let s3_memory = |i: usize| {
        let rss = |m: Option<Memory>| m.map_or_else(|| "unknown".into(), |m| mb_of_kb(m.rss));
        format!("{} when the run started and {} at its end", rss(r.servers[i].s3_before), rss(s3_after[i]))
    };

    let kubernetes =
        benches[0].client.apiserver_version().await.map(|v| v.git_version).unwrap_or_else(|_| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let moto = std::fs::read_to_string(repo.join("scripts/versions.env"))
        .ok()
        .and_then(|v| v.lines().find_map(|l| l.strip_prefix("MOTO_VERSION=").map(str::to_owned)))
        .unwrap_or_else(|| "unknown".into());
    let cores_available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let temp = std::env::temp_dir();

    format!(
        "# Published sites: publishing and serving, on moto and on s3s-fs\n\n\
         Generated by `make bench-sites` on {date}. Machine: {cores_available} cores ({cpu}), Linux {kernel}, \
         load average {load} before the run and {load_after} after it. ooda {version} ({checkout}), release \
         build; {rustc}; Kubernetes {kubernetes} (local control plane).\n\n\
         Two S3 servers, side by side in the one run, bucket `{bucket}` on each:\n\n\
         - **moto** {moto} ({moto_server}), the bed's, on {moto_addr}: a mock of AWS written in Python, one \
         process (Werkzeug, a thread per connection, all sharing one interpreter lock). Resident memory \
         {moto_memory}, after the run's objects were deleted.\n\
         - **s3s-fs** ({s3s_fs_version}), on {s3s_fs_addr}: the s3s project's S3 server (Rust, tokio and \
         hyper, a thread per core), started by the benchmark with a new, empty directory under `{temp}` \
         ({temp_fs}), where it keeps each object as a file (a key's slashes are directories) and its \
         attributes and checksums in two small JSON files; it checks every request's SigV4 signature against \
         the benchmark's credentials. Built from crates.io by `scripts/build-s3s-fs.sh` with one patch: \
         its binary sets TCP_NODELAY on the connections it accepts (without it, Nagle's algorithm held each \
         answer's body behind its head until the client's delayed ACK, so a keep-alive GET of a small \
         object took about 40 ms, capping serving at about {CONNECTIONS} workers / 40 ms whatever the CPU). \
         Resident memory {s3s_fs_memory}.\n\n\
         Each server has its own operator and gateway (`--insecure-http`), organisation and project, their \
         configuration the example's with every endpoint on that server; the two take turns, and the pair \
         not measured idles. Everything runs on this one machine: the benchmark (archive upload, load \
         generator, its own S3 client), the gateways, the operators, the control plane and both S3 servers. \
         Sizes and throughput are in decimal megabytes (1 MB = 10⁶ bytes).\n\n\
         ## Summary\n\n\
         Publishing: site MB/s, the median of {PUBLISHES} publishes. Serving: requests/s with {CONNECTIONS} \
         workers, the median of {ROUNDS} rounds, through the gateway and with the AWS SDK straight from the \
         bucket (direct). S3 CPU: the server's mean share of one core while publishing and while serving.\n\n\
         | S3 server | publish tar | publish tar.gz | S3 CPU publishing | {small}: gateway | {small}: direct \
         | {large}: gateway | {large}: direct | S3 CPU serving |\n\
         |---|---|---|---|---|---|---|---|---|\n{summary_rows}\n\
         ## The site\n\n\
         {FILES} files generated from a fixed seed, {site_mb} in all: `{small}` ({small_size} bytes) and \
         `{large}` ({large_size} bytes), and the rest with sizes spread evenly on a log scale and extensions \
         drawn at random. .html, .css and .js hold words and numbers (they compress about like real assets), \
         .png random bytes (incompressible, like real images).\n\n{site_table}\n\n\
         Archives, built in memory before any clock starts: tar {tar_mb}, tar.gz {gz_mb} (gzip level 6, \
         {gz_share:.0}% of the tar).\n\n\
         ## Publishing\n\n\
         `POST /api/orgs/{{org}}/projects/{{project}}/publish` with alice's session, the archive streamed as \
         the request body in {chunk} KiB pieces (chunked transfer encoding), timed from sending to the \
         gateway's `201 Created` (every file written to S3, the manifest, `current`, and the project's \
         `status.published`). {PUBLISHES} publishes of each format to each server, alternating formats and \
         servers, each a new version of the server's project. Site MB/s is the site's {site_mb} over the time; \
         archive MB/s what went over the wire.\n\n\
         | S3 server | format | archive | median | each run | site MB/s (median) | archive MB/s (median) \
         | S3 CPU |\n\
         |---|---|---|---|---|---|---|---|\n{publish_rows}\n\
         | S3 server | version | format | time | site MB/s | archive MB/s | gateway CPU | S3 CPU \
         | benchmark CPU | others' CPU |\n\
         |---|---|---|---|---|---|---|---|---|---|\n{publish_runs}\n\
         CPU is the share of one core a process used during that publish (from `/proc/<pid>/stat`; s3s-fs's \
         counts all its threads); others' is every other process on the machine together (from `/proc/stat`): \
         the operators, the other gateway, the other S3 server, the control plane and anything else \
         running.\n\n\
         ## The gateways' memory\n\n\
         From `/proc/<gateway pid>/status`: VmRSS (resident now) and VmHWM (the peak resident size since it \
         started), for the gateway of each server.\n\n\
         | moment |{memory_header}\n|---|---|---|---|---|\n{memory_rows}\n\
         The {total} publishes sent {uploaded} of archives, each tar {tar_mb}. Each gateway streams if its peak \
         stays far below one archive (each file goes from the request to S3 through a channel of at most four \
         64 KiB chunks):\n\n{streaming}\n\
         ## Serving\n\n\
         {CONNECTIONS} workers send GETs back to back for {measured} s after {warm} s of warm-up; {ROUNDS} \
         rounds, each running every target in the order below. Requests/s is the median over the rounds; \
         percentiles are over every request of every round (send to last body byte). S3 CPU is the server's \
         mean share of one core over the measured part of the rounds, others' CPU the same for every other \
         process on the machine (the operators, the other gateway and S3 server, the control plane, anything \
         else running); CPU per request is a process's CPU time over the requests answered (median of the \
         rounds): the benchmark's is the load generator's, and on the direct rows also its S3 client's. An \
         error is anything but a 200 with the whole file.\n\n\
         | S3 server | file | target | requests/s | per round | MB/s | p50 | p99 | errors | S3 CPU | others' CPU \
         | CPU per request: S3 | gateway | benchmark |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n{serving_rows}\n\
         | S3 server | file | gateway / direct requests/s | p50 | p99 |\n|---|---|---|---|---|\n{ratio_rows}\n\
         - **gateway**: `GET /<path>` with `Host: {PROJECT}--<org>.{sites_domain}`, each worker on its own \
         keep-alive connection. The gateway finds the project and its live version in its watch cache and \
         streams the object from S3 with `GetObject` (AWS SDK, SigV4-signed).\n\
         - **direct**: the same object (`<org>/{PROJECT}/v<N>/<path>`) with `GetObject` from the benchmark, \
         through `ooda::sites::Bucket`, the very client the gateway uses, shared by the workers. Not a plain \
         HTTP GET: moto {moto} answers unsigned requests for objects without a public ACL with 403, and \
         s3s-fs, started with credentials, refuses them too.\n\n\
         How each server treats connections (an HTTP/1.1 HEAD sent to it after the run):\n\n{connections}\n\
         ## Clean-up\n\n\
         Each organisation was deleted (its operator's finalizer purges each project's objects from the \
         bucket before letting it go):\n\n{cleanup_rows}\n\
         ## Logs\n\n{logs}\n\
         ## How to read this\n\n\
         moto is the bottleneck on its side. It is one Python process that closes every connection, and it \
         spent {moto_small_cost} of CPU on each GetObject of `{small}` and {moto_large_cost} on each of \
         `{large}`; it used {moto_serving} of a core on average while serving and {moto_publishing} while \
         publishing (short of a whole core when others' CPU shows the machine busy with something else). \
         With moto saturated, gateway / direct ratios near 1× mean the gateway's hop hides behind moto.\n\n\
         s3s-fs is a general-purpose S3 server in Rust: it keeps connections alive, can use every core (it \
         used {s3s_fs_serving} of a core on average while serving and {s3s_fs_publishing} while publishing), \
         and spent {s3s_fs_small_cost} of CPU on each GetObject of `{small}`. With it publishing ran at \
         {tar_speedup} moto's speed for the tar and {gz_speedup} for the tar.gz, and serving `{small}` \
         through the gateway at {small_speedup} moto's requests/s. Publishing still writes the files one \
         after another, so its time is mostly a thousand PUT round trips (the gateway's, then s3s-fs writing \
         the object and two JSON files), whatever the archive's format; the publishes' table shows how far \
         the gateway and the S3 server were from a whole core meanwhile. A GetObject of `{large}` costs s3s-fs \
         {s3s_fs_large_cost} of CPU against {s3s_fs_small_cost} for `{small}` (and was served at \
         {large_speedup} moto's requests/s through the gateway): it reads an object in 4 KiB pieces, each \
         through tokio's blocking thread pool, so for that file s3s-fs takes much of the CPU that the \
         gateway and the load generator need too.\n\n\
         Once S3 keeps up, the gateway's hop shows: on {cores_available} cores the gateway, the S3 server and \
         the benchmark's load generator take CPU from each other, so requests/s are bounded by the machine as \
         a whole, and gateway / direct compares what a request costs through the gateway with what the \
         benchmark's own SDK client spends on it directly. Those costs are in the CPU per request columns: \
         the gateway's (the client's HTTP request, the watch-cache lookup, a signed GetObject, streaming the \
         body back) and the benchmark's (its load generator, and on the direct rows its S3 client). The S3 \
         server's CPU per request, the same on both paths, says how costly the server itself was: compare it \
         before comparing requests/s between runs (a moto that has run for long, see its resident memory \
         above, can be slower than a fresh one).\n\n\
         The gateway CPU of the tar.gz publishes over the tar ones is the price of inflating; the memory \
         table shows whether publishing streams. Latencies are under saturation ({CONNECTIONS} workers always \
         busy), so p50 is mostly queueing: compare rows with each other, not with a single idle request. The \
         spread between rounds and the others' CPU columns show the machine's noise: on {cores_available} \
         cores whatever else runs (builds, tests; see also the load averages above) takes CPU from the \
         servers directly, and every number drops with it.\n",
        date = Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        kernel = kernel.trim(),
        load = load_average(&info.load_at_start),
        load_after = load_average(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default()),
        version = env!("CARGO_PKG_VERSION"),
        checkout = info.checkout,
        rustc = command_output("rustc", &["--version"], repo).unwrap_or_else(|| "rustc unknown".into()),
        bucket = benches[0].bucket.name,
        moto_server = r.servers[0].server_header.as_deref().unwrap_or("server unknown"),
        moto_addr = benches[0].s3,
        moto_memory = s3_memory(0),
        s3s_fs_version = s3s_fs.version,
        s3s_fs_addr = benches[1].s3,
        s3s_fs_memory = s3_memory(1),
        temp = temp.display(),
        temp_fs = file_system(&temp),
        small = SMALL.path,
        large = LARGE.path,
        site_mb = mb(SITE_BYTES as f64),
        small_size = SMALL.size,
        large_size = LARGE.size,
        site_table = site_table(&r.site),
        tar_mb = mb(tar.bytes.len() as f64),
        gz_mb = mb(tar_gz.bytes.len() as f64),
        gz_share = tar_gz.bytes.len() as f64 * 100.0 / tar.bytes.len() as f64,
        chunk = UPLOAD_CHUNK >> 10,
        total = r.servers.iter().map(|s| s.publishes.len()).sum::<usize>(),
        uploaded = mb(uploaded as f64),
        moto_small_cost = s3_cost(0, SMALL),
        moto_large_cost = s3_cost(0, LARGE),
        s3s_fs_small_cost = s3_cost(1, SMALL),
        s3s_fs_large_cost = s3_cost(1, LARGE),
        moto_serving = cores(s3_serving[0]),
        moto_publishing = cores(s3_publishing[0]),
        s3s_fs_serving = cores(s3_serving[1]),
        s3s_fs_publishing = cores(s3_publishing[1]),
        tar_speedup = speedups[0],
        gz_speedup = speedups[1],
        small_speedup = speedups[2],
        large_speedup = speedups[4],
        measured = MEASURED.as_secs(),
        warm = WARM_UP.as_secs(),
        sites_domain = benches[0].sites_domain,
    )
}
