//! `make bench-dashboard`: how fast the dashboard shows what the API server records, and what it
//! weighs. A project is stopped and started 20 times (by `kubectl patch`, as GitOps would); the
//! dashboard, signed in in Debian's Chromium (`benches/dashboard.mjs`, playwright-core), is timed
//! from an independent watch seeing each new phase to the page's status badge showing it. The
//! assets' sizes, gzipped, come from the files compiled into the binary. Writes
//! `benches/reports/dashboard.md`.

use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use ooda::accounts::{AccountStore, DEFAULT_SERVER_ITERATIONS};
use ooda::crd::{Phase, Project};
use ooda::gateway::dashboard::ASSETS;
use serde_json::{Value, json};

mod common;

use common::{
    Run, Started, TEST_LABEL, checkout, median, platform_account, ready_organisation, start_ooda, start_run, wait_for,
};

const ALICE: &str = "alice@acme.example";
const PASSWORD: &str = "correct horse battery staple";
const CHANGES: usize = 20;

#[tokio::main]
async fn main() {
    let Run { repo, kubeconfig, client, id: run, home } = start_run("dash").await;
    let org = format!("bench-{run}");
    let config = repo.join("examples/operator-config.yaml");
    let config = config.to_str().expect("utf-8 path");
    // Port 0: the port it listens on, which previews' URLs then carry.
    let Started { mut operator, gateway: mut gateway_process, addr: gateway } =
        start_ooda(&kubeconfig, "dash", &run, &home, config, &["--public-port", "0"]).await;
    ready_organisation(
        &client,
        json!({
            "metadata": { "name": org, "labels": { TEST_LABEL: run } },
            "spec": { "jurisdiction": "eu", "members": [{ "email": ALICE, "role": "admin" }] },
        }),
    )
    .await;
    let (account, _) = platform_account(ALICE, PASSWORD, DEFAULT_SERVER_ITERATIONS).await;
    AccountStore::new(client.clone(), &home).create(&account).await.expect("add account");
    let projects: Api<Project> = Api::namespaced(client.clone(), &format!("org-{org}"));
    let project: Project = serde_json::from_value(json!({ "metadata": { "name": "watched" }, "spec": {} })).expect("p");
    projects.create(&PostParams::default(), &project).await.expect("create the project");
    wait_for(&projects, "watched", |p: Option<&Project>| {
        p.and_then(|p| p.status.as_ref()?.phase) == Some(Phase::Running)
    })
    .await;

    let kubectl = std::env::var("OODA_KUBECTL").expect("OODA_KUBECTL names the bed's kubectl");
    let chromium = std::env::var("OODA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let run_browser = tokio::process::Command::new("node")
        .arg(repo.join("benches/dashboard.mjs"))
        .env("OODA_DASHBOARD_URL", format!("http://ooda.localhost:{}/", gateway.port()))
        .env("OODA_CHROMIUM", &chromium)
        .env("OODA_KUBECTL", &kubectl)
        .env("OODA_KUBECONFIG", &kubeconfig)
        .env("OODA_ORG", &org)
        .env("OODA_PROJECT", "watched")
        .env("OODA_ADMIN_EMAIL", ALICE)
        .env("OODA_ADMIN_PASSWORD", PASSWORD)
        .env("OODA_CHANGES", CHANGES.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run_browser).await.expect("in time").expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_str(stdout.lines().last().expect("a result line")).expect("JSON");
    let mut latencies: Vec<f64> =
        result["latencies"].as_array().expect("latencies").iter().filter_map(Value::as_f64).collect();

    let orgs: Api<ooda::crd::Organisation> = Api::all(client.clone());
    orgs.delete(&org, &Default::default()).await.expect("delete the organisation");
    let _ = gateway_process.kill().await;
    let _ = operator.kill().await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .delete(&home, &Default::default())
        .await
        .expect("delete the home namespace");

    latencies.sort_by(f64::total_cmp);
    let p99 = latencies[((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
    let gzipped = |bytes: &[u8]| {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip").len()
    };
    let (own, vendored): (Vec<_>, Vec<_>) = ASSETS.iter().partition(|(name, _, _)| !name.starts_with("vendor/"));
    let rows = |assets: &[(&str, &str, &[u8])]| {
        assets
            .iter()
            .map(|(name, _, bytes)| {
                format!(
                    "| `{name}` | {:.1} KB | {:.1} KB |\n",
                    bytes.len() as f64 / 1024.0,
                    gzipped(bytes) as f64 / 1024.0
                )
            })
            .collect::<String>()
    };
    let total =
        |assets: &[(&str, &str, &[u8])]| assets.iter().map(|(_, _, b)| gzipped(b)).sum::<usize>() as f64 / 1024.0;
    let dashboard_own: Vec<_> = own.iter().copied().filter(|(name, _, _)| !name.starts_with("terminal")).collect();
    let report = format!(
        "# Dashboard: live updates and weight\n\n\
         Generated by `make bench-dashboard` on {date}. Machine: {cores} cores, load average {load} before the run. \
         ooda {version} ({checkout}); Debian's Chromium driven by playwright-core; local control plane with kwok nodes.\n\n\
         ## From the API server to the screen\n\n\
         The project `watched` was stopped and started {CHANGES} times by `kubectl patch` (each change waits for the \
         last). For each, an independent watch (`kubectl get --watch`) notes when the new phase reaches a client of \
         the API server, and a MutationObserver in the signed-in dashboard notes when the project's status badge \
         shows it (the gateway's watch cache, the event stream, the page's render). Both read this machine's clock.\n\n\
         | measure | p50 | p99 | max | every change (ms) |\n|---|---|---|---|---|\n\
         | phase in the API server → shown in the dashboard | {p50:.0} ms | {p99:.0} ms | {max:.0} ms | {all} |\n\n\
         The target is within a second. Negative values would mean the page showed the change before kubectl's own \
         watch delivered it: both are watches of the same write.\n\n\
         ## Weight\n\n\
         The dashboard's own files, as compiled into the binary (budget: 150 KB gzipped without the terminal's \
         library): **{own_total:.1} KB gzipped** for the dashboard, each file compressed on its own (a browser fetches \
         them one by one).\n\n| file | size | gzipped |\n|---|---|---|\n{own_rows}\n\
         Vendored libraries ({vendored_total:.1} KB gzipped; xterm.js loads only on the terminal page):\n\n\
         | file | size | gzipped |\n|---|---|---|\n{vendored_rows}",
        date = Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        cores = std::thread::available_parallelism().map_or(1, |n| n.get()),
        load = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" / "),
        version = env!("CARGO_PKG_VERSION"),
        checkout = checkout(&repo),
        p50 = median(&latencies),
        max = latencies.last().copied().unwrap_or(f64::NAN),
        all = latencies.iter().map(|l| format!("{l:.0}")).collect::<Vec<_>>().join(", "),
        own_total = total(&dashboard_own),
        own_rows = rows(&own),
        vendored_total = total(&vendored),
        vendored_rows = rows(&vendored),
    );
    let out = repo.join("benches/reports/dashboard.md");
    std::fs::write(&out, &report).expect("write report");
    println!("{report}\nreport written to {}", out.display());
}
