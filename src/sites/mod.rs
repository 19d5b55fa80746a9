//! Published static sites: versioned snapshots in the jurisdiction's S3 bucket.
//!
//! Layout under `<org>/<project>/`: `v<N>/<path>` (the files), `manifests/v<N>.json` (paths,
//! sizes, SHA-256 digests; written after every file, so a version without one never became
//! visible), `manifests/v<N>.reserved` (claims a number with a conditional write, so concurrent
//! publishes cannot share one), and `current` (the live version). Everything of a project lives
//! under its prefix, which is what deletion purges.

pub mod archive;
pub mod publish;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_types::timeout::TimeoutConfig;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use crate::config::{ChecksumMode, OperatorConfig, SitesStorage};

/// Keys of the credentials Secret.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";

#[derive(Debug, thiserror::Error)]
pub enum SitesError {
    #[error("jurisdiction {0:?} has no sites storage configured: publishing is not available there")]
    NotConfigured(String),
    #[error("credentials Secret {name}: {problem}")]
    Credentials { name: String, problem: String },
    #[error("object storage: {0}")]
    Storage(String),
    #[error("version {0} does not exist")]
    NoSuchVersion(i64),
}

impl<E: std::error::Error + 'static, R: std::fmt::Debug> From<SdkError<E, R>> for SitesError {
    fn from(error: SdkError<E, R>) -> Self {
        Self::Storage(DisplayErrorContext(&error).to_string())
    }
}

/// One jurisdiction's bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub client: Client,
    pub name: String,
}

/// Every configured jurisdiction's bucket, by jurisdiction name. A jurisdiction whose
/// credentials cannot be read stays unavailable (with the reason), failing closed, while the
/// others work.
#[derive(Clone, Default)]
pub struct Buckets {
    by_jurisdiction: BTreeMap<String, Result<Bucket, (String, String)>>,
}

impl Buckets {
    /// Clients for every jurisdiction with sites storage, with credentials read from Secrets in
    /// `secrets` (ooda's own namespace).
    pub async fn from_config(config: &OperatorConfig, secrets: &Api<Secret>) -> Self {
        let mut by_jurisdiction = BTreeMap::new();
        for (name, jurisdiction) in &config.jurisdictions {
            let Some(storage) = &jurisdiction.sites else { continue };
            let bucket = match credentials(secrets, &storage.credentials_secret).await {
                Ok(credentials) => Ok(Bucket::new(storage, credentials)),
                Err(SitesError::Credentials { name: secret, problem }) => {
                    tracing::warn!(jurisdiction = name, secret, problem, "sites storage unavailable");
                    Err((secret, problem))
                }
                Err(other) => Err((storage.credentials_secret.clone(), other.to_string())),
            };
            by_jurisdiction.insert(name.clone(), bucket);
        }
        Self { by_jurisdiction }
    }

    /// Every configured bucket; fails if any is unavailable.
    pub fn all(&self) -> Result<Vec<&Bucket>, SitesError> {
        self.by_jurisdiction.keys().map(|jurisdiction| self.for_jurisdiction(jurisdiction)).collect()
    }

    /// The bucket of `jurisdiction`; publishing elsewhere is refused, never redirected.
    pub fn for_jurisdiction(&self, jurisdiction: &str) -> Result<&Bucket, SitesError> {
        match self.by_jurisdiction.get(jurisdiction) {
            Some(Ok(bucket)) => Ok(bucket),
            Some(Err((name, problem))) => Err(SitesError::Credentials { name: name.clone(), problem: problem.clone() }),
            None => Err(SitesError::NotConfigured(jurisdiction.to_owned())),
        }
    }
}

async fn credentials(secrets: &Api<Secret>, name: &str) -> Result<Credentials, SitesError> {
    let problem = |problem: &str| SitesError::Credentials { name: name.to_owned(), problem: problem.to_owned() };
    let secret =
        secrets.get_opt(name).await.map_err(|e| problem(&e.to_string()))?.ok_or_else(|| problem("not found"))?;
    let data = secret.data.unwrap_or_default();
    let field = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| problem(&format!("no {key}")))
    };
    Ok(Credentials::new(field(ACCESS_KEY_ID)?, field(SECRET_ACCESS_KEY)?, None, None, "ooda-configuration"))
}

impl Bucket {
    pub fn new(storage: &SitesStorage, credentials: Credentials) -> Self {
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
        let (request, response) = match storage.request_checksum {
            ChecksumMode::WhenRequired => {
                (RequestChecksumCalculation::WhenRequired, ResponseChecksumValidation::WhenRequired)
            }
            ChecksumMode::WhenSupported => {
                (RequestChecksumCalculation::WhenSupported, ResponseChecksumValidation::WhenSupported)
            }
        };
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .build();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(storage.region.clone()))
            .endpoint_url(&storage.endpoint)
            .force_path_style(storage.force_path_style)
            .credentials_provider(credentials)
            .http_client(http)
            .timeout_config(timeouts)
            .request_checksum_calculation(request)
            .response_checksum_validation(response)
            .build();
        Self { client: Client::from_conf(config), name: storage.bucket.clone() }
    }

    /// Every key under `prefix`, all pages.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, SitesError> {
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.name).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            keys.extend(page?.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        Ok(keys)
    }

    /// Deletes `keys`, a thousand per request (the S3 maximum).
    pub async fn delete(&self, keys: &[String]) -> Result<(), SitesError> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build().expect("a key is set"))
                .collect::<Vec<_>>();
            let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().expect("objects are set");
            let answer = self.client.delete_objects().bucket(&self.name).delete(delete).send().await?;
            if let Some(failed) = answer.errors().first() {
                return Err(SitesError::Storage(format!(
                    "could not delete {}: {}",
                    failed.key().unwrap_or_default(),
                    failed.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// Deletes every object under `prefix`.
    pub async fn purge(&self, prefix: &str) -> Result<usize, SitesError> {
        let keys = self.list(prefix).await?;
        self.delete(&keys).await?;
        Ok(keys.len())
    }
}

/// Where a project's objects live.
pub mod layout {
    pub fn project(org: &str, project: &str) -> String {
        format!("{org}/{project}/")
    }
    pub fn version(org: &str, project: &str, version: i64) -> String {
        format!("{org}/{project}/v{version}/")
    }
    pub fn manifests(org: &str, project: &str) -> String {
        format!("{org}/{project}/manifests/")
    }
    pub fn manifest(org: &str, project: &str, version: i64) -> String {
        format!("{org}/{project}/manifests/v{version}.json")
    }
    pub fn reservation(org: &str, project: &str, version: i64) -> String {
        format!("{org}/{project}/manifests/v{version}.reserved")
    }
    pub fn current(org: &str, project: &str) -> String {
        format!("{org}/{project}/current")
    }
    /// The version a `manifests/` key names, for manifests and reservations alike.
    pub fn version_of(key: &str) -> Option<i64> {
        let name = key.rsplit('/').next()?;
        let number = name.strip_prefix('v')?;
        let number = number.strip_suffix(".json").or_else(|| number.strip_suffix(".reserved"))?;
        number.parse().ok().filter(|n| *n > 0)
    }
}

/// What a version holds: written after its files, read to list and activate versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: i64,
    pub published_at: String,
    pub publisher: String,
    pub bytes: u64,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: String,
}

/// Content-Type by file extension: what browsers need to render a static site.
pub fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "csv" => "text/csv; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_project_is_under_its_prefix() {
        let prefix = layout::project("acme", "shop");
        for key in [
            layout::version("acme", "shop", 3),
            layout::manifest("acme", "shop", 3),
            layout::reservation("acme", "shop", 3),
            layout::current("acme", "shop"),
        ] {
            assert!(key.starts_with(&prefix), "{key}");
        }
        assert!(!layout::project("acme", "shopping").starts_with(&prefix), "no project is a prefix of another");
        assert_eq!(layout::version("acme", "shop", 12), "acme/shop/v12/");
    }

    #[test]
    fn manifest_keys_name_their_version() {
        assert_eq!(layout::version_of(&layout::manifest("acme", "shop", 7)), Some(7));
        assert_eq!(layout::version_of(&layout::reservation("acme", "shop", 12)), Some(12));
        for other in ["acme/shop/manifests/vx.json", "acme/shop/manifests/v0.json", "acme/shop/current", "v3.txt"] {
            assert_eq!(layout::version_of(other), None, "{other}");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("img/logo.svg"), "image/svg+xml");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
