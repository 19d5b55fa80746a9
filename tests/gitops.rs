//! `examples/gitops/`: Argo CD's health check for ooda's resources, run by a real Lua interpreter
//! (Debian's lua5.4, as Argo CD embeds Lua 5.x) against status fixtures, and the tenants folder
//! parsed by the CRD types.

use std::io::Write;
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{Value, json};

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests"))
}

fn health_script() -> String {
    std::fs::read_to_string(repo().join("examples/gitops/argocd/health.lua")).expect("health.lua")
}

/// `value` as a Lua table constructor (JSON arrays become sequences, as Argo CD converts them).
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(fields) => {
            let fields: Vec<String> = fields.iter().map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v))).collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Argo CD's verdict on `object`: the script's (status, message), as Lua computes them.
fn health_of(object: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal function check()\n{}\nend\nlocal health = check()\nio.write(health.status, \"\\n\", health.message)\n",
        lua_literal(object),
        health_script()
    );
    let mut lua = Command::new("lua5.4")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lua5.4 (Debian's lua5.4; scripts/install-prerequisites.sh installs it)");
    lua.stdin.take().expect("stdin").write_all(program.as_bytes()).expect("write");
    let output = lua.wait_with_output().expect("lua");
    assert!(output.status.success(), "lua: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let (status, message) = text.split_once('\n').expect("status and message");
    (status.to_owned(), message.to_owned())
}

fn project(generation: i64, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "ooda.run/v1alpha1", "kind": "Project",
        "metadata": { "name": "shop", "namespace": "org-acme", "generation": generation },
        "spec": { "isolation": "gvisor" },
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({ "type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-30T12:00:00Z", "observedGeneration": 2 })
}

fn ready(status: &str, reason: &str, message: &str) -> Value {
    condition("Ready", status, reason, message)
}

/// The conditions the operator writes: Ready, and kstatus's Reconciling and Stalled.
fn conditions(ready_status: &str, reason: &str, message: &str, progress: &str) -> Value {
    let abnormal = |type_: &str| match progress == type_ {
        true => condition(type_, "True", reason, message),
        false => condition(type_, "False", "Settled", ""),
    };
    json!([ready(ready_status, reason, message), abnormal("Reconciling"), abnormal("Stalled")])
}

#[test]
fn a_project_the_operator_has_not_seen_is_progressing() {
    assert_eq!(health_of(&project(1, None)).0, "Progressing");
    let stale = json!({ "observedGeneration": 1, "phase": "Running", "conditions": [ready("True", "Running", "")] });
    let (status, message) = health_of(&project(2, Some(stale)));
    assert_eq!(status, "Progressing", "a Ready of an older generation is not health");
    assert!(message.contains("generation 2"), "{message}");
    let waiting = "waiting for the environment's pod to become ready";
    let provisioning = json!({ "observedGeneration": 2, "phase": "Provisioning",
        "conditions": conditions("False", "Provisioning", waiting, "Reconciling") });
    assert_eq!(health_of(&project(2, Some(provisioning))), ("Progressing".into(), waiting.into()));
}

#[test]
fn a_ready_project_is_healthy() {
    let running = json!({ "observedGeneration": 2, "phase": "Running",
        "conditions": conditions("True", "Running", "the environment is ready", "none") });
    assert_eq!(health_of(&project(2, Some(running))), ("Healthy".into(), "the environment is ready".into()));
}

#[test]
fn a_failed_project_is_degraded_and_a_sleeping_one_suspended() {
    let failed = json!({ "observedGeneration": 2, "phase": "Failed",
        "conditions": conditions("False", "InvalidIdleTimeout", "idle timeout too long", "Stalled") });
    let (status, message) = health_of(&project(2, Some(failed)));
    assert_eq!(status, "Degraded");
    assert_eq!(message, "InvalidIdleTimeout: idle timeout too long");
    for reason in ["Hibernated", "Stopped"] {
        let asleep =
            json!({ "observedGeneration": 2, "phase": reason, "conditions": conditions("True", reason, "", "none") });
        assert_eq!(health_of(&project(2, Some(asleep))).0, "Suspended", "{reason}");
    }
}

#[test]
fn an_organisation_in_an_unknown_jurisdiction_is_degraded() {
    let organisation = json!({
        "apiVersion": "ooda.run/v1alpha1", "kind": "Organisation",
        "metadata": { "name": "acme", "generation": 1 },
        "status": { "observedGeneration": 1,
                    "conditions": conditions("False", "UnknownJurisdiction", "no jurisdiction mars", "Stalled") },
    });
    assert_eq!(health_of(&organisation).0, "Degraded");
}

/// The ConfigMap to merge into Argo CD carries the very script the tests run, for both kinds.
#[test]
fn the_argocd_configmap_embeds_the_tested_script() {
    let text = std::fs::read_to_string(repo().join("examples/gitops/argocd/argocd-cm.yaml")).expect("argocd-cm.yaml");
    let configmap: Value = serde_yaml::from_str(&text).expect("YAML");
    for kind in ["Organisation", "Project"] {
        let key = format!("resource.customizations.health.ooda.run_{kind}");
        assert_eq!(configmap["data"][&key].as_str(), Some(health_script().as_str()), "{key}");
    }
}

#[test]
fn the_tenants_folder_uses_only_known_fields() {
    let mut text = String::new();
    for file in ["organisation.yaml", "projects.yaml"] {
        text += &std::fs::read_to_string(repo().join("examples/gitops/tenants/acme").join(file)).expect(file);
        text += "\n---\n";
    }
    let mut kinds = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let raw = Value::deserialize(document).expect("YAML");
        if raw.is_null() {
            continue;
        }
        kinds.push(raw["kind"].clone());
        let back = match raw["kind"].as_str() {
            Some("Organisation") => serde_json::to_value(
                serde_json::from_value::<ooda::crd::Organisation>(raw.clone()).expect("an Organisation"),
            ),
            Some("Project") => {
                serde_json::to_value(serde_json::from_value::<ooda::crd::Project>(raw.clone()).expect("a Project"))
            }
            other => panic!("unexpected kind {other:?}"),
        }
        .expect("serialise");
        assert_eq!(raw["spec"], back["spec"], "{} has fields the types drop", raw["metadata"]["name"]);
    }
    assert_eq!(kinds, [json!("Organisation"), json!("Project")]);
}

/// Every path the Argo CD and Flux manifests name in the repository exists: the chart, its values
/// files and the tenants folder.
#[test]
fn the_gitops_manifests_point_at_what_is_in_the_repository() {
    let mut named = Vec::new();
    for file in ["examples/gitops/argocd/ooda.yaml", "examples/gitops/flux/ooda.yaml"] {
        let text = std::fs::read_to_string(repo().join(file)).expect(file);
        for document in serde_yaml::Deserializer::from_str(&text) {
            let object = Value::deserialize(document).expect("YAML");
            let kind = object["kind"].as_str().unwrap_or_else(|| panic!("{file}: a document without kind"));
            let spec = &object["spec"];
            match kind {
                "Application" => {
                    let path = spec["source"]["path"].as_str().expect("source.path");
                    named.push(path.to_owned());
                    for values in spec["source"]["helm"]["valueFiles"].as_array().into_iter().flatten() {
                        named.push(format!("{path}/{}", values.as_str().expect("a path")));
                    }
                }
                "HelmRelease" => {
                    named.push(spec["chart"]["spec"]["chart"].as_str().expect("chart").to_owned());
                    for values in spec["chart"]["spec"]["valuesFiles"].as_array().expect("valuesFiles") {
                        named.push(values.as_str().expect("a path").to_owned());
                    }
                }
                "Kustomization" => named.push(spec["path"].as_str().expect("path").to_owned()),
                "GitRepository" => {}
                other => panic!("{file}: unexpected kind {other}"),
            }
        }
    }
    assert_eq!(named.len(), 7, "{named:?}");
    for path in named {
        assert!(repo().join(&path).exists(), "{path} is named by a GitOps manifest but not in the repository");
    }
}
