//! The Helm chart `charts/ooda`: linted, rendered with the default values and the examples in
//! `examples/helm/`, validated by kubeconform (strict, against the schemas of the Kubernetes
//! release the bed runs) and by the API server's dry run, and read back for what it promises.
//!
//! helm and kubeconform are `make tools`' (scripts/build-tools.sh, which `make test` runs first).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests"))
}

/// `NAME=value` of scripts/versions.env.
fn pinned(name: &str) -> String {
    let versions = std::fs::read_to_string(repo().join("scripts/versions.env")).expect("scripts/versions.env");
    versions
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} is pinned in scripts/versions.env"))
        .to_owned()
}

fn tools() -> PathBuf {
    let cache = std::env::var_os("OODA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ooda"));
    cache.join("tools")
}

fn tool(name: &str, version: &str) -> PathBuf {
    let path = tools().join(format!("{name}-{version}")).join(name);
    assert!(path.exists(), "{} is missing: run `make tools`", path.display());
    path
}

fn helm() -> PathBuf {
    tool("helm", &pinned("HELM_VERSION"))
}

/// `helm ARGS` on the chart; its output, or its error when it fails.
fn helm_on_chart(args: &[&str]) -> Result<String, String> {
    let output = Command::new(helm()).args(args).current_dir(repo()).output().expect("run helm");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The chart rendered with the values files (under examples/helm) and `--set`s.
fn render(values: &[&str], sets: &[&str]) -> String {
    let mut args = vec!["template", "ooda", "charts/ooda", "--namespace", "ooda-system"];
    let files: Vec<String> = values.iter().map(|v| format!("examples/helm/{v}")).collect();
    for file in &files {
        args.extend(["-f", file]);
    }
    for set in sets {
        args.extend(["--set", set]);
    }
    helm_on_chart(&args).unwrap_or_else(|e| panic!("helm template {values:?} {sets:?}: {e}"))
}

fn documents(rendered: &str) -> Vec<Value> {
    rendered
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .filter(|doc| doc.is_object())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn get<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objects, kind, name).unwrap_or_else(|| panic!("the chart renders {kind} {name}"))
}

/// The renderings `make test` checks: every template is switched on in at least one.
fn renderings() -> Vec<(&'static str, String)> {
    vec![
        ("default values", render(&[], &[])),
        ("minimal.yaml", render(&["minimal.yaml"], &[])),
        ("full.yaml", render(&["full.yaml"], &[])),
        (
            "minimal.yaml with cert-manager",
            render(
                &["minimal.yaml"],
                &["gateway.tls.mode=certManager", "gateway.tls.certManager.issuerRef.name=letsencrypt"],
            ),
        ),
    ]
}

#[test]
fn helm_lint_passes_with_the_default_and_example_values() {
    for values in [None, Some("minimal.yaml"), Some("full.yaml")] {
        let mut args = vec!["lint", "charts/ooda", "--strict"];
        let file = values.map(|v| format!("examples/helm/{v}"));
        if let Some(file) = &file {
            args.extend(["-f", file]);
        }
        helm_on_chart(&args).unwrap_or_else(|e| panic!("helm lint with {values:?}: {e}"));
    }
}

#[test]
fn rendered_manifests_pass_kubeconform_strictly() {
    let kubeconform = tool("kubeconform", &pinned("KUBECONFORM_VERSION"));
    let schemas = std::fs::read_dir(tools())
        .expect("tools")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            name.starts_with(&format!("kubeconform-schemas-{}-", pinned("KUBERNETES_VERSION")))
                && p.join(".complete").exists()
        })
        .expect("kubeconform's schemas: run `make tools`");
    let location =
        format!("{}/{{{{ .ResourceKind }}}}-{{{{ .Group }}}}-{{{{ .ResourceAPIVersion }}}}.json", schemas.display());
    for (name, rendered) in renderings() {
        let mut child = Command::new(&kubeconform)
            // Kinds of CRDs the chart does not install (cert-manager's, the Prometheus Operator's).
            .args(["-strict", "-summary", "-skip", "Certificate,ServiceMonitor", "-schema-location", &location, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubeconform");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), rendered.as_bytes()).expect("write");
        let output = child.wait_with_output().expect("kubeconform");
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "kubeconform refuses the chart with {name}:\n{report}");
        assert!(report.contains("Invalid: 0, Errors: 0"), "{name}: {report}");
        assert!(!report.contains("Valid: 0,"), "kubeconform validated nothing of {name}: {report}");
    }
}

/// `value` with every number a float: Helm's YAML round trip writes `10000.0` as `10000`, which
/// the API server reads as the same number.
fn same_numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => serde_json::json!(n.as_f64().expect("a finite number")),
        Value::Array(items) => Value::Array(items.iter().map(same_numbers_as_floats).collect()),
        Value::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), same_numbers_as_floats(v))).collect())
        }
        other => other.clone(),
    }
}

#[test]
fn the_charts_crds_are_those_of_crds_dir_and_outlive_the_release() {
    let objects = documents(&render(&[], &[]));
    let crds: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "CustomResourceDefinition").collect();
    let mut names: Vec<&str> = crds.iter().map(|c| c["metadata"]["name"].as_str().expect("name")).collect();
    names.sort();
    assert_eq!(names, ["organisations.ooda.run", "projects.ooda.run"]);
    for rendered in crds {
        let name = rendered["metadata"]["name"].as_str().expect("name");
        let text = std::fs::read_to_string(repo().join(format!("crds/{name}.yaml"))).expect("crds/ file");
        let source: Value = serde_yaml::from_str(&text).expect("CRD YAML");
        assert!(
            same_numbers_as_floats(&rendered["spec"]) == same_numbers_as_floats(&source["spec"]),
            "{name}: the chart's CRD differs from crds/: run `make crds`"
        );
        assert_eq!(rendered["metadata"]["annotations"]["helm.sh/resource-policy"], "keep", "{name}");
    }
    let without = documents(&render(&[], &["crds.install=false"]));
    assert!(without.iter().all(|o| o["kind"] != "CustomResourceDefinition"), "crds.install=false leaves them out");
}

#[test]
fn values_that_break_the_schema_are_refused_with_the_field_named() {
    let cases = [
        ("gateway.sessionTtl=12", "/gateway/sessionTtl"),
        ("gateway.tls.mode=selfSigned", "/gateway/tls/mode"),
        ("gateway.authKeyIterations=999", "/gateway/authKeyIterations"),
        ("operator.replicas=0", "/operator/replicas"),
        ("operater.replicas=2", "'operater'"),
        ("config.previewDomain=Not_A_Domain", "/config/previewDomain"),
        ("config.jurisdictions.eu.regions=null", "/config/jurisdictions/eu"),
        ("config.jurisdictions.eu.ai.endpoint=api.anthropic.com", "/config/jurisdictions/eu/ai"),
        ("gateway.tls.mode=certManager", "/gateway/tls/certManager/issuerRef/name"),
    ];
    for (set, field) in cases {
        let error =
            helm_on_chart(&["template", "ooda", "charts/ooda", "-f", "examples/helm/minimal.yaml", "--set", set])
                .expect_err(set);
        assert!(error.contains(field), "--set {set}: the error names {field}: {error}");
    }
}

/// The ConfigMap is the operator configuration file: ooda's own loader must accept it, and it
/// must admit the gateway the chart runs (and only it) into organisation namespaces.
#[test]
fn the_rendered_configuration_is_one_ooda_loads() {
    for values in [["minimal.yaml"].as_slice(), &["full.yaml"]] {
        let objects = documents(&render(values, &[]));
        let text = get(&objects, "ConfigMap", "ooda-config")["data"]["config.yaml"].as_str().expect("config.yaml");
        let config = ooda::config::OperatorConfig::parse("config.yaml", text)
            .unwrap_or_else(|e| panic!("{values:?}: ooda refuses the rendered configuration: {e}"));
        let gateway = get(&objects, "Deployment", "ooda-gateway");
        let pod_labels = &gateway["spec"]["template"]["metadata"]["labels"];
        for (key, value) in &config.gateway.pod_labels {
            assert_eq!(pod_labels[key], value.as_str(), "{values:?}: the gateway's pods carry {key}");
        }
        assert_eq!(config.gateway.namespace, "ooda-system");
        assert_eq!(gateway["spec"]["template"]["spec"]["serviceAccountName"], config.gateway.service_account);
        assert_eq!(config.gateway.public_url.as_deref(), Some("https://ooda.example.com"));
    }
    let full = documents(&render(&["full.yaml"], &[]));
    let text = get(&full, "ConfigMap", "ooda-config")["data"]["config.yaml"].as_str().expect("config.yaml");
    let config = ooda::config::OperatorConfig::parse("config.yaml", text).expect("the full configuration");
    let relay = config.jurisdictions["eu"].ai.as_ref().expect("the EU relay reaches the configuration");
    assert_eq!((relay.credentials_secret.as_str(), relay.max_request_bytes), ("anthropic-eu", 16 << 20));
    assert!(config.jurisdictions["us"].ai.is_none());
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn both_components_run_restricted_with_probes_spread_and_budgets() {
    let objects = documents(&render(&["minimal.yaml"], &[]));
    for component in ["operator", "gateway"] {
        let name = format!("ooda-{component}");
        let deployment = get(&objects, "Deployment", &name);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(deployment["spec"]["replicas"], 2, "{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let security = &container(deployment)["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
        assert_eq!(container(deployment)["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        assert_eq!(container(deployment)["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
        assert!(container(deployment)["resources"]["requests"]["memory"].is_string(), "{name}: resources");
        assert!(pod["topologySpreadConstraints"].as_array().is_some_and(|c| !c.is_empty()), "{name}: spread");
        assert_eq!(pod["serviceAccountName"], name.as_str());
        assert_eq!(get(&objects, "PodDisruptionBudget", &name)["spec"]["minAvailable"], 1, "{name}");
        assert!(get(&objects, "ServiceAccount", &name)["metadata"]["namespace"] == "ooda-system");
    }
    assert!(find(&objects, "Ingress", "ooda-gateway").is_none(), "no Ingress unless asked");
    assert!(find(&objects, "HorizontalPodAutoscaler", "ooda-gateway").is_none());
    let gateway_args = container(get(&objects, "Deployment", "ooda-gateway"))["args"].to_string();
    assert!(gateway_args.contains("--tls-cert=/etc/ooda/tls/tls.crt"), "{gateway_args}");
}

#[test]
fn the_full_example_renders_ingress_autoscaling_runtime_classes_and_monitoring() {
    let objects = documents(&render(&["full.yaml"], &[]));
    let ingress = get(&objects, "Ingress", "ooda-gateway");
    let hosts = &ingress["spec"]["tls"][0]["hosts"];
    assert_eq!(hosts, &serde_json::json!(["ooda.example.com", "*.preview.example.com", "*.sites.example.com"]));
    assert_eq!(ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"], "letsencrypt");
    assert_eq!(ingress["spec"]["rules"][1]["http"]["paths"][0]["backend"]["service"]["port"]["name"], "http");
    let gateway = get(&objects, "Deployment", "ooda-gateway");
    assert!(gateway["spec"].get("replicas").is_none(), "the HorizontalPodAutoscaler owns the replica count");
    assert!(container(gateway)["args"].to_string().contains("--tls-offloaded"));
    assert_eq!(get(&objects, "HorizontalPodAutoscaler", "ooda-gateway")["spec"]["maxReplicas"], 20);
    assert_eq!(get(&objects, "RuntimeClass", "gvisor")["handler"], "runsc");
    assert_eq!(get(&objects, "RuntimeClass", "kata")["handler"], "kata-qemu");
    get(&objects, "ServiceMonitor", "ooda-operator");
    get(&objects, "ServiceMonitor", "ooda-gateway");
    get(&objects, "NetworkPolicy", "ooda-default-deny");
    assert_eq!(get(&objects, "PodDisruptionBudget", "ooda-operator")["spec"]["maxUnavailable"], 1);
    let certificate = documents(&render(
        &["minimal.yaml"],
        &["gateway.tls.mode=certManager", "gateway.tls.certManager.issuerRef.name=letsencrypt"],
    ));
    let certificate = get(&certificate, "Certificate", "ooda-gateway");
    assert_eq!(certificate["spec"]["dnsNames"][1], "*.preview.example.com");
}

/// The API server's own validation of every rendering (a dry run: nothing is written), in a
/// namespace of this test's. Needs the bed: `make test` brings it up and sets OODA_KUBECONFIG.
#[test]
fn rendered_manifests_pass_the_api_servers_dry_run() {
    let kubeconfig =
        std::env::var("OODA_KUBECONFIG").expect("OODA_KUBECONFIG: run with `make test`, which brings the bed up");
    let kubectl = std::env::var("OODA_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(input) = stdin {
            std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes()).expect("write");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl")
    };
    let namespace = format!("chart-dry-run-{}", std::process::id());
    assert!(run(&["create", "namespace", &namespace], None).status.success());
    for (name, rendered) in renderings() {
        let rendered = rendered.replace("namespace: ooda-system", &format!("namespace: {namespace}"));
        // The kinds of CRDs this cluster does not have: kubeconform checks those against nothing
        // either, and they are left out of both.
        let objects: Vec<Value> = documents(&rendered)
            .into_iter()
            .filter(|o| o["kind"] != "ServiceMonitor" && o["kind"] != "Certificate")
            .collect();
        let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects }).to_string();
        let output = run(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--force-conflicts",
                "--field-manager=chart-check",
                "-f",
                "-",
            ],
            Some(&list),
        );
        assert!(
            output.status.success(),
            "the API server refuses the chart with {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let applied = String::from_utf8_lossy(&output.stdout);
        assert_eq!(applied.matches("(server dry run)").count(), objects.len(), "{name}: {applied}");
    }
    assert!(run(&["delete", "namespace", &namespace, "--wait=false"], None).status.success());
}
