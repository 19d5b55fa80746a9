//! Operator at scale on the local control plane: 1,000 Projects across 10 Organisations.
//!
//! Measures the time until every project is Ready, the operator's peak RSS, API writes per project
//! (the operator's own count and the API server's `apiserver_request_total`), and writes during
//! two idle minutes after convergence (target: zero). Run with `make bench-operator`, which brings
//! up a fresh cluster; the report goes to `benches/reports/operator-scale.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use ooda::crd::{Organisation, Project};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORGANISATIONS: usize = 10;
const PROJECTS: usize = 1000;
const IDLE_WINDOW: Duration = Duration::from_secs(120);
const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];

#[tokio::main]
async fn main() {
    // Read at run time: the target directory is shared between clones.
    let repo = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kubeconfig_path =
        std::env::var_os("OODA_KUBECONFIG").map(PathBuf::from).unwrap_or(repo.join(".local/kubeconfig"));
    let kubeconfig = Kubeconfig::read_from(&kubeconfig_path).expect("kubeconfig (run `make cluster-up`)");
    let client = Client::try_from(
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig"),
    )
    .expect("client");

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let home: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({ "metadata": { "name": "ooda-bench" } })).expect("ns");
    let _ = namespaces.create(&PostParams::default(), &home).await;

    let http = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr");
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_ooda"))
        .args(["operator", "--config", repo.join("examples/operator-config.yaml").to_str().expect("path")])
        .args(["--http-addr", &http.to_string(), "--namespace", "ooda-bench"])
        .env("KUBECONFIG", &kubeconfig_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start operator");
    let pid = operator.id().expect("operator pid");
    wait_ready(http).await;

    let before = apiserver_writes(&client).await;
    let started = Instant::now();

    let orgs: Api<Organisation> = Api::all(client.clone());
    for i in 0..ORGANISATIONS {
        let org: Organisation = serde_json::from_value(json!({
            "metadata": { "name": format!("bench-{i}") },
            "spec": {
                "jurisdiction": if i % 2 == 0 { "eu" } else { "us" },
                "members": [{ "email": format!("admin@bench-{i}.example"), "role": "admin" }],
                "quota": { "projects": 200, "cpu": "100", "memory": "200Gi", "storage": "2000Gi" },
            }
        }))
        .expect("org");
        orgs.create(&PostParams::default(), &org).await.expect("create organisation");
    }
    let mut ready_orgs = watcher(orgs.clone(), watcher::Config::default()).applied_objects().boxed();
    let mut org_ready = BTreeMap::new();
    while org_ready.values().filter(|r| **r).count() < ORGANISATIONS {
        let org = ready_orgs.try_next().await.expect("watch").expect("stream");
        let ready =
            org.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        org_ready.insert(org.metadata.name.clone().unwrap_or_default(), ready);
    }
    let orgs_ready_after = started.elapsed();

    let projects_started = Instant::now();
    let creates = futures::stream::iter(0..PROJECTS)
        .map(|i| {
            let client = client.clone();
            async move {
                let ns = format!("org-bench-{}", i % ORGANISATIONS);
                let project: Project = serde_json::from_value(json!({
                    "metadata": { "name": format!("p{i}") },
                    "spec": {
                        "resources": { "cpu": "100m", "memory": "128Mi", "storage": "1Gi" },
                        "ports": [{ "name": "web", "port": 3000, "preview": true }],
                    }
                }))
                .expect("project");
                Api::<Project>::namespaced(client, &ns)
                    .create(&PostParams::default(), &project)
                    .await
                    .expect("create project");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let all_created = async {
        creates.await;
        projects_started.elapsed()
    };
    let all_ready = async {
        let projects: Api<Project> = Api::all(client.clone());
        let mut stream = watcher(projects, watcher::Config::default()).applied_objects().boxed();
        let mut ready = BTreeMap::new();
        while ready.values().filter(|r| **r).count() < PROJECTS {
            let p = stream.try_next().await.expect("watch").expect("stream");
            let is_ready = p
                .status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            ready.insert(format!("{:?}/{:?}", p.metadata.namespace, p.metadata.name), is_ready);
        }
        projects_started.elapsed()
    };
    // The operator's own part: every project's StatefulSet applied. Pods then wait on the bed's
    // scheduler, volume provisioning and kwok.
    let all_applied = async {
        let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::all(client.clone());
        let config = watcher::Config::default().labels("app.kubernetes.io/managed-by=ooda");
        let mut stream = watcher(sets, config).applied_objects().boxed();
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < PROJECTS {
            let set = stream.try_next().await.expect("watch").expect("stream");
            seen.insert(format!("{:?}/{:?}", set.metadata.namespace, set.metadata.name));
        }
        projects_started.elapsed()
    };
    let (created_after, applied_after, ready_after) = tokio::join!(all_created, all_applied, all_ready);
    let converged = apiserver_writes(&client).await;
    let operator_writes_converged = metric_sum(&http_get(http, "/metrics").await, "ooda_api_writes_total");
    let rss_converged = peak_rss_kib(pid);

    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = apiserver_writes(&client).await;
    let operator_writes_idle =
        metric_sum(&http_get(http, "/metrics").await, "ooda_api_writes_total") - operator_writes_converged;
    let rss_peak = peak_rss_kib(pid);
    operator.kill().await.expect("stop operator");

    let during = diff(&converged, &before);
    let idle_writes = diff(&idle, &converged);
    // Kinds only the operator writes once pods run (events and leases are written by every
    // component: kwok's node heartbeats and the endpoint controllers included).
    let ooda_resources = [
        "projects",
        "organisations",
        "statefulsets",
        "services",
        "networkpolicies",
        "secrets",
        "serviceaccounts",
        "persistentvolumeclaims",
        "namespaces",
        "resourcequotas",
        "limitranges",
    ];
    let shared_resources = ["leases", "events"];
    let per_resource = |m: &BTreeMap<String, f64>| {
        ooda_resources
            .iter()
            .map(|r| format!("{r}: {}", m.get(*r).copied().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let total = |m: &BTreeMap<String, f64>| m.values().sum::<f64>();
    let report = format!(
        "# Operator at scale: {PROJECTS} projects in {ORGANISATIONS} organisations\n\n\
         Local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok; one machine, 2 cores), \
         release build of `ooda operator`, one replica, default concurrency. Generated by `make bench-operator` on {date}.\n\n\
         | measure | value |\n|---|---|\n\
         | organisations Ready after | {orgs:.1} s |\n\
         | {PROJECTS} projects created (16 concurrent clients) after | {created:.1} s |\n\
         | every project's StatefulSet applied by the operator after | {applied:.1} s |\n\
         | all {PROJECTS} projects Ready after | {ready:.1} s |\n\
         | operator peak RSS (VmHWM) at convergence | {rss_c:.1} MiB |\n\
         | operator peak RSS after the idle window | {rss_p:.1} MiB |\n\
         | operator API writes (its own count) | {ow:.0} ({owp:.2} per project) |\n\
         | API server writes, all clients, during the run | {aw:.0} ({awp:.2} per project) |\n\
         | operator API writes during {idle}s idle after convergence | {oi:.0} |\n\
         | API server writes to the kinds only ooda writes, during the idle window | {ai:.0} |\n\n\
         API server writes during the run by resource (POST/PUT/PATCH/APPLY/DELETE; includes the controller manager, \
         scheduler and kwok making pods run): {res}.\n\n\
         Idle window, by resource: {ires}; written by all components: {ishared} (kwok's node heartbeats \
         renew node Leases, and the endpoint controllers keep reporting that pod addresses on loopback cannot \
         be endpoints — an artefact of the bed).\n",
        date = k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        orgs = orgs_ready_after.as_secs_f64(),
        created = created_after.as_secs_f64(),
        applied = applied_after.as_secs_f64(),
        ready = ready_after.as_secs_f64(),
        rss_c = rss_converged as f64 / 1024.0,
        rss_p = rss_peak as f64 / 1024.0,
        ow = operator_writes_converged,
        owp = operator_writes_converged / PROJECTS as f64,
        aw = total(&during),
        awp = total(&during) / PROJECTS as f64,
        idle = IDLE_WINDOW.as_secs(),
        oi = operator_writes_idle,
        ai = ooda_resources.iter().map(|r| idle_writes.get(*r).copied().unwrap_or(0.0)).sum::<f64>(),
        res = ooda_resources
            .iter()
            .chain(&shared_resources)
            .map(|r| format!("{r}: {}", during.get(*r).copied().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(", "),
        ires = per_resource(&idle_writes),
        ishared = shared_resources
            .iter()
            .map(|r| format!("{r}: {}", idle_writes.get(*r).copied().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let out = repo.join("benches/reports/operator-scale.md");
    std::fs::write(&out, &report).expect("write report");
    println!("{report}\nreport written to {}", out.display());
}

async fn wait_ready(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = http_get(addr, "/readyz").await;
        if body.contains("leader: reconciling") {
            return;
        }
        assert!(Instant::now() < deadline, "operator not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    let _ = stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Write requests the API server has served so far, by resource.
async fn apiserver_writes(client: &Client) -> BTreeMap<String, f64> {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(request).await.expect("API server metrics");
    let mut writes = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |key: &str| {
            let start = line.find(&format!("{key}=\""))? + key.len() + 2;
            Some(&line[start..start + line[start..].find('"')?])
        };
        if WRITE_VERBS.contains(&label("verb").unwrap_or_default()) {
            let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *writes.entry(label("resource").unwrap_or_default().to_owned()).or_insert(0.0) += value;
        }
    }
    writes
}

fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
