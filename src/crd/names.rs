//! The contract between the operator and the gateway: the names, labels, keys and states of what
//! an Organisation and a Project own. The operator makes these objects and the gateway finds them,
//! so both read them from here and neither imports the other.

use std::collections::BTreeMap;

/// The finalizer of both kinds: what the object owns outside the cluster, or in a namespace that
/// outlives it, is cleaned up before it goes. An Organisation gets it from the operator at once
/// (its namespace outlives it); a Project from the gateway before anything of it is put outside
/// the cluster (its site's first upload), so a project that never published goes at once.
pub const FINALIZER: &str = "ooda.run/cleanup";

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "ooda";
pub const ORGANISATION: &str = "ooda.run/organisation";
pub const PROJECT: &str = "ooda.run/project";

/// Key of the token in the `<project>-preview` and `<project>-publish` Secrets.
pub const TOKEN_KEY: &str = "token";
/// Annotation on the preview Secret: the [`TokenState`] its token was issued for.
pub const TOKEN_STATE: &str = "ooda.run/token-state";
/// Annotation on the activity Lease: what renewed it last (`http`, `websocket`, `api`, …).
pub const LAST_SIGNAL: &str = "ooda.run/last-signal";
/// Annotation on a workspace claim: a pod that ran the loader on it became Ready, so the
/// workspace holds the project's repository and later pods start without the loader. A claim made
/// anew has none, and gets the loader again.
pub const WORKSPACE_SEEDED: &str = "ooda.run/workspace-seeded";
/// The init container that seeds the workspace.
pub const LOADER_CONTAINER: &str = "loader";
/// Separates the project from its organisation in preview and site host names. Neither name may
/// contain it (the CRDs refuse such names), so a host label has exactly one reading.
pub const HOST_SEPARATOR: &str = "--";

/// The desired state a preview token was issued for. A token issued for `Stopped` opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Running,
    Stopped,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Running => "running",
            TokenState::Stopped => "stopped",
        }
    }

    /// The state named by a Secret's annotation; anything unreadable counts as stopped, so a
    /// token of unknown standing is never honoured.
    pub fn from_annotation(value: Option<&str>) -> TokenState {
        match value {
            Some("running") => TokenState::Running,
            _ => TokenState::Stopped,
        }
    }
}

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

/// The project's one pod (ordinal 0 of its StatefulSet).
pub fn pod_name(project: &str) -> String {
    format!("{project}-0")
}

pub fn workspace_name(project: &str) -> String {
    format!("{project}-workspace")
}

pub fn preview_secret_name(project: &str) -> String {
    format!("{project}-preview")
}

/// The Secret holding the token with which the environment publishes its own site.
pub fn publish_secret_name(project: &str) -> String {
    format!("{project}-publish")
}

/// The Secret holding the token with which the environment uses the AI relay (its
/// `ANTHROPIC_API_KEY`): replaced when the project stops, like the preview token.
pub fn ai_secret_name(project: &str) -> String {
    format!("{project}-ai")
}

pub fn activity_lease_name(project: &str) -> String {
    format!("{project}-activity")
}

/// `<project>--<org>`: the first label of the project's preview and site hosts.
pub fn host_label(project: &str, organisation: &str) -> String {
    format!("{project}{HOST_SEPARATOR}{organisation}")
}

/// The `(project, organisation)` a host label names, if it names one: the inverse of
/// [`host_label`] for names the CRDs accept. A label with the separator more than once, or with
/// a name starting or ending in `-` around it, is no project's.
pub fn parse_host_label(label: &str) -> Option<(&str, &str)> {
    let (project, organisation) = label.split_once(HOST_SEPARATOR)?;
    let valid = |name: &str| {
        !name.is_empty()
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains(HOST_SEPARATOR)
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    (valid(project) && valid(organisation)).then_some((project, organisation))
}

/// `<project>--<org>.<domain>`.
pub fn project_host(project: &str, organisation: &str, domain: &str) -> String {
    format!("{}.{domain}", host_label(project, organisation))
}

/// Cache key of the namespaced object `name` in `namespace`.
pub fn object_ref<K: kube::Resource<DynamicType = ()>>(
    namespace: &str,
    name: impl AsRef<str>,
) -> kube::runtime::reflector::ObjectRef<K> {
    kube::runtime::reflector::ObjectRef::new(name.as_ref()).within(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_label_has_exactly_one_reading() {
        assert_eq!(parse_host_label(&host_label("shop", "acme")), Some(("shop", "acme")));
        assert_eq!(parse_host_label(&host_label("my-shop", "acme-eu")), Some(("my-shop", "acme-eu")));
        // What names containing the separator would have made: no project's host.
        for ambiguous in ["a--b--c", "a---b", "-a--b", "a--b-", "shop", "--acme", "shop--", "Shop--acme", "a.b--c"] {
            assert_eq!(parse_host_label(ambiguous), None, "{ambiguous}");
        }
    }

    #[test]
    fn token_states_of_unknown_standing_open_nothing() {
        assert_eq!(TokenState::from_annotation(Some("running")), TokenState::Running);
        assert_eq!(TokenState::from_annotation(Some("stopped")), TokenState::Stopped);
        assert_eq!(TokenState::from_annotation(Some("Running")), TokenState::Stopped);
        assert_eq!(TokenState::from_annotation(None), TokenState::Stopped);
    }
}
