//! Running the real `ooda operator` binary against the local control plane. Each test gets its
//! own operator, confined by `--organisation-selector` to the organisations it labels, with its
//! own leader Lease, so tests run side by side without stepping on each other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, Resource, ResourceExt};
use ooda::crd::{Organisation, Project};
use serde_json::{Value, json};

use crate::harness::{NAMESPACE_TEARDOWN, SETTLE, TEST_LABEL, TestNamespace, eventually, unique_name, wait_for};
use crate::kit::Ooda;

/// What the tests' `ooda` processes log, unless a test asks for more.
pub const DEFAULT_LOG: &str = "info,ooda=debug,kube=warn";

/// The leader Lease of every operator the tests start.
pub const LEASE_DURATION: &str = "15s";

pub struct Operator {
    pub process: Ooda,
    pub http: SocketAddr,
}

impl Operator {
    /// Starts an operator managing organisations labelled `ooda.run/test=<test>`, with its
    /// leader Lease `lease` in `namespace`, as the cluster admin.
    pub async fn start(test: &str, namespace: &str, lease: &str) -> Self {
        Self::start_as(test, namespace, lease, crate::harness::kubeconfig_path()).await
    }

    /// The same, with the identity in `kubeconfig`.
    pub async fn start_as(test: &str, namespace: &str, lease: &str, kubeconfig: PathBuf) -> Self {
        Self::start_with(test, namespace, lease, kubeconfig, &example_config()).await
    }

    /// The same, with the configuration file `config`.
    pub async fn start_with(test: &str, namespace: &str, lease: &str, kubeconfig: PathBuf, config: &Path) -> Self {
        Self::start_logging(test, namespace, lease, kubeconfig, config, DEFAULT_LOG).await
    }

    /// The same, logging at `rust_log`.
    pub async fn start_logging(
        test: &str,
        namespace: &str,
        lease: &str,
        kubeconfig: PathBuf,
        config: &Path,
        rust_log: &str,
    ) -> Self {
        let log = std::env::temp_dir().join(format!("ooda-operator-{test}-{}.log", unique_name("run")));
        let selector = format!("{TEST_LABEL}={test}");
        let args = [
            "operator",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--http-addr",
            "127.0.0.1:0",
            "--namespace",
            namespace,
            "--leader-lease",
            lease,
            // The product's default: shorter leases lose leaders to a bed slowed by the parallel suite.
            "--lease-duration",
            LEASE_DURATION,
            "--organisation-selector",
            &selector,
        ];
        let process = Ooda::spawn(&args, &kubeconfig, rust_log, log);
        let http = process.bound_address("operator HTTP endpoints listening", "addr").await;
        Self { process, http }
    }

    /// Waits until `/readyz` answers 200 as `state` (`leader` or `standby`): the body starts with
    /// it. (Not "contains": a standby's "waiting for leadership" contains "leader".)
    pub async fn wait_ready(&self, state: &str) {
        let what = format!("operator on {} ready as {state}", self.http);
        let prefix = format!("{state}:");
        eventually(SETTLE, &what, || async {
            let answer = http_get(self.http, "/readyz").await.ok();
            answer.filter(|(status, body)| *status == 200 && body.starts_with(&prefix))
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.http, "/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }

    /// Kills the process without letting it release its Lease (a crash, not a shutdown).
    pub async fn kill(mut self) {
        self.process.child.kill().await.expect("kill operator");
    }
}

/// A metric's series in Prometheus text, by label set (`{kind="Pod"}`; empty for a series
/// without labels, or when `name` names one label set itself).
fn metric_series(metrics: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| name.ends_with('}') || rest.starts_with(['{', ' ']))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of a counter family in Prometheus text (every label set).
pub fn metric_sum(metrics: &str, name: &str) -> f64 {
    metric_series(metrics, name).values().sum()
}

/// The operator's API writes so far, by kind: what a window that should be quiet compares, so
/// that a failure names the kind that was written. Called once the operator has written.
pub fn writes_by_kind(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    let writes = writes_by_kind_if_any(metrics);
    assert!(!writes.is_empty(), "the operator counts its writes:\n{metrics}");
    writes
}

/// The same where the operator may have written nothing at all (a replacement that found every
/// project converged): there a renamed metric would read as no writes, so a test that uses this
/// also compares the objects themselves.
pub fn writes_by_kind_if_any(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    metric_series(metrics, "ooda_api_writes_total")
}

pub use crate::kit::{free_port, http_get};

/// One test's world: a namespace for its operator's Lease, the operator, and helpers to create
/// organisations it manages.
pub struct World {
    pub client: Client,
    pub test: String,
    pub home: TestNamespace,
    pub operator: Operator,
    /// The configuration file the operator runs with (gateways use it too).
    pub config: PathBuf,
}

impl World {
    pub async fn start(client: &Client, test: &str) -> Self {
        Self::start_with(client, test, example_config()).await
    }

    /// A world whose operator runs with the configuration file `config`.
    pub async fn start_with(client: &Client, test: &str, config: PathBuf) -> Self {
        Self::start_logging(client, test, config, DEFAULT_LOG).await
    }

    /// The same, its operator logging at `rust_log`.
    pub async fn start_logging(client: &Client, test: &str, config: PathBuf, rust_log: &str) -> Self {
        let test = unique_name(test);
        let home = TestNamespace::create(client, &test).await;
        add_s3_credentials(&home).await;
        let kubeconfig = crate::harness::kubeconfig_path();
        let operator = Operator::start_logging(&test, &home.name, "ooda-operator", kubeconfig, &config, rust_log).await;
        operator.wait_ready("leader").await;
        Self { client: client.clone(), test, home, operator, config }
    }

    pub fn organisation_manifest(&self, name: &str, jurisdiction: &str) -> Value {
        json!({
            "apiVersion": "ooda.run/v1alpha1", "kind": "Organisation",
            "metadata": { "name": name, "labels": { TEST_LABEL: self.test } },
            "spec": {
                "jurisdiction": jurisdiction,
                "members": [{ "email": "alice@acme.example", "role": "admin" }],
                "quota": { "projects": 10, "cpu": "16", "memory": "32Gi", "storage": "200Gi" },
            }
        })
    }

    /// Creates an organisation the test's operator manages in `jurisdiction`; returns its name.
    pub async fn create_organisation(&self, jurisdiction: &str) -> String {
        let name = unique_name("org");
        let api: Api<Organisation> = Api::all(self.client.clone());
        let org: Organisation = serde_json::from_value(self.organisation_manifest(&name, jurisdiction)).expect("org");
        api.create(&PostParams::default(), &org).await.expect("create organisation");
        name
    }

    /// Creates an organisation the test's operator manages and waits until it is Ready.
    /// A Ready organisation in `jurisdiction` whose quota holds `projects` projects, and room
    /// for their pods and workspaces.
    pub async fn ready_organisation_for(&self, jurisdiction: &str, projects: usize) -> Organisation {
        let name = unique_name("org");
        let mut manifest = self.organisation_manifest(&name, jurisdiction);
        manifest["spec"]["quota"] =
            json!({ "projects": projects, "cpu": "1000", "memory": "4000Gi", "storage": "100Ti" });
        let api: Api<Organisation> = Api::all(self.client.clone());
        let org: Organisation = serde_json::from_value(manifest).expect("org");
        api.create(&PostParams::default(), &org).await.expect("create organisation");
        wait_for(&api, &name, organisation_ready()).await
    }

    pub async fn ready_organisation(&self, jurisdiction: &str) -> Organisation {
        let name = self.create_organisation(jurisdiction).await;
        wait_for(&Api::all(self.client.clone()), &name, organisation_ready()).await
    }

    pub async fn create_project(&self, namespace: &str, name: &str, spec: Value) -> Project {
        let api: Api<Project> = Api::namespaced(self.client.clone(), namespace);
        let project: Project = serde_json::from_value(json!({
            "apiVersion": "ooda.run/v1alpha1", "kind": "Project",
            "metadata": { "name": name }, "spec": spec,
        }))
        .expect("project");
        crate::kit::create_project(&api, &project).await.expect("create project")
    }

    /// Deletes the organisations this test created (their namespaces and projects follow) and
    /// its home namespace; waits until the organisations' namespaces are gone, so the test's
    /// operator runs every project finalizer first.
    pub async fn cleanup(self) {
        let orgs: Api<Organisation> = Api::all(self.client.clone());
        let params = kube::api::ListParams::default().labels(&format!("{TEST_LABEL}={}", self.test));
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        for org in orgs.list(&params).await.expect("list organisations") {
            let name = org.name_any();
            orgs.delete(&name, &Default::default()).await.expect("delete organisation");
            if let Some(ns) = namespaces.get_opt(&format!("org-{name}")).await.expect("get namespace") {
                let (namespace, uid) = (ns.name_any(), ns.metadata.uid.unwrap_or_default());
                let gone = await_condition(namespaces.clone(), &namespace, conditions::is_deleted(&uid));
                if tokio::time::timeout(NAMESPACE_TEARDOWN, gone).await.is_err() {
                    panic!("{}", self.why_namespace_stays(&namespace).await);
                }
            }
        }
        self.home.cleanup().await;
    }

    /// What holds a namespace that does not go: its deletion conditions, what is left in it
    /// with finalizers or still terminating, and what the operator logged of note.
    async fn why_namespace_stays(&self, name: &str) -> String {
        let mut story = vec![format!("{name} still exists after {NAMESPACE_TEARDOWN:?}")];
        let namespace = Api::<Namespace>::all(self.client.clone()).get_opt(name).await.ok().flatten();
        for condition in namespace.and_then(|ns| ns.status?.conditions).unwrap_or_default() {
            if condition.status == "True" {
                story.push(format!("  namespace: {}: {}", condition.type_, condition.message.unwrap_or_default()));
            }
        }
        let projects = Api::<Project>::namespaced(self.client.clone(), name).list(&Default::default()).await;
        for project in projects.map(|l| l.items).unwrap_or_default() {
            story.push(format!("  {}", leftover("Project", &project)));
        }
        let pods = Api::<Pod>::namespaced(self.client.clone(), name).list(&Default::default()).await;
        for pod in pods.map(|l| l.items).unwrap_or_default() {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            story.push(format!("  {} on {node}", leftover("Pod", &pod)));
        }
        let claims =
            Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), name).list(&Default::default()).await;
        for claim in claims.map(|l| l.items).unwrap_or_default() {
            story.push(format!("  {}", leftover("PersistentVolumeClaim", &claim)));
        }
        let log = std::fs::read_to_string(&self.operator.process.log).unwrap_or_default();
        let notable: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
        story.push(format!("  the operator's warnings and errors (last 20 of {}):", notable.len()));
        story.extend(notable.iter().rev().take(20).rev().map(|l| format!("    {l}")));
        story.join("\n")
    }
}

fn leftover(kind: &str, object: &impl Resource) -> String {
    let meta = object.meta();
    let deleting = meta.deletion_timestamp.as_ref().map_or("not deleted".to_owned(), |t| format!("deleted at {}", t.0));
    format!("{kind} {}: {deleting}, finalizers {:?}", meta.name.as_deref().unwrap_or_default(), meta.finalizers)
}

pub fn example_config() -> PathBuf {
    crate::harness::repo().join("examples/operator-config.yaml")
}

/// The credentials Secret the example configuration names for its buckets, in ooda's namespace
/// (the local S3 accepts any key).
pub async fn add_s3_credentials(home: &TestNamespace) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": { "name": "ooda-sites-s3" },
        "stringData": { "accessKeyId": "ooda-test", "secretAccessKey": "ooda-test-secret" },
    }))
    .expect("secret");
    home.api().create(&PostParams::default(), &secret).await.expect("create the S3 credentials Secret");
}

pub fn organisation_ready() -> impl Condition<Organisation> {
    |org: Option<&Organisation>| condition_true(org.and_then(|o| o.status.as_ref()).map(|s| &s.conditions[..]), "Ready")
}

pub fn project_phase(phase: ooda::crd::Phase) -> impl Condition<Project> {
    move |p: Option<&Project>| p.and_then(|p| p.status.as_ref()).and_then(|s| s.phase) == Some(phase)
}

pub fn condition_true(
    conditions: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    type_: &str,
) -> bool {
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Renews a project's activity Lease, as the gateway does when the project is used.
pub async fn renew_activity(client: &kube::Client, namespace: &str, project: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let patch = json!({ "spec": { "renewTime": MicroTime(Timestamp::now()) } });
    leases
        .patch(&format!("{project}-activity"), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("renew lease");
}
