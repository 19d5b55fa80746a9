//! Parts of the control plane taken away and brought back while ooda works: the API server, and
//! separately etcd, restarted by the bed's own script (`scripts/bed-restart.sh`) while projects
//! are being created and others hibernate and wake; and the operator SIGKILLed three times while
//! 200 projects converge. These restart what every other test uses, or load the bed more than any
//! other, so they are ignored in the suite's parallel run and `make test` runs them alone
//! afterwards (`cargo test --test cluster -- --ignored --test-threads 1 faults::`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use ooda::crd::{Organisation, Phase, Project};
use serde_json::json;
use tokio::time::Instant;

use crate::gateway::setup_with;
use crate::harness::{client, eventually, install_crds, repo, wait_deleted, wait_for};
use crate::operator::{one_child_of_each_kind, snapshot, web_project};
use crate::operator_harness::{
    Operator, World, http_get, organisation_ready, project_phase, renew_activity, writes_by_kind_if_any,
};

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

/// Each project's preview token, by project, as the operator has written them so far.
async fn preview_tokens(client: &kube::Client, ns: &str) -> BTreeMap<String, Vec<u8>> {
    let secrets = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=ooda,ooda.run/project"))
        .await
        .expect("list")
        .items;
    secrets
        .into_iter()
        .filter_map(|s| {
            let project = s.name_any().strip_suffix("-preview")?.to_owned();
            Some((project, s.data?.get(ooda::crd::names::TOKEN_KEY)?.0.clone()))
        })
        .collect()
}

#[tokio::test]
#[ignore = "200 projects converging, the heaviest load of any test: make test runs it alone, after the suite"]
async fn killed_three_times_while_200_projects_converge_the_operator_loses_and_duplicates_nothing() {
    const PROJECTS: usize = 200;
    let client = client().await;
    install_crds(&client).await;
    let mut world = World::start(&client, "kill3").await;
    let name = crate::harness::unique_name("org");
    let mut manifest = world.organisation_manifest(&name, "eu");
    manifest["spec"]["quota"] = json!({ "projects": PROJECTS, "cpu": "1000", "memory": "4000Gi", "storage": "100Ti" });
    let organisations: Api<Organisation> = Api::all(client.clone());
    organisations
        .create(&PostParams::default(), &serde_json::from_value(manifest).expect("org"))
        .await
        .expect("create");
    let org = wait_for(&organisations, &name, organisation_ready()).await;
    let ns = format!("org-{}", org.name_any());
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..PROJECTS).map(|i| format!("p{i:03}")).collect();
    // One at a time: concurrent creates race for the organisation's quota (409).
    for name in &names {
        world.create_project(&ns, name, web_project()).await;
    }

    // Three kills at points picked at random within each third of the way to every project
    // having a status; a replacement takes over after each (once the dead leader's Lease lapses).
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
    let mut tokens = BTreeMap::new();
    for third in 0..3u32 {
        let point = (PROJECTS as u32 / 3) * third + (seed >> (third * 8)) % (PROJECTS as u32 / 3);
        eventually(Duration::from_secs(120), &format!("{point} projects with a status"), || async {
            let listed = projects.list(&ListParams::default()).await.expect("list").items;
            (listed.iter().filter(|p| p.status.is_some()).count() >= point as usize).then_some(())
        })
        .await;
        tokens.extend(preview_tokens(&client, &ns).await);
        eprintln!("kill {} at {point} projects with a status", third + 1);
        let World { client: kept, test, home, operator, config } = world;
        operator.kill().await;
        let replacement = Operator::start(&test, &home.name, "ooda-operator").await;
        replacement.wait_ready("leader").await;
        world = World { client: kept, test, home, operator: replacement, config };
    }
    for name in &names {
        wait_for(&projects, name, project_phase(Phase::Running)).await;
    }
    one_child_of_each_kind(&client, &ns, PROJECTS).await;
    // A token issued before a kill is the token after it: none of the projects stopped.
    let after = preview_tokens(&client, &ns).await;
    for (project, token) in &tokens {
        assert_eq!(after.get(project), Some(token), "{project}'s preview token changed");
    }
    // Converged means quiet: no write in a window of several reconcile rounds, once every
    // workspace is marked seeded (a reconcile after its pod's first Ready).
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    eventually(Duration::from_secs(60), "every workspace marked seeded", || async {
        let listed = claims.list(&ListParams::default()).await.expect("list").items;
        let seeded = |c: &PersistentVolumeClaim| {
            c.annotations().get(ooda::crd::names::WORKSPACE_SEEDED).is_some_and(|v| v == "true")
        };
        (listed.len() == PROJECTS && listed.iter().all(seeded)).then_some(())
    })
    .await;
    // The last replacement may have found every project converged and written nothing at all.
    let writes = writes_by_kind_if_any(&world.operator.metrics().await);
    let versions = snapshot(&client, &ns, &org.name_any()).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(writes_by_kind_if_any(&world.operator.metrics().await), writes, "writes once converged");
    assert_eq!(snapshot(&client, &ns, &org.name_any()).await, versions, "no object changed once converged");
    world.cleanup().await;
}
