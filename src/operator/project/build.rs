//! Project → the objects that make up its environment. Pure: no API calls, no clock, no
//! randomness (the preview token and replica count are decided by the caller).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
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
use crate::crd::names::{
    LOADER_CONTAINER, TOKEN_KEY, TOKEN_STATE, TokenState, WORKSPACE_SEEDED, ai_secret_name, preview_secret_name,
    project_labels, publish_secret_name, workspace_name,
};
use crate::operator::apply::stamp;

pub const WORKSPACE_PATH: &str = "/workspace";
/// The unprivileged user every project container runs as.
const USER_ID: i64 = 1000;

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
    pub token_state: TokenState,
    /// The project's publish token (kept for the project's life).
    pub publish_token: &'a str,
    /// The project's AI relay token (replaced, like the preview token, when the project stops).
    pub ai_token: &'a str,
    /// The workspace claim holds the repository already (see [`WORKSPACE_SEEDED`]).
    pub workspace_seeded: bool,
    /// Whether pods start with the loader (a Git source, and a workspace not known to be seeded,
    /// or a running pod that was started with it).
    pub load_workspace: bool,
}

/// Every child a project should have. `service` is absent when the project has no ports.
pub struct Desired {
    pub service_account: ServiceAccount,
    pub workspace: PersistentVolumeClaim,
    pub stateful_set: StatefulSet,
    pub service: Option<Service>,
    pub network_policy: NetworkPolicy,
    pub preview_secret: Secret,
    pub publish_secret: Secret,
    /// The AI relay's token for the environment; absent where the jurisdiction has no relay.
    pub ai_secret: Option<Secret>,
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
    let token_secret = |metadata: ObjectMeta, token: &str| Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), ByteString(token.as_bytes().to_vec()))])),
        ..Default::default()
    };
    // The gateway refuses a token issued for a stopped project by this annotation.
    let for_state = |name: String| ObjectMeta {
        annotations: Some(BTreeMap::from([(TOKEN_STATE.to_owned(), inputs.token_state.as_str().to_owned())])),
        ..names.meta(name)
    };
    let mut preview_secret = token_secret(for_state(preview_secret_name(name)), inputs.token);
    let mut publish_secret = token_secret(names.meta(publish_secret_name(name)), inputs.publish_token);
    let mut ai_secret =
        inputs.jurisdiction.ai.is_some().then(|| token_secret(for_state(ai_secret_name(name)), inputs.ai_token));

    stamp(&mut service_account);
    stamp(&mut workspace);
    stamp(&mut stateful_set);
    if let Some(s) = service.as_mut() {
        stamp(s);
    }
    stamp(&mut network_policy);
    stamp(&mut preview_secret);
    stamp(&mut publish_secret);
    if let Some(s) = ai_secret.as_mut() {
        stamp(s);
    }
    Desired {
        service_account,
        workspace,
        stateful_set,
        service,
        network_policy,
        preview_secret,
        publish_secret,
        ai_secret,
    }
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
    let seeded = inputs.workspace_seeded.then(|| BTreeMap::from([(WORKSPACE_SEEDED.to_owned(), "true".to_owned())]));
    PersistentVolumeClaim {
        metadata: ObjectMeta { annotations: seeded, ..names.meta(workspace_name(names.project)) },
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

fn workspace_mount() -> Vec<VolumeMount> {
    vec![VolumeMount { name: "workspace".into(), mount_path: WORKSPACE_PATH.into(), ..Default::default() }]
}

/// Dedicated compute: what is requested is exactly what may be used.
fn requests_equal_limits(amounts: BTreeMap<String, Quantity>) -> ResourceRequirements {
    ResourceRequirements { requests: Some(amounts.clone()), limits: Some(amounts), ..Default::default() }
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
/// fresh volume may hold `lost+found`). The clone happens in `.ooda-loading` on the volume itself
/// and its entries are renamed into place only once it is complete, so a failed fetch leaves the
/// workspace empty for the next attempt (which first removes what the failed one left), and
/// nothing touches the workspace directory's own owner or mode (root's on some volumes,
/// which the environment's user may not change). URL and ref arrive as environment variables,
/// never as shell text; the CRD refuses refs starting with `-`, and `--` ends git's options
/// anyway. A configured CA bundle is trusted beside the image's own certificates.
pub const LOADER_SCRIPT: &str = r#"set -eu
if [ -n "${OODA_GIT_CA_BUNDLE:-}" ]; then
  GIT_SSL_CAINFO="$(mktemp)"
  cat /etc/ssl/certs/ca-certificates.crt >"$GIT_SSL_CAINFO" 2>/dev/null || true
  printf '%s\n' "$OODA_GIT_CA_BUNDLE" >>"$GIT_SSL_CAINFO"
  export GIT_SSL_CAINFO
fi
cd "$WORKSPACE"
rm -rf .ooda-loading
if [ -n "$(ls -A | grep -v '^lost+found$' || true)" ]; then
  echo "ooda-loader: workspace is not empty; leaving it as it is"
  exit 0
fi
git init -q .ooda-loading
git -C .ooda-loading remote add origin -- "$GIT_URL"
git -C .ooda-loading fetch -q --depth 1 origin -- "${GIT_REF:-HEAD}"
git -C .ooda-loading checkout -q --detach FETCH_HEAD
for entry in .ooda-loading/* .ooda-loading/.[!.]* .ooda-loading/..?*; do
  if [ -e "$entry" ] || [ -L "$entry" ]; then mv "$entry" .; fi
done
rmdir .ooda-loading
echo "ooda-loader: checked out ${GIT_REF:-the default branch} of $GIT_URL"
"#;

/// The loader runs with the project's own dedicated compute: an init container's requests are not
/// added to the pod's (the larger of the two counts), so the pod, and the organisation's quota,
/// count exactly what the project asked for, and the clone gets all of it.
fn loader(inputs: &Inputs, dedicated: &BTreeMap<String, Quantity>) -> Option<Container> {
    if !inputs.load_workspace {
        return None;
    }
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
    if let Some(bundle) = &inputs.config.git_ca_bundle {
        env.push(EnvVar { name: "OODA_GIT_CA_BUNDLE".into(), value: Some(bundle.clone()), ..Default::default() });
    }
    Some(Container {
        name: LOADER_CONTAINER.into(),
        image: Some(inputs.config.defaults.loader_image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), LOADER_SCRIPT.into()]),
        env: Some(env),
        resources: Some(requests_equal_limits(dedicated.clone())),
        security_context: Some(restricted_container_context()),
        volume_mounts: Some(workspace_mount()),
        ..Default::default()
    })
}

/// Ready means serving the preview: the pod is Ready only while its preview port accepts
/// connections, so a wake ends, and the project runs, when a preview can be answered. Checked
/// often: a wake waits for it.
fn preview_probe(project: &Project) -> Option<Probe> {
    let port = project.spec.ports.iter().find(|p| p.preview)?;
    Some(Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(port.port), ..Default::default() }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        success_threshold: Some(1),
        timeout_seconds: Some(1),
        ..Default::default()
    })
}

/// The workspace container's environment: who it is, how it publishes its own site, and (where
/// the jurisdiction has an AI relay) the key and base URL every Anthropic client reads.
fn environment(inputs: &Inputs, names: &Names) -> Vec<EnvVar> {
    let secret_env = |name: &str, secret: String| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret, key: TOKEN_KEY.into(), optional: Some(false) }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let project_url = |path: &str| {
        let base = inputs.config.gateway.public_url.as_ref()?;
        Some(format!(
            "{}/api/orgs/{}/projects/{}/{path}",
            base.trim_end_matches('/'),
            inputs.organisation,
            names.project
        ))
    };
    let relay = inputs.jurisdiction.ai.is_some();
    vec![
        EnvVar { name: "OODA_ORGANISATION".into(), value: Some(inputs.organisation.to_owned()), ..Default::default() },
        EnvVar { name: "OODA_PROJECT".into(), value: Some(names.project.to_owned()), ..Default::default() },
        // The environment publishes its own site with this token (and only its own).
        secret_env("OODA_PUBLISH_TOKEN", publish_secret_name(names.project)),
    ]
    .into_iter()
    // Where the dev server should listen: the port the preview proxies to.
    .chain(inputs.project.spec.ports.iter().find(|p| p.preview).map(|port| EnvVar {
        name: "OODA_PREVIEW_PORT".into(),
        value: Some(port.port.to_string()),
        ..Default::default()
    }))
    .chain(project_url("publish").map(|url| EnvVar {
        name: "OODA_PUBLISH_URL".into(),
        value: Some(url),
        ..Default::default()
    }))
    // The relay's token, good for this project only: never the upstream's key.
    .chain(relay.then(|| secret_env("ANTHROPIC_API_KEY", ai_secret_name(names.project))))
    // Clients add `/v1/messages` to it.
    .chain(project_url("ai").filter(|_| relay).map(|url| EnvVar {
        name: "ANTHROPIC_BASE_URL".into(),
        value: Some(url),
        ..Default::default()
    }))
    .collect()
}

/// Required scheduling onto nodes in the jurisdiction's regions: data residency for compute.
fn region_affinity(regions: &[String]) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "topology.kubernetes.io/region".into(),
                        operator: "In".into(),
                        values: Some(regions.to_vec()),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
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
        env: Some(environment(inputs, names)),
        readiness_probe: preview_probe(project),
        resources: Some(requests_equal_limits(dedicated.clone())),
        security_context: Some(restricted_container_context()),
        volume_mounts: Some(workspace_mount()),
        ..Default::default()
    };
    let pod = PodSpec {
        service_account_name: Some(names.project.to_owned()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        runtime_class_name: Some(inputs.config.runtime_classes.for_isolation(project.spec.isolation).to_owned()),
        affinity: Some(region_affinity(&inputs.jurisdiction.regions)),
        tolerations: (!inputs.jurisdiction.tolerations.is_empty()).then(|| inputs.jurisdiction.tolerations.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(USER_ID),
            run_as_group: Some(USER_ID),
            fs_group: Some(USER_ID),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        init_containers: loader(inputs, &dedicated).map(|c| vec![c]),
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use k8s_openapi::api::core::v1::PodSpec;
    use serde_json::{Value, json};

    use super::*;
    use crate::crd::names::{MANAGED_BY, ORGANISATION, PROJECT};
    use crate::operator::apply::APPLIED_HASH;

    const UID: &str = "6f1d2c3b-0000-4000-8000-000000000001";

    fn config() -> OperatorConfig {
        OperatorConfig::parse("fixture", include_str!("../../../examples/operator-config.yaml"))
            .expect("the example configuration parses")
    }

    /// A Project `shop` in `org-acme` with the given spec.
    fn project(spec: Value) -> Project {
        serde_json::from_value(json!({
            "apiVersion": "ooda.run/v1alpha1",
            "kind": "Project",
            "metadata": { "name": "shop", "namespace": "org-acme", "uid": UID },
            "spec": spec,
        }))
        .expect("a valid Project")
    }

    /// The example project: image, git source, resources and one preview port.
    fn full_project() -> Project {
        project(json!({
            "image": "ghcr.io/example/devenv:latest",
            "source": { "git": { "url": "https://github.com/example/shop.git", "ref": "main" } },
            "isolation": "gvisor",
            "resources": { "cpu": "2", "memory": "4Gi", "storage": "10Gi" },
            "ports": [{ "name": "web", "port": 3000, "preview": true }],
            "lifecycle": { "state": "Running", "idleTimeout": "15m" },
        }))
    }

    fn build_in(project: &Project, config: &OperatorConfig, jurisdiction: &str, replicas: i32) -> Desired {
        desired(&Inputs {
            project,
            organisation: "acme",
            jurisdiction: &config.jurisdictions[jurisdiction],
            config,
            replicas,
            token: "secret-token",
            token_state: TokenState::Running,
            publish_token: "publish-token-of-the-tests",
            ai_token: "ai-token-of-the-tests",
            workspace_seeded: false,
            load_workspace: true,
        })
    }

    fn build(project: &Project) -> Desired {
        build_in(project, &config(), "eu", 1)
    }

    /// The example configuration, with an AI relay in the EU.
    fn config_with_relay() -> OperatorConfig {
        let mut config = config();
        config.jurisdictions.get_mut("eu").unwrap().ai = Some(crate::config::AiRelay {
            endpoint: "https://api.anthropic.com".into(),
            credentials_secret: "anthropic".into(),
            models: vec!["claude-sonnet-4-5".into()],
            max_request_bytes: 1 << 20,
            connect_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
        });
        config
    }

    fn pod(d: &Desired) -> &PodSpec {
        d.stateful_set.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn containers(d: &Desired) -> Vec<&Container> {
        let pod = pod(d);
        pod.init_containers.iter().flatten().chain(&pod.containers).collect()
    }

    fn container<'a>(d: &'a Desired, name: &str) -> &'a Container {
        containers(d).into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no container {name}"))
    }

    fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.as_deref())
    }

    fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect()
    }

    /// `(kind, metadata)` of every child object.
    fn metas(d: &Desired) -> Vec<(&'static str, &ObjectMeta)> {
        let mut all = vec![
            ("ServiceAccount", &d.service_account.metadata),
            ("PersistentVolumeClaim", &d.workspace.metadata),
            ("StatefulSet", &d.stateful_set.metadata),
            ("NetworkPolicy", &d.network_policy.metadata),
            ("Secret", &d.preview_secret.metadata),
            ("Secret", &d.publish_secret.metadata),
        ];
        if let Some(secret) = &d.ai_secret {
            all.push(("Secret", &secret.metadata));
        }
        if let Some(service) = &d.service {
            all.push(("Service", &service.metadata));
        }
        all
    }

    fn hash(meta: &ObjectMeta) -> &str {
        meta.annotations.as_ref().and_then(|a| a.get(APPLIED_HASH)).expect("stamped with the applied hash")
    }

    #[test]
    fn child_names_derive_from_the_project_name() {
        let d = build_in(&full_project(), &config_with_relay(), "eu", 1);
        assert_eq!(d.service_account.metadata.name.as_deref(), Some("shop"));
        assert_eq!(d.workspace.metadata.name.as_deref(), Some("shop-workspace"));
        assert_eq!(d.stateful_set.metadata.name.as_deref(), Some("shop"));
        assert_eq!(d.network_policy.metadata.name.as_deref(), Some("shop"));
        assert_eq!(d.preview_secret.metadata.name.as_deref(), Some("shop-preview"));
        assert_eq!(d.ai_secret.as_ref().unwrap().metadata.name.as_deref(), Some("shop-ai"));
        assert_eq!(d.service.as_ref().unwrap().metadata.name.as_deref(), Some("shop"));
        assert_eq!(pod(&d).service_account_name.as_deref(), Some("shop"));
    }

    #[test]
    fn pod_satisfies_pod_security_restricted_on_every_container_including_the_loader() {
        let d = build(&full_project());
        let pod = pod(&d);
        let pod_context = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(pod_context.run_as_non_root, Some(true));
        assert_eq!(pod_context.run_as_user, Some(1000));
        assert_eq!(pod_context.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));

        let names: Vec<&str> = containers(&d).iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["loader", "workspace"]);
        for c in containers(&d) {
            let context = c.security_context.as_ref().unwrap_or_else(|| panic!("{}: no security context", c.name));
            assert_eq!(context.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(context.privileged, Some(false), "{}", c.name);
            assert_ne!(context.run_as_non_root, Some(false), "{}", c.name);
            assert_ne!(context.run_as_user, Some(0), "{}", c.name);
            let drop = context.capabilities.as_ref().and_then(|caps| caps.drop.as_deref()).unwrap_or_default();
            assert!(drop.iter().any(|cap| cap == "ALL"), "{}: capabilities not dropped: {drop:?}", c.name);
            let added = context.capabilities.as_ref().and_then(|caps| caps.add.as_deref()).unwrap_or_default();
            assert!(added.is_empty(), "{}: adds capabilities {added:?}", c.name);
            if let Some(seccomp) = &context.seccomp_profile {
                assert_eq!(seccomp.type_, "RuntimeDefault", "{}", c.name);
            }
        }

        // Restricted also forbids host namespaces and every volume type but a few safe ones.
        assert_ne!(pod.host_network, Some(true));
        assert_ne!(pod.host_pid, Some(true));
        assert_ne!(pod.host_ipc, Some(true));
        for volume in pod.volumes.iter().flatten() {
            assert!(volume.persistent_volume_claim.is_some() && volume.host_path.is_none(), "{volume:?}");
        }
    }

    #[test]
    fn workspace_requests_equal_limits_and_come_from_the_spec() {
        let d = build(&full_project());
        let resources = container(&d, "workspace").resources.as_ref().expect("resources");
        assert_eq!(resources.requests, resources.limits);
        assert_eq!(resources.limits, Some(quantities(&[("cpu", "2"), ("memory", "4Gi")])));
    }

    #[test]
    fn workspace_resources_fall_back_to_the_config_defaults_without_spec_resources() {
        let d = build(&project(json!({})));
        let resources = container(&d, "workspace").resources.as_ref().expect("resources");
        assert_eq!(resources.requests, resources.limits);
        assert_eq!(resources.limits, Some(quantities(&[("cpu", "1"), ("memory", "2Gi")])));
        let claim = d.workspace.spec.as_ref().unwrap().resources.as_ref().unwrap();
        assert_eq!(claim.requests, Some(quantities(&[("storage", "5Gi")])));
    }

    #[test]
    fn each_missing_resource_falls_back_to_its_own_default() {
        let d = build(&project(json!({ "resources": { "memory": "8Gi" } })));
        let resources = container(&d, "workspace").resources.as_ref().expect("resources");
        assert_eq!(resources.requests, resources.limits);
        assert_eq!(resources.limits, Some(quantities(&[("cpu", "1"), ("memory", "8Gi")])));
        let claim = d.workspace.spec.as_ref().unwrap().resources.as_ref().unwrap();
        assert_eq!(claim.requests, Some(quantities(&[("storage", "5Gi")])));
    }

    #[test]
    fn image_comes_from_the_spec_or_the_config_default() {
        let custom = build(&project(json!({ "image": "registry.example/custom:1" })));
        assert_eq!(container(&custom, "workspace").image.as_deref(), Some("registry.example/custom:1"));
        let default = build(&project(json!({})));
        assert_eq!(container(&default, "workspace").image.as_deref(), Some("ooda.local/devenv:bookworm"));
    }

    #[test]
    fn pod_gets_no_service_account_token_and_no_service_links() {
        let d = build(&full_project());
        assert_eq!(pod(&d).automount_service_account_token, Some(false));
        assert_eq!(pod(&d).enable_service_links, Some(false));
        assert_eq!(d.service_account.automount_service_account_token, Some(false));
    }

    #[test]
    fn workspace_container_knows_its_organisation_and_project() {
        let d = build(&full_project());
        let workspace = container(&d, "workspace");
        assert_eq!(env(workspace, "OODA_ORGANISATION"), Some("acme"));
        assert_eq!(env(workspace, "OODA_PROJECT"), Some("shop"));
        assert_eq!(workspace.working_dir.as_deref(), Some(WORKSPACE_PATH));
    }

    #[test]
    fn runtime_class_maps_from_isolation_through_the_config() {
        let runtime_class = |config: &OperatorConfig, isolation: &str| {
            let d = build_in(&project(json!({ "isolation": isolation })), config, "eu", 1);
            pod(&d).runtime_class_name.clone()
        };
        let mut config = config();
        assert_eq!(runtime_class(&config, "gvisor").as_deref(), Some("gvisor"));
        assert_eq!(runtime_class(&config, "kata").as_deref(), Some("kata"));
        assert_eq!(pod(&build(&project(json!({})))).runtime_class_name.as_deref(), Some("gvisor"), "default");

        config.runtime_classes.gvisor = "runsc".into();
        config.runtime_classes.kata = "kata-qemu".into();
        assert_eq!(runtime_class(&config, "gvisor").as_deref(), Some("runsc"));
        assert_eq!(runtime_class(&config, "kata").as_deref(), Some("kata-qemu"));
    }

    #[test]
    fn pod_is_required_to_run_in_the_jurisdictions_regions() {
        let config = config();
        for (jurisdiction, regions) in [("eu", vec!["europe-west1", "eu-central-1"]), ("us", vec!["us-east-1"])] {
            let d = build_in(&full_project(), &config, jurisdiction, 1);
            let required = pod(&d)
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
                .expect("required node affinity");
            assert_eq!(required.node_selector_terms.len(), 1);
            let expressions = required.node_selector_terms[0].match_expressions.as_deref().unwrap_or_default();
            assert_eq!(expressions.len(), 1);
            assert_eq!(expressions[0].key, "topology.kubernetes.io/region");
            assert_eq!(expressions[0].operator, "In");
            assert_eq!(
                expressions[0].values.as_deref(),
                Some(regions.iter().map(|r| r.to_string()).collect::<Vec<_>>().as_slice())
            );
        }
    }

    #[test]
    fn workspace_claim_uses_the_jurisdictions_storage_class_and_the_storage_size() {
        let config = config();
        for (jurisdiction, class) in [("eu", "eu-ssd"), ("us", "us-ssd")] {
            let d = build_in(&full_project(), &config, jurisdiction, 1);
            let spec = d.workspace.spec.as_ref().expect("claim spec");
            assert_eq!(spec.storage_class_name.as_deref(), Some(class));
            assert_eq!(spec.access_modes.as_deref(), Some(["ReadWriteOnce".to_owned()].as_slice()));
            assert_eq!(spec.resources.as_ref().unwrap().requests, Some(quantities(&[("storage", "10Gi")])));
        }
        let d = build(&full_project());
        let volume = &pod(&d).volumes.as_deref().unwrap()[0];
        assert_eq!(volume.persistent_volume_claim.as_ref().unwrap().claim_name, "shop-workspace");
        for c in containers(&d) {
            let mount = &c.volume_mounts.as_deref().unwrap()[0];
            assert_eq!((mount.name.as_str(), mount.mount_path.as_str()), ("workspace", WORKSPACE_PATH), "{}", c.name);
        }
    }

    #[test]
    fn replicas_pass_through_to_the_stateful_set() {
        let config = config();
        for replicas in [0, 1, 3] {
            let d = build_in(&full_project(), &config, "eu", replicas);
            assert_eq!(d.stateful_set.spec.as_ref().unwrap().replicas, Some(replicas));
        }
    }

    #[test]
    fn every_child_is_labelled_namespaced_and_controlled_by_the_project() {
        let d = build_in(&full_project(), &config_with_relay(), "eu", 1);
        let children = metas(&d);
        assert_eq!(children.len(), 8, "the full project has a Service and an AI token too");
        for (kind, meta) in children {
            let labels = meta.labels.as_ref().unwrap_or_else(|| panic!("{kind}: no labels"));
            assert_eq!(labels.get(MANAGED_BY).map(String::as_str), Some("ooda"), "{kind}");
            assert_eq!(labels.get(ORGANISATION).map(String::as_str), Some("acme"), "{kind}");
            assert_eq!(labels.get(PROJECT).map(String::as_str), Some("shop"), "{kind}");
            assert_eq!(meta.namespace.as_deref(), Some("org-acme"), "{kind}");

            let owners = meta.owner_references.as_deref().unwrap_or_default();
            assert_eq!(owners.len(), 1, "{kind}: {owners:?}");
            let owner = &owners[0];
            assert_eq!(owner.controller, Some(true), "{kind}");
            assert_eq!(
                (owner.api_version.as_str(), owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("ooda.run/v1alpha1", "Project", "shop", UID),
                "{kind}"
            );
        }
    }

    #[test]
    fn stateful_set_selects_exactly_the_pods_its_template_labels() {
        let d = build(&full_project());
        let spec = d.stateful_set.spec.as_ref().unwrap();
        let template_labels = spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref());
        assert_eq!(spec.selector.match_labels.as_ref(), template_labels);
        assert_eq!(template_labels, d.stateful_set.metadata.labels.as_ref());
        assert_eq!(spec.service_name.as_deref(), Some("shop"));
    }

    #[test]
    fn ports_become_a_headless_service_and_gateway_only_ingress() {
        let d = build(&full_project());
        assert_eq!(
            container(&d, "workspace").ports,
            Some(vec![ContainerPort {
                name: Some("web".into()),
                container_port: 3000,
                protocol: Some("TCP".into()),
                ..Default::default()
            }])
        );

        let service = d.service.as_ref().expect("a Service for the ports").spec.as_ref().unwrap();
        assert_eq!(service.cluster_ip.as_deref(), Some("None"));
        assert_eq!(service.selector.as_ref(), d.stateful_set.metadata.labels.as_ref());
        let ports = service.ports.as_deref().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("web"), 3000));
        assert_eq!(ports[0].target_port, Some(IntOrString::String("web".into())));

        let policy = d.network_policy.spec.as_ref().unwrap();
        let ingress = policy.ingress.as_deref().expect("ingress rules");
        assert_eq!(ingress.len(), 1);
        let from = ingress[0].from.as_deref().unwrap();
        assert_eq!(from.len(), 1, "only the gateway");
        let namespace = from[0].namespace_selector.as_ref().and_then(|s| s.match_labels.as_ref()).unwrap();
        assert_eq!(namespace, &BTreeMap::from([("kubernetes.io/metadata.name".into(), "ooda-system".into())]));
        let pods = from[0].pod_selector.as_ref().and_then(|s| s.match_labels.as_ref()).unwrap();
        assert_eq!(pods, &BTreeMap::from([("app.kubernetes.io/name".into(), "ooda-gateway".into())]));
        assert!(from[0].ip_block.is_none());
        let ports: Vec<_> =
            ingress[0].ports.iter().flatten().map(|p| (p.port.clone(), p.protocol.as_deref())).collect();
        assert_eq!(ports, [(Some(IntOrString::Int(3000)), Some("TCP"))]);
    }

    #[test]
    fn the_pod_is_ready_only_while_its_preview_port_accepts_connections() {
        let d = build(&full_project());
        let probe = container(&d, "workspace").readiness_probe.as_ref().expect("a readiness probe");
        let tcp = probe.tcp_socket.as_ref().expect("a TCP probe");
        assert_eq!(tcp.port, IntOrString::Int(3000), "the preview port");
        assert_eq!(probe.period_seconds, Some(1));
        let mut no_preview = full_project();
        no_preview.spec.ports.iter_mut().for_each(|p| p.preview = false);
        assert!(container(&build(&no_preview), "workspace").readiness_probe.is_none());
    }

    #[test]
    fn without_ports_there_is_no_service_and_ingress_is_denied_entirely() {
        let d = build(&project(json!({})));
        assert!(d.service.is_none());
        assert!(container(&d, "workspace").ports.is_none());
        let policy = d.network_policy.spec.as_ref().unwrap();
        assert_eq!(policy.ingress, None);
        assert_eq!(policy.policy_types.as_deref(), Some(["Ingress".to_owned(), "Egress".to_owned()].as_slice()));
        assert_eq!(
            policy.pod_selector.as_ref().and_then(|s| s.match_labels.as_ref()),
            d.stateful_set.metadata.labels.as_ref()
        );
    }

    #[test]
    fn egress_allows_the_internet_except_every_denied_cidr_plus_cluster_dns() {
        let config = config();
        let d = build_in(&full_project(), &config, "eu", 1);
        let egress = d.network_policy.spec.as_ref().unwrap().egress.as_deref().expect("egress rules");
        assert_eq!(egress.len(), 2);

        let dns = egress.iter().find(|r| r.to.iter().flatten().all(|peer| peer.ip_block.is_none())).expect("dns");
        let dns_ports: Vec<_> = dns.ports.iter().flatten().map(|p| (p.port.clone(), p.protocol.as_deref())).collect();
        assert_eq!(dns_ports, [(Some(IntOrString::Int(53)), Some("UDP")), (Some(IntOrString::Int(53)), Some("TCP"))]);
        let dns_peer = &dns.to.as_deref().unwrap()[0];
        assert_eq!(
            dns_peer.namespace_selector.as_ref().and_then(|s| s.match_labels.as_ref()),
            Some(&BTreeMap::from([("kubernetes.io/metadata.name".into(), "kube-system".into())]))
        );
        assert_eq!(
            dns_peer.pod_selector.as_ref().and_then(|s| s.match_labels.as_ref()),
            Some(&BTreeMap::from([("k8s-app".into(), "kube-dns".into())]))
        );

        let public = egress.iter().find(|r| r.to.iter().flatten().any(|peer| peer.ip_block.is_some())).unwrap();
        assert_eq!(public.ports, None, "every port of the public internet");
        let blocks: Vec<&IPBlock> = public.to.iter().flatten().filter_map(|peer| peer.ip_block.as_ref()).collect();
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            blocks,
            [
                &IPBlock {
                    cidr: "0.0.0.0/0".into(),
                    except: Some(strings(&[
                        "10.0.0.0/8",
                        "172.16.0.0/12",
                        "192.168.0.0/16",
                        "100.64.0.0/10",
                        "169.254.0.0/16",
                        "127.0.0.0/8",
                        "198.18.0.0/16"
                    ])),
                },
                &IPBlock { cidr: "::/0".into(), except: Some(strings(&["fc00::/7", "fe80::/10"])) },
            ]
        );
        // The denied list is the configuration's, not a built-in one.
        let all_denied: Vec<&String> = blocks.iter().flat_map(|b| b.except.iter().flatten()).collect();
        assert_eq!(all_denied.len(), config.network.denied_egress_cidrs.len());
    }

    #[test]
    fn an_address_family_with_nothing_denied_has_no_except_list() {
        let mut config = config();
        config.network.denied_egress_cidrs = vec!["10.0.0.0/8".into()];
        let d = build_in(&full_project(), &config, "eu", 1);
        let egress = d.network_policy.spec.as_ref().unwrap().egress.as_deref().unwrap();
        let blocks: Vec<&IPBlock> =
            egress.iter().flat_map(|r| r.to.iter().flatten()).filter_map(|p| p.ip_block.as_ref()).collect();
        assert_eq!(blocks[0].except.as_deref(), Some(["10.0.0.0/8".to_owned()].as_slice()));
        assert_eq!((blocks[1].cidr.as_str(), blocks[1].except.as_ref()), ("::/0", None));
    }

    #[test]
    fn loader_passes_git_url_and_ref_as_environment_never_as_command_text() {
        let url = "https://github.com/example/shop.git";
        let d = build(&full_project());
        let loader = container(&d, "loader");
        assert_eq!(env(loader, "GIT_URL"), Some(url));
        assert_eq!(env(loader, "GIT_REF"), Some("main"));
        assert_eq!(env(loader, "WORKSPACE"), Some(WORKSPACE_PATH));
        assert_eq!(env(loader, "GIT_TERMINAL_PROMPT"), Some("0"));
        assert_eq!(loader.image.as_deref(), Some("ooda.local/devenv:bookworm"));
        assert_eq!(env(loader, "OODA_GIT_CA_BUNDLE"), None, "no bundle configured");
        let command = loader.command.as_deref().expect("a command");
        assert_eq!(command, ["/bin/sh", "-c", LOADER_SCRIPT]);
        assert!(loader.args.is_none());
        for text in command {
            assert!(!text.contains(url) && !text.contains("github.com"), "URL in command text: {text}");
        }
        let resources = loader.resources.as_ref().expect("loader resources");
        assert_eq!(resources.requests, resources.limits);
        assert_eq!(loader.resources, container(&d, "workspace").resources, "the project's own compute, no more");
    }

    #[test]
    fn a_configured_git_ca_bundle_reaches_the_loader_only() {
        let mut config = config();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        config.git_ca_bundle = Some(pem.into());
        let d = build_in(&full_project(), &config, "eu", 1);
        assert_eq!(env(container(&d, "loader"), "OODA_GIT_CA_BUNDLE"), Some(pem));
        assert_eq!(env(container(&d, "workspace"), "OODA_GIT_CA_BUNDLE"), None);
    }

    #[test]
    fn the_dev_server_is_told_its_preview_port() {
        let d = build(&full_project());
        assert_eq!(env(container(&d, "workspace"), "OODA_PREVIEW_PORT"), Some("3000"));
        let no_preview = build(&project(json!({ "ports": [{ "name": "db", "port": 5432 }] })));
        assert_eq!(env(container(&no_preview, "workspace"), "OODA_PREVIEW_PORT"), None);
    }

    #[test]
    fn pods_carry_their_jurisdictions_tolerations_and_no_other() {
        let config = config();
        let real = build_in(&full_project(), &config, "eu-real", 1);
        let tolerations = pod(&real).tolerations.as_deref().expect("tolerations");
        assert_eq!(tolerations, config.jurisdictions["eu-real"].tolerations);
        assert_eq!(tolerations[0].key.as_deref(), Some("ooda.run/real-node"));
        let regions = &pod(&real).affinity.as_ref().unwrap().node_affinity.as_ref().unwrap();
        let term =
            &regions.required_during_scheduling_ignored_during_execution.as_ref().unwrap().node_selector_terms[0];
        assert_eq!(
            term.match_expressions.as_ref().unwrap()[0].values.as_deref(),
            Some(&["europe-west4".to_owned()][..])
        );
        assert_eq!(pod(&build_in(&full_project(), &config, "eu", 1)).tolerations, None);
    }

    #[test]
    fn hostile_git_values_stay_out_of_the_command() {
        let url = "https://example.com/$(touch pwned).git";
        let reference = "main;reboot";
        let d = build(&project(json!({ "source": { "git": { "url": url, "ref": reference } } })));
        let loader = container(&d, "loader");
        assert_eq!(loader.command.as_deref().unwrap(), ["/bin/sh", "-c", LOADER_SCRIPT]);
        assert_eq!((env(loader, "GIT_URL"), env(loader, "GIT_REF")), (Some(url), Some(reference)));
    }

    #[test]
    fn loader_without_a_ref_leaves_git_ref_unset() {
        let d = build(&project(json!({ "source": { "git": { "url": "https://example.com/r.git" } } })));
        let loader = container(&d, "loader");
        assert_eq!(env(loader, "GIT_URL"), Some("https://example.com/r.git"));
        assert!(loader.env.iter().flatten().all(|e| e.name != "GIT_REF"));
    }

    #[test]
    fn a_seeded_workspace_is_marked_on_its_claim_and_pods_may_start_without_the_loader() {
        let project = full_project();
        let config = config();
        let jurisdiction = &config.jurisdictions["eu"];
        let build = |workspace_seeded, load_workspace| {
            desired(&Inputs {
                project: &project,
                organisation: "acme",
                jurisdiction,
                config: &config,
                replicas: 1,
                token: "t",
                token_state: TokenState::Running,
                publish_token: "p",
                ai_token: "a",
                workspace_seeded,
                load_workspace,
            })
        };
        let first = build(false, true);
        assert!(pod(&first).init_containers.as_ref().is_some_and(|c| c[0].name == LOADER_CONTAINER));
        assert_eq!(first.workspace.metadata.annotations.as_ref().and_then(|a| a.get(WORKSPACE_SEEDED)), None);
        let later = build(true, false);
        assert_eq!(pod(&later).init_containers, None);
        assert_eq!(later.workspace.metadata.annotations.as_ref().unwrap()[WORKSPACE_SEEDED], "true");
    }

    #[test]
    fn there_is_no_loader_without_a_git_source() {
        for spec in [json!({}), json!({ "source": {} })] {
            let d = build(&project(spec.clone()));
            assert!(pod(&d).init_containers.is_none(), "{spec}");
            assert_eq!(containers(&d).len(), 1, "{spec}");
        }
    }

    #[test]
    fn preview_secret_holds_the_token_and_the_state_it_was_issued_for() {
        let config = config_with_relay();
        let project = full_project();
        let d = desired(&Inputs {
            project: &project,
            organisation: "acme",
            jurisdiction: &config.jurisdictions["eu"],
            config: &config,
            replicas: 0,
            token: "tok-123",
            token_state: TokenState::Stopped,
            publish_token: "publish-token-of-the-tests",
            ai_token: "ai-token-of-the-tests",
            workspace_seeded: false,
            load_workspace: true,
        });
        for (secret, token) in
            [(&d.preview_secret, "tok-123"), (d.ai_secret.as_ref().unwrap(), "ai-token-of-the-tests")]
        {
            assert_eq!(secret.type_.as_deref(), Some("Opaque"));
            let data = BTreeMap::from([(TOKEN_KEY.to_owned(), ByteString(token.as_bytes().to_vec()))]);
            assert_eq!(secret.data, Some(data));
            assert!(secret.string_data.is_none());
            let annotations = secret.metadata.annotations.as_ref().unwrap();
            assert_eq!(annotations.get(TOKEN_STATE).map(String::as_str), Some("stopped"));
            assert!(annotations.values().all(|v| !v.contains(token)), "token leaked into {annotations:?}");
        }
    }

    #[test]
    fn where_the_jurisdiction_has_an_ai_relay_clients_get_the_projects_token_and_the_relays_url() {
        let secret_of = |c: &Container, name: &str| {
            let var = c.env.iter().flatten().find(|e| e.name == name)?;
            assert!(var.value.is_none(), "{name} must come from a Secret, not the pod spec");
            let selector = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((selector.name.clone(), selector.key.clone()))
        };
        let without = build_in(&full_project(), &config(), "eu", 1);
        let workspace = container(&without, "workspace");
        assert_eq!(secret_of(workspace, "ANTHROPIC_API_KEY"), None, "no relay: no key");
        assert_eq!(env(workspace, "ANTHROPIC_BASE_URL"), None);
        assert!(without.ai_secret.is_none(), "no relay: no token to hold");

        let mut config = config_with_relay();
        let with = build_in(&full_project(), &config, "eu", 1);
        assert!(with.ai_secret.is_some());
        let workspace = container(&with, "workspace");
        assert_eq!(secret_of(workspace, "ANTHROPIC_API_KEY"), Some(("shop-ai".into(), TOKEN_KEY.into())));
        assert_eq!(env(workspace, "ANTHROPIC_BASE_URL"), None, "no public URL configured");
        let loader = container(&with, "loader");
        assert_eq!(secret_of(loader, "ANTHROPIC_API_KEY"), None, "the loader runs the repository's code only");

        config.gateway.public_url = Some("https://ooda.example.com/".into());
        let with_url = build_in(&full_project(), &config, "eu", 1);
        assert_eq!(
            env(container(&with_url, "workspace"), "ANTHROPIC_BASE_URL"),
            Some("https://ooda.example.com/api/orgs/acme/projects/shop/ai")
        );
        let rendered = serde_json::to_string(&with_url.stateful_set).unwrap();
        assert!(!rendered.contains("ai-token-of-the-tests"), "the token travels only in its Secret");
    }

    #[test]
    fn the_token_does_not_influence_the_secrets_applied_hash() {
        let config = config();
        let project = full_project();
        let with_token = |token: &str| {
            desired(&Inputs {
                project: &project,
                organisation: "acme",
                jurisdiction: &config.jurisdictions["eu"],
                config: &config,
                replicas: 1,
                token,
                token_state: TokenState::Running,
                publish_token: "publish-token-of-the-tests",
                ai_token: "ai-token-of-the-tests",
                workspace_seeded: false,
                load_workspace: true,
            })
        };
        let (a, b) = (with_token("first"), with_token("second"));
        assert_eq!(hash(&a.preview_secret.metadata), hash(&b.preview_secret.metadata));
        assert_ne!(a.preview_secret.data, b.preview_secret.data);
    }

    #[test]
    fn building_twice_gives_identical_objects_and_hashes() {
        let project = full_project();
        let (a, b) = (build(&project), build(&project));
        assert_eq!(a.service_account, b.service_account);
        assert_eq!(a.workspace, b.workspace);
        assert_eq!(a.stateful_set, b.stateful_set);
        assert_eq!(a.service, b.service);
        assert_eq!(a.network_policy, b.network_policy);
        assert_eq!(a.preview_secret, b.preview_secret);
        for ((kind, meta_a), (_, meta_b)) in metas(&a).into_iter().zip(metas(&b)) {
            assert_eq!(hash(meta_a), hash(meta_b), "{kind}");
            assert_eq!(hash(meta_a).len(), 16, "{kind}: 64-bit hex hash");
        }
    }

    #[test]
    fn changing_replicas_changes_only_the_stateful_sets_hash() {
        let config = config();
        let project = full_project();
        let (one, zero) = (build_in(&project, &config, "eu", 1), build_in(&project, &config, "eu", 0));
        assert_ne!(hash(&one.stateful_set.metadata), hash(&zero.stateful_set.metadata));
        for ((kind, meta_one), (_, meta_zero)) in metas(&one).into_iter().zip(metas(&zero)) {
            if kind != "StatefulSet" {
                assert_eq!(hash(meta_one), hash(meta_zero), "{kind}");
            }
        }
    }

    #[test]
    fn changing_the_spec_changes_the_hash_of_the_affected_children() {
        let config = config();
        let bigger = project(json!({ "resources": { "storage": "20Gi" } }));
        let (a, b) = (build(&project(json!({}))), build_in(&bigger, &config, "eu", 1));
        assert_ne!(hash(&a.workspace.metadata), hash(&b.workspace.metadata));
        assert_eq!(hash(&a.service_account.metadata), hash(&b.service_account.metadata));
    }

    // The loader script, run for real against local repositories.

    /// A directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let unique = format!(
                "ooda-{label}-{}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            );
            let path = std::env::temp_dir().join(unique);
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `git` with no user or system configuration, so the host's settings cannot interfere.
    fn git(home: &Path, dir: &Path, args: &[&str]) -> Output {
        let output = Command::new("git")
            .args(["-c", "user.email=t@t", "-c", "user.name=t", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .output()
            .expect("`git` must be installed to test the loader script");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// A repository with `README.md` on branch `main` and `feature.txt` on branch `feature`.
    struct Repository {
        dir: TempDir,
        home: TempDir,
    }

    impl Repository {
        fn new() -> Self {
            let (dir, home) = (TempDir::new("repo"), TempDir::new("home"));
            let git = |args: &[&str]| git(home.path(), dir.path(), args);
            git(&["init", "-q"]);
            std::fs::write(dir.path().join("README.md"), "hello\n").unwrap();
            git(&["add", "README.md"]);
            git(&["commit", "-q", "-m", "first"]);
            git(&["checkout", "-q", "-b", "feature"]);
            std::fs::write(dir.path().join("feature.txt"), "feature\n").unwrap();
            git(&["add", "feature.txt"]);
            git(&["commit", "-q", "-m", "feature"]);
            git(&["checkout", "-q", "main"]);
            Self { dir, home }
        }

        fn url(&self) -> String {
            format!("file://{}", self.dir.path().display())
        }

        fn commit_of(&self, reference: &str) -> String {
            let out = git(self.home.path(), self.dir.path(), &["rev-parse", reference]);
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        }
    }

    /// Runs the loader script as the init container would.
    fn run_loader(workspace: &Path, home: &Path, url: &str, reference: Option<&str>) -> Output {
        let mut command = Command::new("sh");
        command
            .args(["-c", LOADER_SCRIPT])
            .env("WORKSPACE", workspace)
            .env("GIT_URL", url)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE");
        match reference {
            Some(reference) => command.env("GIT_REF", reference),
            None => command.env_remove("GIT_REF"),
        };
        command.output().expect("run sh")
    }

    fn succeeded(output: &Output) -> bool {
        if !output.status.success() {
            eprintln!(
                "loader failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output.status.success()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn loader_clones_the_requested_branch_into_an_empty_workspace() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        let output = run_loader(workspace.path(), repo.home.path(), &repo.url(), Some("feature"));
        assert!(succeeded(&output));
        assert_eq!(std::fs::read_to_string(workspace.path().join("feature.txt")).unwrap(), "feature\n");
        assert_eq!(std::fs::read_to_string(workspace.path().join("README.md")).unwrap(), "hello\n");
        let head = git(repo.home.path(), workspace.path(), &["rev-parse", "HEAD"]);
        assert_eq!(String::from_utf8(head.stdout).unwrap().trim(), repo.commit_of("feature"));
    }

    #[test]
    fn loader_accepts_a_plain_path_as_url() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        let url = repo.dir.path().display().to_string();
        assert!(succeeded(&run_loader(workspace.path(), repo.home.path(), &url, Some("main"))));
        assert!(workspace.path().join("README.md").is_file());
        assert!(!workspace.path().join("feature.txt").exists());
    }

    #[test]
    fn loader_without_a_ref_checks_out_the_default_branch() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        assert!(succeeded(&run_loader(workspace.path(), repo.home.path(), &repo.url(), None)));
        assert!(workspace.path().join("README.md").is_file());
        assert!(!workspace.path().join("feature.txt").exists());
    }

    #[test]
    fn loader_leaves_a_workspace_with_contents_untouched() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        std::fs::write(workspace.path().join("notes.txt"), "mine\n").unwrap();
        let output = run_loader(workspace.path(), repo.home.path(), &repo.url(), Some("main"));
        assert!(succeeded(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("not empty"));
        assert_eq!(entries(workspace.path()), ["notes.txt"], "no .git, no checkout");
        assert_eq!(std::fs::read_to_string(workspace.path().join("notes.txt")).unwrap(), "mine\n");
    }

    #[test]
    fn loader_counts_a_hidden_file_as_contents() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        std::fs::write(workspace.path().join(".bashrc"), "").unwrap();
        assert!(succeeded(&run_loader(workspace.path(), repo.home.path(), &repo.url(), Some("main"))));
        assert_eq!(entries(workspace.path()), [".bashrc"]);
    }

    #[test]
    fn loader_treats_a_workspace_with_only_lost_and_found_as_empty() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        std::fs::create_dir(workspace.path().join("lost+found")).unwrap();
        assert!(succeeded(&run_loader(workspace.path(), repo.home.path(), &repo.url(), Some("main"))));
        assert!(workspace.path().join("README.md").is_file());
        assert!(workspace.path().join(".git").is_dir());
        assert!(workspace.path().join("lost+found").is_dir());
    }

    #[test]
    fn loader_seeds_a_root_owned_workspace_as_an_unprivileged_user_and_leaves_its_directory_alone() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        std::fs::set_permissions(workspace.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let before = std::fs::metadata(workspace.path()).unwrap();
        // As a local-path or hostPath volume is: the directory belongs to root, the environment's
        // user is someone else (who owns the repository it fetches, as git wants).
        let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(repo.dir.path()).status().unwrap();
        assert!(chown.success());
        let output = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", LOADER_SCRIPT])
            .env("WORKSPACE", workspace.path())
            .env("GIT_URL", repo.url())
            .env("GIT_REF", "main")
            .env("HOME", workspace.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("run setpriv");
        assert!(succeeded(&output));
        assert_eq!(entries(workspace.path()), [".git", "README.md"]);
        let after = std::fs::metadata(workspace.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((after.uid(), after.mode()), (before.uid(), before.mode()));
    }

    #[test]
    fn a_failed_attempt_leaves_nothing_the_next_one_mistakes_for_contents() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        let missing = format!("file://{}/missing", workspace.path().display());
        assert!(!run_loader(workspace.path(), repo.home.path(), &missing, Some("main")).status.success());
        assert!(succeeded(&run_loader(workspace.path(), repo.home.path(), &repo.url(), Some("main"))));
        assert_eq!(entries(workspace.path()), [".git", "README.md"], "the retry seeded the workspace");
    }

    #[test]
    fn loader_fails_when_the_repository_cannot_be_fetched() {
        let home = TempDir::new("home");
        let workspace = TempDir::new("workspace");
        let missing = format!("file://{}/missing", workspace.path().display());
        let output = run_loader(workspace.path(), home.path(), &missing, Some("main"));
        assert!(!output.status.success(), "a failed fetch must fail the init container");
    }

    #[test]
    fn loader_fails_for_a_ref_the_repository_does_not_have() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        let output = run_loader(workspace.path(), repo.home.path(), &repo.url(), Some("no-such-branch"));
        assert!(!output.status.success());
    }

    #[test]
    fn loader_does_not_interpret_shell_text_in_the_url_or_ref() {
        let repo = Repository::new();
        let workspace = TempDir::new("workspace");
        let marker = workspace.path().join("pwned");
        let url = format!("{}$(touch {})", repo.url(), marker.display());
        let reference = format!("main;touch {}", marker.display());
        let output = run_loader(workspace.path(), repo.home.path(), &url, Some(&reference));
        assert!(!output.status.success());
        assert!(!marker.exists(), "shell text in GIT_URL or GIT_REF was executed");
    }
}
