//! Published sites on the local control plane: publishing a large site through the gateway, and
//! serving its files through the gateway next to reading them from S3 directly.
//!
//! Starts the real operator and gateway (release builds) in a namespace and organisation of its
//! own, with the S3 credentials Secret of `examples/operator-config.yaml` (whose EU jurisdiction
//! publishes to the local moto server), creates a project through the gateway's API, and
//! generates a site in memory: 1,000 files of varied sizes adding up to 50 MB (.html, .css, .js
//! with compressible text, .png with incompressible bytes), the same on every run. Then measures:
//!
//! - publishing: the site as a tar and as a tar.gz archive, three times each, interleaved (each
//!   publish is a new version), the archive built before the clock starts and streamed as the
//!   request body; timed to the gateway's `201 Created`. The gateway's resident memory (VmRSS,
//!   and its peak VmHWM) is read from `/proc` before and after, to show it streams;
//! - serving: 16 workers sending GETs back to back for 5 s (after 1 s of warm-up) for a 2 KB
//!   .html and a 256 KB .png, through the gateway (keep-alive connections, the site's host name)
//!   and straight from S3 with the AWS SDK (the client the gateway itself uses); three rounds,
//!   the targets interleaved in each.
//!
//! Throughout, the CPU time of the gateway, moto, the benchmark and the rest of the machine is
//! read from `/proc`: moto (Python) is the bottleneck, and the machine is shared.
//!
//! Run with `make bench-sites` (uses the running local cluster and its S3, or brings them up for
//! the run). The report goes to `benches/reports/sites.md` and stdout; the operator's and
//! gateway's logs stay in the temporary directory.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    Sender, TEST_LABEL, checkout, checkout_and_kubeconfig, client, command_output, connect, create_home, free_port,
    median, ms, ooda, percentile, platform_account, ratio, ready_organisation, run_id, wait_answers, wait_for,
};

/// Files of the generated site, and what they add up to.
const FILES: usize = 1_000;
const SITE_BYTES: usize = 50_000_000;
/// Publishes of each archive format.
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
/// Any credentials do for moto; the Secret and the benchmark's own S3 client use these.
const S3_ACCESS_KEY: &str = "ooda-bench";
const S3_SECRET_KEY: &str = "ooda-bench-secret";

#[tokio::main]
async fn main() {
    let (repo, kubeconfig) = checkout_and_kubeconfig();
    let client = client(&kubeconfig).await;
    let config = repo.join("examples/operator-config.yaml");
    let example = OperatorConfig::load(&config).expect("the example configuration");
    let storage = example.jurisdictions[JURISDICTION].sites.clone().expect("sites storage in the EU");

    let run = run_id();
    let bench = Arc::new(Bench {
        home: format!("ooda-bench-sites-{run}"),
        org: format!("bench-{run}"),
        operator_http: free_port(),
        gateway: free_port(),
        gateway_http: free_port(),
        operator_log: std::env::temp_dir().join(format!("ooda-bench-operator-{run}.log")),
        gateway_log: std::env::temp_dir().join(format!("ooda-bench-gateway-{run}.log")),
        sites_domain: example.sites_domain.clone().expect("a sites domain"),
        s3: storage.endpoint.trim_start_matches("http://").parse().expect("the local S3 endpoint is http://IP:port"),
        bucket: Bucket::new(&storage, Credentials::new(S3_ACCESS_KEY, S3_SECRET_KEY, None, None, "ooda-bench")),
        load_at_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        checkout: checkout(&repo),
        client,
        run,
    });
    bench.bucket.client.head_bucket().bucket(&bench.bucket.name).send().await.unwrap_or_else(|e| {
        panic!("bucket {} on {} (`make cluster-up` starts the local S3): {e}", bench.bucket.name, bench.s3)
    });
    create_home(&bench.client, &bench.home, &bench.run).await;
    // Both read it when they start.
    add_s3_credentials(&bench, &storage).await;

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
        .args(["--insecure-http", "--namespace", &bench.home])
        .spawn()
        .expect("start the gateway");
    let processes = Processes {
        benchmark: std::process::id(),
        gateway: gateway.id().expect("the gateway's pid"),
        moto: listener_pid(bench.s3),
        ticks_per_second: command_output("getconf", &["CLK_TCK"], &repo).and_then(|t| t.parse().ok()).unwrap_or(100.0),
    };

    // Clean up whether or not the measurement panics (its message is printed when it does).
    let outcome = tokio::spawn(measure(bench.clone(), processes)).await;
    let left = cleanup(&bench).await;
    let moto_after = processes.moto.map(memory);
    let _ = gateway.kill().await;
    let _ = operator.kill().await;
    let results = outcome.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    let report = report(&bench, &results, left, moto_after, &repo).await;
    let out = repo.join("benches/reports/sites.md");
    std::fs::write(&out, &report).expect("write report");
    println!("{report}\nreport written to {}", out.display());
}

/// One run's names and addresses.
struct Bench {
    client: Client,
    /// Labels the organisation (the operator manages only it) and the home namespace.
    run: String,
    /// The operator's and gateway's namespace: Lease, accounts, signing keys, S3 credentials.
    home: String,
    org: String,
    operator_http: SocketAddr,
    gateway: SocketAddr,
    gateway_http: SocketAddr,
    operator_log: PathBuf,
    gateway_log: PathBuf,
    /// Sites are served on `<project>--<org>.<sites_domain>`.
    sites_domain: String,
    /// The local S3 server (moto), and the EU bucket as the benchmark reads it directly.
    s3: SocketAddr,
    bucket: Bucket,
    /// `/proc/loadavg` before anything started: other work on the machine adds noise.
    load_at_start: String,
    /// The commit checked out when the run started.
    checkout: String,
}

impl Bench {
    fn org_namespace(&self) -> String {
        format!("org-{}", self.org)
    }
}

/// The Secret the configuration names, in the home namespace, with the benchmark's credentials.
async fn add_s3_credentials(b: &Bench, storage: &SitesStorage) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": storage.credentials_secret },
        "stringData": { ACCESS_KEY_ID: S3_ACCESS_KEY, SECRET_ACCESS_KEY: S3_SECRET_KEY },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(b.client.clone(), &b.home)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the S3 credentials Secret");
}

struct Results {
    site: Site,
    /// The gateway's memory just after it reported ready, before publishing, after publishing
    /// and after serving.
    memory: [Memory; 4],
    publishes: Vec<Publish>,
    /// Per target, one run per round.
    targets: Vec<(Arc<Target>, Vec<Run>)>,
    moto_server: String,
    /// moto's memory when the run started.
    moto_before: Option<Memory>,
}

async fn measure(b: Arc<Bench>, processes: Processes) -> Results {
    wait_answers(b.operator_http, "operator", |body| body.starts_with("leader:")).await;
    wait_answers(b.gateway_http, "gateway", |body| body == "gateway ready").await;
    let idle = memory(processes.gateway);
    let moto_before = processes.moto.map(memory);
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
    let api = GatewayApi::sign_in(&b, &auth_key).await;
    api.running_project(&b).await;

    let site = tokio::task::spawn_blocking(Site::generate).await.expect("generating the site");
    let before = memory(processes.gateway);
    let mut publishes = Vec::new();
    for round in 1..=PUBLISHES {
        for archive in &site.archives {
            let start = processes.cpu();
            let (took, answer) = api.publish(archive).await;
            let cpu = busy(&start, &processes.cpu());
            assert_eq!(
                (answer["files"].as_u64(), answer["bytes"].as_u64()),
                (Some(FILES as u64), Some(SITE_BYTES as u64)),
                "the whole site is published: {answer}"
            );
            let version = answer["version"].as_i64().expect("version");
            eprintln!("publish {round}/{PUBLISHES}: {} as v{version} in {took:.2?}", archive.format);
            publishes.push(Publish { format: archive.format, bytes: archive.bytes.len(), version, took, cpu });
        }
    }
    let published = memory(processes.gateway);

    let live = publishes.last().expect("publishes").version;
    let mut targets = Vec::new();
    for file in [SMALL, LARGE] {
        let contents = site.contents(file.path).to_vec();
        let key = format!("{}/{PROJECT}/v{live}/{}", b.org, file.path);
        let host = format!("{PROJECT}--{}.{}:{}", b.org, b.sites_domain, b.gateway.port());
        for via in [Via::Gateway { addr: b.gateway, host }, Via::Direct { bucket: b.bucket.clone(), key }] {
            let target = Arc::new(Target { file, via });
            answers(&target, &contents).await;
            targets.push((target, Vec::new()));
        }
    }
    for round in 1..=ROUNDS {
        for (target, done) in &mut targets {
            let run = load(target, &processes).await;
            eprintln!(
                "round {round}/{ROUNDS}: {} {} {:.0} requests/s, {} errors",
                target.file.path,
                target.via.name(),
                run.rps(),
                run.errors
            );
            done.push(run);
        }
    }
    let served = memory(processes.gateway);
    Results {
        site,
        memory: [idle, before, published, served],
        publishes,
        targets,
        moto_server: server_header(b.s3).await.unwrap_or_else(|| "server unknown".into()),
        moto_before,
    }
}

/// One HTTP/1.0 GET, the whole response as text.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut response = Vec::new();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    stream.read_to_end(&mut response).await.ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// What the local S3 says it is (moto runs on Werkzeug).
async fn server_header(addr: SocketAddr) -> Option<String> {
    let response = http_get(addr, "/moto-api/").await?;
    let (head, _) = response.split_once("\r\n\r\n")?;
    head.lines().find_map(|l| l.strip_prefix("Server: ").map(str::to_owned))
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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix(" kB")?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    Memory { rss: field("VmRSS:"), peak: field("VmHWM:") }
}

/// The processes whose CPU time the benchmark follows.
#[derive(Clone, Copy)]
struct Processes {
    benchmark: u32,
    gateway: u32,
    /// The local S3 server, when `ss` can tell which process listens on its port.
    moto: Option<u32>,
    ticks_per_second: f64,
}

/// CPU seconds used so far, and when they were read.
struct CpuSample {
    at: Instant,
    benchmark: f64,
    gateway: f64,
    moto: Option<f64>,
    /// Every process on the machine (all cores together).
    machine: f64,
}

/// Cores kept busy between two samples (1.0 is one core all the time).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    benchmark: f64,
    gateway: f64,
    moto: Option<f64>,
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
            moto: self.moto.and_then(seconds),
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
    let moto = from.moto.zip(to.moto).map(|(from, to)| (to - from) / wall);
    let machine = (to.machine - from.machine) / wall;
    CpuUse { benchmark, gateway, moto, others: moto.map(|moto| (machine - benchmark - gateway - moto).max(0.0)) }
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
/// runs their finalizers, which purge the published objects) and the home namespace; returns
/// how many objects are left under the organisation's prefix in the bucket.
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
    namespaces.delete(&b.home, &Default::default()).await.expect("delete the home namespace");
    b.bucket.list(&format!("{}/", b.org)).await.expect("list the bucket").len()
}

/// Requests per second (median of the rounds) and latency percentiles over every round.
struct Summary {
    rps: f64,
    rounds: Vec<f64>,
    p50: Duration,
    p99: Duration,
    errors: u64,
    /// moto's and everything else's share of a core, mean over the rounds.
    moto: Option<f64>,
    others: Option<f64>,
    /// CPU time per request (median over the rounds) of the benchmark (the load generator, and
    /// the S3 client of the direct target), of the gateway and of moto.
    benchmark_per_request: Duration,
    gateway_per_request: Duration,
    moto_per_request: Option<Duration>,
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
        moto: mean(runs.iter().map(|r| r.cpu.moto)),
        others: mean(runs.iter().map(|r| r.cpu.others)),
        benchmark_per_request: per_request(|c| Some(c.benchmark)).expect("always known"),
        gateway_per_request: per_request(|c| Some(c.gateway)).expect("always known"),
        moto_per_request: per_request(|c| c.moto),
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

/// `left`: objects left in the bucket after the clean-up; `moto_after`: moto's memory then.
async fn report(b: &Bench, r: &Results, left: usize, moto_after: Option<Memory>, repo: &Path) -> String {
    let [tar, tar_gz] = &r.site.archives;
    let publish_rows: String = r
        .site
        .archives
        .iter()
        .map(|archive| {
            let runs: Vec<&Publish> = r.publishes.iter().filter(|p| p.format == archive.format).collect();
            let seconds: Vec<f64> = runs.iter().map(|p| p.took.as_secs_f64()).collect();
            let median = median(&seconds);
            let each = seconds.iter().map(|s| format!("{s:.2} s")).collect::<Vec<_>>().join(", ");
            format!(
                "| {} | {} | {median:.2} s | {each} | {:.1} | {:.1} |\n",
                archive.format,
                mb(archive.bytes.len() as f64),
                SITE_BYTES as f64 / MB / median,
                archive.bytes.len() as f64 / MB / median,
            )
        })
        .collect();
    let publish_runs: String = r
        .publishes
        .iter()
        .map(|p| {
            let seconds = p.took.as_secs_f64();
            format!(
                "| v{} | {} | {seconds:.2} s | {:.1} | {:.1} | {} | {} | {} | {} |\n",
                p.version,
                p.format,
                SITE_BYTES as f64 / MB / seconds,
                p.bytes as f64 / MB / seconds,
                cores(Some(p.cpu.gateway)),
                cores(p.cpu.moto),
                cores(Some(p.cpu.benchmark)),
                cores(p.cpu.others),
            )
        })
        .collect();
    let [idle, before, published, served] = r.memory;
    let memory_rows: String = [
        ("idle, just after it reported ready", idle),
        ("before publishing (organisation, sign-in, project)", before),
        (&format!("after the {} publishes", r.publishes.len()) as &str, published),
        ("after serving", served),
    ]
    .iter()
    .map(|(moment, m)| format!("| {moment} | {} | {} |\n", mb_of_kb(m.rss), mb_of_kb(m.peak)))
    .collect();
    let growth = published.peak.saturating_sub(before.peak) as f64 * 1024.0;
    let growth_share = growth / tar.bytes.len() as f64;
    let streams = if growth_share < 0.25 {
        "far below the archive's size: the gateway streams (each file goes from the request to S3 through a \
         channel of at most four 64 KiB chunks)"
    } else {
        "**not** far below the archive's size: something holds archives (or much of them) in memory"
    };
    let uploaded: usize = r.publishes.iter().map(|p| p.bytes).sum();
    let moto_publishing = mean(r.publishes.iter().map(|p| p.cpu.moto));
    let moto_serving = mean(r.targets.iter().flat_map(|(_, runs)| runs.iter().map(|r| r.cpu.moto)));

    let summaries: Vec<(&Target, Summary)> = r.targets.iter().map(|(t, runs)| (&**t, summarise(runs))).collect();
    let serving_rows: String = summaries
        .iter()
        .map(|(t, s)| {
            let rounds = s.rounds.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
            format!(
                "| {} ({} bytes) | {} | {:.0} | {rounds} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                t.file.path,
                t.file.size,
                t.via.name(),
                s.rps,
                s.rps * t.file.size as f64 / MB,
                ms(s.p50),
                ms(s.p99),
                s.errors,
                cores(s.moto),
                cores(s.others),
                s.moto_per_request.map_or_else(|| "?".into(), micros),
                match t.via {
                    Via::Gateway { .. } => micros(s.gateway_per_request),
                    Via::Direct { .. } => "–".into(),
                },
                micros(s.benchmark_per_request),
            )
        })
        .collect();
    let ratio_rows: String = summaries
        .chunks(2)
        .map(|pair| {
            let [(t, gateway), (_, direct)] = pair else { unreachable!("gateway and direct per file") };
            format!(
                "| {} | {} | {} | {} |\n",
                t.file.path,
                ratio(gateway.rps, direct.rps),
                ratio(gateway.p50.as_secs_f64(), direct.p50.as_secs_f64()),
                ratio(gateway.p99.as_secs_f64(), direct.p99.as_secs_f64()),
            )
        })
        .collect();
    let logs: String = [("gateway", &b.gateway_log), ("operator", &b.operator_log)]
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
    let kubernetes = b.client.apiserver_version().await.map(|v| v.git_version).unwrap_or_else(|_| "unknown".into());
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

    format!(
        "# Published sites: publishing and serving\n\n\
         Generated by `make bench-sites` on {date}. Machine: {cores_available} cores ({cpu}), Linux {kernel}, \
         load average {load} before the run and {load_after} after it. ooda {version} ({checkout}), release \
         build; {rustc}; Kubernetes {kubernetes} (local control plane); S3: moto {moto} ({server}) on {s3}, \
         bucket `{bucket}`; moto's resident memory {moto_before} when the run started and {moto_after} at its \
         end, after the run's objects were deleted.\n\n\
         Everything runs on this one machine: the benchmark (archive upload, load generator, its own S3 \
         client), the gateway (`--insecure-http`), the operator, the control plane and moto, a mock S3 written \
         in Python. Sizes and throughput are in decimal megabytes (1 MB = 10⁶ bytes).\n\n\
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
         `status.published`). {PUBLISHES} publishes of each format, alternating, each a new version of the \
         same project. Site MB/s is the site's {site_mb} over the time; archive MB/s what went over the wire.\n\n\
         | format | archive | median | each run | site MB/s (median) | archive MB/s (median) |\n\
         |---|---|---|---|---|---|\n{publish_rows}\n\
         | version | format | time | site MB/s | archive MB/s | gateway CPU | moto CPU | benchmark CPU \
         | others' CPU |\n\
         |---|---|---|---|---|---|---|---|---|\n{publish_runs}\n\
         CPU is the share of one core a process used during that publish (from `/proc/<pid>/stat`); others' is \
         every other process on the machine together (from `/proc/stat`): the operator, the control plane and \
         anything else running.\n\n\
         ## The gateway's memory\n\n\
         From `/proc/<gateway pid>/status`: VmRSS (resident now) and VmHWM (the peak resident size since it \
         started).\n\n\
         | moment | VmRSS | VmHWM (peak so far) |\n|---|---|---|\n{memory_rows}\n\
         The {n} publishes sent {uploaded} of archives, each tar {tar_mb}; meanwhile the gateway's peak grew \
         by {growth} ({growth_share:.0}% of one tar archive) to {peak}: {streams}.\n\n\
         ## Serving\n\n\
         {CONNECTIONS} workers send GETs back to back for {measured} s after {warm} s of warm-up; {ROUNDS} \
         rounds, each running every target in the order below. Requests/s is the median over the rounds; \
         percentiles are over every request of every round (send to last body byte). moto CPU is its mean \
         share of one core over the measured part of the rounds, others' CPU the same for every other \
         process on the machine (the operator, the control plane, anything else running); CPU per request is \
         a process's CPU time over the requests answered (median of the rounds): the benchmark's is the load \
         generator's, and on the direct rows also its S3 client's. An error is anything but a 200 with the \
         whole file.\n\n\
         | file | target | requests/s | per round | MB/s | p50 | p99 | errors | moto CPU | others' CPU \
         | CPU per request: moto | gateway | benchmark |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n{serving_rows}\n\
         | file | gateway / direct requests/s | p50 | p99 |\n|---|---|---|---|\n{ratio_rows}\n\
         - **gateway**: `GET /<path>` with `Host: {PROJECT}--<org>.{sites_domain}`, each worker on its own \
         keep-alive connection. The gateway finds the project and its live version in its watch cache and \
         streams the object from S3 with `GetObject` (AWS SDK, SigV4-signed).\n\
         - **direct**: the same object (`<org>/{PROJECT}/v<N>/<path>`) with `GetObject` from the benchmark, \
         through `ooda::sites::Bucket`, the very client the gateway uses, shared by the workers. Not a plain \
         HTTP GET: moto {moto} answers unsigned requests for objects without a public ACL with 403.\n\n\
         moto answers every request with `Connection: close`, so on both paths each S3 request opens a new \
         TCP connection; only the benchmark's connections to the gateway are kept alive.\n\n\
         ## Clean-up\n\n\
         The organisation was deleted (the operator's finalizer purges each project's objects from the bucket \
         before letting it go): {left} object(s) left under `{org}/` afterwards.\n\n\
         ## Logs\n\n{logs}\n\
         ## How to read this\n\n\
         moto is the bottleneck on both paths. It is one Python process (Werkzeug, a thread per connection, \
         all sharing one interpreter lock, so about one core at most) that closes every connection; it \
         used {moto_serving} of a core on average while serving and {moto_publishing} while publishing (well \
         short of a whole core only when others' CPU shows the machine busy with something else). \
         Publishing writes the files to S3 one after another, so its time is mostly a thousand PUT round \
         trips to moto, whatever the archive's format; serving a file is one GetObject, through the gateway \
         or not. The absolute numbers therefore describe moto on {cores_available} shared cores rather than \
         ooda: a real S3 (or R2, MinIO) would accept and serve far more, and the gateway's share would \
         grow. With moto saturated, gateway/direct ratios near 1× mean the gateway's hop hides behind moto \
         (judge them against the spread between rounds); its own cost is in the CPU per request columns: \
         what the gateway spends on a request (the client's HTTP request, the watch-cache lookup, a signed \
         GetObject over a new connection to moto, streaming the body back) next to what the benchmark spends \
         on the same GetObject directly. moto's CPU per request, the same on both paths, says how costly \
         moto itself was: compare it before comparing requests/s between runs (a moto that has run for long, \
         see its resident memory above, can be slower than a fresh one). The gateway CPU of the tar.gz \
         publishes over the tar ones is the price of inflating; the memory table shows whether publishing \
         streams. Latencies are under saturation ({CONNECTIONS} workers always busy), so p50 is mostly \
         queueing at moto: compare rows with each other, not with a single idle request. The spread between \
         rounds and the others' CPU columns show the machine's noise: on {cores_available} cores whatever else \
         runs (builds, tests; see also the load averages above) takes CPU from moto directly, and every number \
         drops with it.\n",
        date = Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        kernel = kernel.trim(),
        load = load_average(&b.load_at_start),
        load_after = load_average(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default()),
        version = env!("CARGO_PKG_VERSION"),
        checkout = b.checkout,
        rustc = command_output("rustc", &["--version"], repo).unwrap_or_else(|| "rustc unknown".into()),
        server = r.moto_server,
        s3 = b.s3,
        moto_before = r.moto_before.map_or_else(|| "unknown".into(), |m| mb_of_kb(m.rss)),
        moto_after = moto_after.map_or_else(|| "unknown".into(), |m| mb_of_kb(m.rss)),
        bucket = b.bucket.name,
        site_mb = mb(SITE_BYTES as f64),
        small = SMALL.path,
        small_size = SMALL.size,
        large = LARGE.path,
        large_size = LARGE.size,
        site_table = site_table(&r.site),
        tar_mb = mb(tar.bytes.len() as f64),
        gz_mb = mb(tar_gz.bytes.len() as f64),
        gz_share = tar_gz.bytes.len() as f64 * 100.0 / tar.bytes.len() as f64,
        chunk = UPLOAD_CHUNK >> 10,
        n = r.publishes.len(),
        uploaded = mb(uploaded as f64),
        growth = mb(growth),
        peak = mb_of_kb(published.peak),
        growth_share = growth_share * 100.0,
        moto_serving = cores(moto_serving),
        moto_publishing = cores(moto_publishing),
        measured = MEASURED.as_secs(),
        warm = WARM_UP.as_secs(),
        org = b.org,
        sites_domain = b.sites_domain,
    )
}
