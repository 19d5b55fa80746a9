//! The chart's roles are enough for each part to do its whole job, and no more: the operator and
//! the gateway run here under ServiceAccounts bound to exactly those roles and under the chart's
//! admission policies, never as admin; what they may not do is asked of the API server (as
//! `kubectl auth can-i --as` does) and tried.

use std::path::PathBuf;

use futures::SinkExt;
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use ooda::crd::{Phase, Project};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::gateway_harness::{Gateway, add_user};
use crate::harness::{FIELD_MANAGER, TestNamespace, client, install_crds, kubeconfig_path, unique_name, wait_for};
use crate::operator_harness::{Operator, World, project_phase};

#[tokio::test]
async fn the_operator_does_its_job_with_only_its_cluster_role() {
    let client = client().await;
    install_crds(&client).await;
    let test = unique_name("rbac");
    let home = TestNamespace::create(&client, &test).await;
    crate::operator_harness::add_s3_credentials(&home).await;
    // Started before its ClusterRoleBinding exists, as `helm install` can start it before the API
    // server's authorizer has seen the binding: refused, it waits, and comes up once bound.
    let identity = ServiceAccountIdentity::create(&client, &test, &home, "operator", false).await;
    let operator = Operator::start_as(&test, &home.name, "ooda-operator", identity.kubeconfig.clone()).await;
    let refused = operator.process.logged("cannot watch the CRD yet").await;
    assert!(refused.contains("forbidden"), "{refused}");
    let (status, why) = crate::operator_harness::http_get(operator.http, "/readyz").await.expect("GET /readyz");
    assert_eq!((status, why.as_str()), (503, "waiting for the ooda.run CRDs to be established"));
    identity.bind(&client).await;
    operator.wait_ready("leader").await;
    let config = crate::operator_harness::example_config();
    let world = World { client: client.clone(), test: test.clone(), home, operator, config };
    let org = world.ready_organisation("eu").await;
    let ns = format!("org-{}", org.metadata.name.clone().expect("name"));
    world.create_project(&ns, "least", json!({ "ports": [{ "name": "web", "port": 3000, "preview": true }] })).await;
    let projects: Api<Project> = Api::namespaced(client.clone(), &ns);
    wait_for(&projects, "least", project_phase(Phase::Running)).await;
    let stop = json!({ "spec": { "lifecycle": { "state": "Stopped" } } });
    projects.patch("least", &PatchParams::default(), &Patch::Merge(&stop)).await.expect("stop");
    wait_for(&projects, "least", project_phase(Phase::Stopped)).await;

    // Nothing that is not ooda's: the API server refuses the operator's writes elsewhere, even
    // those its ClusterRole allows (RBAC cannot narrow by name or label).
    let operator = crate::kit::client(&identity.kubeconfig).await;
    let bystander = TestNamespace::create(&client, &format!("{test}-x")).await;
    let refusals = refused_writes_as(&operator, &bystander.name, &ns).await;
    for (write, message) in refusals {
        assert!(message.contains("ooda-operator may write only"), "{write}: {message}");
    }
    bystander.cleanup().await;

    // Deleting the organisation runs its finalizer under the same identity.
    world.cleanup().await;
    identity.remove(&client).await;
}

/// Writes the operator's ClusterRole allows but which are not ooda's, each refused by the API
/// server: `(write, the API server's message)`.
async fn refused_writes_as(operator: &Client, bystander: &str, org_namespace: &str) -> Vec<(String, String)> {
    let mut refused = Vec::new();
    let mut expect_refused = |write: &str, result: Result<(), kube::Error>| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => refused.push((write.to_owned(), status.message)),
        other => panic!("{write} was not refused: {other:?}"),
    };
    let secret: Secret = serde_json::from_value(json!({ "metadata": { "name": "planted" } })).expect("secret");
    let in_bystander: Api<Secret> = Api::namespaced(operator.clone(), bystander);
    expect_refused(
        "a Secret in another namespace",
        in_bystander.create(&PostParams::default(), &secret).await.map(drop),
    );
    let in_org: Api<Secret> = Api::namespaced(operator.clone(), org_namespace);
    expect_refused(
        "an unlabelled Secret in an organisation namespace",
        in_org.create(&PostParams::default(), &secret).await.map(drop),
    );
    let namespaces: Api<Namespace> = Api::all(operator.clone());
    expect_refused(
        "deleting a namespace that is not an organisation's",
        namespaces.delete(bystander, &Default::default()).await.map(drop),
    );
    let stateful_sets: Api<StatefulSet> = Api::namespaced(operator.clone(), bystander);
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "planted", "labels": { "app.kubernetes.io/managed-by": "ooda" } },
        "spec": {
            "selector": { "matchLabels": { "a": "b" } },
            "template": { "metadata": { "labels": { "a": "b" } }, "spec": { "containers": [{ "name": "c", "image": "x" }] } },
        },
    }))
    .expect("statefulset");
    expect_refused(
        "a StatefulSet labelled as ooda's outside organisation namespaces",
        stateful_sets.create(&PostParams::default(), &sts).await.map(drop),
    );
    refused
}

/// Asks the API server whether `user` may `verb` `resource` (or `resource/subresource`) in
/// `namespace` (what `kubectl auth can-i --as <user>` sends).
async fn can_i(client: &Client, user: &str, verb: &str, group: &str, resource: &str, namespace: &str) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "verb": verb, "group": group, "resource": resource, "subresource": subresource, "namespace": namespace,
            },
        }
    }))
    .expect("review");
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.expect("status").allowed
}

#[tokio::test]
async fn the_gateway_does_its_job_with_only_its_roles() {
    let client = client().await;
    install_crds(&client).await;
    let test = unique_name("rbac-gw");
    let home = TestNamespace::create(&client, &test).await;
    crate::operator_harness::add_s3_credentials(&home).await;
    // The operator gives this test's gateway ServiceAccount its Role in organisation namespaces.
    let config = std::env::temp_dir().join(format!("ooda-{test}-config.yaml"));
    let example = std::fs::read_to_string(crate::operator_harness::example_config()).expect("example config");
    let own = example.replace("gateway:\n  namespace: ooda-system", &format!("gateway:\n  namespace: {}", home.name));
    assert_ne!(own, example, "the example configuration names the gateway's namespace");
    std::fs::write(&config, own).expect("write config");
    let operator = Operator::start_with(&test, &home.name, "ooda-operator", kubeconfig_path(), &config).await;
    operator.wait_ready("leader").await;
    let identity = ServiceAccountIdentity::create(&client, &test, &home, "gateway", true).await;
    let world = World { client: client.clone(), test: test.clone(), home, operator, config: config.clone() };
    let org = world.ready_organisation("eu").await.metadata.name.expect("name");
    add_user(&world, &world.home.name, "alice@acme.example").await;

    // Started before its bindings exist, as `helm install` can start it before the API server's
    // authorizer has seen them: refused, it waits, alive and not ready, and comes up once bound.
    let gateway = Gateway::spawn(
        &world.home.name,
        &crate::operator_harness::example_config(),
        &["--insecure-http", "--activity-interval", "2s"],
        identity.kubeconfig.clone(),
        reqwest::Client::builder(),
        crate::operator_harness::DEFAULT_LOG,
    )
    .await;
    let refused = gateway.process.logged("cannot read the session signing keys yet").await;
    assert!(refused.contains("forbidden"), "{refused}");
    let http_get = crate::operator_harness::http_get;
    assert_eq!(http_get(gateway.http, "/healthz").await.expect("GET /healthz"), (200, "ok".to_owned()));
    let not_ready = http_get(gateway.http, "/readyz").await.expect("GET /readyz");
    assert_eq!(not_ready, (503, "loading the session signing keys".to_owned()));
    identity.bind(&client).await;
    gateway.wait_ready().await;
    let alice = gateway.session("alice@acme.example").await;
    let invite = json!({ "email": "erin@acme.example", "role": "member" });
    let invited = gateway.call(Method::POST, &format!("/api/orgs/{org}/invites"), Some(&alice), Some(invite)).await;
    assert_eq!(invited.status, StatusCode::CREATED, "{:?}", invited.body);
    let erin_key = gateway.auth_key("erin@acme.example", "erin's long password").await;
    let accept = json!({ "token": invited.body["inviteToken"], "authKey": erin_key });
    let accepted = gateway.call(Method::POST, "/api/auth/accept-invite", None, Some(accept)).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{:?}", accepted.body);

    let projects_path = format!("/api/orgs/{org}/projects");
    let body = json!({ "name": "least", "spec": { "ports": [{ "name": "web", "port": 3000, "preview": true }] } });
    let created = gateway.call(Method::POST, &projects_path, Some(&alice), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let projects: Api<Project> = Api::namespaced(client.clone(), &format!("org-{org}"));
    wait_for(&projects, "least", project_phase(Phase::Running)).await;
    let preview = gateway.call(Method::GET, &format!("{projects_path}/least/preview"), Some(&alice), None).await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    let site = sites_archive();
    let published = reqwest::Client::new()
        .post(gateway.url(&format!("{projects_path}/least/publish")))
        .bearer_auth(&alice)
        .body(site)
        .send()
        .await
        .expect("answer");
    assert_eq!(published.status(), StatusCode::CREATED, "{:?}", published.text().await);
    // The version list comes from the project's status, which the gateway sees by watch.
    let versions_path = format!("{projects_path}/least/versions");
    crate::harness::eventually(std::time::Duration::from_secs(10), "version 1 current", || async {
        (gateway.call(Method::GET, &versions_path, Some(&alice), None).await.body["current"] == 1).then_some(())
    })
    .await;
    // A terminal, exec'd by the gateway's own identity in the organisation's namespace.
    let mut terminal = crate::gateway::open_terminal(&gateway, &org, "least", &alice).await.expect("a terminal");
    terminal.send(Message::binary(b"echo least-$((40+2))\n".to_vec())).await.expect("type");
    crate::gateway::terminal_output(&mut terminal, &["least-42"]).await;
    drop(terminal);
    let wake = gateway.call(Method::POST, &format!("{projects_path}/least/wake"), Some(&alice), None).await;
    assert_eq!(wake.status, StatusCode::ACCEPTED, "{:?}", wake.body);
    let stop = gateway.call(Method::POST, &format!("{projects_path}/least/stop"), Some(&alice), None).await;
    assert_eq!(stop.status, StatusCode::ACCEPTED, "{:?}", stop.body);
    let delete = gateway.call(Method::DELETE, &format!("{projects_path}/least"), Some(&alice), None).await;
    assert_eq!(delete.status, StatusCode::ACCEPTED, "{:?}", delete.body);

    // What it may not do: read Secrets, or write Leases, anywhere but where ooda put them.
    let org_namespace = format!("org-{org}");
    let me = format!("system:serviceaccount:{}:ooda-gateway", world.home.name);
    for (verb, group, resource, namespace, allowed) in [
        ("list", "", "secrets", "kube-system", false),
        ("get", "", "secrets", "kube-system", false),
        ("watch", "", "secrets", "default", false),
        ("list", "", "pods", "kube-system", false),
        ("patch", "coordination.k8s.io", "leases", "kube-system", false),
        ("create", "", "secrets", org_namespace.as_str(), false),
        ("list", "", "secrets", org_namespace.as_str(), true),
        ("patch", "coordination.k8s.io", "leases", org_namespace.as_str(), true),
        // Terminals: exec in organisation namespaces, nowhere else.
        ("create", "", "pods/exec", org_namespace.as_str(), true),
        ("create", "", "pods/exec", "kube-system", false),
        ("create", "", "pods/exec", world.home.name.as_str(), false),
    ] {
        let answer = can_i(&client, &me, verb, group, resource, namespace).await;
        assert_eq!(answer, allowed, "can the gateway {verb} {resource} in {namespace}?");
    }
    // A Lease in an organisation namespace that is not a project's: RBAC lets the gateway patch
    // Leases there, the admission policy does not.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &org_namespace);
    let lease: Lease = serde_json::from_value(json!({ "metadata": { "name": "not-a-project" } })).expect("lease");
    leases.create(&PostParams::default(), &lease).await.expect("create a lease");
    let as_gateway = crate::kit::client(&identity.kubeconfig).await;
    let renew = json!({ "spec": { "renewTime": "2030-01-01T00:00:00.000000Z" } });
    let refused = Api::<Lease>::namespaced(as_gateway, &org_namespace)
        .patch("not-a-project", &PatchParams::default(), &Patch::Merge(&renew))
        .await;
    match refused {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert!(status.message.contains("ooda-gateway may write"), "{}", status.message)
        }
        other => panic!("the gateway patched a Lease that is not a project's: {other:?}"),
    }

    world.cleanup().await;
    identity.remove(&client).await;
    std::fs::remove_file(config).ok();
}

/// A one-file site, as a plain tar archive.
fn sites_archive() -> Vec<u8> {
    let mut header = tokio_tar::Header::new_gnu();
    header.set_path("index.html").expect("path");
    header.set_size(5);
    header.set_mode(0o644);
    header.set_cksum();
    let mut archive = header.as_bytes().to_vec();
    archive.extend_from_slice(b"hello");
    archive.resize(archive.len().next_multiple_of(512) + 1024, 0);
    archive
}

/// A ServiceAccount `ooda-<component>` in `home` bound to the chart's ClusterRole of that
/// component (and, with `namespaced_role`, to the component's Role in `home`), with a kubeconfig
/// that authenticates as it and nothing else.
struct ServiceAccountIdentity {
    /// Binds the component's ClusterRole to the ServiceAccount.
    binding: ClusterRoleBinding,
    /// Binds the component's Role in `home`, where it has one.
    role_binding: Option<(Api<RoleBinding>, RoleBinding)>,
    kubeconfig: PathBuf,
}

impl ServiceAccountIdentity {
    /// The ServiceAccount of ooda's `component`, with its roles; `bind` binds them. Started
    /// before that, as `helm install` can start it before the API server's authorizer has seen
    /// its bindings, the component is refused at first.
    async fn create(client: &Client, test: &str, home: &TestNamespace, component: &str, namespaced_role: bool) -> Self {
        let name = &format!("ooda-{component}");
        let chart = |kind: &str| {
            let path = crate::harness::repo().join(format!("charts/ooda/templates/{component}-{kind}.yaml"));
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let cluster_role: ClusterRole = serde_yaml::from_str(&chart("clusterrole")).expect("ClusterRole YAML");
        // The gateway's terminals: a ClusterRole the operator binds in organisation namespaces.
        if component == "gateway" {
            let exec: ClusterRole = serde_yaml::from_str(&chart("exec-clusterrole")).expect("ClusterRole YAML");
            Api::<ClusterRole>::all(client.clone())
                .patch("ooda-gateway-exec", &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&exec))
                .await
                .expect("apply the exec ClusterRole");
        }
        // The chart's admission policy, cluster-wide: it matches ServiceAccounts by this name.
        let policy = chart("admission-policy");
        let mut documents = policy.split("\n---\n");
        let vap: ValidatingAdmissionPolicy =
            serde_yaml::from_str(documents.next().expect("policy")).expect("policy YAML");
        let vap_binding: ValidatingAdmissionPolicyBinding =
            serde_yaml::from_str(documents.next().expect("binding")).expect("binding YAML");
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .patch(vap.metadata.name.as_deref().expect("name"), &apply, &Patch::Apply(&vap))
            .await
            .expect("apply the admission policy");
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .patch(vap_binding.metadata.name.as_deref().expect("name"), &apply, &Patch::Apply(&vap_binding))
            .await
            .expect("apply the admission policy binding");
        Api::<ClusterRole>::all(client.clone())
            .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cluster_role))
            .await
            .expect("apply ClusterRole");
        let accounts: Api<ServiceAccount> = home.api();
        let account: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": name } })).expect("sa");
        accounts.create(&PostParams::default(), &account).await.expect("create ServiceAccount");
        let subjects = json!([{ "kind": "ServiceAccount", "name": name, "namespace": home.name }]);
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": { "name": test, "labels": { "ooda.run/test": test } },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
            "subjects": subjects,
        }))
        .expect("binding");
        let mut role_binding = None;
        if namespaced_role {
            let role: Role = serde_yaml::from_str(&chart("role")).expect("Role YAML");
            home.api::<Role>().create(&PostParams::default(), &role).await.expect("create Role");
            let binding: RoleBinding = serde_json::from_value(json!({
                "metadata": { "name": name },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
                "subjects": subjects,
            }))
            .expect("role binding");
            role_binding = Some((home.api::<RoleBinding>(), binding));
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
            ..Default::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .expect("token")
            .status
            .expect("token status")
            .token
            .expect("token");
        Self { binding, role_binding, kubeconfig: service_account_kubeconfig(test, &token) }
    }

    async fn bind(&self, client: &Client) {
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&PostParams::default(), &self.binding)
            .await
            .expect("create binding");
        if let Some((role_bindings, binding)) = &self.role_binding {
            role_bindings.create(&PostParams::default(), binding).await.expect("create RoleBinding");
        }
    }

    async fn remove(self, client: &Client) {
        Api::<ClusterRoleBinding>::all(client.clone())
            .delete(self.binding.metadata.name.as_deref().expect("binding name"), &Default::default())
            .await
            .expect("delete binding");
        std::fs::remove_file(self.kubeconfig).expect("remove kubeconfig");
    }
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
