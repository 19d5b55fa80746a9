//! Labels and names shared by everything the operator creates.

use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "ooda";
pub const ORGANISATION: &str = "ooda.run/organisation";
pub const PROJECT: &str = "ooda.run/project";

/// `managed-by=ooda`: selects every object the operator owns, for its watches.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

pub fn organisation_labels(organisation: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.into(), MANAGED_BY_VALUE.into()), (ORGANISATION.into(), organisation.into())])
}

pub fn project_labels(organisation: &str, project: &str) -> BTreeMap<String, String> {
    let mut labels = organisation_labels(organisation);
    labels.insert(PROJECT.into(), project.into());
    labels
}

/// The namespace of organisation `name`.
pub fn organisation_namespace(name: &str) -> String {
    format!("org-{name}")
}

/// The organisation whose namespace this is, if it is one.
pub fn organisation_of_namespace(namespace: &str) -> Option<&str> {
    namespace.strip_prefix("org-").filter(|name| !name.is_empty())
}

/// Cache key of the namespaced object `name` in `namespace`.
pub fn child<K: kube::Resource<DynamicType = ()>>(
    namespace: &str,
    name: impl AsRef<str>,
) -> kube::runtime::reflector::ObjectRef<K> {
    kube::runtime::reflector::ObjectRef::new(name.as_ref()).within(namespace)
}
