//! Shared plumbing for cluster tests: a client for the local control plane, a labelled namespace
//! per test, the CRDs installed from `crds/`, and waits with deadlines.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// Label on everything a test creates at cluster scope, so leftovers are easy to find.
pub const TEST_LABEL: &str = "ooda.run/test";
pub const FIELD_MANAGER: &str = "ooda-tests";
/// The bed installs the CRDs under this manager; applying them under the same one changes
/// nothing when they are current.
const CRD_FIELD_MANAGER: &str = "ooda-bed";

/// The deadline for things the control plane does on its own (scheduling, GC, kwok status).
pub const SETTLE: Duration = Duration::from_secs(60);

/// The deadline for a namespace with a project in it to go. The namespace controller works in
/// passes, each over every resource type: the first 5 s after the deletion; while pods are
/// terminating it waits half their grace period (30 s) before the next; while a claim still
/// has `kubernetes.io/pvc-protection` (the PVC protection controller's single worker removes
/// it once the pod is gone), 8 s more. On an idle bed that is about 30 s; with the suite's 16
/// tests and 200 converging projects beside it, CI has seen it pass 60 s with nothing stuck.
pub const NAMESPACE_TEARDOWN: Duration = Duration::from_secs(180);

/// Held while a test changes the host's network (the real node's pods come with veths, whose
/// IPv6 link-local addresses come and go) or must not see it change: Chromium aborts every load
/// in flight with `ERR_NETWORK_CHANGED` when an address changes. Real-node tests share it; the
/// browser test takes it alone.
pub static HOST_NETWORK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The checkout under test, read when the test runs: build outputs are shared between clones
/// (the target directory lives outside them), so a path compiled in could name another clone.
pub fn repo() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests"))
}

/// A tool `make tools` installs under the cache, at the version `scripts/versions.env` gives
/// as `<key>=`: `~/.cache/ooda/tools/<name>-<version>`. Panics, with what to do, when missing.
pub fn cached_tool(name: &str, key: &str) -> PathBuf {
    let versions = std::fs::read_to_string(repo().join("scripts/versions.env")).expect("versions.env");
    let version = versions.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).expect("the tool's version");
    let cache = std::env::var_os("OODA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ooda"));
    let dir = cache.join(format!("tools/{name}-{version}"));
    assert!(dir.exists(), "{} is missing: run `make tools`", dir.display());
    dir
}

pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("OODA_KUBECONFIG").map(PathBuf::from).unwrap_or_else(|| repo().join(".local/kubeconfig"))
}

/// A client for the local control plane. Panics, with what to do, when there is none.
pub async fn client() -> Client {
    crate::kit::client(&kubeconfig_path()).await
}

/// A short name unique to this test process and call: `<prefix>-<6 hex>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").subsec_nanos();
    let mixed =
        nanos ^ std::process::id().rotate_left(16) ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9);
    format!("{prefix}-{:06x}", mixed & 0xFF_FFFF)
}

/// A namespace owned by one test. `cleanup` deletes it; a test that fails before cleaning up
/// leaves it in place for inspection (its name is printed).
pub struct TestNamespace {
    pub name: String,
    client: Client,
    cleaned: bool,
}

impl TestNamespace {
    pub async fn create(client: &Client, test: &str) -> Self {
        Self::create_with_labels(client, test, &[]).await
    }

    pub async fn create_with_labels(client: &Client, test: &str, labels: &[(&str, &str)]) -> Self {
        let name = unique_name(&format!("t-{test}"));
        let mut all_labels = serde_json::Map::new();
        all_labels.insert(TEST_LABEL.into(), test.into());
        for (k, v) in labels {
            all_labels.insert((*k).into(), (*v).into());
        }
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": all_labels }
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create test namespace");
        Self { name, client: client.clone(), cleaned: false }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn cleanup(mut self) {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await
            .expect("delete test namespace");
        self.cleaned = true;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.cleaned {
            eprintln!("keeping namespace {} for inspection", self.name);
        }
    }
}

/// Installs the committed `crds/` (what users apply) by server-side apply and waits until the
/// API server has established them.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = repo().join("crds");
    for entry in std::fs::read_dir(&dir).expect("read crds/") {
        let path = entry.expect("dir entry").path();
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read CRD")).expect("CRD YAML");
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(&name, &PatchParams::apply(CRD_FIELD_MANAGER).force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("apply {}: {e}", path.display()));
        wait_for(&crds, &name, conditions::is_crd_established()).await;
    }
}

/// Waits, by watch, until `condition` holds for the named object; panics at the deadline with
/// the object's status then, which tells a controller that never acted from one that got stuck.
pub async fn wait_for<K>(api: &Api<K>, name: &str, condition: impl Condition<K>) -> K
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + serde::Serialize + Send + 'static,
{
    match tokio::time::timeout(SETTLE, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => object,
        Ok(Ok(None)) => panic!("{name} does not exist"),
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => {
            let status = match api.get_opt(name).await {
                Ok(Some(object)) => serde_json::to_value(object).expect("JSON")["status"].to_string(),
                Ok(None) => "gone".to_owned(),
                Err(error) => format!("unreadable: {error}"),
            };
            panic!("{name} did not reach the expected state within {SETTLE:?}; its status now: {status}")
        }
    }
}

/// Waits, by watch, until the object with this name and uid is gone.
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, uid: &str)
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(SETTLE, await_condition(api.clone(), name, conditions::is_deleted(uid))).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => panic!("{name} still exists after {SETTLE:?}"),
    }
}

/// The message of an API error, for asserting what the API server said.
pub fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

pub use crate::kit::eventually;
