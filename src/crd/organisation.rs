//! `Organisation`: a tenant. Cluster-scoped; the operator gives it the namespace `org-<name>`.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::schema::{NAME_MESSAGE, NAME_RULE, positive_quantity};

/// An organisation: its members, the jurisdiction its data must stay in, and its quota.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ooda.run",
    version = "v1alpha1",
    kind = "Organisation",
    plural = "organisations",
    shortname = "org",
    category = "ooda",
    status = "OrganisationStatus",
    doc = "An organisation: a tenant of ooda with its own namespace, members, quota and data-residency jurisdiction.",
    derive = "PartialEq",
    printcolumn(name = "Jurisdiction", type_ = "string", json_path = ".spec.jurisdiction"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(NAME_RULE).message(NAME_MESSAGE).reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct OrganisationSpec {
    /// Human-readable name shown in the dashboard; defaults to the object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub display_name: Option<String>,

    /// Data-residency jurisdiction (for example `eu`): a key of the operator's `jurisdictions`
    /// configuration, which decides the regions, storage class and S3 bucket of everything the
    /// organisation owns. Fixed when the organisation is created.
    #[schemars(length(min = 1, max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("jurisdiction is immutable: an organisation's data residency is fixed when it is created"))]
    pub jurisdiction: String,

    /// People who may use the organisation, one entry per email. Entries are merged by email under
    /// server-side apply, so members declared in Git and members added through the gateway keep
    /// separate field managers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["email".into()]))]
    pub members: Vec<Member>,

    /// Upper bounds on what the organisation's projects may use together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<OrganisationQuota>,

    /// Limits on the organisation's use of the AI relay, enforced by each gateway replica. The
    /// jurisdiction's configuration decides whether there is a relay at all, and its models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<OrganisationAi>,
}

/// Limits on an organisation's AI requests; a limit left out is not enforced.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OrganisationAi {
    /// Requests per minute across all the organisation's projects and members; more are
    /// answered 429 with `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_minute: Option<u32>,

    /// Tokens (input, cached input and output, as the upstream reports them) per UTC day; once
    /// used up, requests are answered 429 until midnight UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000_i64))]
    pub tokens_per_day: Option<i64>,
}

/// A member of an organisation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's sign-in email, in lowercase (for example `alice@acme.example`).
    #[schemars(length(min = 3, max = 254))]
    #[x_kube(validation = Rule::new(
        r"self.matches('^[a-z0-9._%+-]+@[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$')"
    ).message("must be a lowercase email address such as alice@acme.example"))]
    pub email: String,

    /// What the member may do: `admin` manages members and deletes projects; `member` uses projects.
    pub role: Role,
}

/// A member's role in an organisation.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages members and roles, deletes projects, and can do everything a member can.
    Admin,
    /// Lists, creates, starts, stops, previews and publishes projects.
    Member,
}

impl Role {
    /// As written in manifests and API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// Limits on an organisation's total use, enforced in its namespace by a ResourceQuota.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct OrganisationQuota {
    /// Maximum number of projects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub projects: Option<i32>,

    /// Total CPU of all running projects (for example `16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_quantity")]
    pub cpu: Option<Quantity>,

    /// Total memory of all running projects (for example `32Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_quantity")]
    pub memory: Option<Quantity>,

    /// Total workspace storage of all projects (for example `200Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_quantity")]
    pub storage: Option<Quantity>,
}

/// What the operator last observed and did for an organisation.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OrganisationStatus {
    /// The namespace that holds the organisation's projects (`org-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// `Ready`: the namespace and its guard rails are in place. `ResidencySatisfied`: the
    /// jurisdiction is configured, so the organisation's data has somewhere to live.
    /// `Reconciling` and `Stalled` (an unknown jurisdiction, a namespace that is not its own):
    /// kstatus's conditions, which Flux's health checks read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
