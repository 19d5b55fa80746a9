//! `crds/` and the chart's copy (`charts/ooda/files/crds/`) are generated from the Rust types:
//! these tests fail when they drift apart, and when the examples use a field the types do not know.

use ooda::crd::{self, Organisation, Project};

/// The checkout under test, read when the test runs: build outputs are shared between clones
/// (the target directory lives outside them), so a path compiled in could name another clone.
fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for tests"))
}

const REGENERATE: &str = "run `make crds` and commit the result";

fn assert_generated_in(folder: &str) {
    let dir = repo().join(folder);
    let mut expected_files = Vec::new();
    for definition in crd::definitions() {
        let file = crd::file_name(&definition);
        let committed =
            std::fs::read_to_string(dir.join(&file)).unwrap_or_else(|e| panic!("{folder}/{file}: {e}; {REGENERATE}"));
        let generated = crd::to_yaml(&definition).expect("render CRD");
        assert!(committed == generated, "{folder}/{file} differs from the Rust types; {REGENERATE}");
        expected_files.push(file);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {folder}: {e}"))
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(present, expected_files, "{folder} holds files no type generates; {REGENERATE}");
}

#[test]
fn committed_crds_match_the_rust_types() {
    assert_generated_in("crds");
}

/// Helm reads only files inside the chart: it carries its own copy, written by the same command.
#[test]
fn the_charts_crds_match_the_rust_types() {
    assert_generated_in("charts/ooda/files/crds");
}

/// Parsing into the typed structs and serialising back must give the same document: a field the
/// types don't know (a typo, a stale example) would be dropped and show up here.
fn assert_round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str) {
    let path = repo().join("examples").join(file);
    let text = std::fs::read_to_string(&path).expect("read example");
    let raw: serde_json::Value = serde_yaml::from_str(&text).expect("example is YAML");
    let typed: T = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("examples/{file} does not parse: {e}"));
    let back = serde_json::to_value(&typed).expect("serialise");
    assert_eq!(raw["spec"], back["spec"], "examples/{file} has fields the types drop");
}

#[test]
fn example_organisation_uses_only_known_fields() {
    assert_round_trips::<Organisation>("organisation.yaml");
}

#[test]
fn example_project_uses_only_known_fields() {
    assert_round_trips::<Project>("project.yaml");
}

#[test]
fn every_schema_property_has_a_description() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, property) in properties {
                let child = format!("{path}.{name}");
                // metadata is described by Kubernetes itself.
                if name != "metadata" && property.get("description").is_none() {
                    missing.push(child.clone());
                }
                walk(&child, property, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for definition in crd::definitions() {
        let json = serde_json::to_value(&definition).expect("CRD to JSON");
        let kind = definition.spec.names.kind.clone();
        for version in json["spec"]["versions"].as_array().expect("versions") {
            walk(&kind, &version["schema"]["openAPIV3Schema"], &mut missing);
        }
    }
    assert!(missing.is_empty(), "fields without a doc comment (kubectl explain shows nothing): {missing:?}");
}
