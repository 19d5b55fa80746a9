//! Operator configuration: where each jurisdiction's data may live, which RuntimeClass backs each
//! isolation level, how to recognise the gateway, and defaults for projects. Read from YAML at
//! start-up; anything invalid stops the operator with a message naming the setting.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

use crate::crd::Isolation;
use crate::duration;

/// Certificates travel in every loader's pod spec: a bound keeps pods small.
const MAX_CA_BUNDLE_BYTES: usize = 64 * 1024;

/// The configuration, every value parsed into the type it is used as.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorConfig {
    pub jurisdictions: BTreeMap<String, Jurisdiction>,
    pub runtime_classes: RuntimeClasses,
    pub gateway: GatewaySelector,
    pub preview_domain: String,
    pub sites_domain: Option<String>,
    pub publishing: Publishing,
    pub network: NetworkConfig,
    pub git_ca_bundle: Option<String>,
    pub defaults: ProjectDefaults,
}

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    /// Jurisdiction name (an Organisation's `spec.jurisdiction`) → where its data may live.
    pub jurisdictions: BTreeMap<String, Jurisdiction>,
    /// RuntimeClass name for each isolation level.
    #[serde(default)]
    pub runtime_classes: RuntimeClasses,
    /// How the gateway's pods are recognised: projects accept traffic only from them.
    pub gateway: GatewaySelector,
    /// Domain under which `<project>--<org>.<previewDomain>` preview hosts live.
    pub preview_domain: String,
    /// Domain under which `<project>--<org>.<sitesDomain>` serves published sites; none: not served.
    #[serde(default)]
    pub sites_domain: Option<String>,
    /// Limits on published archives.
    #[serde(default)]
    pub publishing: RawPublishing,
    /// Egress rules of every project.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Certificate authorities (PEM) the project loader trusts for `https://` Git URLs besides
    /// its image's own: an organisation's internal Git server, say.
    #[serde(default)]
    pub git_ca_bundle: Option<String>,
    /// Values used where a Project leaves a field out.
    pub defaults: RawDefaults,
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
    /// Tolerations every project pod of the jurisdiction carries: how its pods reach a tainted
    /// node pool of its own.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// The AI relay's upstream for the jurisdiction's organisations; the relay refuses (409)
    /// where absent.
    #[serde(default)]
    pub ai: Option<AiRelay>,
}

/// An Anthropic Messages API endpoint for one jurisdiction, and what may be asked of it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiRelay {
    /// `https://…` (or `http://` for a server on the same host), without `/v1`.
    pub endpoint: String,
    /// Secret in ooda's own namespace holding the API key under `apiKey`.
    pub credentials_secret: String,
    /// Model names requests may name; any other is refused (400).
    pub models: Vec<String>,
    /// Largest request body, as a quantity such as `4Mi` (413 above it).
    #[serde(default = "default_ai_request_bytes", deserialize_with = "byte_size")]
    pub max_request_bytes: u64,
    /// Longest wait for a connection to the endpoint.
    #[serde(default = "default_ai_connect_timeout", deserialize_with = "duration_setting")]
    pub connect_timeout: Duration,
    /// Longest silence from the endpoint: before the answer's head, or between two pieces of
    /// its body. Anthropic's streams send a `ping` at least every few seconds.
    #[serde(default = "default_ai_idle_timeout", deserialize_with = "duration_setting")]
    pub idle_timeout: Duration,
}

fn default_ai_request_bytes() -> u64 {
    8 << 20
}

fn default_ai_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_ai_idle_timeout() -> Duration {
    Duration::from_secs(600)
}

/// A size written as a quantity (`4Mi`, `500k`, `65536`).
fn byte_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let Quantity(text) = Quantity::deserialize(deserializer)?;
    quantity_bytes(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a size such as 4Mi")))
}

/// A duration written as `90s`, `5m` or `1h`.
fn duration_setting<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    duration::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

/// An S3-compatible bucket for one jurisdiction's published sites (AWS, R2, Garage, MinIO…).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SitesStorage {
    /// `https://…` (or `http://` for a local server).
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Secret in ooda's own namespace holding `accessKeyId` and `secretAccessKey`.
    pub credentials_secret: String,
    /// `bucket` in the path rather than the host name (MinIO, Garage, most local servers).
    #[serde(default)]
    pub force_path_style: bool,
    /// When the SDK adds request checksums: `whenRequired` (the default; what every
    /// S3-compatible server accepts) or `whenSupported` (AWS's default).
    #[serde(default)]
    pub request_checksum: ChecksumMode,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum ChecksumMode {
    #[default]
    WhenRequired,
    WhenSupported,
}

/// Limits on publishing sites, as written; each setting left out keeps its default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct RawPublishing {
    pub max_bytes: Quantity,
    pub max_files: u64,
    pub max_file_bytes: Quantity,
    /// Inflated bytes per compressed byte (gzip bombs).
    pub max_compression_ratio: u64,
    /// Publishes one gateway replica runs at once; more are answered 503 with Retry-After.
    pub max_concurrent: u32,
    /// How long an upload may send nothing before it is abandoned (408).
    pub upload_idle_timeout: String,
    /// How long a site's visitor waits on S3: for the answer (504 past it), and between two
    /// chunks of a file (the response is cut off past it).
    pub serve_timeout: String,
}

impl Default for RawPublishing {
    fn default() -> Self {
        Self {
            max_bytes: Quantity("512Mi".into()),
            max_files: 20_000,
            max_file_bytes: Quantity("100Mi".into()),
            max_compression_ratio: 100,
            max_concurrent: 8,
            upload_idle_timeout: "60s".into(),
            serve_timeout: "10s".into(),
        }
    }
}

/// Limits on publishing sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publishing {
    /// Sum of a site's files' sizes, in bytes.
    pub max_bytes: u64,
    pub max_files: u64,
    pub max_file_bytes: u64,
    /// Inflated bytes per compressed byte (gzip bombs).
    pub max_compression_ratio: u64,
    /// Publishes one gateway replica runs at once; more are answered 503 with Retry-After.
    pub max_concurrent: usize,
    /// How long an upload may send nothing before it is abandoned (408).
    pub upload_idle_timeout: Duration,
    /// How long a site's visitor waits on S3 (504 past it), and S3 may pause within a file.
    pub serve_timeout: Duration,
}

impl Default for Publishing {
    fn default() -> Self {
        RawPublishing::default().parse().expect("the defaults are valid")
    }
}

impl RawPublishing {
    fn parse(&self) -> Result<Publishing, (String, String)> {
        let size = |setting: &str, quantity: &Quantity| match quantity_bytes(&quantity.0) {
            Some(bytes) if bytes > 0 => Ok(bytes),
            _ => Err((setting.to_owned(), "must be a positive size such as 100Mi".to_owned())),
        };
        let max_bytes = size("publishing.maxBytes", &self.max_bytes)?;
        let max_file_bytes = size("publishing.maxFileBytes", &self.max_file_bytes)?;
        if self.max_files == 0 || self.max_compression_ratio == 0 || self.max_concurrent == 0 {
            let problem = "maxFiles, maxCompressionRatio and maxConcurrent must be positive";
            return Err(("publishing".to_owned(), problem.to_owned()));
        }
        let between =
            |setting: &str, text: &str, (longest, said): (Duration, &str), example: &str| match duration::parse(text) {
                Ok(d) if (Duration::from_secs(1)..=longest).contains(&d) => Ok(d),
                _ => Err((
                    format!("publishing.{setting}"),
                    format!("must be a duration such as {example}, between 1s and {said}"),
                )),
            };
        let upload_idle_timeout =
            between("uploadIdleTimeout", &self.upload_idle_timeout, (Duration::from_secs(3600), "1h"), "60s")?;
        let serve_timeout = between("serveTimeout", &self.serve_timeout, (Duration::from_secs(300), "5m"), "10s")?;
        Ok(Publishing {
            max_bytes,
            max_files: self.max_files,
            max_file_bytes,
            max_compression_ratio: self.max_compression_ratio,
            max_concurrent: self.max_concurrent as usize,
            upload_idle_timeout,
            serve_timeout,
        })
    }
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
    /// The gateway's ServiceAccount (in `namespace`): each organisation's namespace gets a Role
    /// letting it, and only it, read the project tokens and pods there and renew activity.
    #[serde(default = "default_gateway_service_account")]
    pub service_account: String,
    /// Where the gateway's API is reached (`https://ooda.example.com`): environments get their
    /// publish URL from it. Without it they get only the token.
    #[serde(default)]
    pub public_url: Option<String>,
}

fn default_gateway_service_account() -> String {
    "ooda-gateway".into()
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

/// Values used where a Project leaves a field out.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectDefaults {
    /// Development environment image.
    pub image: String,
    /// Image of the project loader init container; must provide `sh` and `git`.
    pub loader_image: String,
    pub resources: DefaultResources,
    /// Idle time before hibernation.
    pub idle_timeout: Duration,
}

/// The same, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDefaults {
    image: String,
    loader_image: String,
    resources: DefaultResources,
    /// e.g. `15m`.
    idle_timeout: String,
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
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
        raw.parse().map_err(|(setting, problem)| ConfigError::Invalid { path: path.to_owned(), setting, problem })
    }

    /// How long `project` may be idle before it hibernates: its own timeout, or the default.
    /// The one rule for it: the operator hibernates by it, the gateway renews activity by it.
    pub fn idle_timeout(&self, project: &crate::crd::Project) -> Result<Duration, duration::DurationError> {
        match &project.spec.lifecycle.idle_timeout {
            Some(text) => duration::parse(text),
            None => Ok(self.default_idle_timeout()),
        }
    }

    /// The idle timeout used when a project gives none.
    pub fn default_idle_timeout(&self) -> Duration {
        self.defaults.idle_timeout
    }
}

impl RawConfig {
    /// Checks every setting and parses each into the type it is used as; the first problem is
    /// returned as (setting, problem).
    fn parse(self) -> Result<OperatorConfig, (String, String)> {
        self.validate()?;
        let publishing = self.publishing.parse()?;
        let idle_timeout = match duration::parse(&self.defaults.idle_timeout) {
            Ok(d) if (Duration::from_secs(10)..=Duration::from_secs(720 * 3600)).contains(&d) => d,
            _ => {
                let problem = "must be a duration such as 15m, between 10s and 720h";
                return Err(("defaults.idleTimeout".to_owned(), problem.to_owned()));
            }
        };
        let RawDefaults { image, loader_image, resources, .. } = self.defaults;
        Ok(OperatorConfig {
            jurisdictions: self.jurisdictions,
            runtime_classes: self.runtime_classes,
            gateway: self.gateway,
            preview_domain: self.preview_domain,
            sites_domain: self.sites_domain,
            publishing,
            network: self.network,
            git_ca_bundle: self.git_ca_bundle,
            defaults: ProjectDefaults { image, loader_image, resources, idle_timeout },
        })
    }

    /// The checks that are not a parse.
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
            if j.regions.is_empty() || !j.regions.iter().all(|r| is_label_value(r)) {
                return invalid(
                    &at("regions"),
                    "list at least one region, each a valid label value such as eu-central-1",
                );
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
                if !is_dns_subdomain(&sites.credentials_secret) {
                    return invalid(&at("sites.credentialsSecret"), "must be a Secret name");
                }
            }
            if let Some(ai) = &j.ai {
                validate_ai(ai).map_err(|(field, problem)| (at(&format!("ai.{field}")), problem))?;
            }
            if j.tolerations.iter().any(|t| !matches!(t.operator.as_deref(), None | Some("Equal" | "Exists"))) {
                return invalid(&at("tolerations"), "each operator must be Equal or Exists");
            }
        }
        if let Some(bundle) = &self.git_ca_bundle
            && (bundle.len() > MAX_CA_BUNDLE_BYTES || !bundle.contains("-----BEGIN CERTIFICATE-----"))
        {
            return invalid("gitCaBundle", "must be PEM certificates, at most 64 KiB");
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
        if let Some(url) = &self.gateway.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return invalid("gateway.publicUrl", "must be an http:// or https:// URL");
        }
        if self.gateway.pod_labels.is_empty() {
            return invalid(
                "gateway.podLabels",
                "at least one label is required, or every pod would count as the gateway",
            );
        }
        if !self.gateway.pod_labels.values().all(|v| is_label_value(v)) {
            return invalid("gateway.podLabels", "every value must be a valid label value");
        }
        if !self.preview_domain.split('.').all(|label| is_dns_label(label, 63)) || !self.preview_domain.contains('.') {
            return invalid("previewDomain", "must be a DNS domain such as preview.example.com");
        }
        for cidr in &self.network.denied_egress_cidrs {
            match parse_cidr(cidr) {
                None => {
                    return invalid("network.deniedEgressCidrs", &format!("{cidr:?} is not a CIDR such as 10.0.0.0/8"));
                }
                // The projects' policy allows 0.0.0.0/0 and ::/0 minus these: a /0 cannot be excepted.
                Some((_, 0)) => {
                    return invalid(
                        "network.deniedEgressCidrs",
                        &format!("{cidr:?} would deny all egress; drop the entry instead"),
                    );
                }
                Some(_) => {}
            }
        }
        if let Some(domain) = &self.sites_domain
            && (!domain.split('.').all(|label| is_dns_label(label, 63))
                || !domain.contains('.')
                || *domain == self.preview_domain)
        {
            return invalid("sitesDomain", "must be a DNS domain such as sites.example.com, other than previewDomain");
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
        Ok(())
    }
}

/// The AI relay's checks, as (field, problem).
fn validate_ai(ai: &AiRelay) -> Result<(), (String, String)> {
    let invalid = |field: &str, problem: &str| Err((field.to_owned(), problem.to_owned()));
    let url_rest = ai.endpoint.strip_prefix("https://").or_else(|| ai.endpoint.strip_prefix("http://"));
    if !url_rest.is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#'])) {
        return invalid("endpoint", "must be an http:// or https:// URL without query or fragment");
    }
    if !is_dns_subdomain(&ai.credentials_secret) {
        return invalid("credentialsSecret", "must be a Secret name");
    }
    let model_name = |m: &String| {
        !m.is_empty() && m.len() <= 128 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:@".contains(&b))
    };
    if ai.models.is_empty() || !ai.models.iter().all(model_name) {
        return invalid("models", "list at least one model name such as claude-sonnet-4-5");
    }
    if !(1024..=(256 << 20)).contains(&ai.max_request_bytes) {
        return invalid("maxRequestBytes", "must be between 1Ki and 256Mi");
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&ai.connect_timeout) {
        return invalid("connectTimeout", "must be between 1s and 5m");
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&ai.idle_timeout) {
        return invalid("idleTimeout", "must be between 1s and 1h");
    }
    Ok(())
}

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
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

/// A byte size written as a Kubernetes quantity without fractions: `512Mi`, `100M`, `4096`.
fn quantity_bytes(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use serde_yaml::Value;

    use super::*;

    const EXAMPLE: &str = include_str!("../examples/operator-config.yaml");

    fn example() -> OperatorConfig {
        OperatorConfig::parse("fixture", EXAMPLE).expect("the example configuration parses")
    }

    /// The example configuration with the setting at `path` replaced by `value` (YAML text).
    fn parse_with(path: &[&str], value: &str) -> Result<OperatorConfig, ConfigError> {
        let mut document: Value = serde_yaml::from_str(EXAMPLE).unwrap();
        let mut node = &mut document;
        for key in path {
            node = &mut node[*key];
        }
        *node = serde_yaml::from_str(value).expect("valid YAML value");
        OperatorConfig::parse("fixture", &serde_yaml::to_string(&document).unwrap())
    }

    /// The example configuration without the setting at `path`.
    fn parse_without(path: &[&str]) -> Result<OperatorConfig, ConfigError> {
        let mut document: Value = serde_yaml::from_str(EXAMPLE).unwrap();
        let (last, parents) = path.split_last().unwrap();
        let mut node = &mut document;
        for key in parents {
            node = &mut node[*key];
        }
        node.as_mapping_mut().unwrap().remove(*last).expect("the setting exists");
        OperatorConfig::parse("fixture", &serde_yaml::to_string(&document).unwrap())
    }

    /// Asserts the configuration was refused as invalid, naming `setting`.
    #[track_caller]
    fn assert_refused(result: Result<OperatorConfig, ConfigError>, setting: &str) {
        let error = result.expect_err("the configuration should be refused");
        let text = error.to_string();
        assert!(text.starts_with(&format!("fixture: {setting}: ")), "{text:?} should name {setting}");
        match error {
            ConfigError::Invalid { setting: named, .. } => assert_eq!(named, setting),
            other => panic!("expected a validation error naming {setting}, got {other:?}"),
        }
    }

    #[test]
    fn the_example_configuration_parses() {
        let config = example();
        assert_eq!(config.jurisdictions.keys().collect::<Vec<_>>(), ["eu", "eu-real", "us"]);
        let eu = &config.jurisdictions["eu"];
        assert_eq!(eu.regions, ["europe-west1", "eu-central-1"]);
        assert_eq!(eu.storage_class, "eu-ssd");
        let sites = eu.sites.as_ref().expect("the example publishes to the local S3");
        assert_eq!((sites.bucket.as_str(), sites.credentials_secret.as_str()), ("ooda-sites-eu", "ooda-sites-s3"));
        assert!(sites.force_path_style);
        assert_eq!(config.sites_domain.as_deref(), Some("sites.ooda.localhost"));
        assert_eq!(config.runtime_classes, RuntimeClasses { gvisor: "gvisor".into(), kata: "kata".into() });
        assert_eq!(config.gateway.namespace, "ooda-system");
        assert_eq!(
            config.gateway.pod_labels,
            BTreeMap::from([("app.kubernetes.io/name".to_owned(), "ooda-gateway".to_owned())])
        );
        assert_eq!(config.preview_domain, "preview.ooda.localhost");
        assert_eq!(config.network.denied_egress_cidrs.len(), 9);
        assert_eq!(config.defaults.loader_image, "ooda.local/devenv:bookworm");
        assert!(eu.tolerations.is_empty(), "the EU's kwok nodes need no toleration");
        let real = &config.jurisdictions["eu-real"];
        assert_eq!(real.regions, ["europe-west4"]);
        assert_eq!(real.tolerations[0].key.as_deref(), Some("ooda.run/real-node"));
        assert_eq!(config.git_ca_bundle, None);
        assert_eq!(
            config.defaults.resources,
            DefaultResources {
                cpu: Quantity("1".into()),
                memory: Quantity("2Gi".into()),
                storage: Quantity("5Gi".into())
            }
        );
        assert_eq!(config.default_idle_timeout(), Duration::from_secs(15 * 60));
    }

    #[test]
    fn runtime_classes_and_network_have_defaults() {
        let config = parse_without(&["runtimeClasses"]).expect("runtimeClasses is optional");
        assert_eq!(config.runtime_classes, RuntimeClasses::default());
        assert_eq!(config.runtime_classes.for_isolation(Isolation::Gvisor), "gvisor");
        assert_eq!(config.runtime_classes.for_isolation(Isolation::Kata), "kata");

        let config = parse_without(&["network"]).expect("network is optional");
        assert_eq!(config.network, NetworkConfig::default());
        // The example adds only the bed's pod networks to the defaults.
        let mut bed = example().network.denied_egress_cidrs;
        bed.retain(|cidr| cidr != "198.18.0.0/16");
        assert_eq!(config.network.denied_egress_cidrs, bed);
    }

    #[test]
    fn a_git_ca_bundle_must_be_pem_certificates_of_bounded_size() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let config = parse_with(&["gitCaBundle"], &serde_json::to_string(pem).unwrap()).expect("a PEM bundle");
        assert_eq!(config.git_ca_bundle.as_deref(), Some(pem));
        assert_refused(parse_with(&["gitCaBundle"], "not a certificate"), "gitCaBundle");
        let huge = serde_json::to_string(&pem.repeat(2000)).unwrap();
        assert_refused(parse_with(&["gitCaBundle"], &huge), "gitCaBundle");
    }

    #[test]
    fn a_toleration_operator_must_be_one_kubernetes_knows() {
        let invalid = "[{ key: ooda.run/real-node, operator: Maybe }]";
        assert_refused(parse_with(&["jurisdictions", "eu", "tolerations"], invalid), "jurisdictions.eu.tolerations");
    }

    #[test]
    fn runtime_classes_map_each_isolation_level() {
        let config = parse_with(&["runtimeClasses"], "{ gvisor: runsc, kata: kata-qemu }").unwrap();
        assert_eq!(config.runtime_classes.for_isolation(Isolation::Gvisor), "runsc");
        assert_eq!(config.runtime_classes.for_isolation(Isolation::Kata), "kata-qemu");
    }

    #[test]
    fn unquoted_numbers_are_quantities() {
        let config = parse_with(&["defaults", "resources", "cpu"], "2").unwrap();
        assert_eq!(config.defaults.resources.cpu, Quantity("2".into()));
    }

    #[test]
    fn a_catch_all_denied_range_is_refused() {
        assert_refused(parse_with(&["network", "deniedEgressCidrs"], "[0.0.0.0/0]"), "network.deniedEgressCidrs");
        assert_refused(parse_with(&["network", "deniedEgressCidrs"], "[\"::/0\"]"), "network.deniedEgressCidrs");
    }

    #[test]
    fn regions_and_gateway_labels_must_be_label_values() {
        assert_refused(parse_with(&["jurisdictions", "eu", "regions"], "[eu west]"), "jurisdictions.eu.regions");
        assert_refused(parse_with(&["gateway", "podLabels"], "{ app: -gateway }"), "gateway.podLabels");
    }

    #[test]
    fn missing_jurisdictions_are_refused() {
        assert_refused(parse_with(&["jurisdictions"], "{}"), "jurisdictions");
    }

    #[test]
    fn a_jurisdiction_without_regions_is_refused() {
        assert_refused(parse_with(&["jurisdictions", "eu", "regions"], "[]"), "jurisdictions.eu.regions");
        assert_refused(parse_with(&["jurisdictions", "us", "regions"], "[us-east-1, ' ']"), "jurisdictions.us.regions");
    }

    #[test]
    fn a_jurisdiction_name_must_be_a_dns_label() {
        for name in ["EU", "-eu", "eu-", "e_u", "eu.west"] {
            let result = parse_with(&["jurisdictions", name], "{ regions: [r1], storageClass: ssd }");
            assert_refused(result, &format!("jurisdictions.{name}"));
        }
        let long = "a".repeat(64);
        assert_refused(
            parse_with(&["jurisdictions", &long], "{ regions: [r1], storageClass: ssd }"),
            &format!("jurisdictions.{long}"),
        );
        assert!(parse_with(&["jurisdictions", &"a".repeat(63)], "{ regions: [r1], storageClass: ssd }").is_ok());
    }

    #[test]
    fn a_storage_class_must_be_a_dns_subdomain() {
        for bad in ["EU_SSD", "", "eu ssd", "-eu", "eu..ssd", "eu-ssd."] {
            let result = parse_with(&["jurisdictions", "eu", "storageClass"], &format!("{bad:?}"));
            assert_refused(result, "jurisdictions.eu.storageClass");
        }
        let too_long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".");
        assert_refused(
            parse_with(&["jurisdictions", "eu", "storageClass"], &too_long),
            "jurisdictions.eu.storageClass",
        );
        let config = parse_with(&["jurisdictions", "eu", "storageClass"], "fast.ssd-1").unwrap();
        assert_eq!(config.jurisdictions["eu"].storage_class, "fast.ssd-1");
    }

    #[test]
    fn an_ai_relay_needs_an_endpoint_credentials_and_models_and_bounds_its_limits() {
        let ai = |yaml: &str| parse_with(&["jurisdictions", "eu", "ai"], yaml);
        let full = "{ endpoint: 'https://api.anthropic.com', credentialsSecret: anthropic-eu, \
                    models: [claude-sonnet-4-5, claude-haiku-4-5] }";
        let relay = ai(full).unwrap().jurisdictions["eu"].ai.clone().expect("a relay");
        assert_eq!(
            relay,
            AiRelay {
                endpoint: "https://api.anthropic.com".into(),
                credentials_secret: "anthropic-eu".into(),
                models: vec!["claude-sonnet-4-5".into(), "claude-haiku-4-5".into()],
                max_request_bytes: 8 << 20,
                connect_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(600),
            }
        );
        let tuned = full.replace(" }", ", maxRequestBytes: 64Ki, connectTimeout: 3s, idleTimeout: 2m }");
        let tuned = ai(&tuned).unwrap().jurisdictions["eu"].ai.clone().unwrap();
        assert_eq!(
            (tuned.max_request_bytes, tuned.connect_timeout, tuned.idle_timeout),
            (64 << 10, Duration::from_secs(3), Duration::from_secs(120))
        );
        assert_refused(
            ai(&full.replace("https://api.anthropic.com", "api.anthropic.com")),
            "jurisdictions.eu.ai.endpoint",
        );
        assert_refused(ai(&full.replace("anthropic-eu", "'Anthropic EU'")), "jurisdictions.eu.ai.credentialsSecret");
        assert_refused(ai(&full.replace("[claude-sonnet-4-5, claude-haiku-4-5]", "[]")), "jurisdictions.eu.ai.models");
        assert_refused(ai(&full.replace("claude-haiku-4-5", "'a model'")), "jurisdictions.eu.ai.models");
        let limit = |setting: &str| ai(&full.replace(" }", &format!(", {setting} }}")));
        assert_refused(limit("maxRequestBytes: 1Gi"), "jurisdictions.eu.ai.maxRequestBytes");
        assert_refused(limit("idleTimeout: 0s"), "jurisdictions.eu.ai.idleTimeout");
        assert_refused(limit("connectTimeout: 1h"), "jurisdictions.eu.ai.connectTimeout");
        let unreadable = limit("idleTimeout: soon").unwrap_err().to_string();
        assert!(unreadable.contains("jurisdictions.eu.ai: \"soon\" is not a duration"), "{unreadable}");
        assert!(example().jurisdictions["us"].ai.is_none(), "a jurisdiction without a relay");
    }

    #[test]
    fn sites_storage_needs_an_http_endpoint_a_bucket_a_region_and_credentials() {
        let sites = |yaml: &str| parse_with(&["jurisdictions", "eu", "sites"], yaml);
        let full = "{ endpoint: 'https://s3.example', region: eu-1, bucket: sites, credentialsSecret: s3-eu }";
        assert_eq!(
            sites(full).unwrap().jurisdictions["eu"].sites,
            Some(SitesStorage {
                endpoint: "https://s3.example".into(),
                region: "eu-1".into(),
                bucket: "sites".into(),
                credentials_secret: "s3-eu".into(),
                force_path_style: false,
                request_checksum: ChecksumMode::WhenRequired,
            })
        );
        let minio = "{ endpoint: 'http://minio:9000', region: eu-1, bucket: sites, credentialsSecret: s3, \
                     forcePathStyle: true, requestChecksum: whenSupported }";
        let minio = sites(minio).unwrap().jurisdictions["eu"].sites.clone().unwrap();
        assert!(minio.force_path_style);
        assert_eq!(minio.request_checksum, ChecksumMode::WhenSupported);
        let with = |field: &str| full.replace("endpoint: 'https://s3.example'", field);
        assert_refused(sites(&with("endpoint: 's3.example'")), "jurisdictions.eu.sites.endpoint");
        assert_refused(sites(&full.replace("bucket: sites", "bucket: ''")), "jurisdictions.eu.sites");
        assert_refused(sites(&full.replace("region: eu-1", "region: ''")), "jurisdictions.eu.sites");
        assert_refused(sites(&full.replace("s3-eu", "'S3 EU'")), "jurisdictions.eu.sites.credentialsSecret");
        let unknown_mode = sites(&full.replace("s3-eu }", "s3-eu, requestChecksum: always }")).unwrap_err().to_string();
        assert!(
            unknown_mode.contains("jurisdictions.eu.sites.requestChecksum: unknown variant `always`"),
            "{unknown_mode}"
        );
    }

    #[test]
    fn the_sites_domain_is_a_domain_apart_from_the_preview_domain() {
        assert!(parse_with(&["sitesDomain"], "sites.example.com").is_ok());
        assert_refused(parse_with(&["sitesDomain"], "localhost"), "sitesDomain");
        assert_refused(parse_with(&["sitesDomain"], "preview.ooda.localhost"), "sitesDomain");
    }

    #[test]
    fn publishing_limits_are_positive_sizes() {
        let limits = example().publishing;
        assert_eq!((limits.max_bytes, limits.max_file_bytes), (512 << 20, 100 << 20));
        assert_refused(parse_with(&["publishing", "maxBytes"], "'0'"), "publishing.maxBytes");
        assert_refused(parse_with(&["publishing", "maxFileBytes"], "1.5Gi"), "publishing.maxFileBytes");
        assert_refused(parse_with(&["publishing", "maxFiles"], "0"), "publishing");
        assert_eq!(quantity_bytes("4096"), Some(4096));
        assert_eq!(quantity_bytes("2Gi"), Some(2 << 30));
        assert_eq!(quantity_bytes("1e3"), None);
    }

    #[test]
    fn publishing_settings_left_out_keep_their_defaults_and_bounds_are_enforced() {
        let partial = parse_with(&["publishing"], "{ maxFiles: 10 }").expect("a partial publishing section");
        assert_eq!(partial.publishing, Publishing { max_files: 10, ..Publishing::default() });
        assert_eq!(partial.publishing.upload_idle_timeout, Duration::from_secs(60));
        assert_refused(parse_with(&["publishing", "maxConcurrent"], "0"), "publishing");
        assert_refused(parse_with(&["publishing", "uploadIdleTimeout"], "0s"), "publishing.uploadIdleTimeout");
        assert_refused(parse_with(&["publishing", "uploadIdleTimeout"], "2h"), "publishing.uploadIdleTimeout");
        assert_eq!(partial.publishing.serve_timeout, Duration::from_secs(10));
        assert_refused(parse_with(&["publishing", "serveTimeout"], "0s"), "publishing.serveTimeout");
        assert_refused(parse_with(&["publishing", "serveTimeout"], "10m"), "publishing.serveTimeout");
    }

    #[test]
    fn runtime_class_names_must_be_dns_subdomains() {
        assert_refused(parse_with(&["runtimeClasses", "gvisor"], "gVisor"), "runtimeClasses.gvisor");
        assert_refused(parse_with(&["runtimeClasses", "kata"], "''"), "runtimeClasses.kata");
    }

    #[test]
    fn the_gateway_namespace_must_be_a_namespace_name() {
        assert_refused(parse_with(&["gateway", "namespace"], "ooda.system"), "gateway.namespace");
        assert_refused(parse_with(&["gateway", "namespace"], "''"), "gateway.namespace");
    }

    #[test]
    fn empty_gateway_pod_labels_are_refused() {
        assert_refused(parse_with(&["gateway", "podLabels"], "{}"), "gateway.podLabels");
    }

    #[test]
    fn the_preview_domain_must_be_a_dotted_dns_domain() {
        for bad in
            ["localhost", "", "preview..example.com", "Preview.example.com", "preview.example.com.", "*.example.com"]
        {
            assert_refused(parse_with(&["previewDomain"], &format!("{bad:?}")), "previewDomain");
        }
        assert!(parse_with(&["previewDomain"], "preview.example.com").is_ok());
    }

    #[test]
    fn denied_egress_entries_must_be_cidrs() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "fe80::/129", "example.com/8", "10.0.0.0/x", "/8", "10.0.0/8", ""] {
            let result = parse_with(&["network", "deniedEgressCidrs"], &format!("[10.0.0.0/8, {bad:?}]"));
            assert_refused(result, "network.deniedEgressCidrs");
        }
        let config = parse_with(&["network", "deniedEgressCidrs"], "['192.0.2.0/24', '2001:db8::/32', '0.0.0.0/32']")
            .expect("IPv4 and IPv6 CIDRs");
        assert_eq!(config.network.denied_egress_cidrs.len(), 3);
        assert!(parse_with(&["network", "deniedEgressCidrs"], "[]").is_ok(), "nothing denied is allowed");
    }

    #[test]
    fn the_refused_cidr_is_quoted_in_the_error() {
        let text = parse_with(&["network", "deniedEgressCidrs"], "[nonsense]").unwrap_err().to_string();
        assert!(text.contains("\"nonsense\""), "{text}");
    }

    #[test]
    fn images_are_required() {
        assert_refused(parse_with(&["defaults", "image"], "' '"), "defaults.image");
        assert_refused(parse_with(&["defaults", "loaderImage"], "''"), "defaults.loaderImage");
    }

    #[test]
    fn default_resources_must_be_positive_quantities() {
        for (field, bad) in [
            ("memory", "-1Gi"),
            ("memory", "0"),
            ("memory", "0Gi"),
            ("memory", "0.0"),
            ("memory", "2GB"),
            ("memory", "lots"),
            ("memory", "''"),
            ("memory", "1.2.3"),
            ("cpu", "0m"),
            ("cpu", "."),
            ("storage", "Gi"),
        ] {
            let setting = format!("defaults.resources.{field}");
            assert_refused(parse_with(&["defaults", "resources", field], bad), &setting);
        }
        for (field, good) in
            [("cpu", "500m"), ("cpu", "0.5"), ("memory", "512Mi"), ("memory", "1G"), ("storage", "1Ti")]
        {
            let config = parse_with(&["defaults", "resources", field], good)
                .unwrap_or_else(|e| panic!("{field}: {good} should be accepted: {e}"));
            let resources = config.defaults.resources;
            let value = match field {
                "cpu" => resources.cpu,
                "memory" => resources.memory,
                _ => resources.storage,
            };
            assert_eq!(value, Quantity(good.into()));
        }
    }

    #[test]
    fn the_default_idle_timeout_must_be_a_duration_between_10s_and_720h() {
        for bad in ["5s", "9s", "1d", "721h", "15", "", "fifteen minutes"] {
            assert_refused(parse_with(&["defaults", "idleTimeout"], &format!("{bad:?}")), "defaults.idleTimeout");
        }
        for (good, seconds) in [("10s", 10), ("720h", 720 * 3600), ("1h30m", 5400)] {
            let config = parse_with(&["defaults", "idleTimeout"], good).unwrap();
            assert_eq!(config.default_idle_timeout(), Duration::from_secs(seconds));
        }
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        for path in [
            &["jurisdictions", "eu", "regon"][..],
            &["gateway", "podLabel"],
            &["defaults", "resources", "gpu"],
            &["defaults", "idletimeout"],
            &["previewDomian"],
        ] {
            let result = parse_with(path, "x");
            let error = result.expect_err("an unknown field should be refused");
            let field = path.last().unwrap();
            assert!(matches!(error, ConfigError::Parse { .. }), "{error:?}");
            let text = error.to_string();
            assert!(text.starts_with("fixture: ") && text.contains(&format!("unknown field `{field}`")), "{text}");
        }
    }

    #[test]
    fn missing_required_settings_are_refused() {
        for path in [&["gateway"][..], &["previewDomain"], &["defaults"], &["jurisdictions", "eu", "storageClass"]] {
            let error = parse_without(path).expect_err("a required setting is missing");
            let text = error.to_string();
            assert!(text.contains(&format!("missing field `{}`", path.last().unwrap())), "{text}");
        }
    }

    #[test]
    fn malformed_yaml_is_a_parse_error_naming_the_file() {
        let error = OperatorConfig::parse("/etc/ooda/config.yaml", "jurisdictions: [").unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }));
        assert!(error.to_string().starts_with("/etc/ooda/config.yaml: "), "{error}");
    }

    #[test]
    fn load_reports_an_unreadable_file_by_path() {
        let error = OperatorConfig::load(Path::new("/nonexistent/ooda-config.yaml")).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }));
        assert!(error.to_string().starts_with("cannot read /nonexistent/ooda-config.yaml: "), "{error}");
    }

    #[test]
    fn dns_labels_are_lowercase_alphanumerics_and_inner_hyphens_up_to_a_length() {
        for good in ["a", "eu", "eu-west-1", "0", "a-b"] {
            assert!(is_dns_label(good, 63), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "é"] {
            assert!(!is_dns_label(bad, 63), "{bad}");
        }
        assert!(is_dns_label("abc", 3));
        assert!(!is_dns_label("abcd", 3));
    }

    #[test]
    fn cidrs_need_an_address_and_a_prefix_within_the_address_length() {
        assert_eq!(parse_cidr("10.0.0.0/8"), Some(("10.0.0.0".parse().unwrap(), 8)));
        assert_eq!(parse_cidr("::/0"), Some(("::".parse().unwrap(), 0)));
        assert!(parse_cidr("10.0.0.0/32").is_some());
        assert!(parse_cidr("fe80::/128").is_some());
        for bad in ["10.0.0.0/33", "::/129", "10.0.0.0", "10.0.0.0/-1", "10.0.0.0/", "x/8", "10.0.0.0/8/8"] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
    }

    #[test]
    fn positive_quantities_have_a_nonzero_number_and_a_known_suffix() {
        for good in ["1", "500m", "0.5", "2Gi", "1k", "3Ei", "10.25M"] {
            assert!(is_positive_quantity(good), "{good}");
        }
        for bad in ["", "0", "0.0", "000m", "-1", "-1Gi", ".", "1..2", "Gi", "1GB", "1gi", "1 Gi"] {
            assert!(!is_positive_quantity(bad), "{bad}");
        }
    }
}
