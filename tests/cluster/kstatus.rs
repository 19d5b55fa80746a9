//! ooda's resources as Flux's health checks see them: kstatus (sigs.k8s.io/cli-utils, built by
//! `make tools` from scripts/kstatus) run on the objects the operator wrote.

use std::io::Write;
use std::process::{Command, Stdio};

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use ooda::crd::{Organisation, Phase, Project};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::{client, install_crds, repo, wait_for};
use crate::operator_harness::{Operator, World, condition_true, project_phase};

/// kstatus's verdict on `object`: (status, message).
fn kstatus(object: &impl Serialize) -> (String, String) {
    let versions = std::fs::read_to_string(repo().join("scripts/versions.env")).expect("versions.env");
    let version = versions.lines().find_map(|l| l.strip_prefix("CLI_UTILS_VERSION=")).expect("CLI_UTILS_VERSION");
    let source = std::fs::read(repo().join("scripts/kstatus/main.go")).expect("scripts/kstatus/main.go");
    let hash: String = Sha256::digest(&source).iter().map(|b| format!("{b:02x}")).collect();
    let cache = std::env::var_os("OODA_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ooda"));
    let binary = cache.join(format!("tools/kstatus-{version}-{}/kstatus", &hash[..12]));
    assert!(binary.exists(), "{} is missing: run `make tools`", binary.display());
    let mut child = Command::new(&binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kstatus");
    child.stdin.take().expect("stdin").write_all(&serde_json::to_vec(object).expect("JSON")).expect("write");
    let output = child.wait_with_output().expect("kstatus");
    assert!(output.status.success(), "kstatus: {}", String::from_utf8_lossy(&output.stderr));
    let line = String::from_utf8(output.stdout).expect("UTF-8");
    let mut fields = line.trim_end().splitn(3, ' ').skip(1);
    let status = fields.next().expect("status").to_owned();
    (status, fields.next().unwrap_or_default().to_owned())
}

fn project_spec() -> serde_json::Value {
    json!({
        "isolation": "gvisor",
        "resources": { "cpu": "1", "memory": "1Gi", "storage": "1Gi" },
        "ports": [{ "name": "web", "port": 3000, "preview": true }],
    })
}

#[tokio::test]
async fn flux_reads_organisations_and_projects_as_they_stand() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "kstatus").await;

    // An organisation in a jurisdiction the operator does not have: Failed, saying why.
    let orgs: Api<Organisation> = Api::all(client.clone());
    let mars = world.create_organisation("mars").await;
    let stalled = wait_for(&orgs, &mars, |o: Option<&Organisation>| {
        condition_true(o.and_then(|o| o.status.as_ref()).map(|s| &s.conditions[..]), "Stalled")
    })
    .await;
    let (status, message) = kstatus(&stalled);
    assert_eq!(status, "Failed", "{message}");
    assert!(message.contains("\"mars\""), "{message}");

    let org = world.ready_organisation("eu").await;
    assert_eq!(kstatus(&org).0, "Current");

    let ns = format!("org-{}", org.name_any());
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    world.create_project(&ns, "shop", project_spec()).await;
    let running = wait_for(&projects, "shop", project_phase(Phase::Running)).await;
    assert_eq!(kstatus(&running).0, "Current");

    // Stopped as its spec asks: Current, not forever on its way.
    let stop = json!({ "spec": { "lifecycle": { "state": "Stopped" } } });
    projects.patch("shop", &PatchParams::default(), &Patch::Merge(&stop)).await.expect("stop");
    let stopped = wait_for(&projects, "shop", project_phase(Phase::Stopped)).await;
    assert_eq!(kstatus(&stopped).0, "Current");

    // A change no operator has seen yet is InProgress, until one observes it.
    let World { client: _, test, home, operator, config } = world;
    operator.kill().await;
    let resize = json!({ "spec": { "resources": { "cpu": "2" } } });
    let changed = projects.patch("shop", &PatchParams::default(), &Patch::Merge(&resize)).await.expect("resize");
    let (status, message) = kstatus(&changed);
    assert_eq!(status, "InProgress", "{message}");
    assert!(message.contains("observed generation"), "{message}");
    let replacement = Operator::start(&test, &home.name, "ooda-operator").await;
    replacement.wait_ready("leader").await;
    let observed = wait_for(&projects, "shop", |p: Option<&Project>| {
        p.is_some_and(|p| p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation)
    })
    .await;
    assert_eq!(kstatus(&observed).0, "Current");

    World { client: client.clone(), test, home, operator: replacement, config }.cleanup().await;
}
