//! The operator's ClusterRole (from the Helm chart) is enough to do its whole job: the operator
//! runs here under a ServiceAccount bound to exactly that role, never as admin.

use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use ooda::crd::{Phase, Project};
use serde_json::json;

use crate::harness::{FIELD_MANAGER, TestNamespace, client, install_crds, kubeconfig_path, unique_name, wait_for};
use crate::operator_harness::{Operator, World, project_phase};

#[tokio::test]
async fn the_operator_does_its_job_with_only_its_cluster_role() {
    let client = client().await;
    install_crds(&client).await;
    let test = unique_name("rbac");
    let home = TestNamespace::create(&client, &test).await;

    let role: ClusterRole = serde_yaml::from_str(
        &std::fs::read_to_string(crate::harness::repo().join("charts/ooda/templates/operator-clusterrole.yaml"))
            .expect("chart ClusterRole"),
    )
    .expect("ClusterRole YAML");
    Api::<ClusterRole>::all(client.clone())
        .patch("ooda-operator", &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&role))
        .await
        .expect("apply ClusterRole");
    let accounts: Api<ServiceAccount> = home.api();
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "ooda-operator" } })).expect("sa");
    accounts.create(&PostParams::default(), &account).await.expect("create ServiceAccount");
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": test, "labels": { "ooda.run/test": test } },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ooda-operator" },
        "subjects": [{ "kind": "ServiceAccount", "name": "ooda-operator", "namespace": home.name }],
    }))
    .expect("binding");
    bindings.create(&PostParams::default(), &binding).await.expect("create binding");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request("ooda-operator", &PostParams::default(), &request)
        .await
        .expect("token")
        .status
        .expect("token status")
        .token
        .expect("token");
    let kubeconfig = service_account_kubeconfig(&test, &token);

    let operator = Operator::start_as(&test, &home.name, "ooda-operator", kubeconfig.clone()).await;
    operator.wait_ready("leader").await;
    let world = World { client: client.clone(), test: test.clone(), home, operator };
    let org = world.ready_organisation("eu").await;
    let ns = format!("org-{}", org.metadata.name.clone().expect("name"));
    world.create_project(&ns, "least", json!({ "ports": [{ "name": "web", "port": 3000, "preview": true }] })).await;
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    wait_for(&projects, "least", project_phase(Phase::Running)).await;
    let stop = json!({ "spec": { "lifecycle": { "state": "Stopped" } } });
    projects.patch("least", &PatchParams::default(), &Patch::Merge(&stop)).await.expect("stop");
    wait_for(&projects, "least", project_phase(Phase::Stopped)).await;

    // Deleting the organisation runs both finalizers under the same identity.
    world.cleanup().await;
    bindings.delete(&test, &Default::default()).await.expect("delete binding");
    std::fs::remove_file(kubeconfig).expect("remove kubeconfig");
}

/// A kubeconfig for the local API server that authenticates with `token` only.
fn service_account_kubeconfig(test: &str, token: &str) -> PathBuf {
    let admin = Kubeconfig::read_from(kubeconfig_path()).expect("admin kubeconfig");
    let cluster = admin.clusters[0].cluster.clone().expect("cluster");
    let path = std::env::temp_dir().join(format!("ooda-{test}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
         users:\n- name: operator\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context: {{ cluster: local, user: operator }}\n\
         current-context: local\n",
        cluster.server.expect("server"),
        cluster.certificate_authority_data.expect("CA data"),
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}
