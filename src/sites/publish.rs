//! Publishing one version: claim the next number, stream every file of the archive into
//! `v<N>/` (each file goes straight from the request to S3 through a small channel: the archive
//! is never held in memory), write the manifest, and only then move `current`. Anything that
//! fails before the manifest leaves the live version as it was and no listed version behind; the
//! files already written are deleted (if S3 is still there to ask).
//!
//! A publish can race its project's deletion, whose finalizer purges the project's prefix: an
//! object written after the purge listed the prefix would outlive the project. So once every
//! object is written, the publish asks the API server whether its project still stands; if it
//! is being deleted (or the answer is unsure), it deletes everything it wrote. Every object is
//! then removed by one side or the other: one written before that question was asked, in a
//! project whose deletion was not yet marked, was there when the purge (which starts after the
//! mark) listed the prefix. While files stream in, the same question is asked at most once a
//! second, so a deleted project's publish stops early.

use std::io;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::SinkExt;
use http_body::Frame;
use http_body_util::StreamBody;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;
use tracing::{info, warn};

use super::archive::{ArchiveError, Files, Limits};
use super::{Bucket, Manifest, ManifestFile, SitesError, content_type, layout};

/// Chunks read from the archive and sent on to S3 at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight per file: bounds the memory a publish holds.
const IN_FLIGHT: usize = 4;
/// Version numbers tried past the highest one seen before giving up (concurrent publishes).
const RESERVATION_ATTEMPTS: i64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Storage(#[from] SitesError),
    #[error("the project was deleted while it was publishing")]
    ProjectDeleted,
}

/// Whether the project being published still stands (exists, same uid, not being deleted),
/// asked of the API server itself, not a cache. `false` also when that cannot be known.
pub trait Standing: Send + Sync {
    fn stands(&self) -> futures::future::BoxFuture<'_, bool>;
}

/// How often a publish asks, while files stream in, whether its project still stands.
const STANDING_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes `upload` as the next version of `org`/`project` and makes it live.
pub async fn publish(
    bucket: &Bucket,
    org: &str,
    project: &str,
    publisher: &str,
    upload: impl AsyncRead + Send + 'static,
    limits: Limits,
    standing: &dyn Standing,
) -> Result<Manifest, PublishError> {
    let mut files = Files::new(upload, limits).await?;
    let version = reserve(bucket, org, project).await?;
    let mut written = vec![layout::reservation(org, project, version)];
    let result = async {
        let manifest =
            write_version(bucket, org, project, version, publisher, &mut files, &mut written, standing).await?;
        set_current(bucket, org, project, version).await?;
        // `current` names this version now: if the project is going, it goes with the rest.
        written.push(layout::current(org, project));
        if !standing.stands().await {
            return Err(PublishError::ProjectDeleted);
        }
        Ok(manifest)
    }
    .await;
    match result {
        Ok(manifest) => {
            info!(org, project, version, files = manifest.files.len(), bytes = manifest.bytes, "published");
            Ok(manifest)
        }
        Err(error) => {
            if let Err(cleanup) = bucket.delete(&written).await {
                warn!(org, project, version, %cleanup, "could not remove a failed version's objects");
            }
            Err(error)
        }
    }
}

/// Makes an existing version live again (a rollback).
pub async fn activate(
    bucket: &Bucket,
    org: &str,
    project: &str,
    version: i64,
    standing: &dyn Standing,
) -> Result<Manifest, PublishError> {
    let manifest = read_manifest(bucket, org, project, version).await?;
    set_current(bucket, org, project, version).await?;
    if !standing.stands().await {
        bucket.delete(&[layout::current(org, project)]).await?;
        return Err(PublishError::ProjectDeleted);
    }
    Ok(manifest)
}

pub async fn read_manifest(bucket: &Bucket, org: &str, project: &str, version: i64) -> Result<Manifest, SitesError> {
    let key = layout::manifest(org, project, version);
    let answer = bucket.client.get_object().bucket(&bucket.name).key(&key).send().await.map_err(|error| {
        if error.as_service_error().is_some_and(|e| e.is_no_such_key()) {
            SitesError::NoSuchVersion(version)
        } else {
            error.into()
        }
    })?;
    let bytes = answer.body.collect().await.map_err(|e| SitesError::Storage(e.to_string()))?.into_bytes();
    serde_json::from_slice(&bytes).map_err(|e| SitesError::Storage(format!("manifest {key} is unreadable: {e}")))
}

/// Claims the lowest unused version number above every existing one, with a conditional
/// create: of two publishes racing for a number, exactly one gets it.
async fn reserve(bucket: &Bucket, org: &str, project: &str) -> Result<i64, SitesError> {
    let existing = bucket.list(&layout::manifests(org, project)).await?;
    let first = existing.iter().filter_map(|k| layout::version_of(k)).max().unwrap_or(0) + 1;
    for version in first..first + RESERVATION_ATTEMPTS {
        let claimed = bucket
            .client
            .put_object()
            .bucket(&bucket.name)
            .key(layout::reservation(org, project, version))
            .if_none_match("*")
            .body(ByteStream::from_static(b""))
            .send()
            .await;
        match claimed {
            Ok(_) => return Ok(version),
            Err(error) if error.raw_response().is_some_and(|r| r.status().as_u16() == 412) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(SitesError::Storage(format!("no free version number after {RESERVATION_ATTEMPTS} tries")))
}

#[allow(clippy::too_many_arguments)]
async fn write_version(
    bucket: &Bucket,
    org: &str,
    project: &str,
    version: i64,
    publisher: &str,
    files: &mut Files,
    written: &mut Vec<String>,
    standing: &dyn Standing,
) -> Result<Manifest, PublishError> {
    let prefix = layout::version(org, project, version);
    let mut manifest_files = Vec::new();
    let mut bytes = 0;
    let mut asked = tokio::time::Instant::now();
    while let Some(mut file) = files.next().await? {
        if asked.elapsed() >= STANDING_INTERVAL {
            if !standing.stands().await {
                return Err(PublishError::ProjectDeleted);
            }
            asked = tokio::time::Instant::now();
        }
        let key = format!("{prefix}{}", file.path);
        let kind = content_type(&file.path);
        let (mut chunks, receiver) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, io::Error>>(IN_FLIGHT);
        let upload = bucket
            .client
            .put_object()
            .bucket(&bucket.name)
            .key(&key)
            .content_type(kind)
            .content_length(file.size as i64)
            .body(ByteStream::from_body_1_x(StreamBody::new(receiver)))
            .send();
        let upload = tokio::spawn(upload);
        written.push(key);
        let mut digest = Sha256::new();
        let mut buffer = vec![0u8; CHUNK];
        let read = async {
            loop {
                let n = file.read(&mut buffer).await?;
                if n == 0 {
                    return Ok::<_, ArchiveError>(());
                }
                digest.update(&buffer[..n]);
                // A closed channel means the upload failed; its own error says why.
                if chunks.send(Ok(Frame::data(Bytes::copy_from_slice(&buffer[..n])))).await.is_err() {
                    return Ok(());
                }
            }
        }
        .await;
        drop(chunks);
        if let Err(error) = read {
            upload.abort();
            return Err(error.into());
        }
        match tokio::time::timeout(Duration::from_secs(120), upload).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(error))) => return Err(SitesError::from(error).into()),
            Ok(Err(join)) => return Err(SitesError::Storage(format!("upload task failed: {join}")).into()),
            Err(_) => return Err(SitesError::Storage("an upload did not finish within 120s".into()).into()),
        }
        bytes += file.size;
        let sha256 = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
        manifest_files.push(ManifestFile { path: file.path, size: file.size, sha256, content_type: kind.to_owned() });
    }
    let manifest = Manifest {
        version,
        published_at: Timestamp::now().to_string(),
        publisher: publisher.to_owned(),
        bytes,
        files: manifest_files,
    };
    let body = serde_json::to_vec(&manifest).expect("a manifest serialises");
    let key = layout::manifest(org, project, version);
    bucket
        .client
        .put_object()
        .bucket(&bucket.name)
        .key(&key)
        .content_type("application/json")
        .if_none_match("*")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(SitesError::from)?;
    written.push(key);
    Ok(manifest)
}

async fn set_current(bucket: &Bucket, org: &str, project: &str, version: i64) -> Result<(), SitesError> {
    bucket
        .client
        .put_object()
        .bucket(&bucket.name)
        .key(layout::current(org, project))
        .content_type("text/plain")
        .body(ByteStream::from(version.to_string().into_bytes()))
        .send()
        .await?;
    Ok(())
}
