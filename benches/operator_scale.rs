//! Operator at scale on the local control plane: `OODA_BENCH_PROJECTS` Projects (1,000 unless
//! set) across 10 Organisations.
//!
//! In one run, on one fresh bed:
//! 1. **The bed's floor.** The same children the operator would make for every project
//!    (`build::desired`, relabelled so the operator ignores them) are applied by the benchmark
//!    itself, with no operator: the time until every pod is Ready is what the bed needs anyway.
//! 2. **The operator.** Two replicas, one leading. Time until every project is Ready, the leader's
//!    peak RSS and cache bytes, its API writes by kind, and the writes of everyone by resource;
//!    then two idle minutes, which should cost no writes.
//! 3. **Failover.** The leader is SIGKILLed; the time until the standby leads, and until it has
//!    reconciled every project, with the writes it made (nothing changed: the target is none).
//!
//! The numbers go to `benches/reports/operator-scale/<projects>.json`, and the report
//! `benches/reports/operator-scale.md` is rendered from every such file, so runs at 1,000 and
//! 3,000 projects give the slope. Run with `make bench-operator`, which runs both, each on a fresh
//! cluster (`OODA_BENCH_PROJECTS=1000 make bench-operator` for one).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use ooda::config::OperatorConfig;
use ooda::crd::names::{MANAGED_BY, MANAGED_BY_VALUE};
use ooda::crd::{Organisation, Project};
use ooda::operator::{organisation, project};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::time::Instant;

const ORGANISATIONS: usize = 10;
const IDLE_WINDOW: Duration = Duration::from_secs(120);
const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];
/// Clients creating projects (and applying the floor's objects) at once.
const CLIENTS: usize = 16;
/// What the floor's objects are labelled `managed-by` instead of ooda, so the operator does not see them.
const FLOOR_MANAGER: &str = "ooda-bench-floor";
/// Kinds only ooda writes once pods run.
const OODA_RESOURCES: [&str; 11] = [
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

/// One run's numbers, kept as JSON beside the report.
#[derive(Serialize, Deserialize)]
struct Results {
    projects: usize,
    date: String,
    checkout: String,
    /// Which `ooda` ran the operator: the release profile's, or the path given in
    /// `OODA_BENCH_OPERATOR` (absent from runs before it was kept).
    #[serde(default = "release_profile")]
    operator_build: String,
    /// /proc/loadavg's 1-minute figure at the start and at the end.
    load: (f64, f64),
    /// The bed's controller manager's client rate limit, requests/s.
    controller_manager_qps: String,
    floor_applied_s: f64,
    floor_ready_s: f64,
    organisations_ready_s: f64,
    created_s: f64,
    applied_s: f64,
    /// Every StatefulSet with its one replica Ready, the floor's measure, in the operator's run:
    /// what the bed took with the operator's load on it (absent from runs before it was kept).
    #[serde(default = "not_measured")]
    sets_ready_s: f64,
    ready_s: f64,
    rss_converged_mib: f64,
    /// CPU time the leading operator spent until every project was Ready (absent from runs
    /// before it was kept).
    #[serde(default = "not_measured")]
    cpu_converged_s: f64,
    /// CPU time of each of the bed's processes from the floor's first apply until its pods were
    /// Ready, and from the first organisation until every project was Ready (absent from runs
    /// before they were kept).
    #[serde(default)]
    floor_bed_cpu_s: BTreeMap<String, f64>,
    #[serde(default)]
    operator_bed_cpu_s: BTreeMap<String, f64>,
    rss_idle_mib: f64,
    /// At convergence, what of VmRSS is the process's own memory (RssAnon) and what is mapped
    /// from files, its own code above all (RssFile).
    #[serde(default = "not_measured")]
    rss_anon_mib: f64,
    #[serde(default = "not_measured")]
    rss_file_mib: f64,
    /// VmRSS, not the peak: what the operator holds once idle.
    rss_resident_mib: f64,
    cache_bytes: f64,
    operator_writes: BTreeMap<String, f64>,
    apiserver_writes: BTreeMap<String, f64>,
    idle_operator_writes: f64,
    idle_ooda_writes: f64,
    failover_leading_s: f64,
    failover_converged_s: f64,
    failover_writes: f64,
    failover_rss_mib: f64,
}

#[tokio::main]
async fn main() {
    let projects: usize = std::env::var("OODA_BENCH_PROJECTS").map_or(1000, |n| n.parse().expect("a number"));
    let (repo, kubeconfig) = common::checkout_and_kubeconfig();
    let client = common::client(&kubeconfig).await;
    let config = OperatorConfig::load(&repo.join("examples/operator-config.yaml")).expect("example configuration");
    let load_before = load_average();

    let bed_before_floor = bed_cpu_seconds();
    let (floor_applied, floor_ready) = floor(&client, &config, projects).await;
    let floor_bed_cpu = diff(&bed_cpu_seconds(), &bed_before_floor);
    println!("floor: applied after {floor_applied:.1?}, every pod Ready after {floor_ready:.1?}");

    let run = common::start_run("operator").await;
    let mut replicas = [start_operator(&run, "a"), start_operator(&run, "b")];
    let leader = wait_for_leader(&replicas).await;
    let standby = 1 - leader;
    let (leader_http, standby_http) = (replicas[leader].1, replicas[standby].1);

    let before = apiserver_writes(&client).await;
    let bed_before_operator = bed_cpu_seconds();
    let started = Instant::now();
    let orgs: Api<Organisation> = Api::all(client.clone());
    for i in 0..ORGANISATIONS {
        orgs.create(&PostParams::default(), &bench_organisation(&format!("bench-{i}"), projects))
            .await
            .expect("create organisation");
    }
    count_ready(orgs.clone(), watcher::Config::default(), ORGANISATIONS, |org: &Organisation| {
        org.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
    let organisations_ready = started.elapsed();

    let projects_started = Instant::now();
    let creates = futures::stream::iter(0..projects)
        .map(|i| {
            let api = Api::<Project>::namespaced(client.clone(), &format!("org-bench-{}", i % ORGANISATIONS));
            async move { common::kit::create_project(&api, &bench_project(i)).await.expect("create project") }
        })
        .buffer_unordered(CLIENTS)
        .collect::<Vec<_>>();
    let all_created = async {
        creates.await;
        projects_started.elapsed()
    };
    let all_ready = count_ready(Api::<Project>::all(client.clone()), watcher::Config::default(), projects, |p| {
        p.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    // The operator's own part: every project's StatefulSet applied. Pods then wait on the bed.
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE}"));
    let all_applied = count_ready(Api::<StatefulSet>::all(client.clone()), managed.clone(), projects, |_| true);
    let all_sets_ready = count_ready(Api::<StatefulSet>::all(client.clone()), managed, projects, |set| {
        set.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    });
    let (created, applied, sets_ready, ready) = tokio::join!(
        all_created,
        async {
            all_applied.await;
            projects_started.elapsed()
        },
        async {
            all_sets_ready.await;
            projects_started.elapsed()
        },
        async {
            all_ready.await;
            projects_started.elapsed()
        }
    );
    let converged = apiserver_writes(&client).await;
    let operator_bed_cpu = diff(&bed_cpu_seconds(), &bed_before_operator);
    let leader_metrics = http_get(leader_http, "/metrics").await;
    let operator_writes = metric_by_label(&leader_metrics, "ooda_api_writes_total", "kind");
    let cache_bytes = metric_by_label(&leader_metrics, "ooda_cache_bytes", "cache").values().sum();
    let rss_converged = peak_rss_mib(&replicas[leader].0);
    let cpu_converged = cpu_seconds(&replicas[leader].0);
    let (rss_anon, rss_file) = (rss_mib(&replicas[leader].0, "RssAnon"), rss_mib(&replicas[leader].0, "RssFile"));

    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = apiserver_writes(&client).await;
    let idle_operator_writes =
        metric_by_label(&http_get(leader_http, "/metrics").await, "ooda_api_writes_total", "kind")
            .values()
            .sum::<f64>()
            - operator_writes.values().sum::<f64>();
    let rss_idle = peak_rss_mib(&replicas[leader].0);
    let rss_resident = rss_mib(&replicas[leader].0, "VmRSS");

    // Failover: nothing changed, so the new leader should find every project as it wants it.
    let killed = Instant::now();
    replicas[leader].0.kill().await.expect("kill the leader");
    common::wait_answers(standby_http, "standby", |body| body.starts_with("leader: reconciling")).await;
    let leading = killed.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let failover_converged = loop {
        let text = http_get(standby_http, "/metrics").await;
        let reconciled = metric_by_label(&text, "ooda_reconciles_total", "controller");
        if reconciled.get("project").copied().unwrap_or(0.0) >= projects as f64
            && reconciled.get("organisation").copied().unwrap_or(0.0) >= ORGANISATIONS as f64
        {
            break killed.elapsed();
        }
        assert!(Instant::now() < deadline, "the standby did not reconcile every project");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Writes the new leader makes in its first minute: reconciles triggered by its initial lists
    // may still be queued when the counts above are reached.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let failover_writes =
        metric_by_label(&http_get(standby_http, "/metrics").await, "ooda_api_writes_total", "kind").values().sum();
    let failover_rss = peak_rss_mib(&replicas[standby].0);
    replicas[standby].0.kill().await.expect("stop the standby");

    let results = Results {
        projects,
        date: k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
        checkout: common::checkout(&repo),
        operator_build: std::env::var("OODA_BENCH_OPERATOR").unwrap_or_else(|_| release_profile()),
        load: (load_before, load_average()),
        controller_manager_qps: std::env::var("OODA_CONTROLLER_MANAGER_QPS").unwrap_or_else(|_| "20".into()),
        floor_applied_s: floor_applied.as_secs_f64(),
        floor_ready_s: floor_ready.as_secs_f64(),
        organisations_ready_s: organisations_ready.as_secs_f64(),
        created_s: created.as_secs_f64(),
        applied_s: applied.as_secs_f64(),
        sets_ready_s: sets_ready.as_secs_f64(),
        ready_s: ready.as_secs_f64(),
        rss_converged_mib: rss_converged,
        cpu_converged_s: cpu_converged,
        floor_bed_cpu_s: floor_bed_cpu,
        operator_bed_cpu_s: operator_bed_cpu,
        rss_idle_mib: rss_idle,
        rss_anon_mib: rss_anon,
        rss_file_mib: rss_file,
        rss_resident_mib: rss_resident,
        cache_bytes,
        operator_writes,
        apiserver_writes: diff(&converged, &before),
        idle_operator_writes,
        idle_ooda_writes: OODA_RESOURCES.iter().map(|r| diff(&idle, &converged).get(*r).copied().unwrap_or(0.0)).sum(),
        failover_leading_s: leading.as_secs_f64(),
        failover_converged_s: failover_converged.as_secs_f64(),
        failover_writes,
        failover_rss_mib: failover_rss,
    };
    let dir = repo.join("benches/reports/operator-scale");
    std::fs::create_dir_all(&dir).expect("report directory");
    std::fs::write(dir.join(format!("{projects}.json")), serde_json::to_string_pretty(&results).expect("json"))
        .expect("write results");
    let report = render(&dir);
    let out = repo.join("benches/reports/operator-scale.md");
    std::fs::write(&out, &report).expect("write report");
    println!("{report}\nreport written to {}", out.display());
}

fn bench_organisation(name: &str, projects: usize) -> Organisation {
    let index: usize = name.rsplit('-').next().and_then(|i| i.parse().ok()).unwrap_or(0);
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "jurisdiction": jurisdiction(index),
            "members": [{ "email": format!("admin@{name}.example"), "role": "admin" }],
            "quota": {
                "projects": projects / ORGANISATIONS + 10,
                "cpu": "1000",
                "memory": "2000Gi",
                "storage": "20000Gi",
            },
        }
    }))
    .expect("organisation")
}

/// Organisations alternate between the EU and the US.
fn jurisdiction(organisation: usize) -> &'static str {
    if organisation.is_multiple_of(2) { "eu" } else { "us" }
}

fn bench_project(i: usize) -> Project {
    serde_json::from_value(json!({
        "metadata": { "name": format!("p{i}") },
        "spec": {
            "resources": { "cpu": "100m", "memory": "128Mi", "storage": "1Gi" },
            "ports": [{ "name": "web", "port": 3000, "preview": true }],
        }
    }))
    .expect("project")
}

/// Applies what the operator would make for `projects` projects in 10 organisations (named
/// `floor-<i>`), directly, and returns when every object is applied and when every pod is Ready.
async fn floor(client: &Client, config: &OperatorConfig, projects: usize) -> (Duration, Duration) {
    let started = Instant::now();
    let selector = watcher::Config::default().labels(&format!("{MANAGED_BY}={FLOOR_MANAGER}"));
    let ready = count_ready(Api::<StatefulSet>::all(client.clone()), selector, projects, |set| {
        set.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    });
    let apply_all = async {
        for i in 0..ORGANISATIONS {
            let mut org = bench_organisation(&format!("floor-{i}"), projects);
            // Owner references need one; the benchmark drops them.
            org.metadata.uid = Some(format!("floor-{i}"));
            let desired = organisation::build::desired(&org);
            apply_directly(client, &desired.namespace).await;
            if let Some(quota) = &desired.quota {
                apply_directly(client, quota).await;
            }
            apply_directly(client, &desired.limit_range).await;
            apply_directly(client, &desired.default_deny).await;
        }
        futures::stream::iter(0..projects)
            .map(|i| async move {
                let org = format!("floor-{}", i % ORGANISATIONS);
                let jurisdiction = jurisdiction(i % ORGANISATIONS);
                let mut project = bench_project(i);
                project.metadata.namespace = Some(format!("org-{org}"));
                project.metadata.uid = Some(format!("floor-{i}"));
                let desired = project::build::desired(&project::build::Inputs {
                    project: &project,
                    organisation: &org,
                    jurisdiction: &config.jurisdictions[jurisdiction],
                    config,
                    replicas: 1,
                    token: "floor-preview-token",
                    token_state: ooda::crd::names::TokenState::Running,
                    publish_token: "floor-publish-token",
                    ai_token: "floor-ai-token",
                    workspace_seeded: false,
                    load_workspace: true,
                });
                // In the operator's order.
                apply_directly(client, &desired.service_account).await;
                apply_directly(client, &desired.preview_secret).await;
                apply_directly(client, &desired.publish_secret).await;
                if let Some(secret) = &desired.ai_secret {
                    apply_directly(client, secret).await;
                }
                apply_directly(client, &desired.workspace).await;
                apply_directly(client, &desired.network_policy).await;
                if let Some(service) = &desired.service {
                    apply_directly(client, service).await;
                }
                apply_directly(client, &desired.stateful_set).await;
            })
            .buffer_unordered(CLIENTS)
            .collect::<Vec<_>>()
            .await;
        started.elapsed()
    };
    let (applied, ()) = tokio::join!(apply_all, ready);
    (applied, started.elapsed())
}

/// Server-side applies `object` as the floor's: labelled [`FLOOR_MANAGER`] wherever it says
/// ooda (its selectors and pod template too), and owned by nothing (its owners do not exist).
async fn apply_directly<K>(client: &Client, object: &K)
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let text = serde_json::to_string(object).expect("serialise");
    let relabelled = text
        .replace(&format!("\"{MANAGED_BY}\":\"{MANAGED_BY_VALUE}\""), &format!("\"{MANAGED_BY}\":\"{FLOOR_MANAGER}\""));
    let mut value: Value = serde_json::from_str(&relabelled).expect("json");
    value["metadata"].as_object_mut().expect("metadata").remove("ownerReferences");
    let meta = object.meta();
    let name = meta.name.as_deref().expect("a name");
    let api: Api<kube::api::DynamicObject> = match meta.namespace.as_deref() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &kube::api::ApiResource::erase::<K>(&())),
        None => Api::all_with(client.clone(), &kube::api::ApiResource::erase::<K>(&())),
    };
    // The quota admission controller answers 409 when another write to the namespace's
    // ResourceQuota won the race to record its usage: the API's word for "try again", which the
    // operator's back-off follows too.
    let mut attempt = 0;
    loop {
        match api.patch(name, &PatchParams::apply(FLOOR_MANAGER).force(), &Patch::Apply(&value)).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
            }
            Err(error) => panic!("apply {name}: {error}"),
        }
    }
}

/// Resolves once `count` objects seen by the watch pass `ready` (the last state of each counts).
async fn count_ready<K>(api: Api<K>, config: watcher::Config, count: usize, ready: impl Fn(&K) -> bool)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut stream = watcher(api, config).default_backoff().applied_objects().boxed();
    let mut seen = BTreeMap::new();
    while seen.values().filter(|r| **r).count() < count {
        let object = stream.try_next().await.expect("watch").expect("stream");
        let meta = object.meta();
        seen.insert((meta.namespace.clone(), meta.name.clone()), ready(&object));
    }
}

fn start_operator(run: &common::Run, replica: &str) -> (Child, SocketAddr) {
    let http = common::free_port();
    let log = std::env::temp_dir().join(format!("ooda-bench-operator-{replica}-{}.log", run.id));
    let binary = operator_binary();
    let child = common::ooda_build(&binary, &run.kubeconfig, &log)
        .args(["operator", "--config", run.repo.join("examples/operator-config.yaml").to_str().expect("path")])
        .args(["--http-addr", &http.to_string(), "--namespace", &run.home, "--identity", replica])
        .spawn()
        .expect("start operator");
    (child, http)
}

/// The `ooda` that runs the operator: this build's release binary, or another build of it
/// (`OODA_BENCH_OPERATOR`: the image's, say, which is optimised across crates).
fn operator_binary() -> std::path::PathBuf {
    std::env::var_os("OODA_BENCH_OPERATOR").map_or_else(|| env!("CARGO_BIN_EXE_ooda").into(), Into::into)
}

/// Which replica leads, once it reconciles.
async fn wait_for_leader(replicas: &[(Child, SocketAddr); 2]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for (i, (_, http)) in replicas.iter().enumerate() {
            if http_get(*http, "/readyz").await.contains("leader: reconciling") {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no operator replica leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    let _ = stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
}

/// A Prometheus text metric's samples, summed by the value of `label`.
fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])) {
        let key = line
            .find(&format!("{label}=\""))
            .map(|start| start + label.len() + 2)
            .and_then(|start| Some(&line[start..start + line[start..].find('"')?]))
            .unwrap_or_default();
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *values.entry(key.to_owned()).or_insert(0.0) += value;
    }
    values
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

fn peak_rss_mib(child: &Child) -> f64 {
    rss_mib(child, "VmHWM")
}

/// A `/proc/<pid>/status` memory figure (`VmHWM`, `VmRSS`), in MiB.
fn rss_mib(child: &Child, field: &str) -> f64 {
    let pid = child.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The CPU time `child` has used, user and system, over all its threads.
fn cpu_seconds(child: &Child) -> f64 {
    process_cpu_seconds(child.id().expect("running"))
}

/// `/proc/<pid>/stat`'s user and system time, every thread's, in seconds.
fn process_cpu_seconds(pid: u32) -> f64 {
    /// `sysconf(_SC_CLK_TCK)`, 100 on every Linux this runs on.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces: utime and stime
    // are the 14th and 15th of the line, the 12th and 13th after it.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = after_name.split_whitespace().skip(11).take(2).filter_map(|t| t.parse().ok()).collect();
    if ticks.len() == 2 { (ticks[0] + ticks[1]) / TICKS_PER_SECOND } else { f64::NAN }
}

/// The bed's processes by name (`/proc/<pid>/comm`, cut to 15 characters), with their CPU time.
fn bed_cpu_seconds() -> BTreeMap<String, f64> {
    const BED: [&str; 5] = ["etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kwok"];
    let mut cpu = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if let Some(name) = BED.iter().find(|name| comm.trim() == **name) {
            *cpu.entry((*name).to_owned()).or_insert(0.0) += process_cpu_seconds(pid);
        }
    }
    cpu
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The report, from every run's results in `dir`, smallest first, with the slope per 1,000
/// projects between the smallest and the largest.
fn render(dir: &Path) -> String {
    let mut runs: Vec<Results> = std::fs::read_dir(dir)
        .expect("report directory")
        .filter_map(|entry| std::fs::read(entry.ok()?.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    runs.sort_by_key(|r| r.projects);
    let per_project = |r: &Results, v: f64| v / r.projects as f64;
    let sum = |m: &BTreeMap<String, f64>| m.values().sum::<f64>();
    type Row = (&'static str, fn(&Results) -> f64, &'static str);
    let rows: [Row; 22] = [
        ("bed floor: every child applied by the benchmark, no operator", |r| r.floor_applied_s, "s"),
        ("bed floor: every pod Ready", |r| r.floor_ready_s, "s"),
        ("organisations Ready", |r| r.organisations_ready_s, "s"),
        ("projects created (16 clients)", |r| r.created_s, "s"),
        ("every StatefulSet applied by the operator", |r| r.applied_s, "s"),
        ("every pod Ready, with the operator (the floor's measure)", |r| r.sets_ready_s, "s"),
        ("**every project Ready**", |r| r.ready_s, "s"),
        ("**Ready ÷ bed floor**", |r| r.ready_s / r.floor_ready_s, "×"),
        ("operator CPU time until every project is Ready", |r| r.cpu_converged_s, "s"),
        ("**operator peak RSS (VmHWM) at convergence**", |r| r.rss_converged_mib, "MiB"),
        ("of its RSS at convergence: its own memory (RssAnon)", |r| r.rss_anon_mib, "MiB"),
        ("of its RSS at convergence: mapped from files, its code (RssFile)", |r| r.rss_file_mib, "MiB"),
        ("operator peak RSS after the idle window", |r| r.rss_idle_mib, "MiB"),
        ("operator RSS (VmRSS) after the idle window", |r| r.rss_resident_mib, "MiB"),
        ("compact caches (`ooda_cache_bytes`), per project", |r| r.cache_bytes / r.projects as f64, "bytes"),
        (
            "**operator writes per project** (its own count, Events included)",
            |r| r.operator_writes.values().sum::<f64>() / r.projects as f64,
            "",
        ),
        ("operator writes in the idle window", |r| r.idle_operator_writes, ""),
        ("writes to ooda's kinds in the idle window, all clients", |r| r.idle_ooda_writes, ""),
        ("failover: SIGKILL to the standby leading", |r| r.failover_leading_s, "s"),
        ("failover: SIGKILL to every project reconciled", |r| r.failover_converged_s, "s"),
        ("failover: **writes by the new leader** in its first minute", |r| r.failover_writes, ""),
        ("failover: new leader's peak RSS", |r| r.failover_rss_mib, "MiB"),
    ];
    let mut out = String::from("# Operator at scale\n\n");
    out += "Local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok; one machine, 2 cores), \
            `ooda operator` (each run names its build below), two replicas (one leading), default concurrency, \
            projects spread over 10 organisations. Generated by `make bench-operator` from the raw numbers in \
            `operator-scale/`. The controller manager's client rate limit is raised from its default (20 requests/s, \
            at which its volume binder alone paces the bed at about 3 projects/s) so that the floor is the machine's.\n\n";
    out += "| measure |";
    for r in &runs {
        out += &format!(" {} projects |", r.projects);
    }
    let slope = runs.len() > 1;
    if slope {
        out += " per 1,000 more |";
    }
    out += "\n|---|";
    out += &"---|".repeat(runs.len() + usize::from(slope));
    out += "\n";
    for (name, value, unit) in &rows {
        out += &format!("| {name} |");
        for r in &runs {
            out += &format!(" {} |", number(value(r), unit));
        }
        // A ratio has no slope.
        if let (true, false, Some(first), Some(last)) = (slope, *unit == "×", runs.first(), runs.last()) {
            let per_thousand = (value(last) - value(first)) / (last.projects - first.projects) as f64 * 1000.0;
            out += &format!(" {} |", number(per_thousand, unit));
        } else if slope {
            out += " |";
        }
        out += "\n";
    }
    for r in &runs {
        let children: f64 =
            ["ServiceAccount", "Secret", "PersistentVolumeClaim", "NetworkPolicy", "Service", "StatefulSet", "Lease"]
                .iter()
                .map(|k| r.operator_writes.get(*k).copied().unwrap_or(0.0))
                .sum();
        let organisations: f64 =
            ["Namespace", "ResourceQuota", "LimitRange", "Role", "RoleBinding", "Organisation", "OrganisationStatus"]
                .iter()
                .map(|k| r.operator_writes.get(*k).copied().unwrap_or(0.0))
                .sum();
        out += &format!(
            "\n**{} projects** ({}, {}, `ooda` from {}, load {:.1} → {:.1}, the controller manager at {} \
             requests/s).\n\n\
             Operator writes per project by kind: {}. Of these, {:.2} per project are its children, and {:.2} are \
             the organisations' own objects and status, not the projects'.\n\n\
             API server writes during the run by resource, all clients ({:.2} per project; the controller manager, \
             scheduler and kwok make pods run): {}.\n",
            r.projects,
            r.date,
            r.checkout,
            r.operator_build,
            r.load.0,
            r.load.1,
            r.controller_manager_qps,
            r.operator_writes
                .iter()
                .map(|(k, v)| format!("{k} {:.2}", per_project(r, *v)))
                .collect::<Vec<_>>()
                .join(", "),
            per_project(r, children),
            per_project(r, organisations),
            per_project(r, sum(&r.apiserver_writes)),
            r.apiserver_writes.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "),
        );
        if !r.floor_bed_cpu_s.is_empty() {
            let cpu = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
            let floor_total = sum(&r.floor_bed_cpu_s);
            let operator_total = sum(&r.operator_bed_cpu_s);
            out += &format!(
                "\nThe bed's CPU time while the floor's pods came up, then while the operator's projects did: {} \
                 (all: {floor_total:.1} s, then {operator_total:.1} s; {:.1} s and {:.1} s of it per second of \
                 each).\n",
                r.floor_bed_cpu_s
                    .keys()
                    .map(|k| format!(
                        "{k} {:.1} s, then {:.1} s",
                        cpu(&r.floor_bed_cpu_s, k),
                        cpu(&r.operator_bed_cpu_s, k)
                    ))
                    .collect::<Vec<_>>()
                    .join("; "),
                floor_total / r.floor_ready_s,
                operator_total / r.ready_s,
            );
        }
    }
    out
}

fn release_profile() -> String {
    "the release profile".to_owned()
}

fn not_measured() -> f64 {
    f64::NAN
}

fn number(value: f64, unit: &str) -> String {
    if value.is_nan() {
        return "–".to_owned();
    }
    // A difference of equal counts is -0.0 as often as 0.0.
    let value = if value == 0.0 { 0.0 } else { value };
    match unit {
        "s" => format!("{value:.1} s"),
        "MiB" => format!("{value:.1} MiB"),
        "×" => format!("{value:.2}×"),
        "bytes" => format!("{value:.0} bytes"),
        _ => format!("{value:.2}"),
    }
}
