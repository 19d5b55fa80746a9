//! The cluster as an installer sees it: `kubectl` and `helm` with a kubeconfig.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What the operator makes for a project, and its pod.
const PROJECT_KINDS: &str = "statefulsets,services,persistentvolumeclaims,secrets,networkpolicies,leases,pods";

pub struct Cluster {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
    release: String,
    pub release_namespace: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

impl Cluster {
    pub fn from_env() -> Self {
        let kubeconfig = std::env::var("OODA_E2E_KUBECONFIG")
            .expect("OODA_E2E_KUBECONFIG names the cluster: run the suite with `make e2e` (scripts/e2e.sh)");
        Self {
            kubeconfig: kubeconfig.into(),
            kubectl: env_or("OODA_KUBECTL", "kubectl").into(),
            helm: env_or("OODA_HELM", "helm").into(),
            release: env_or("OODA_E2E_RELEASE", "ooda"),
            release_namespace: env_or("OODA_E2E_NAMESPACE", "ooda-system"),
        }
    }

    fn run(&self, program: &PathBuf, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(program)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("wait")
    }

    /// `kubectl ARGS`, which must succeed; its standard output.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with_input(args, None)
    }

    fn kubectl_with_input(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.run(&self.kubectl, args, stdin);
        assert!(output.status.success(), "kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
    }

    fn helm(&self, args: &[&str]) -> String {
        let output = self.run(&self.helm, args, None);
        assert!(output.status.success(), "helm {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("helm prints UTF-8")
    }

    /// As NOTES.txt has it: the password on standard input of `ooda user add` in the gateway's pod.
    pub fn create_user(&self, email: &str, password: &str) {
        let deployment = "deployment/ooda-gateway";
        let ns = self.release_namespace.clone();
        let args =
            ["-n", &ns, "exec", "-i", deployment, "--", "ooda", "user", "add", "--email", email, "--password-stdin"];
        self.kubectl_with_input(&args, Some(&format!("{password}\n")));
    }

    /// The release's operator configuration, as installed.
    fn installed_config(&self) -> Value {
        let ns = self.release_namespace.clone();
        let text =
            self.kubectl(&["-n", &ns, "get", "configmap", "ooda-config", "-o", "jsonpath={.data.config\\.yaml}"]);
        serde_yaml::from_str(&text).expect("the installed configuration is YAML")
    }

    /// The jurisdictions of the installed configuration that have S3 for sites.
    pub fn jurisdictions_with_sites(&self) -> Vec<String> {
        let config = self.installed_config();
        let jurisdictions = config["jurisdictions"].as_object().expect("jurisdictions");
        jurisdictions.iter().filter(|(_, j)| j.get("sites").is_some()).map(|(name, _)| name.clone()).collect()
    }

    /// `host:port` of the S3 endpoint that `jurisdiction`'s sites are published to.
    pub fn sites_endpoint(&self, jurisdiction: &str) -> String {
        let config = self.installed_config();
        let endpoint = config["jurisdictions"][jurisdiction]["sites"]["endpoint"].as_str().expect("a sites endpoint");
        let url = reqwest::Url::parse(endpoint).expect("the endpoint is a URL");
        format!("{}:{}", url.host_str().expect("host"), url.port_or_known_default().expect("port"))
    }

    /// `ip:port` of the first container port of the first pod labelled `selector` in `namespace`.
    pub fn pod_address(&self, namespace: &str, selector: &str) -> String {
        let template = "jsonpath={.items[0].status.podIP}:{.items[0].spec.containers[0].ports[0].containerPort}";
        self.kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", template])
    }

    pub fn apply(&self, object: &Value) {
        self.kubectl_with_input(&["apply", "-f", "-"], Some(&object.to_string()));
    }

    pub fn wait_ready(&self, kind: &str, name: &str, namespace: Option<&str>, timeout: Duration) {
        let mut args = vec!["wait", "--for=condition=Ready"];
        let timeout = format!("--timeout={}s", timeout.as_secs());
        args.push(&timeout);
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let object = format!("{kind}/{name}");
        args.push(&object);
        let output = self.run(&self.kubectl, &args, None);
        if !output.status.success() {
            let mut describe = vec!["get", "-o", "yaml", &object];
            if let Some(ns) = namespace {
                describe.extend(["-n", ns]);
            }
            let status = String::from_utf8_lossy(&self.run(&self.kubectl, &describe, None).stdout).into_owned();
            panic!("{object} not Ready: {}\n{status}", String::from_utf8_lossy(&output.stderr));
        }
    }

    pub fn wait_deleted(&self, kind: &str, name: &str, namespace: &str, timeout: Duration) {
        let object = format!("{kind}/{name}");
        let timeout = format!("--timeout={}s", timeout.as_secs());
        self.kubectl(&["wait", "--for=delete", &timeout, "-n", namespace, &object]);
    }

    pub fn exists(&self, kind: &str, name: &str, namespace: Option<&str>) -> bool {
        let mut args = vec!["get", kind, name, "--ignore-not-found", "-o", "name"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        !self.kubectl(&args).trim().is_empty()
    }

    /// Waits until no object of the kinds a project owns carries `selector` (the garbage
    /// collector removes a deleted project's children, and its pod terminates, after it).
    pub fn until_none_labelled(&self, namespace: &str, selector: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.kubectl(&["get", PROJECT_KINDS, "-n", namespace, "-l", selector, "-o", "name"]);
            if left.trim().is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "objects labelled {selector} outlived their project: {left}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `kind/name=uid` of a project's children and its pod.
    pub fn children_uids(&self, namespace: &str, project: &str) -> BTreeSet<String> {
        let template = "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.uid}{\"\\n\"}{end}";
        let selector = format!("ooda.run/project={project}");
        let uids: BTreeSet<String> = self
            .kubectl(&["get", PROJECT_KINDS, "-n", namespace, "-l", &selector, "-o", template])
            .lines()
            .map(str::to_owned)
            .collect();
        assert!(uids.iter().any(|uid| uid.starts_with("Pod/")), "{project} runs: {uids:?}");
        uids
    }

    pub fn exec_in_project(&self, namespace: &str, project: &str, script: &str) {
        let pod = format!("{project}-0");
        self.kubectl(&["exec", "-n", namespace, &pod, "-c", "workspace", "--", "sh", "-c", script]);
    }

    /// Which of `targets` (`ip:port`) a TCP connection from the project's workspace opens to
    /// within 3 s, all tried at once.
    pub fn reachable_from_project(&self, namespace: &str, project: &str, targets: &[&str]) -> Vec<String> {
        const CONNECT: &str = "import socket, sys\n\
            from concurrent.futures import ThreadPoolExecutor\n\
            def opens(target):\n\
            \x20   host, port = target.rsplit(':', 1)\n\
            \x20   try:\n\
            \x20       socket.create_connection((host, int(port)), timeout=3).close()\n\
            \x20       return True\n\
            \x20   except OSError:\n\
            \x20       return False\n\
            with ThreadPoolExecutor(len(sys.argv) - 1) as pool:\n\
            \x20   for target, answered in zip(sys.argv[1:], pool.map(opens, sys.argv[1:])):\n\
            \x20       if answered: print(target)\n";
        let pod = format!("{project}-0");
        let mut args = vec!["exec", "-n", namespace, &pod, "-c", "workspace", "--", "python3", "-c", CONNECT];
        args.extend(targets);
        self.kubectl(&args).lines().map(str::to_owned).collect()
    }

    /// The release's running pods labelled `selector`. A pod shutting down is still in phase
    /// Running until it exits (`helm upgrade --wait` returns before that): it does not count.
    pub fn pod_names(&self, selector: &str) -> BTreeSet<String> {
        let ns = self.release_namespace.clone();
        let args = ["get", "pods", "-n", &ns, "-l", selector, "--field-selector=status.phase=Running", "-o", "json"];
        let pods: Value = serde_json::from_str(&self.kubectl(&args)).expect("a pod list");
        let items = pods["items"].as_array().expect("items");
        items
            .iter()
            .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
            .map(|pod| pod["metadata"]["name"].as_str().expect("a name").to_owned())
            .collect()
    }

    /// Waits until the operator's leader Lease names one of `pods`.
    pub fn until_leader_among(&self, pods: &BTreeSet<String>, timeout: Duration) {
        let ns = self.release_namespace.clone();
        let deadline = Instant::now() + timeout;
        loop {
            let holder =
                self.kubectl(&["get", "lease", "ooda-operator", "-n", &ns, "-o", "jsonpath={.spec.holderIdentity}"]);
            if pods.contains(holder.trim()) {
                return;
            }
            assert!(Instant::now() < deadline, "the leader Lease names {holder:?}, none of {pods:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `helm upgrade` of the release to the same chart with `args`, waiting for the rollout.
    pub fn helm_upgrade(&self, args: &[&str]) {
        let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ooda");
        let ns = self.release_namespace.clone();
        let mut all = vec!["upgrade", self.release.as_str(), chart, "-n", &ns, "--wait", "--timeout", "5m"];
        all.extend(args);
        self.helm(&all);
    }

    pub fn helm_uninstall(&self) {
        let ns = self.release_namespace.clone();
        self.helm(&["uninstall", &self.release, "-n", &ns, "--wait", "--timeout", "5m"]);
    }

    /// Seconds since `helm install` of the release.
    pub fn seconds_since_release_installed(&self) -> f64 {
        let ns = self.release_namespace.clone();
        let status: Value =
            serde_json::from_str(&self.helm(&["status", &self.release, "-n", &ns, "-o", "json"])).expect("helm status");
        let first = status["info"]["first_deployed"].as_str().expect("first_deployed");
        let first: k8s_openapi::jiff::Timestamp = first.parse().expect("an RFC 3339 time");
        k8s_openapi::jiff::Timestamp::now().duration_since(first).as_secs_f64()
    }
}
