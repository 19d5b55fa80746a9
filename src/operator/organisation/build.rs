//! Organisation → its namespace and the guard rails in it. Pure: no API calls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Resource;

use crate::config::GatewaySelector;
use crate::crd::Organisation;
use crate::crd::names::{organisation_labels, organisation_namespace};
use crate::operator::apply::stamp;

pub const QUOTA_NAME: &str = "organisation-quota";
pub const LIMIT_RANGE_NAME: &str = "container-defaults";
pub const DEFAULT_DENY_NAME: &str = "default-deny";
/// The Role (and its binding) giving the gateway what it needs in the organisation's namespace.
pub const GATEWAY_ACCESS_NAME: &str = "ooda-gateway";
/// The ClusterRole (from the chart) that lets the gateway open terminals, and the RoleBinding
/// that grants it in one organisation namespace only. The operator may bind that ClusterRole
/// (RBAC `bind`, by name) without holding exec rights itself.
pub const GATEWAY_EXEC_NAME: &str = "ooda-gateway-exec";

/// Everything an organisation should have.
pub struct Desired {
    pub namespace: Namespace,
    /// Absent when the organisation sets no quota.
    pub quota: Option<ResourceQuota>,
    pub limit_range: LimitRange,
    pub default_deny: NetworkPolicy,
}

fn meta(org: &Organisation, name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(organisation_labels(&org.metadata.name.clone().unwrap_or_default())),
        owner_references: Some(vec![org.controller_owner_ref(&()).expect("organisation has a name and uid")]),
        ..Default::default()
    }
}

pub fn desired(org: &Organisation) -> Desired {
    let name = org.metadata.name.as_deref().expect("organisation has a name");
    let ns_name = organisation_namespace(name);
    let ns = Some(ns_name.as_str());

    let mut namespace_meta = meta(org, &ns_name, None);
    let labels = namespace_meta.labels.get_or_insert_with(BTreeMap::new);
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(format!("pod-security.kubernetes.io/{mode}"), "restricted".into());
        labels.insert(format!("pod-security.kubernetes.io/{mode}-version"), "latest".into());
    }
    let mut namespace = Namespace { metadata: namespace_meta, ..Default::default() };

    let mut quota = org.spec.quota.as_ref().map(|q| {
        let mut hard = BTreeMap::new();
        if let Some(projects) = q.projects {
            hard.insert("count/projects.ooda.run".to_owned(), Quantity(projects.to_string()));
        }
        if let Some(cpu) = &q.cpu {
            hard.insert("requests.cpu".to_owned(), cpu.clone());
            hard.insert("limits.cpu".to_owned(), cpu.clone());
        }
        if let Some(memory) = &q.memory {
            hard.insert("requests.memory".to_owned(), memory.clone());
            hard.insert("limits.memory".to_owned(), memory.clone());
        }
        if let Some(storage) = &q.storage {
            hard.insert("requests.storage".to_owned(), storage.clone());
        }
        ResourceQuota {
            metadata: meta(org, QUOTA_NAME, ns),
            spec: Some(ResourceQuotaSpec { hard: Some(hard), ..Default::default() }),
            ..Default::default()
        }
    });

    // Containers that state no resources (nothing ooda creates) still fit under the quota.
    let defaults =
        BTreeMap::from([("cpu".to_owned(), Quantity("500m".into())), ("memory".to_owned(), Quantity("512Mi".into()))]);
    let mut limit_range = LimitRange {
        metadata: meta(org, LIMIT_RANGE_NAME, ns),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(defaults.clone()),
                default_request: Some(defaults),
                ..Default::default()
            }],
        }),
    };

    // Nothing in or out unless a project's own policy allows it.
    let mut default_deny = NetworkPolicy {
        metadata: meta(org, DEFAULT_DENY_NAME, ns),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ..Default::default()
        }),
    };

    stamp(&mut namespace);
    if let Some(q) = quota.as_mut() {
        stamp(q);
    }
    stamp(&mut limit_range);
    stamp(&mut default_deny);
    Desired { namespace, quota, limit_range, default_deny }
}

/// What the gateway may do in this organisation's namespace, and nothing more: read the project
/// tokens (Secrets) and pods, renew activity Leases, and exec into pods (members' terminals). It
/// has no such rights anywhere else, so it cannot read another namespace's Secrets (kube-system's,
/// say) or open a shell in another namespace's pods.
pub struct GatewayAccess {
    pub role: Role,
    pub binding: RoleBinding,
    /// Binds [`GATEWAY_EXEC_NAME`] in this namespace.
    pub exec_binding: RoleBinding,
}

pub fn gateway_access(org: &Organisation, gateway: &GatewaySelector) -> GatewayAccess {
    let name = org.metadata.name.as_deref().expect("organisation has a name");
    let namespace = organisation_namespace(name);
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    };
    let mut role = Role {
        metadata: meta(org, GATEWAY_ACCESS_NAME, Some(&namespace)),
        rules: Some(vec![
            rule("", "secrets", &["get", "list", "watch"]),
            rule("", "pods", &["get", "list", "watch"]),
            rule("coordination.k8s.io", "leases", &["get", "patch"]),
        ]),
    };
    let binding = |name: &str, kind: &str| {
        let mut binding = RoleBinding {
            metadata: meta(org, name, Some(&namespace)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: kind.into(),
                name: name.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: gateway.service_account.clone(),
                namespace: Some(gateway.namespace.clone()),
                ..Default::default()
            }]),
        };
        stamp(&mut binding);
        binding
    };
    stamp(&mut role);
    GatewayAccess {
        role,
        binding: binding(GATEWAY_ACCESS_NAME, "Role"),
        exec_binding: binding(GATEWAY_EXEC_NAME, "ClusterRole"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::crd::names::{MANAGED_BY, ORGANISATION};
    use crate::operator::apply::APPLIED_HASH;

    const UID: &str = "0b5e7a6c-0000-4000-8000-000000000002";

    /// An Organisation `acme` with the given spec.
    fn organisation(spec: Value) -> Organisation {
        serde_json::from_value(json!({
            "apiVersion": "ooda.run/v1alpha1",
            "kind": "Organisation",
            "metadata": { "name": "acme", "uid": UID },
            "spec": spec,
        }))
        .expect("a valid Organisation")
    }

    fn with_quota(quota: Value) -> Organisation {
        organisation(json!({ "jurisdiction": "eu", "quota": quota }))
    }

    fn without_quota() -> Organisation {
        organisation(json!({ "jurisdiction": "eu" }))
    }

    fn hard(d: &Desired) -> BTreeMap<String, Quantity> {
        d.quota.as_ref().expect("a quota").spec.as_ref().and_then(|s| s.hard.clone()).expect("hard limits")
    }

    fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect()
    }

    /// `(kind, metadata)` of every child object.
    fn metas(d: &Desired) -> Vec<(&'static str, &ObjectMeta)> {
        let mut all = vec![
            ("Namespace", &d.namespace.metadata),
            ("LimitRange", &d.limit_range.metadata),
            ("NetworkPolicy", &d.default_deny.metadata),
        ];
        if let Some(quota) = &d.quota {
            all.push(("ResourceQuota", &quota.metadata));
        }
        all
    }

    #[test]
    fn namespace_is_org_name_and_labelled_with_the_organisation() {
        let d = desired(&without_quota());
        let meta = &d.namespace.metadata;
        assert_eq!(meta.name.as_deref(), Some("org-acme"));
        assert_eq!(meta.namespace, None, "namespaces are cluster-scoped");
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(labels.get(ORGANISATION).map(String::as_str), Some("acme"));
        assert_eq!(labels.get(MANAGED_BY).map(String::as_str), Some("ooda"));
    }

    #[test]
    fn namespace_enforces_audits_and_warns_pod_security_restricted() {
        let d = desired(&without_quota());
        let labels = d.namespace.metadata.labels.as_ref().expect("labels");
        for mode in ["enforce", "audit", "warn"] {
            let level = labels.get(&format!("pod-security.kubernetes.io/{mode}")).map(String::as_str);
            assert_eq!(level, Some("restricted"), "{mode}");
            let version = labels.get(&format!("pod-security.kubernetes.io/{mode}-version")).map(String::as_str);
            assert_eq!(version, Some("latest"), "{mode}-version");
        }
    }

    #[test]
    fn every_child_is_labelled_and_controlled_by_the_organisation() {
        let d = desired(&with_quota(json!({ "projects": 5 })));
        let children = metas(&d);
        assert_eq!(children.len(), 4);
        for (kind, meta) in children {
            let owners = meta.owner_references.as_deref().unwrap_or_default();
            assert_eq!(owners.len(), 1, "{kind}: {owners:?}");
            let owner = &owners[0];
            assert_eq!(owner.controller, Some(true), "{kind}");
            assert_eq!(
                (owner.api_version.as_str(), owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("ooda.run/v1alpha1", "Organisation", "acme", UID),
                "{kind}"
            );
            let labels = meta.labels.as_ref().unwrap_or_else(|| panic!("{kind}: no labels"));
            assert_eq!(labels.get(ORGANISATION).map(String::as_str), Some("acme"), "{kind}");
            assert_eq!(labels.get(MANAGED_BY).map(String::as_str), Some("ooda"), "{kind}");
            assert!(meta.annotations.as_ref().is_some_and(|a| a.contains_key(APPLIED_HASH)), "{kind}: not stamped");
            if kind != "Namespace" {
                assert_eq!(meta.namespace.as_deref(), Some("org-acme"), "{kind}");
            }
        }
        assert_eq!(d.quota.as_ref().unwrap().metadata.name.as_deref(), Some(QUOTA_NAME));
        assert_eq!(d.limit_range.metadata.name.as_deref(), Some(LIMIT_RANGE_NAME));
        assert_eq!(d.default_deny.metadata.name.as_deref(), Some(DEFAULT_DENY_NAME));
    }

    #[test]
    fn a_full_quota_limits_projects_compute_and_storage() {
        let d = desired(&with_quota(json!({ "projects": 20, "cpu": "16", "memory": "32Gi", "storage": "200Gi" })));
        assert_eq!(
            hard(&d),
            quantities(&[
                ("count/projects.ooda.run", "20"),
                ("requests.cpu", "16"),
                ("limits.cpu", "16"),
                ("requests.memory", "32Gi"),
                ("limits.memory", "32Gi"),
                ("requests.storage", "200Gi"),
            ])
        );
    }

    #[test]
    fn a_partial_quota_limits_only_what_it_names() {
        let d = desired(&with_quota(json!({ "projects": 3 })));
        assert_eq!(hard(&d), quantities(&[("count/projects.ooda.run", "3")]));

        let d = desired(&with_quota(json!({ "memory": "8Gi" })));
        assert_eq!(hard(&d), quantities(&[("requests.memory", "8Gi"), ("limits.memory", "8Gi")]));

        let d = desired(&with_quota(json!({ "cpu": 4, "storage": "1Ti" })));
        assert_eq!(hard(&d), quantities(&[("requests.cpu", "4"), ("limits.cpu", "4"), ("requests.storage", "1Ti")]));
    }

    #[test]
    fn a_zero_project_quota_is_kept() {
        let d = desired(&with_quota(json!({ "projects": 0 })));
        assert_eq!(hard(&d), quantities(&[("count/projects.ooda.run", "0")]));
    }

    #[test]
    fn there_is_no_quota_object_without_spec_quota() {
        assert!(desired(&without_quota()).quota.is_none());
    }

    #[test]
    fn default_deny_selects_every_pod_for_both_directions_with_no_rules() {
        let d = desired(&without_quota());
        let spec = d.default_deny.spec.as_ref().expect("policy spec");
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()), "an empty selector: every pod");
        assert_eq!(spec.policy_types.as_deref(), Some(["Ingress".to_owned(), "Egress".to_owned()].as_slice()));
        assert_eq!(spec.ingress, None);
        assert_eq!(spec.egress, None);
        // An empty selector must serialise as `{}`, not be dropped.
        let json = serde_json::to_value(&d.default_deny).unwrap();
        assert_eq!(json["spec"]["podSelector"], json!({}));
    }

    #[test]
    fn limit_range_gives_containers_without_resources_a_small_default() {
        let d = desired(&without_quota());
        let limits = &d.limit_range.spec.as_ref().expect("limit range spec").limits;
        assert_eq!(limits.len(), 1);
        assert_eq!(limits[0].type_, "Container");
        let expected = Some(quantities(&[("cpu", "500m"), ("memory", "512Mi")]));
        assert_eq!(limits[0].default, expected);
        assert_eq!(limits[0].default_request, expected);
    }

    #[test]
    fn building_twice_gives_identical_objects() {
        let org = with_quota(json!({ "projects": 20, "cpu": "16" }));
        let (a, b) = (desired(&org), desired(&org));
        assert_eq!(a.namespace, b.namespace);
        assert_eq!(a.quota, b.quota);
        assert_eq!(a.limit_range, b.limit_range);
        assert_eq!(a.default_deny, b.default_deny);
    }

    #[test]
    fn changing_the_quota_changes_only_the_quotas_hash() {
        let hash = |meta: &ObjectMeta| meta.annotations.as_ref().unwrap()[APPLIED_HASH].clone();
        let (small, large) = (desired(&with_quota(json!({ "cpu": "4" }))), desired(&with_quota(json!({ "cpu": "8" }))));
        assert_ne!(hash(&small.quota.as_ref().unwrap().metadata), hash(&large.quota.as_ref().unwrap().metadata));
        assert_eq!(hash(&small.namespace.metadata), hash(&large.namespace.metadata));
        assert_eq!(hash(&small.default_deny.metadata), hash(&large.default_deny.metadata));
    }

    #[test]
    fn the_gateway_may_read_tokens_and_pods_renew_activity_and_exec_in_the_namespace_and_nothing_more() {
        let gateway = crate::config::GatewaySelector {
            namespace: "ooda-system".into(),
            pod_labels: BTreeMap::new(),
            service_account: "ooda-gateway".into(),
            public_url: None,
        };
        let GatewayAccess { role, binding, exec_binding } = gateway_access(&without_quota(), &gateway);
        assert_eq!(role.metadata.namespace.as_deref(), Some("org-acme"));
        let rules: Vec<(String, String, Vec<String>)> = role
            .rules
            .unwrap()
            .into_iter()
            .map(|r| (r.api_groups.unwrap().join(","), r.resources.unwrap().join(","), r.verbs))
            .collect();
        let owned = |verbs: &[&str]| verbs.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            rules,
            [
                ("".into(), "secrets".into(), owned(&["get", "list", "watch"])),
                ("".into(), "pods".into(), owned(&["get", "list", "watch"])),
                ("coordination.k8s.io".into(), "leases".into(), owned(&["get", "patch"])),
            ]
        );
        assert_eq!(binding.role_ref.name, "ooda-gateway");
        assert_eq!(
            (exec_binding.role_ref.kind.as_str(), exec_binding.role_ref.name.as_str()),
            ("ClusterRole", "ooda-gateway-exec")
        );
        assert_eq!(exec_binding.metadata.namespace.as_deref(), Some("org-acme"), "exec in this namespace only");
        assert_eq!(exec_binding.subjects, binding.subjects);
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!((subject.kind.as_str(), subject.name.as_str()), ("ServiceAccount", "ooda-gateway"));
        assert_eq!(subject.namespace.as_deref(), Some("ooda-system"));
        assert_eq!(role.metadata.labels.unwrap().get(MANAGED_BY).map(String::as_str), Some("ooda"));
        assert!(binding.metadata.owner_references.is_some_and(|o| o[0].controller == Some(true)));
    }
}
