//! Organisation → its namespace and the guard rails in it. Pure: no API calls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Resource;

use crate::crd::Organisation;
use crate::operator::apply::stamp;
use crate::operator::labels::{organisation_labels, organisation_namespace};

pub const QUOTA_NAME: &str = "organisation-quota";
pub const LIMIT_RANGE_NAME: &str = "container-defaults";
pub const DEFAULT_DENY_NAME: &str = "default-deny";

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
