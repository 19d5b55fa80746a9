//! Waking a hibernated project on the bed's real node, under runc and under gVisor: from the
//! request to the gateway (pod gone) to the first byte of the answer, and where the time goes.
//!
//! Starts the real operator and gateway (release builds), a Git server with examples/dev-server
//! (as `make demo` does), and an `eu-real` organisation with two projects seeded from it: one
//! under gVisor, one under plain runc (the run's configuration maps isolation `kata` to the bed's
//! `runc` RuntimeClass); and a third under gVisor with no repository, so never a loader.
//! Each cycle lets them hibernate (10 s idle timeout) and wakes each with one request through the
//! preview proxy, while watches and a TCP poll timestamp the steps:
//!
//! - ooda, before: the request reaches the gateway, which renews the activity Lease; the
//!   operator sees it and scales the StatefulSet to one;
//! - control plane: the StatefulSet controller creates the pod and the scheduler binds it;
//! - kubelet and runtime: pod sandbox, network, volume, the environment's container started (the
//!   loader init container only on a workspace's first start, which is not counted);
//! - dev server: from its container's start to its port accepting connections (polled every
//!   2 ms from the host);
//! - ooda, after: from the port accepting to the gateway's first byte back.
//!
//! Run with `make bench-wake` (uses the running local cluster, or brings one up for the run).
//! The report goes to `benches/reports/wake-real.md` and stdout.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::wait::conditions;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use ooda::accounts::{AccountStore, DEFAULT_SERVER_ITERATIONS};
use ooda::crd::{Organisation, Phase, Project};
use serde_json::{Value, json};
use tokio::time::Instant;

mod common;

use common::{
    SETTLE, TEST_LABEL, add_s3_credentials, checkout, checkout_and_kubeconfig, client, create_home, free_port, ms,
    ooda, percentile, platform_account, ready_organisation, run_id, wait_answers, wait_for,
};

const WAKES: usize = 12;
const DEV_PORT: u16 = 8080;
const ALICE: &str = "alice@acme.example";
const PASSWORD: &str = "correct horse battery staple";
/// The projects: (name, isolation, whether it has a repository to load, what it runs under). The
/// third, with no repository and so never a loader, is the control for the first: a seeded
/// workspace's wakes should cost what it costs.
const RUNTIMES: [(&str, &str, bool, &str); 3] = [
    ("wake-gvisor", "gvisor", true, "gVisor (runsc, systrap)"),
    ("wake-runc", "kata", true, "runc"),
    ("wake-bare", "gvisor", false, "gVisor, no loader"),
];

#[tokio::main]
async fn main() {
    let (repo, kubeconfig) = checkout_and_kubeconfig();
    let client = client(&kubeconfig).await;
    let run = run_id();
    let home = format!("ooda-bench-wake-{run}");
    let load_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    create_home(&client, &home, &run).await;
    add_s3_credentials(&client, &home).await;

    let dir = std::env::temp_dir().join(format!("ooda-bench-wake-{run}"));
    let git = common::kit::GitServer::start(&repo, &dir.join("git")).await;
    let config = dir.join("operator-config.yaml");
    let mut document: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo.join("examples/operator-config.yaml")).expect("config"))
            .expect("YAML");
    document["gitCaBundle"] = git.ca.clone().into();
    document["runtimeClasses"]["kata"] = "runc".into();
    std::fs::write(&config, serde_yaml::to_string(&document).expect("YAML")).expect("write config");

    let (operator_http, gateway, gateway_http) = (free_port(), free_port(), free_port());
    let config = config.to_str().expect("utf-8 path");
    let selector = format!("{TEST_LABEL}={run}");
    let mut operator = ooda(&kubeconfig, &dir.join("operator.log"))
        .args(["operator", "--config", config, "--http-addr", &operator_http.to_string(), "--namespace", &home])
        .args(["--organisation-selector", &selector])
        .spawn()
        .expect("start the operator");
    let mut gateway_process = ooda(&kubeconfig, &dir.join("gateway.log"))
        .args(["gateway", "--config", config, "--listen", &gateway.to_string()])
        .args(["--http-addr", &gateway_http.to_string(), "--insecure-http", "--namespace", &home])
        .spawn()
        .expect("start the gateway");
    wait_answers(operator_http, "operator", |body| body.starts_with("leader:")).await;
    wait_answers(gateway_http, "gateway", |body| body == "gateway ready").await;

    let org = format!("bench-{run}");
    let outcome =
        tokio::spawn(measure(client.clone(), home.clone(), org.clone(), run.clone(), gateway, git.url.clone())).await;
    cleanup(&client, &home, &run).await;
    let _ = gateway_process.kill().await;
    let _ = operator.kill().await;
    let wakes = outcome.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    let report = report(&wakes, &checkout(&repo), &load_at_start);
    let out = repo.join("benches/reports/wake-real.md");
    std::fs::write(&out, &report).expect("write report");
    println!("{report}\nreport written to {} (logs in {})", out.display(), dir.display());
}

/// One wake's timeline, from the request.
#[derive(Default, Clone, Copy)]
struct Wake {
    scaled: Duration,
    scheduled: Duration,
    started: Duration,
    listening: Duration,
    first_byte: Duration,
}

impl Wake {
    fn ooda(&self) -> Duration {
        self.scaled + (self.first_byte - self.listening)
    }
}

async fn measure(
    client: Client,
    home: String,
    org: String,
    run: String,
    gateway: SocketAddr,
    git: String,
) -> Vec<(&'static str, Vec<Wake>)> {
    ready_organisation(
        &client,
        json!({
            "metadata": { "name": org, "labels": { TEST_LABEL: run } },
            "spec": { "jurisdiction": "eu-real", "members": [{ "email": ALICE, "role": "admin" }] },
        }),
    )
    .await;
    let (account, auth_key) = platform_account(ALICE, PASSWORD, DEFAULT_SERVER_ITERATIONS).await;
    AccountStore::new(client.clone(), &home).create(&account).await.expect("add account");
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("http://{gateway}/api/auth/login"))
        .json(&json!({ "email": ALICE, "authKey": auth_key }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login JSON");
    let session = login["token"].as_str().expect("session").to_owned();

    let namespace = format!("org-{org}");
    let projects: Api<Project> = Api::namespaced(client.clone(), &namespace);
    let mut tokens = Vec::new();
    for (name, isolation, loads, _) in RUNTIMES {
        let mut spec = json!({
            "isolation": isolation,
            "resources": { "cpu": "500m", "memory": "256Mi", "storage": "1Gi" },
            "ports": [{ "name": "web", "port": DEV_PORT, "preview": true }],
            "lifecycle": { "idleTimeout": "10s" },
        });
        if loads {
            spec["source"] = json!({ "git": { "url": git, "ref": "main" } });
        }
        let created = http
            .post(format!("http://{gateway}/api/orgs/{org}/projects"))
            .bearer_auth(&session)
            .json(&json!({ "name": name, "spec": spec }))
            .send()
            .await
            .expect("create project");
        assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    }

    for (name, _, _, _) in RUNTIMES {
        // Running once (it may already be hibernating again when this looks).
        wait_for(&projects, name, |p: Option<&Project>| {
            let phase = p.and_then(|p| p.status.as_ref()).and_then(|s| s.phase);
            matches!(phase, Some(Phase::Running | Phase::Hibernated | Phase::Waking))
        })
        .await;
        let preview: Value = http
            .get(format!("http://{gateway}/api/orgs/{org}/projects/{name}/preview"))
            .bearer_auth(&session)
            .send()
            .await
            .expect("preview")
            .json()
            .await
            .expect("preview JSON");
        tokens.push(preview["token"].as_str().expect("token").to_owned());
    }
    let mut results: Vec<(&'static str, Vec<Wake>)> =
        RUNTIMES.iter().map(|(_, _, _, label)| (*label, Vec::new())).collect();
    for cycle in 0..=WAKES {
        for (i, (name, _, _, _)) in RUNTIMES.iter().enumerate() {
            hibernated(&client, &projects, &namespace, name).await;
            let wake = wake(&client, &namespace, name, &org, gateway, &tokens[i]).await;
            // The first cycle wakes pods whose image and volume are new to the node: not counted.
            if cycle > 0 {
                results[i].1.push(wake);
            }
        }
    }
    results
}

/// Waits until the project is Hibernated and its pod gone.
async fn hibernated(client: &Client, projects: &Api<Project>, namespace: &str, name: &str) {
    let deadline = Duration::from_secs(120);
    let phase = tokio::time::timeout(
        deadline,
        kube::runtime::wait::await_condition(projects.clone(), name, |p: Option<&Project>| {
            p.and_then(|p| p.status.as_ref()).and_then(|s| s.phase) == Some(Phase::Hibernated)
        }),
    )
    .await;
    assert!(matches!(phase, Ok(Ok(_))), "{name} did not hibernate");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if let Some(pod) = pods.get_opt(&format!("{name}-0")).await.expect("get pod") {
        let uid = pod.metadata.uid.unwrap_or_default();
        wait_for(&pods, &format!("{name}-0"), conditions::is_deleted(&uid)).await;
    }
}

/// Follows the object `name` by watch, calling `seen` with each version until it returns true;
/// the receiver fires once the watch's initial list is done.
fn follow<K>(
    api: Api<K>,
    name: String,
    mut seen: impl FnMut(K) -> bool + Send + 'static,
) -> (tokio::task::JoinHandle<()>, tokio::sync::oneshot::Receiver<()>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let (listed, on_listed) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = std::pin::pin!(watcher(api, config));
        let mut listed = Some(listed);
        while let Some(Ok(event)) = events.next().await {
            match event {
                watcher::Event::InitDone => {
                    if let Some(listed) = listed.take() {
                        let _ = listed.send(());
                    }
                }
                watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                    if seen(object) {
                        return;
                    }
                }
                watcher::Event::Init | watcher::Event::Delete(_) => {}
            }
        }
    });
    (task, on_listed)
}

/// Marks when `address` first accepts a TCP connection, trying every 2 ms.
async fn poll_listening(address: SocketAddr, marks: Arc<Mutex<Wake>>, since: impl Fn() -> Duration) {
    loop {
        let attempt = tokio::time::timeout(Duration::from_millis(100), tokio::net::TcpStream::connect(address));
        if matches!(attempt.await, Ok(Ok(_))) {
            marks.lock().unwrap().listening = since();
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One request through the preview proxy to the hibernated project, with its steps timestamped.
async fn wake(client: &Client, namespace: &str, name: &str, org: &str, gateway: SocketAddr, token: &str) -> Wake {
    let marks = Arc::new(Mutex::new(Wake::default()));
    let t0 = Instant::now();
    let since = move || t0.elapsed();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let set_marks = marks.clone();
    let (set_watch, set_listed) = follow(sets, name.to_owned(), move |set: StatefulSet| {
        if set.spec.and_then(|s| s.replicas).unwrap_or(0) > 0 {
            set_marks.lock().unwrap().scaled = since();
            return true;
        }
        false
    });
    let pod_marks = marks.clone();
    let mut poller: Option<tokio::task::JoinHandle<()>> = None;
    let (pod_watch, pods_listed) = follow(pods, format!("{name}-0"), move |pod: Pod| {
        let mut m = pod_marks.lock().unwrap();
        if m.scheduled.is_zero() && pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            m.scheduled = since();
        }
        let running = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
            cs.iter().any(|c| c.name == "workspace" && c.state.as_ref().and_then(|s| s.running.as_ref()).is_some())
        });
        if m.started.is_zero() && running {
            m.started = since();
        }
        drop(m);
        let ip: Option<IpAddr> = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()?.parse().ok());
        if let (None, Some(ip)) = (&poller, ip) {
            poller = Some(tokio::spawn(poll_listening(SocketAddr::new(ip, DEV_PORT), pod_marks.clone(), since)));
        }
        poller.as_ref().is_some_and(|p| p.is_finished()) && !pod_marks.lock().unwrap().started.is_zero()
    });
    // Both watches have listed (the pod is absent, the StatefulSet at zero) before the request.
    let _ = set_listed.await;
    let _ = pods_listed.await;
    let t0_request = since();
    let host = format!("{name}--{org}.preview.ooda.localhost");
    let browser = reqwest::Client::builder().resolve(&host, gateway).timeout(SETTLE).build().expect("client");
    let response = browser
        .get(format!("http://{host}:{}/", gateway.port()))
        .header("x-ooda-preview-token", token)
        .send()
        .await
        .expect("the woken project's answer");
    let first_byte = since();
    assert_eq!(response.status(), reqwest::StatusCode::OK, "{name}: {:?}", response.text().await);
    let _ = tokio::time::timeout(Duration::from_secs(5), pod_watch).await;
    set_watch.abort();
    let m = *marks.lock().unwrap();
    assert!(!m.scaled.is_zero() && !m.started.is_zero() && !m.listening.is_zero(), "{name}: a step was not seen");
    // Every mark relative to the request, not to the watches' start.
    let at = |d: Duration| d.saturating_sub(t0_request);
    Wake {
        scaled: at(m.scaled),
        scheduled: at(m.scheduled),
        started: at(m.started),
        listening: at(m.listening),
        first_byte: at(first_byte),
    }
}

async fn cleanup(client: &Client, home: &str, run: &str) {
    let orgs: Api<Organisation> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for org in orgs.list(&ListParams::default().labels(&format!("{TEST_LABEL}={run}"))).await.expect("list") {
        orgs.delete(&org.name_any(), &Default::default()).await.expect("delete organisation");
        let namespace = format!("org-{}", org.name_any());
        if let Some(ns) = namespaces.get_opt(&namespace).await.expect("get namespace") {
            let uid = ns.metadata.uid.unwrap_or_default();
            wait_for(&namespaces, &namespace, conditions::is_deleted(&uid)).await;
        }
    }
    namespaces.delete(home, &Default::default()).await.expect("delete the home namespace");
}

fn report(results: &[(&'static str, Vec<Wake>)], checkout: &str, load: &str) -> String {
    let mut out = String::from("# Waking a hibernated project on the real node\n\n");
    out += &format!(
        "`make bench-wake`, {checkout}; load average at the start: {}. 2 cores shared by the control \
         plane, the real node, the operator, the gateway and the benchmark. {WAKES} wakes per project, \
         the projects taking turns, after one uncounted wake each. Each wake: the project \
         hibernated (pod gone), one GET through the preview proxy, timed to the first byte of its answer.\n\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    type Step = (&'static str, fn(&Wake) -> Duration);
    let steps: [Step; 7] = [
        ("**request → first byte**", |w| w.first_byte),
        ("ooda: request → StatefulSet scaled", |w| w.scaled),
        ("control plane: → pod scheduled", |w| w.scheduled.saturating_sub(w.scaled)),
        ("kubelet + runtime: → container started", |w| w.started.saturating_sub(w.scheduled)),
        ("dev server: → port accepting", |w| w.listening.saturating_sub(w.started)),
        ("ooda: port accepting → first byte", |w| w.first_byte.saturating_sub(w.listening)),
        ("**ooda's share** (both ooda rows)", Wake::ooda),
    ];
    out += "| step |";
    for (label, _) in results {
        out += &format!(" {label} p50 | p95 |");
    }
    out += "\n|---|";
    for _ in results {
        out += "---:|---:|";
    }
    out += "\n";
    for (step, of) in steps {
        out += &format!("| {step} |");
        for (_, wakes) in results {
            let mut values: Vec<Duration> = wakes.iter().map(of).collect();
            values.sort();
            out += &format!(" {} | {} |", ms(percentile(&values, 0.5)), ms(percentile(&values, 0.95)));
        }
        out += "\n";
    }
    out += "\nThe steps are timestamped by the benchmark's own watches (StatefulSet replicas, the pod's \
            node and container state) and a TCP poll of the pod's port every 2 ms, so each carries a \
            few milliseconds of watch delivery. Pods start without the loader init container once their \
            workspace is seeded (the uncounted first wake drops it), so the first two projects wake \
            like the one without a repository, whose dev server is Python's static file server. p50 and p95 are nearest-rank \
            per step, so the rows need not add up to the total's.\n";
    out
}
