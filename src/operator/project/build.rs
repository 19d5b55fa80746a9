//! Project → the objects that make up its environment. Pure: no API calls, no clock, no
//! randomness (the preview token and replica count are decided by the caller).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret, SecurityContext,
    Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::config::{Jurisdiction, OperatorConfig};
use crate::crd::Project;
use crate::operator::apply::stamp;
use crate::operator::labels::project_labels;

/// Key of the preview token in the `<project>-preview` Secret.
pub const TOKEN_KEY: &str = "token";
/// Annotation on the preview Secret: the desired state the token was issued for.
pub const TOKEN_STATE: &str = "ooda.run/token-state";
pub const WORKSPACE_PATH: &str = "/workspace";
/// The unprivileged user every project container runs as.
const USER_ID: i64 = 1000;

pub fn workspace_name(project: &str) -> String {
    format!("{project}-workspace")
}
pub fn preview_secret_name(project: &str) -> String {
    format!("{project}-preview")
}
pub fn activity_lease_name(project: &str) -> String {
    format!("{project}-activity")
}

/// `<project>--<org>.<previewDomain>`.
pub fn preview_host(project: &str, organisation: &str, preview_domain: &str) -> String {
    format!("{project}--{organisation}.{preview_domain}")
}

/// What the caller decided; the rest follows from the spec and configuration.
pub struct Inputs<'a> {
    pub project: &'a Project,
    pub organisation: &'a str,
    pub jurisdiction: &'a Jurisdiction,
    pub config: &'a OperatorConfig,
    pub replicas: i32,
    /// The preview token to keep (or the new one, when rotating).
    pub token: &'a str,
    /// `running` or `stopped`: which desired state the token belongs to.
    pub token_state: &'a str,
}

/// Every child a project should have. `service` is absent when the project has no ports.
pub struct Desired {
    pub service_account: ServiceAccount,
    pub workspace: PersistentVolumeClaim,
    pub stateful_set: StatefulSet,
    pub service: Option<Service>,
    pub network_policy: NetworkPolicy,
    pub preview_secret: Secret,
}

struct Names<'a> {
    project: &'a str,
    namespace: &'a str,
    labels: BTreeMap<String, String>,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
}

impl Names<'_> {
    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels.clone()),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }
}

pub fn desired(inputs: &Inputs) -> Desired {
    let project = inputs.project;
    let name = project.metadata.name.as_deref().expect("project has a name");
    let names = Names {
        project: name,
        namespace: project.metadata.namespace.as_deref().expect("project is namespaced"),
        labels: project_labels(inputs.organisation, name),
        owner: project.controller_owner_ref(&()).expect("project has a name and uid"),
    };

    let mut service_account = ServiceAccount {
        metadata: names.meta(name.to_owned()),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let mut workspace = workspace_claim(inputs, &names);
    let mut stateful_set = stateful_set(inputs, &names);
    let mut service = service(inputs, &names);
    let mut network_policy = network_policy(inputs, &names);
    let mut preview_secret = Secret {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(TOKEN_STATE.to_owned(), inputs.token_state.to_owned())])),
            ..names.meta(preview_secret_name(name))
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), ByteString(inputs.token.as_bytes().to_vec()))])),
        ..Default::default()
    };

    stamp(&mut service_account);
    stamp(&mut workspace);
    stamp(&mut stateful_set);
    if let Some(s) = service.as_mut() {
        stamp(s);
    }
    stamp(&mut network_policy);
    stamp(&mut preview_secret);
    Desired { service_account, workspace, stateful_set, service, network_policy, preview_secret }
}

struct Resources {
    cpu: Quantity,
    memory: Quantity,
    storage: Quantity,
}

fn resources(inputs: &Inputs) -> Resources {
    let defaults = &inputs.config.defaults.resources;
    let spec = inputs.project.spec.resources.clone().unwrap_or_default();
    Resources {
        cpu: spec.cpu.unwrap_or_else(|| defaults.cpu.clone()),
        memory: spec.memory.unwrap_or_else(|| defaults.memory.clone()),
        storage: spec.storage.unwrap_or_else(|| defaults.storage.clone()),
    }
}

fn workspace_claim(inputs: &Inputs, names: &Names) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: names.meta(workspace_name(names.project)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(inputs.jurisdiction.storage_class.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), resources(inputs).storage)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pod Security Standard `restricted` at container level.
fn restricted_container_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        run_as_non_root: Some(true),
        privileged: Some(false),
        ..Default::default()
    }
}

/// Clones the project's repository into the workspace, only while the workspace is empty (a
/// fresh volume may hold `lost+found`). URL and ref arrive as environment variables, never as
/// shell text; the CRD refuses refs starting with `-`, and `--` ends git's options anyway.
pub const LOADER_SCRIPT: &str = r#"set -eu
cd "$WORKSPACE"
if [ -n "$(ls -A | grep -v '^lost+found$' || true)" ]; then
  echo "ooda-loader: workspace is not empty; leaving it as it is"
  exit 0
fi
git init -q .
git remote add origin -- "$GIT_URL"
git fetch -q --depth 1 origin -- "${GIT_REF:-HEAD}"
git checkout -q --detach FETCH_HEAD
echo "ooda-loader: checked out ${GIT_REF:-the default branch} of $GIT_URL"
"#;

fn loader(inputs: &Inputs) -> Option<Container> {
    let git = inputs.project.spec.source.as_ref()?.git.as_ref()?;
    let mut env = vec![
        EnvVar { name: "WORKSPACE".into(), value: Some(WORKSPACE_PATH.into()), ..Default::default() },
        EnvVar { name: "GIT_URL".into(), value: Some(git.url.clone()), ..Default::default() },
        // No prompts for credentials: a private repository fails instead of hanging.
        EnvVar { name: "GIT_TERMINAL_PROMPT".into(), value: Some("0".into()), ..Default::default() },
    ];
    if let Some(reference) = &git.reference {
        env.push(EnvVar { name: "GIT_REF".into(), value: Some(reference.clone()), ..Default::default() });
    }
    let small =
        BTreeMap::from([("cpu".to_owned(), Quantity("250m".into())), ("memory".to_owned(), Quantity("256Mi".into()))]);
    Some(Container {
        name: "loader".into(),
        image: Some(inputs.config.defaults.loader_image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), LOADER_SCRIPT.into()]),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: Some(small.clone()),
            limits: Some(small),
            ..Default::default()
        }),
        security_context: Some(restricted_container_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: "workspace".into(),
            mount_path: WORKSPACE_PATH.into(),
            ..Default::default()
        }]),
        ..Default::default()
    })
}

fn stateful_set(inputs: &Inputs, names: &Names) -> StatefulSet {
    let project = inputs.project;
    let r = resources(inputs);
    let dedicated = BTreeMap::from([("cpu".to_owned(), r.cpu), ("memory".to_owned(), r.memory)]);
    let ports: Vec<ContainerPort> = project
        .spec
        .ports
        .iter()
        .map(|p| ContainerPort {
            name: Some(p.name.clone()),
            container_port: p.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect();
    let image = project.spec.image.clone().unwrap_or_else(|| inputs.config.defaults.image.clone());
    let workspace = Container {
        name: "workspace".into(),
        image: Some(image),
        working_dir: Some(WORKSPACE_PATH.into()),
        ports: (!ports.is_empty()).then_some(ports),
        env: Some(vec![
            EnvVar {
                name: "OODA_ORGANISATION".into(),
                value: Some(inputs.organisation.to_owned()),
                ..Default::default()
            },
            EnvVar { name: "OODA_PROJECT".into(), value: Some(names.project.to_owned()), ..Default::default() },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(dedicated.clone()),
            limits: Some(dedicated),
            ..Default::default()
        }),
        security_context: Some(restricted_container_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: "workspace".into(),
            mount_path: WORKSPACE_PATH.into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let region_affinity = Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "topology.kubernetes.io/region".into(),
                        operator: "In".into(),
                        values: Some(inputs.jurisdiction.regions.clone()),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = PodSpec {
        service_account_name: Some(names.project.to_owned()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        runtime_class_name: Some(inputs.config.runtime_classes.for_isolation(project.spec.isolation).to_owned()),
        affinity: Some(region_affinity),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(USER_ID),
            run_as_group: Some(USER_ID),
            fs_group: Some(USER_ID),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        init_containers: loader(inputs).map(|c| vec![c]),
        containers: vec![workspace],
        volumes: Some(vec![Volume {
            name: "workspace".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: workspace_name(names.project),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    StatefulSet {
        metadata: names.meta(names.project.to_owned()),
        spec: Some(StatefulSetSpec {
            replicas: Some(inputs.replicas),
            service_name: Some(names.project.to_owned()),
            selector: LabelSelector { match_labels: Some(names.labels.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(names.labels.clone()), ..Default::default() }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(inputs: &Inputs, names: &Names) -> Option<Service> {
    let ports = &inputs.project.spec.ports;
    if ports.is_empty() {
        return None;
    }
    Some(Service {
        metadata: names.meta(names.project.to_owned()),
        spec: Some(ServiceSpec {
            // Headless: the gateway dials pod addresses, so no virtual IP is ever needed.
            cluster_ip: Some("None".into()),
            selector: Some(names.labels.clone()),
            ports: Some(
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.clone()),
                        port: p.port,
                        target_port: Some(IntOrString::String(p.name.clone())),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn network_policy(inputs: &Inputs, names: &Names) -> NetworkPolicy {
    let gateway = &inputs.config.gateway;
    let project_ports: Vec<NetworkPolicyPort> = inputs
        .project
        .spec
        .ports
        .iter()
        .map(|p| NetworkPolicyPort {
            port: Some(IntOrString::Int(p.port)),
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect();
    // With no ports there is nothing to reach: no rule, so the Ingress policy type denies all.
    let ingress = if project_ports.is_empty() {
        None
    } else {
        Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_owned(),
                        gateway.namespace.clone(),
                    )])),
                    ..Default::default()
                }),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(gateway.pod_labels.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: Some(project_ports),
        }])
    };

    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    "kube-system".to_owned(),
                )])),
                ..Default::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(
            ["UDP", "TCP"]
                .iter()
                .map(|protocol| NetworkPolicyPort {
                    port: Some(IntOrString::Int(53)),
                    protocol: Some((*protocol).into()),
                    ..Default::default()
                })
                .collect(),
        ),
    };
    let (v4, v6): (Vec<String>, Vec<String>) =
        inputs.config.network.denied_egress_cidrs.iter().cloned().partition(|cidr| !cidr.contains(':'));
    let internet = |cidr: &str, except: Vec<String>| NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr: cidr.into(), except: (!except.is_empty()).then_some(except) }),
        ..Default::default()
    };
    let public =
        NetworkPolicyEgressRule { to: Some(vec![internet("0.0.0.0/0", v4), internet("::/0", v6)]), ports: None };

    NetworkPolicy {
        metadata: names.meta(names.project.to_owned()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(names.labels.clone()), ..Default::default() }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress,
            egress: Some(vec![dns, public]),
        }),
    }
}
