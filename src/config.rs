//! Operator configuration: where each jurisdiction's data may live, which RuntimeClass backs each
//! isolation level, how to recognise the gateway, and defaults for projects. Read from YAML at
//! start-up; anything invalid stops the operator with a message naming the setting.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

use crate::crd::Isolation;
use crate::duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// Jurisdiction name (an Organisation's `spec.jurisdiction`) → where its data may live.
    pub jurisdictions: BTreeMap<String, Jurisdiction>,
    /// RuntimeClass name for each isolation level.
    #[serde(default)]
    pub runtime_classes: RuntimeClasses,
    /// How the gateway's pods are recognised: projects accept traffic only from them.
    pub gateway: GatewaySelector,
    /// Domain under which `<project>--<org>.<previewDomain>` preview hosts live.
    pub preview_domain: String,
    /// Egress rules of every project.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Values used where a Project leaves a field out.
    pub defaults: ProjectDefaults,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Jurisdiction {
    /// Values of `topology.kubernetes.io/region` the jurisdiction's pods may run in.
    pub regions: Vec<String>,
    /// StorageClass of the jurisdiction's workspaces.
    pub storage_class: String,
    /// Object storage for published sites; publishing is refused where absent.
    #[serde(default)]
    pub sites: Option<SitesStorage>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SitesStorage {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeClasses {
    pub gvisor: String,
    pub kata: String,
}

impl Default for RuntimeClasses {
    fn default() -> Self {
        Self { gvisor: "gvisor".into(), kata: "kata".into() }
    }
}

impl RuntimeClasses {
    pub fn for_isolation(&self, isolation: Isolation) -> &str {
        match isolation {
            Isolation::Gvisor => &self.gvisor,
            Isolation::Kata => &self.kata,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySelector {
    /// Namespace the gateway runs in.
    pub namespace: String,
    /// Labels every gateway pod carries.
    pub pod_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfig {
    /// Destinations projects may never reach, on top of everything inside the cluster.
    pub denied_egress_cidrs: Vec<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        let denied = [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "127.0.0.0/8",
            "fc00::/7",
            "fe80::/10",
        ];
        Self { denied_egress_cidrs: denied.iter().map(|s| (*s).to_owned()).collect() }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectDefaults {
    /// Development environment image.
    pub image: String,
    /// Image of the project loader init container; must provide `sh` and `git`.
    pub loader_image: String,
    pub resources: DefaultResources,
    /// Idle time before hibernation, e.g. `15m`.
    pub idle_timeout: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DefaultResources {
    pub cpu: Quantity,
    pub memory: Quantity,
    pub storage: Quantity,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("{path}: {setting}: {problem}")]
    Invalid { path: String, setting: String, problem: String },
}

impl OperatorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: display.clone(), source })?;
        Self::parse(&display, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        let config: Self =
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
        config.validate().map_err(|(setting, problem)| ConfigError::Invalid {
            path: path.to_owned(),
            setting,
            problem,
        })?;
        Ok(config)
    }

    /// The idle timeout used when a project gives none (validated at load).
    pub fn default_idle_timeout(&self) -> Duration {
        duration::parse(&self.defaults.idle_timeout).expect("validated at load")
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let invalid = |setting: &str, problem: &str| Err((setting.to_owned(), problem.to_owned()));
        if self.jurisdictions.is_empty() {
            return invalid("jurisdictions", "at least one jurisdiction is required");
        }
        for (name, j) in &self.jurisdictions {
            let at = |field: &str| format!("jurisdictions.{name}.{field}");
            if !is_dns_label(name, 63) {
                return invalid(&format!("jurisdictions.{name}"), "a jurisdiction name must be a DNS-1123 label");
            }
            if j.regions.is_empty() || j.regions.iter().any(|r| r.trim().is_empty()) {
                return invalid(&at("regions"), "list at least one region, none empty");
            }
            if !is_dns_subdomain(&j.storage_class) {
                return invalid(&at("storageClass"), "must be a StorageClass name");
            }
            if let Some(sites) = &j.sites {
                if !(sites.endpoint.starts_with("https://") || sites.endpoint.starts_with("http://")) {
                    return invalid(&at("sites.endpoint"), "must be an http:// or https:// URL");
                }
                if sites.bucket.is_empty() || sites.region.is_empty() {
                    return invalid(&at("sites"), "bucket and region are required");
                }
            }
        }
        for (setting, class) in [
            ("runtimeClasses.gvisor", &self.runtime_classes.gvisor),
            ("runtimeClasses.kata", &self.runtime_classes.kata),
        ] {
            if !is_dns_subdomain(class) {
                return invalid(setting, "must be a RuntimeClass name");
            }
        }
        if !is_dns_label(&self.gateway.namespace, 63) {
            return invalid("gateway.namespace", "must be a namespace name");
        }
        if self.gateway.pod_labels.is_empty() {
            return invalid(
                "gateway.podLabels",
                "at least one label is required, or every pod would count as the gateway",
            );
        }
        if !self.preview_domain.split('.').all(|label| is_dns_label(label, 63)) || !self.preview_domain.contains('.') {
            return invalid("previewDomain", "must be a DNS domain such as preview.example.com");
        }
        for cidr in &self.network.denied_egress_cidrs {
            if parse_cidr(cidr).is_none() {
                return invalid("network.deniedEgressCidrs", &format!("{cidr:?} is not a CIDR such as 10.0.0.0/8"));
            }
        }
        if self.defaults.image.trim().is_empty() {
            return invalid("defaults.image", "an image is required");
        }
        if self.defaults.loader_image.trim().is_empty() {
            return invalid("defaults.loaderImage", "an image is required");
        }
        for (setting, quantity) in [
            ("defaults.resources.cpu", &self.defaults.resources.cpu),
            ("defaults.resources.memory", &self.defaults.resources.memory),
            ("defaults.resources.storage", &self.defaults.resources.storage),
        ] {
            if !is_positive_quantity(&quantity.0) {
                return invalid(setting, "must be a positive quantity such as 2, 500m or 4Gi");
            }
        }
        match duration::parse(&self.defaults.idle_timeout) {
            Ok(d) if (Duration::from_secs(10)..=Duration::from_secs(720 * 3600)).contains(&d) => {}
            _ => return invalid("defaults.idleTimeout", "must be a duration such as 15m, between 10s and 720h"),
        }
        Ok(())
    }
}

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|label| is_dns_label(label, 63))
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

/// A Kubernetes quantity greater than zero: `<digits>[.<digits>]<suffix>`.
fn is_positive_quantity(s: &str) -> bool {
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let valid_number = !number.is_empty() && number.matches('.').count() <= 1 && number != ".";
    let valid_suffix =
        matches!(suffix, "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei");
    valid_number && valid_suffix && number.bytes().any(|b| (b'1'..=b'9').contains(&b))
}
