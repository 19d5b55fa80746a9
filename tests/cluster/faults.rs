//! Parts of the control plane taken away and brought back while ooda works: the API server, and
//! separately etcd, restarted by the bed's own script (`scripts/bed-restart.sh`) while projects
//! are being created and others hibernate and wake. These restart what every other test uses, so
//! they are ignored in the suite's parallel run and `make test` runs them alone afterwards
//! (`cargo test --test cluster -- --ignored --test-threads 1 faults::`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use ooda::crd::{Phase, Project};
use serde_json::json;
use tokio::time::Instant;

use crate::gateway::setup_with;
use crate::harness::{eventually, repo, wait_deleted, wait_for};
use crate::operator::{one_child_of_each_kind, web_project};
use crate::operator_harness::{http_get, project_phase, renew_activity};

const CREATED: usize = 100;
/// How long the component stays down: past the gateway's --stale-after, so /readyz must say so.
const DOWN_SECONDS: &str = "5";

#[tokio::test]
#[ignore = "restarts the bed's API server: make test runs it alone, after the suite"]
async fn the_api_server_restarted_mid_flight_leaves_every_project_converged_once() {
    restarted_mid_flight("kube-apiserver").await;
}

#[tokio::test]
#[ignore = "restarts the bed's etcd: make test runs it alone, after the suite"]
async fn etcd_restarted_mid_flight_leaves_every_project_converged_once() {
    restarted_mid_flight("etcd").await;
}

async fn restarted_mid_flight(component: &'static str) {
    let mut s = setup_with(&format!("fault-{component}"), &["--stale-after", "2s"]).await;
    let client = s.world.client.clone();
    let org = s.world.ready_organisation_for("eu", CREATED + 2).await;
    let ns = format!("org-{}", org.name_any());
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);

    // Two projects that hibernate after 10 s idle, and wake on activity after the restart.
    let mut sleeper = web_project();
    sleeper["lifecycle"] = json!({ "idleTimeout": "10s" });
    for sleeping in ["nap-a", "nap-b"] {
        s.world.create_project(&ns, sleeping, sleeper.clone()).await;
    }
    // A client creating projects one after another, retrying what the outage refuses, as any would.
    let creator = {
        let projects = projects.clone();
        tokio::spawn(async move {
            for i in 0..CREATED {
                let project: Project = serde_json::from_value(json!({
                    "apiVersion": "ooda.run/v1alpha1", "kind": "Project",
                    "metadata": { "name": format!("p{i:03}") }, "spec": web_project(),
                }))
                .expect("project");
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match projects.create(&PostParams::default(), &project).await {
                        Ok(_) => break,
                        // Created, though the answer was lost to the outage.
                        Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists" => {
                            break;
                        }
                        Err(error) => {
                            assert!(Instant::now() < deadline, "p{i:03} still refused: {error}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        })
    };
    eventually(Duration::from_secs(60), "30 projects created", || async {
        let listed = projects.list(&Default::default()).await.ok()?.items;
        (listed.len() >= 30).then_some(())
    })
    .await;

    let restart = tokio::task::spawn_blocking(move || {
        std::process::Command::new(repo().join("scripts/bed-restart.sh"))
            .args([component, DOWN_SECONDS])
            .status()
            .expect("run bed-restart.sh")
    });
    // While it is down, the gateway says it cannot vouch for its caches.
    let gateway_health = s.gateway.http;
    eventually(Duration::from_secs(15), "the gateway's /readyz reports the outage", || async {
        let (status, body) = http_get(gateway_health, "/readyz").await.ok()?;
        (status == 503 && body.contains("API server")).then_some(())
    })
    .await;
    assert!(restart.await.expect("restart task").success(), "bed-restart.sh {component}");
    eventually(Duration::from_secs(60), "the gateway ready again", || async {
        let (status, _) = http_get(gateway_health, "/readyz").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    creator.await.expect("every project created");

    // The same operator and gateway processes recovered their watches: every project converges.
    for i in 0..CREATED {
        wait_for(&projects, &format!("p{i:03}"), project_phase(Phase::Running)).await;
    }
    for sleeping in ["nap-a", "nap-b"] {
        wait_for(&projects, sleeping, project_phase(Phase::Hibernated)).await;
        renew_activity(&client, &ns, sleeping).await;
        wait_for(&projects, sleeping, project_phase(Phase::Running)).await;
    }
    one_child_of_each_kind(&client, &ns, CREATED + 2).await;
    assert!(s.world.operator.process.child.try_wait().expect("operator").is_none(), "the operator never restarted");
    assert!(s.gateway.process.child.try_wait().expect("gateway").is_none(), "the gateway never restarted");

    // Nothing is stuck on a finalizer: deleted projects go, with their pods.
    for i in 0..5 {
        let name = format!("p{i:03}");
        let uid = projects.get(&name).await.expect("project").uid().expect("uid");
        projects.delete(&name, &DeleteParams::default()).await.expect("delete");
        wait_deleted(&projects, &name, &uid).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually(Duration::from_secs(60), "the deleted projects' pods gone", || async {
        let left = pods.list(&Default::default()).await.ok()?.items;
        (!left.iter().any(|p| ["p000-0", "p001-0", "p002-0", "p003-0", "p004-0"].contains(&p.name_any().as_str())))
            .then_some(())
    })
    .await;
    s.world.cleanup().await;
}
