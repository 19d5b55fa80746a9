//! The operator against the real control plane: provisioning, residency, isolation, hibernation,
//! stop, deletion, idempotency, restarts and leader election.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use ooda::crd::{Organisation, Phase, Project};
use serde_json::json;

use crate::harness::{SETTLE, api_error, client, eventually, install_crds, wait_deleted, wait_for};
use crate::operator_harness::{
    Operator, World, condition_true, metric_sum, project_phase, renew_activity, writes_by_kind,
};

pub(crate) fn web_project() -> serde_json::Value {
    json!({
        "image": "registry.example/devenv:1",
        "isolation": "gvisor",
        "resources": { "cpu": "2", "memory": "4Gi", "storage": "10Gi" },
        "ports": [{ "name": "web", "port": 3000, "preview": true }],
        "source": { "git": { "url": "https://git.example/shop.git", "ref": "main" } },
    })
}

async fn token(client: &kube::Client, namespace: &str, project: &str) -> Vec<u8> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets.get(&format!("{project}-preview")).await.expect("preview secret");
    secret.data.expect("data")["token"].0.clone()
}

#[tokio::test]
async fn an_organisation_gets_a_guarded_namespace() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "org").await;
    let org = world.ready_organisation("eu").await;
    let name = org.name_any();
    let ns_name = format!("org-{name}");
    let status = org.status.clone().expect("status");
    assert_eq!(status.namespace.as_deref(), Some(ns_name.as_str()));
    assert!(condition_true(Some(&status.conditions), "ResidencySatisfied"));

    let ns = Api::<Namespace>::all(client.clone()).get(&ns_name).await.expect("namespace");
    let labels = ns.labels();
    assert_eq!(labels["ooda.run/organisation"], name);
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(labels[&format!("pod-security.kubernetes.io/{mode}")], "restricted");
    }
    assert_eq!(ns.owner_references()[0].uid, org.uid().expect("uid"), "the namespace goes with its organisation");

    let quota =
        Api::<ResourceQuota>::namespaced(client.clone(), &ns_name).get("organisation-quota").await.expect("quota");
    let hard = quota.spec.expect("spec").hard.expect("hard");
    assert_eq!(hard["count/projects.ooda.run"].0, "10");
    assert_eq!(hard["limits.memory"].0, "32Gi");
    assert_eq!(hard["requests.storage"].0, "200Gi");
    let deny = Api::<NetworkPolicy>::namespaced(client.clone(), &ns_name).get("default-deny").await.expect("policy");
    let spec = deny.spec.expect("spec");
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned(), "Egress".to_owned()]));
    assert!(spec.ingress.is_none() && spec.egress.is_none(), "no rule: everything denied");

    // Pod Security admission of the namespace is real: a privileged pod is refused there.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns_name);
    let privileged: Pod = serde_json::from_value(json!({
        "metadata": { "name": "privileged" },
        "spec": { "containers": [{ "name": "c", "image": "x", "securityContext": { "privileged": true } }] }
    }))
    .expect("pod");
    let refusal = api_error(pods.create(&PostParams::default(), &privileged).await);
    assert!(refusal.message.contains("violates PodSecurity \"restricted"), "{}", refusal.message);
    world.cleanup().await;
}

#[tokio::test]
async fn an_unknown_jurisdiction_fails_closed() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "mars").await;
    let orgs: Api<Organisation> = Api::all(client.clone());
    let name = world.create_organisation("mars").await;
    let org = wait_for(&orgs, &name, |o: Option<&Organisation>| {
        o.and_then(|o| o.status.as_ref()).is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "ResidencySatisfied" && c.reason == "UnknownJurisdiction")
        })
    })
    .await;
    let status = org.status.expect("status");
    assert!(!condition_true(Some(&status.conditions), "Ready"));
    assert!(!condition_true(Some(&status.conditions), "ResidencySatisfied"));
    assert_eq!(status.namespace, None);
    let namespace = Api::<Namespace>::all(client.clone()).get_opt(&format!("org-{name}")).await.expect("get");
    assert!(namespace.is_none(), "nothing is provisioned for an unconfigured jurisdiction");

    // Its namespace, made by hand, still gets no project provisioned: the organisation is not Ready.
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": format!("org-{name}") } })).expect("ns");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    let projects: Api<Project> = Api::namespaced(client.clone(), &format!("org-{name}"));
    world.create_project(&format!("org-{name}"), "stranded", web_project()).await;
    let stranded = wait_for(&projects, "stranded", project_phase(Phase::Pending)).await;
    let ready = stranded.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "OrganisationNotReady"));
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &format!("org-{name}"));
    assert!(sets.list(&ListParams::default()).await.expect("list").items.is_empty(), "no environment provisioned");

    // The project goes while its organisation is still there to say whose it is: an operator
    // scoped by a selector recognises its projects through their organisation.
    let stranded_uid = projects.get("stranded").await.expect("project").metadata.uid.expect("uid");
    projects.delete("stranded", &Default::default()).await.expect("delete project");
    wait_deleted(&projects, "stranded", &stranded_uid).await;
    Api::<Namespace>::all(client.clone()).delete(&format!("org-{name}"), &Default::default()).await.expect("delete ns");
    world.cleanup().await;
}

#[tokio::test]
async fn a_project_becomes_an_isolated_environment_pinned_to_its_jurisdiction() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "project").await;
    let org = world.ready_organisation("eu").await;
    let ns = format!("org-{}", org.name_any());
    let mut spec = web_project();
    spec["isolation"] = json!("kata");
    let created = world.create_project(&ns, "shop", spec).await;
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    let project = wait_for(&projects, "shop", project_phase(Phase::Running)).await;
    let status = project.status.expect("status");
    assert!(condition_true(Some(&status.conditions), "Ready"));
    assert!(condition_true(Some(&status.conditions), "Provisioned"));
    assert_eq!(status.preview_host, Some(format!("shop--{}.preview.ooda.localhost", org.name_any())));
    assert_eq!(status.observed_generation, created.metadata.generation);

    // The pod: sandboxed, restricted, dedicated compute, no credentials, in the EU.
    let pod = Api::<Pod>::namespaced(client.clone(), &ns).get("shop-0").await.expect("pod");
    let pod_spec = pod.spec.expect("spec");
    assert_eq!(pod_spec.runtime_class_name.as_deref(), Some("kata"));
    assert_eq!(pod_spec.automount_service_account_token, Some(false));
    assert_eq!(pod_spec.enable_service_links, Some(false));
    assert_eq!(pod_spec.service_account_name.as_deref(), Some("shop"));
    let security = pod_spec.security_context.expect("pod security context");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.seccomp_profile.expect("seccomp").type_, "RuntimeDefault");
    let container = &pod_spec.containers[0];
    let resources = container.resources.clone().expect("resources");
    assert_eq!(resources.requests, resources.limits, "requests equal limits");
    assert_eq!(resources.limits.expect("limits")["memory"].0, "4Gi");
    let context = container.security_context.clone().expect("container security context");
    assert_eq!(context.allow_privilege_escalation, Some(false));
    assert_eq!(context.capabilities.expect("caps").drop, Some(vec!["ALL".to_owned()]));
    let loader = &pod_spec.init_containers.expect("init containers")[0];
    assert_eq!(loader.name, "loader");
    let git_url = loader.env.iter().flatten().find(|e| e.name == "GIT_URL").and_then(|e| e.value.clone());
    assert_eq!(git_url.as_deref(), Some("https://git.example/shop.git"));
    let node =
        Api::<Node>::all(client.clone()).get(pod_spec.node_name.as_deref().expect("scheduled")).await.expect("node");
    let region = node.labels()["topology.kubernetes.io/region"].clone();
    assert_eq!(region, "eu-central-1", "kata + EU leaves one node: {region}");
    assert!(pod.status.expect("status").pod_ip.expect("ip").starts_with("127."));

    // Storage in the jurisdiction's class; a headless Service; the network policy; credentials.
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get("shop-workspace").await.expect("pvc");
    assert_eq!(claim.spec.expect("spec").storage_class_name.as_deref(), Some("eu-ssd"));
    let service = Api::<Service>::namespaced(client.clone(), &ns).get("shop").await.expect("service");
    assert_eq!(service.spec.clone().expect("spec").cluster_ip.as_deref(), Some("None"), "never a virtual IP to dial");
    let policy =
        Api::<NetworkPolicy>::namespaced(client.clone(), &ns).get("shop").await.expect("policy").spec.expect("spec");
    let from = &policy.ingress.expect("ingress")[0];
    let gateway =
        from.from.as_ref().expect("from")[0].pod_selector.clone().expect("gateway pods").match_labels.expect("labels");
    assert_eq!(gateway["app.kubernetes.io/name"], "ooda-gateway");
    assert_eq!(
        from.ports.as_ref().expect("ports")[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(3000))
    );
    let egress = serde_json::to_string(&policy.egress).expect("json");
    for denied in ["10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16"] {
        assert!(egress.contains(denied), "egress excludes {denied}: {egress}");
    }
    let token = token(&client, &ns, "shop").await;
    assert_eq!(token.len(), 43, "256 bits, base64url without padding");
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns).get("shop").await.expect("service account");
    assert_eq!(sa.automount_service_account_token, Some(false));

    // Every child: the three labels, a controller reference to the project, written by the
    // operator's one field manager.
    let uid = project.metadata.uid.expect("uid");
    let selector =
        format!("ooda.run/project=shop,ooda.run/organisation={},app.kubernetes.io/managed-by=ooda", org.name_any());
    let params = ListParams::default().labels(&selector);
    let mut kinds = BTreeMap::new();
    macro_rules! check_children {
        ($($kind:ty),*) => {$(
            for object in Api::<$kind>::namespaced(client.clone(), &ns).list(&params).await.expect("list").items {
                let owner = object.owner_references().iter().find(|o| o.controller == Some(true)).cloned();
                assert_eq!(owner.map(|o| o.uid), Some(uid.clone()), "{} is controlled by the project", object.name_any());
                let managers: Vec<_> = object.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
                assert!(managers.iter().any(|m| m == "ooda-operator"), "{}: managers {managers:?}", object.name_any());
                *kinds.entry(<$kind>::kind(&()).to_string()).or_insert(0) += 1;
            }
        )*};
    }
    check_children!(PersistentVolumeClaim, StatefulSet, Service, NetworkPolicy, Secret, Lease, ServiceAccount);
    let expected: BTreeMap<String, i32> =
        ["Lease", "NetworkPolicy", "PersistentVolumeClaim", "Secret", "Service", "ServiceAccount", "StatefulSet"]
            .iter()
            // Two Secrets: the preview and publish tokens (the example configuration has no AI
            // relay, so there is no AI token).
            .map(|k| ((*k).to_owned(), if *k == "Secret" { 2 } else { 1 }))
            .collect();
    assert_eq!(kinds, expected);

    // A child no longer desired is deleted: without ports there is no Service, and nothing may
    // reach the pod.
    let no_ports = json!({ "spec": { "ports": null } });
    projects.patch("shop", &PatchParams::default(), &Patch::Merge(&no_ports)).await.expect("drop ports");
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    wait_deleted(&services, "shop", &service.metadata.uid.clone().expect("uid")).await;
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    wait_for(&policies, "shop", |p: Option<&NetworkPolicy>| {
        p.and_then(|p| p.spec.as_ref()).is_some_and(|s| s.ingress.is_none())
    })
    .await;
    world.cleanup().await;
}

#[tokio::test]
async fn a_converged_project_causes_no_writes_for_thirty_seconds() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "idle").await;
    let org = world.ready_organisation("us").await;
    let ns = format!("org-{}", org.name_any());
    world.create_project(&ns, "quiet", web_project()).await;
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    // The operator's last write on the way to Running is that status (its first start has no Event).
    wait_for(&projects, "quiet", project_phase(Phase::Running)).await;
    // A reconcile whose cache has not seen the claim yet marks the workspace seeded one reconcile
    // later: that is convergence too.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_for(&claims, "quiet-workspace", |claim: Option<&PersistentVolumeClaim>| {
        claim.is_some_and(|c| c.annotations().get(ooda::crd::names::WORKSPACE_SEEDED).is_some_and(|v| v == "true"))
    })
    .await;

    let versions = snapshot(&client, &ns, &org.name_any()).await;
    let writes = writes_by_kind(&world.operator.metrics().await);
    // The observation window the requirement names: a quiet cluster must stay quiet this long.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(snapshot(&client, &ns, &org.name_any()).await, versions, "no object changed");
    assert_eq!(writes_by_kind(&world.operator.metrics().await), writes, "the operator wrote nothing");
    world.cleanup().await;
}

/// name → resourceVersion of the organisation, its namespace and every object in it.
pub(crate) async fn snapshot(client: &kube::Client, ns: &str, org: &str) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    let mut record = |kind: &str, object: &dyn ResourceVersioned| {
        versions.insert(format!("{kind}/{}", object.name()), object.version());
    };
    record("Organisation", &Api::<Organisation>::all(client.clone()).get(org).await.expect("org"));
    record("Namespace", &Api::<Namespace>::all(client.clone()).get(ns).await.expect("ns"));
    macro_rules! all_of {
        ($($kind:ty),*) => {$(
            for object in Api::<$kind>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list").items {
                record(stringify!($kind), &object);
            }
        )*};
    }
    all_of!(
        Project,
        PersistentVolumeClaim,
        StatefulSet,
        Service,
        NetworkPolicy,
        Secret,
        Lease,
        ServiceAccount,
        ResourceQuota
    );
    versions
}

trait ResourceVersioned {
    fn name(&self) -> String;
    fn version(&self) -> String;
}

impl<K: Resource> ResourceVersioned for K {
    fn name(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }
    fn version(&self) -> String {
        self.meta().resource_version.clone().unwrap_or_default()
    }
}

#[tokio::test]
async fn an_idle_project_hibernates_and_wakes_on_activity_keeping_its_workspace() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "sleep").await;
    let org = world.ready_organisation("eu").await;
    let ns = format!("org-{}", org.name_any());
    let mut spec = web_project();
    spec["lifecycle"] = json!({ "idleTimeout": "10s" });
    world.create_project(&ns, "nap", spec).await;
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_for(&projects, "nap", project_phase(Phase::Running)).await;
    let workspace_uid = claims.get("nap-workspace").await.expect("pvc").uid().expect("uid");

    let mut previous_wake = None;
    for cycle in 1..=2 {
        let hibernated = wait_for(&projects, "nap", project_phase(Phase::Hibernated)).await;
        let status = hibernated.status.expect("status");
        assert!(condition_true(Some(&status.conditions), "Hibernated"), "cycle {cycle}");
        // Asleep as its spec allows: Ready (it wakes on the next request), not on its way anywhere.
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Hibernated"), "cycle {cycle}");
        assert!(!condition_true(Some(&status.conditions), "Reconciling"), "cycle {cycle}");
        assert_eq!(sets.get("nap").await.expect("sts").spec.expect("spec").replicas, Some(0), "cycle {cycle}");
        assert_eq!(
            claims.get("nap-workspace").await.expect("pvc").uid(),
            Some(workspace_uid.clone()),
            "workspace kept"
        );

        renew_activity(&client, &ns, "nap").await;
        let woken = wait_for(&projects, "nap", project_phase(Phase::Running)).await;
        let wake = woken.status.expect("status").last_wake.expect("wake recorded");
        assert!(wake.milliseconds < SETTLE.as_millis() as i64, "cycle {cycle}: {wake:?}");
        assert_ne!(Some(&wake), previous_wake.as_ref(), "cycle {cycle}: this wake recorded, not the last one");
        previous_wake = Some(wake);
        assert_eq!(sets.get("nap").await.expect("sts").spec.expect("spec").replicas, Some(1));
    }
    assert_eq!(claims.get("nap-workspace").await.expect("pvc").uid(), Some(workspace_uid), "same workspace throughout");

    // The metric follows the status write it measures by a moment (the operator has to hear back).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = world.operator.metrics().await;
        if metric_sum(&metrics, "ooda_wake_duration_seconds_count") >= 2.0 || tokio::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metric_sum(&metrics, "ooda_wake_duration_seconds_count") >= 2.0, "wakes measured:\n{metrics}");
    assert!(metric_sum(&metrics, "ooda_projects{phase=\"Running\"}") >= 1.0, "{metrics}");
    world.cleanup().await;
}

#[tokio::test]
async fn stopping_rotates_the_preview_token_and_activity_does_not_wake_it() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "stop").await;
    let org = world.ready_organisation("eu").await;
    let ns = format!("org-{}", org.name_any());
    world.create_project(&ns, "halt", web_project()).await;
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    wait_for(&projects, "halt", project_phase(Phase::Running)).await;
    let running_token = token(&client, &ns, "halt").await;

    let stop = json!({ "spec": { "lifecycle": { "state": "Stopped" } } });
    projects.patch("halt", &PatchParams::default(), &Patch::Merge(&stop)).await.expect("stop");
    wait_for(&projects, "halt", project_phase(Phase::Stopped)).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    assert_eq!(sets.get("halt").await.expect("sts").spec.expect("spec").replicas, Some(0));
    let stopped_token = token(&client, &ns, "halt").await;
    assert_ne!(stopped_token, running_token, "the old preview token no longer matches");
    assert_eq!(stopped_token.len(), 43);

    // Activity reaches the operator (lastActivity follows the Lease) but does not wake it.
    renew_activity(&client, &ns, "halt").await;
    let renewed: Lease = Api::namespaced(client.clone(), &ns).get("halt-activity").await.expect("lease");
    let renewed_at = renewed.spec.expect("spec").renew_time.expect("renewTime").0.as_second();
    let seen = wait_for(&projects, "halt", move |p: Option<&Project>| {
        p.and_then(|p| p.status.as_ref()?.last_activity.as_ref()).is_some_and(|t| t.0.as_second() >= renewed_at)
    })
    .await;
    assert_eq!(seen.status.expect("status").phase, Some(Phase::Stopped));
    assert_eq!(sets.get("halt").await.expect("sts").spec.expect("spec").replicas, Some(0));

    // Starting again keeps the stopped-time token (rotation happens on stop only) and runs.
    let start = json!({ "spec": { "lifecycle": { "state": "Running" } } });
    projects.patch("halt", &PatchParams::default(), &Patch::Merge(&start)).await.expect("start");
    wait_for(&projects, "halt", project_phase(Phase::Running)).await;
    assert_eq!(token(&client, &ns, "halt").await, stopped_token);
    world.cleanup().await;
}

#[tokio::test]
async fn deleting_a_project_leaves_no_labelled_object_behind() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "delete").await;
    let org = world.ready_organisation("eu").await;
    let ns = format!("org-{}", org.name_any());
    let created = world.create_project(&ns, "gone", web_project()).await;
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    let project = wait_for(&projects, "gone", project_phase(Phase::Running)).await;
    // Nothing of it outside the cluster (no site published): no finalizer, so its deletion
    // waits on no one.
    assert!(project.finalizers().is_empty(), "{:?}", project.finalizers());

    projects.delete("gone", &Default::default()).await.expect("delete");
    wait_deleted(&projects, "gone", created.metadata.uid.as_deref().expect("uid")).await;
    let params = ListParams::default().labels("ooda.run/project=gone");
    // Garbage collection has no event of its own to await: list until nothing labelled is left.
    eventually(SETTLE, "no object of the deleted project left", || async {
        let mut left = Vec::new();
        macro_rules! remaining {
            ($($kind:ty),*) => {$(
                for o in Api::<$kind>::namespaced(client.clone(), &ns).list(&params).await.expect("list").items {
                    left.push(format!("{}/{}", stringify!($kind), o.name_any()));
                }
            )*};
        }
        remaining!(Pod, PersistentVolumeClaim, StatefulSet, Service, NetworkPolicy, Secret, Lease, ServiceAccount);
        left.is_empty().then_some(())
    })
    .await;
    world.cleanup().await;
}

#[tokio::test]
async fn a_killed_operator_restarts_and_converges_without_duplicates_or_orphans() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "restart").await;
    let org = world.ready_organisation("eu").await;
    let ns = format!("org-{}", org.name_any());
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for name in &names {
        world.create_project(&ns, name, web_project()).await;
    }
    // Mid-way: as soon as the first project has a status, the operator dies without warning.
    wait_for(&projects, "p0", |p: Option<&Project>| p.is_some_and(|p| p.status.is_some())).await;
    let World { client: _, test, home, operator, config } = world;
    operator.kill().await;

    let replacement = Operator::start(&test, &home.name, "ooda-operator").await;
    replacement.wait_ready("leader").await;
    for name in &names {
        wait_for(&projects, name, project_phase(Phase::Running)).await;
    }
    one_child_of_each_kind(&client, &ns, names.len()).await;
    // Pods belong to their StatefulSet, one each, and an EU organisation's land only on EU nodes.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns).list(&ListParams::default()).await.expect("pods").items;
    assert_eq!(pods.len(), names.len());
    let nodes: Api<Node> = Api::all(client.clone());
    for pod in &pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).expect("scheduled");
        let region = nodes.get(&node).await.expect("node").labels()["topology.kubernetes.io/region"].clone();
        assert!(["europe-west1", "eu-central-1"].contains(&region.as_str()), "{} landed in {region}", pod.name_any());
    }
    World { client: client.clone(), test, home, operator: replacement, config }.cleanup().await;
}

/// Every project in `ns` (`projects` of them) has exactly one child of each kind, each owned by
/// a live project.
pub(crate) async fn one_child_of_each_kind(client: &kube::Client, ns: &str, projects: usize) {
    let live: Vec<Project> =
        Api::<Project>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list").items;
    assert_eq!(live.len(), projects);
    let project_uids: Vec<String> = live.iter().filter_map(|p| p.uid()).collect();
    let children = ListParams::default().labels("app.kubernetes.io/managed-by=ooda,ooda.run/project");
    macro_rules! exactly_one_each {
        ($($kind:ty),*) => {$(
            let objects = Api::<$kind>::namespaced(client.clone(), ns).list(&children).await.expect("list").items;
            assert_eq!(objects.len(), projects, "one {} per project", stringify!($kind));
            for object in &objects {
                let owner = object.owner_references().iter().find(|o| o.controller == Some(true)).map(|o| o.uid.clone());
                assert!(owner.is_some_and(|uid| project_uids.contains(&uid)), "{} has a live owner", object.name_any());
            }
        )*};
    }
    exactly_one_each!(PersistentVolumeClaim, StatefulSet, Service, NetworkPolicy, Lease, ServiceAccount);
    let secrets = Api::<Secret>::namespaced(client.clone(), ns).list(&children).await.expect("list").items;
    for suffix in ["-preview", "-publish"] {
        let count = secrets.iter().filter(|s| s.name_any().ends_with(suffix)).count();
        assert_eq!(count, projects, "one {suffix} Secret per project");
    }
}

#[tokio::test]
async fn with_two_replicas_only_the_leader_writes_and_the_standby_takes_over() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "leader").await;
    let standby = Operator::start(&world.test, &world.home.name, "ooda-operator").await;
    standby.wait_ready("standby").await;

    let org = world.ready_organisation("eu").await;
    let ns = format!("org-{}", org.name_any());
    world.create_project(&ns, "first", web_project()).await;
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    wait_for(&projects, "first", project_phase(Phase::Running)).await;
    let standby_metrics = standby.metrics().await;
    assert_eq!(metric_sum(&standby_metrics, "ooda_api_writes_total"), 0.0, "the standby wrote:\n{standby_metrics}");
    assert_eq!(metric_sum(&standby_metrics, "ooda_reconciles_total"), 0.0);
    assert_eq!(metric_sum(&standby_metrics, "ooda_leader"), 0.0);
    assert!(metric_sum(&world.operator.metrics().await, "ooda_api_writes_total") > 0.0);

    // The leader crashes; after the Lease runs out (LEASE_DURATION) the standby leads.
    let World { client: _, test, home, operator, config } = world;
    operator.kill().await;
    standby.wait_ready("leader").await;
    world_create_and_wait(&client, &ns, "second").await;
    assert!(metric_sum(&standby.metrics().await, "ooda_api_writes_total") > 0.0);
    World { client: client.clone(), test, home, operator: standby, config }.cleanup().await;
}

async fn world_create_and_wait(client: &kube::Client, ns: &str, name: &str) {
    let projects: Api<Project> = Api::namespaced(client.clone(), ns);
    let project: Project =
        serde_json::from_value(json!({ "metadata": { "name": name }, "spec": web_project() })).expect("p");
    projects.create(&PostParams::default(), &project).await.expect("create");
    wait_for(&projects, name, project_phase(Phase::Running)).await;
}
