//! The test bed is a real Kubernetes control plane: these tests exercise the API server's
//! validation, admission, scheduling, garbage collection and kwok's simulated kubelets.

use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use ooda::crd::{Organisation, Project};
use serde_json::{Value, json};

use crate::harness::{
    FIELD_MANAGER, TEST_LABEL, TestNamespace, api_error, client, install_crds, unique_name, wait_deleted, wait_for,
};

fn organisation(name: &str, jurisdiction: &str) -> Value {
    json!({
        "apiVersion": "ooda.run/v1alpha1",
        "kind": "Organisation",
        "metadata": { "name": name, "labels": { TEST_LABEL: "bed" } },
        "spec": {
            "jurisdiction": jurisdiction,
            "members": [{ "email": "alice@acme.example", "role": "admin" }],
        }
    })
}

fn project(name: &str) -> Value {
    json!({
        "apiVersion": "ooda.run/v1alpha1",
        "kind": "Project",
        "metadata": { "name": name },
        "spec": {
            "image": "registry.example/devenv:1",
            "isolation": "gvisor",
            "resources": { "cpu": "2", "memory": "4Gi", "storage": "10Gi" },
            "ports": [{ "name": "web", "port": 3000, "preview": true }],
            "lifecycle": { "state": "Running", "idleTimeout": "15m" },
        }
    })
}

/// A pod that satisfies Pod Security `restricted`, as the operator's will.
fn restricted_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "main",
                "image": "registry.example/devenv:1",
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } },
            }],
        }
    })
}

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test fixture matches the type")
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let client = client().await;
    install_crds(&client).await;
    // Established means served: listing both kinds works.
    Api::<Organisation>::all(client.clone()).list(&Default::default()).await.expect("list organisations");
    Api::<Project>::all(client.clone()).list(&Default::default()).await.expect("list projects");
}

#[tokio::test]
async fn changing_an_organisations_jurisdiction_is_refused() {
    let client = client().await;
    install_crds(&client).await;
    let organisations: Api<Organisation> = Api::all(client.clone());
    let name = unique_name("t-juris");
    let created =
        organisations.create(&PostParams::default(), &parse(organisation(&name, "eu"))).await.expect("create");

    let moved = organisations
        .patch(&name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "jurisdiction": "us" } })))
        .await;
    let status = api_error(moved);
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("spec.jurisdiction"), "message names the field: {}", status.message);
    assert!(status.message.contains("immutable"), "message says why: {}", status.message);
    let current = organisations.get(&name).await.expect("get");
    assert_eq!(current.spec.jurisdiction, "eu", "the refused update changed nothing");

    // Other fields stay editable: immutability is about the jurisdiction alone.
    organisations
        .patch(&name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "displayName": "Renamed" } })))
        .await
        .expect("displayName is mutable");

    organisations.delete(&name, &DeleteParams::default()).await.expect("delete");
    wait_deleted(&organisations, &name, created.metadata.uid.as_deref().expect("uid")).await;
}

/// Each case: what is wrong, a change to a valid object, and words the refusal must contain
/// (the field path first).
#[tokio::test]
async fn invalid_projects_are_refused_with_a_message_naming_the_field() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "invalid").await;
    // Untyped, so the test can send what the Rust types would never produce.
    let projects: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &ApiResource::erase::<Project>(&()));
    let create = PostParams { dry_run: true, ..Default::default() };

    // The valid base is accepted, so each refusal below is caused by its one change.
    projects.create(&create, &parse(project("valid"))).await.expect("the valid project is accepted");

    type Mutation = fn(&mut Value);
    let cases: &[(&str, Mutation, &[&str])] = &[
        (
            "name of 31 characters",
            |p| p["metadata"]["name"] = json!("a".repeat(31)),
            &["metadata.name", "at most 30 characters"],
        ),
        ("name with uppercase", |p| p["metadata"]["name"] = json!("Shop"), &["metadata.name"]),
        (
            "unknown isolation",
            |p| p["spec"]["isolation"] = json!("firecracker"),
            &["spec.isolation", "Unsupported value", "gvisor", "kata"],
        ),
        (
            "two preview ports",
            |p| p["spec"]["ports"] = json!([{ "name": "web", "port": 3000, "preview": true }, { "name": "api", "port": 4000, "preview": true }]),
            &["spec.ports", "at most one port may have preview"],
        ),
        (
            "duplicate port names",
            |p| p["spec"]["ports"] = json!([{ "name": "web", "port": 3000 }, { "name": "web", "port": 4000 }]),
            &["spec.ports[1]", "Duplicate value"],
        ),
        ("port out of range", |p| p["spec"]["ports"][0]["port"] = json!(70000), &["spec.ports[0].port", "65535"]),
        (
            "negative memory",
            |p| p["spec"]["resources"]["memory"] = json!("-1Gi"),
            &["spec.resources.memory", "positive quantity"],
        ),
        ("zero cpu", |p| p["spec"]["resources"]["cpu"] = json!(0), &["spec.resources.cpu", "positive quantity"]),
        (
            "memory that is not a quantity",
            |p| p["spec"]["resources"]["memory"] = json!("lots"),
            &["spec.resources.memory", "positive quantity"],
        ),
        (
            "idle timeout too short",
            |p| p["spec"]["lifecycle"]["idleTimeout"] = json!("5s"),
            &["spec.lifecycle.idleTimeout", "between 10s and 720h"],
        ),
        (
            "idle timeout too long",
            |p| p["spec"]["lifecycle"]["idleTimeout"] = json!("721h"),
            &["spec.lifecycle.idleTimeout", "between 10s and 720h"],
        ),
        (
            "idle timeout in days",
            |p| p["spec"]["lifecycle"]["idleTimeout"] = json!("1d"),
            &["spec.lifecycle.idleTimeout"],
        ),
        (
            "unknown lifecycle state",
            |p| p["spec"]["lifecycle"]["state"] = json!("Paused"),
            &["spec.lifecycle.state", "Unsupported value"],
        ),
        (
            "git ref that looks like an option",
            |p| {
                p["spec"]["source"] = json!({ "git": { "url": "https://example.com/r.git", "ref": "--upload-pack=x" } })
            },
            &["spec.source.git.ref", "not starting with '-'"],
        ),
        (
            "git URL that is not https or ssh",
            |p| p["spec"]["source"] = json!({ "git": { "url": "file:///etc" } }),
            &["spec.source.git.url", "https:// or ssh://"],
        ),
    ];
    for (what, mutate, expected) in cases {
        let mut manifest = project("shop");
        mutate(&mut manifest);
        let status = api_error(projects.create(&create, &parse(manifest)).await);
        assert_eq!(status.code, 422, "{what}: {status:?}");
        for words in *expected {
            assert!(status.message.contains(words), "{what}: refusal should mention {words:?}: {}", status.message);
        }
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn invalid_organisations_are_refused_with_a_message_naming_the_field() {
    let client = client().await;
    install_crds(&client).await;
    let organisations: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<Organisation>(&()));
    let create = PostParams { dry_run: true, ..Default::default() };
    organisations
        .create(&create, &parse(organisation("valid-org", "eu")))
        .await
        .expect("the valid organisation is accepted");

    type Mutation = fn(&mut Value);
    let cases: &[(&str, Mutation, &[&str])] = &[
        (
            "bad email",
            |o| o["spec"]["members"][0]["email"] = json!("alice-at-acme"),
            &["spec.members[0].email", "email address"],
        ),
        (
            "uppercase email",
            |o| o["spec"]["members"][0]["email"] = json!("Alice@Acme.example"),
            &["spec.members[0].email"],
        ),
        (
            "the same email twice",
            |o| {
                o["spec"]["members"] =
                    json!([{ "email": "a@x.example", "role": "admin" }, { "email": "a@x.example", "role": "member" }])
            },
            &["spec.members[1]", "Duplicate value"],
        ),
        (
            "unknown role",
            |o| o["spec"]["members"][0]["role"] = json!("owner"),
            &["spec.members[0].role", "Unsupported value"],
        ),
        (
            "missing jurisdiction",
            |o| o["spec"].as_object_mut().map(|s| s.remove("jurisdiction")).map(drop).unwrap_or(()),
            &["spec.jurisdiction", "Required value"],
        ),
        (
            "negative storage quota",
            |o| o["spec"]["quota"] = json!({ "storage": "-5Gi" }),
            &["spec.quota.storage", "positive quantity"],
        ),
        (
            "name of 31 characters",
            |o| o["metadata"]["name"] = json!("o".repeat(31)),
            &["metadata.name", "at most 30 characters"],
        ),
    ];
    for (what, mutate, expected) in cases {
        let mut manifest = organisation("acme", "eu");
        mutate(&mut manifest);
        let status = api_error(organisations.create(&create, &parse(manifest)).await);
        assert_eq!(status.code, 422, "{what}: {status:?}");
        for words in *expected {
            assert!(status.message.contains(words), "{what}: refusal should mention {words:?}: {}", status.message);
        }
    }
}

#[tokio::test]
async fn the_examples_are_accepted() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "examples").await;
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let dir = crate::harness::repo().join("examples");

    let organisation: Organisation =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("organisation.yaml")).expect("read")).expect("parse");
    Api::<Organisation>::all(client.clone()).create(&dry_run, &organisation).await.expect("example organisation");

    let mut project: Project =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("project.yaml")).expect("read")).expect("parse");
    project.metadata.namespace = Some(ns.name.clone());
    ns.api::<Project>().create(&dry_run, &project).await.expect("example project");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_pod_is_scheduled_onto_a_simulated_node_and_runs_with_a_loopback_ip() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "pod").await;
    let pods: Api<Pod> = ns.api();
    let mut manifest = restricted_pod("placed");
    // Required affinity to one region: the simulated nodes' labels are what the scheduler uses.
    manifest["spec"]["affinity"] = json!({ "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{ "matchExpressions": [{
            "key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-central-1"] }] }] } } });
    pods.create(&PostParams::default(), &parse(manifest)).await.expect("create pod");

    let pod = wait_for(&pods, "placed", conditions::is_pod_running()).await;
    let pod =
        if pod_ready(&pod) { pod } else { wait_for(&pods, "placed", |p: Option<&Pod>| p.is_some_and(pod_ready)).await };
    let status = pod.status.expect("status");
    let ip = status.pod_ip.expect("pod IP");
    assert!(ip.starts_with("127."), "pod IP {ip} is on loopback");
    let node = pod.spec.expect("spec").node_name.expect("scheduled");
    let node = Api::<Node>::all(client.clone()).get(&node).await.expect("node");
    assert_eq!(node.metadata.labels.expect("labels")["topology.kubernetes.io/region"], "eu-central-1");
    ns.cleanup().await;
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn a_runtime_class_pod_lands_only_on_nodes_that_have_the_runtime() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "runtime").await;
    let pods: Api<Pod> = ns.api();
    let mut manifest = restricted_pod("sandboxed");
    manifest["spec"]["runtimeClassName"] = json!("kata");
    // Kata nodes are eu-central-1 and us-east-1; asking for EU leaves exactly one candidate.
    manifest["spec"]["affinity"] = json!({ "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{ "matchExpressions": [{
            "key": "topology.kubernetes.io/region", "operator": "In", "values": ["europe-west1", "eu-central-1"] }] }] } } });
    pods.create(&PostParams::default(), &parse(manifest)).await.expect("create pod");
    let pod = wait_for(&pods, "sandboxed", conditions::is_pod_running()).await;
    assert_eq!(pod.spec.expect("spec").node_name.as_deref(), Some("kwok-eu-central-1"));

    let mut unknown = restricted_pod("unknown-runtime");
    unknown["spec"]["runtimeClassName"] = json!("firecracker");
    let status = api_error(pods.create(&PostParams::default(), &parse(unknown)).await);
    assert!(status.message.contains("RuntimeClass"), "admission names the missing RuntimeClass: {}", status.message);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_workspace_claim_is_provisioned_and_bound() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "pvc").await;
    let claims: Api<PersistentVolumeClaim> = ns.api();
    let claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": "workspace" },
        "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "eu-ssd", "resources": { "requests": { "storage": "1Gi" } } }
    });
    claims.create(&PostParams::default(), &parse(claim)).await.expect("create claim");
    let bound = wait_for(&claims, "workspace", |c: Option<&PersistentVolumeClaim>| {
        c.and_then(|c| c.status.as_ref()).and_then(|s| s.phase.as_deref()) == Some("Bound")
    })
    .await;
    assert!(bound.spec.expect("spec").volume_name.is_some(), "bound to a provisioned volume");
    ns.cleanup().await;
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_what_it_owns() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "gc").await;
    let maps: Api<ConfigMap> = ns.api();
    let owner = maps
        .create(&PostParams::default(), &parse(json!({ "metadata": { "name": "owner" } })))
        .await
        .expect("create owner");
    let owned = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "owned", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid.clone().expect("uid"), "controller": true, "blockOwnerDeletion": true }] },
        "data": { "k": "v" }
    });
    let owned =
        maps.patch("owned", &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&owned)).await.expect("apply owned");

    maps.delete("owner", &DeleteParams::background()).await.expect("delete owner");
    wait_deleted(&maps, "owned", owned.metadata.uid.as_deref().expect("uid")).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn pod_security_restricted_refuses_a_privileged_pod_and_admits_a_compliant_one() {
    let client = client().await;
    let ns = TestNamespace::create_with_labels(&client, "psa", &[("pod-security.kubernetes.io/enforce", "restricted")])
        .await;
    let pods: Api<Pod> = ns.api();

    let mut privileged = restricted_pod("privileged");
    privileged["spec"]["containers"][0]["securityContext"] = json!({ "privileged": true });
    let status = api_error(pods.create(&PostParams::default(), &parse(privileged)).await);
    assert_eq!(status.code, 403, "{status:?}");
    assert!(status.message.contains("violates PodSecurity \"restricted"), "{}", status.message);
    assert!(status.message.contains("privileged"), "{}", status.message);

    pods.create(&PostParams::default(), &parse(restricted_pod("compliant")))
        .await
        .expect("a restricted-compliant pod is admitted");
    ns.cleanup().await;
}
