//! `Project`: one development environment, living in its organisation's namespace.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::schema::{NAME_MESSAGE, NAME_RULE, positive_quantity};

/// A project: a sandboxed development environment with its own storage, compute and network
/// policy, a private preview URL, and published static sites.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ooda.run",
    version = "v1alpha1",
    kind = "Project",
    plural = "projects",
    shortname = "proj",
    category = "ooda",
    namespaced,
    status = "ProjectStatus",
    doc = "A project: a sandboxed, hibernating development environment in its organisation's namespace.",
    derive = "PartialEq",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Preview", type_ = "string", json_path = ".status.previewHost"),
    printcolumn(name = "Site", type_ = "integer", json_path = ".status.published.current"),
    printcolumn(name = "Last Activity", type_ = "date", json_path = ".status.lastActivity", priority = 1),
    printcolumn(name = "Isolation", type_ = "string", json_path = ".spec.isolation", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(NAME_RULE).message(NAME_MESSAGE).reason(Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    /// Container image of the development environment; the operator's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^\s-][^\s]*$"))]
    pub image: Option<String>,

    /// Where the workspace's first contents come from. Used only while the workspace is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ProjectSource>,

    /// Sandbox technology isolating the project's pod from the node: `gvisor` or `kata`.
    /// The operator maps each to a RuntimeClass.
    #[serde(default)]
    pub isolation: Isolation,

    /// Dedicated compute and storage (requests equal limits). Operator defaults fill gaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ProjectResources>,

    /// Ports the environment listens on. At most one is the preview port the gateway proxies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.filter(p, has(p.preview) && p.preview).size() <= 1")
            .message("at most one port may have preview: true"),
    )]
    pub ports: Vec<ProjectPort>,

    /// Desired state and hibernation settings.
    #[serde(default)]
    pub lifecycle: Lifecycle,
}

/// The initial contents of a project's workspace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProjectSource {
    /// A Git repository cloned into the empty workspace by the project loader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
}

/// A Git repository and the revision to check out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GitSource {
    /// Repository URL: `https://…` or `ssh://…`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(r"self.matches('^(https|ssh)://[^\\s]+$')")
        .message("must be an https:// or ssh:// Git URL without spaces"))]
    pub url: String,

    /// Branch, tag or full commit id to check out; the remote's default branch when omitted.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(r"self.matches('^[^-\\s][^\\s]*$')")
        .message("must be a branch, tag or commit: no spaces, not starting with '-'"))]
    pub reference: Option<String>,
}

/// How strongly a project's pod is isolated from the node it runs on.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// gVisor: a user-space kernel intercepts the sandbox's system calls.
    #[default]
    Gvisor,
    /// Kata Containers: the sandbox runs in a lightweight virtual machine.
    Kata,
}

/// Compute and storage dedicated to a project.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ProjectResources {
    /// CPU cores (for example `2` or `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_quantity")]
    pub cpu: Option<Quantity>,

    /// Memory (for example `4Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_quantity")]
    pub memory: Option<Quantity>,

    /// Size of the workspace volume (for example `10Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_quantity")]
    pub storage: Option<Quantity>,
}

/// A port the environment listens on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProjectPort {
    /// Port name, unique in the project (an IANA service name such as `web`).
    #[schemars(length(min = 1, max = 15), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Port number, 1–65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Whether the gateway's preview URL proxies to this port.
    #[serde(default)]
    pub preview: bool,
}

/// What the project should be doing, and when it hibernates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// `Running` (the default) keeps the environment available, hibernating it when idle and
    /// waking it on demand; `Stopped` scales it to zero, rotates its preview token and never wakes it.
    #[serde(default)]
    pub state: DesiredState,

    /// How long without activity before the environment hibernates, as a duration such as
    /// `90s`, `15m` or `2h` (from 10s to 720h); the operator's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+[hms])+$') && duration(self) >= duration('10s') && duration(self) <= duration('720h')"
    ).message("must be a duration such as 90s, 15m or 2h, between 10s and 720h (30 days)"))]
    pub idle_timeout: Option<String>,
}

/// The state a project is asked to be in.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DesiredState {
    /// Available: hibernates when idle and wakes on demand.
    #[default]
    Running,
    /// Scaled to zero; its preview token no longer works; requests do not wake it.
    Stopped,
}

/// Where a project is in its life, as observed by the operator.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, waiting for its organisation or configuration.
    Pending,
    /// Children created; waiting for the pod to become ready.
    Provisioning,
    /// The pod is ready.
    Running,
    /// Scaled to zero after being idle; wakes on demand.
    Hibernated,
    /// Woken by activity; waiting for the pod to become ready.
    Waking,
    /// Scaled to zero on request.
    Stopped,
    /// Cannot be provisioned; a condition says why.
    Failed,
    /// Being deleted; external clean-up in progress.
    Deleting,
}

impl Phase {
    /// As written in status, metrics and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Running => "Running",
            Phase::Hibernated => "Hibernated",
            Phase::Waking => "Waking",
            Phase::Stopped => "Stopped",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
        }
    }
}

/// What the operator last observed and did for a project.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// Where the project is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Host of the project's preview URL (`<project>--<org>.<previewDomain>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_host: Option<String>,

    /// Last activity the gateway reported for the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,

    /// Why the project is, or is not, hibernating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleStatus>,

    /// The most recent wake from hibernation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_wake: Option<WakeStatus>,

    /// The project's published static-site versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<PublishedStatus>,

    /// `Ready`: the project is as its spec asks (running, hibernated or stopped: the phase says
    /// which). `Provisioned`: its objects are in place. `Hibernated`: scaled to zero for want of
    /// activity. `Published`: a site version is live. `Reconciling` (on its way: provisioning,
    /// waking, waiting for its organisation) and `Stalled` (it cannot go on until the project or
    /// the configuration changes): kstatus's conditions, which Flux's health checks read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The idle signal behind hibernation.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdleStatus {
    /// When the project last stopped seeing activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,

    /// The kind of the last activity seen (for example `http`, `websocket` or `api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_signal: Option<String>,
}

/// How long a wake took.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WakeStatus {
    /// When the pod was seen Ready.
    pub completed_at: Time,
    /// Milliseconds from the activity that woke the project to its pod being Ready.
    pub milliseconds: i64,
}

/// Published versions of a project's static site.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PublishedStatus {
    /// The version being served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,

    /// Every version kept, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<PublishedVersion>,
}

/// One published snapshot of a project's static site.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublishedVersion {
    /// Version number, from 1.
    pub version: i64,
    /// When it was published.
    pub published_at: Time,
    /// Number of files.
    pub files: i64,
    /// Total size in bytes.
    pub bytes: i64,
    /// Email of the member, or `project` for the environment's publish token.
    pub publisher: String,
}
