//! Published sites at the gateway: publishing (a member's session, or the environment's own
//! publish token), the version list, rollbacks, and serving the live version on
//! `<project>--<org>.<sitesDomain>` straight from the jurisdiction's bucket.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap};
use axum::http::{Method, Response, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Limited};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio_util::io::{ReaderStream, StreamReader};
use tracing::{instrument, warn};

use crate::crd::names::{FINALIZER, TOKEN_KEY, parse_host_label, publish_secret_name};
use crate::crd::{Project, PublishedStatus, PublishedVersion, Role};
use crate::gateway::auth::{Session, access};
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::extract::ApiPath;
use crate::gateway::{FIELD_MANAGER, Gateway};
use crate::sites::archive::{ArchiveError, Limits, UploadStalled, UploadTooLarge};
use crate::sites::publish::{self, PublishError};
use crate::sites::{Manifest, SitesError, layout};

/// Header carrying an environment's publish token.
pub const PUBLISH_TOKEN_HEADER: &str = "x-ooda-publish-token";
/// The name under which an environment's own publishes are recorded.
const ENVIRONMENT_PUBLISHER: &str = "project";

/// `POST /api/orgs/{org}/projects/{project}/publish`: the body is a tar or tar.gz archive,
/// streamed to S3 file by file.
#[instrument(skip_all, fields(org = %org, project = %name))]
pub async fn publish(
    State(gateway): State<Arc<Gateway>>,
    ApiPath((org, name)): ApiPath<(String, String)>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let publisher = publisher(&gateway, &org, &name, request.headers())?;
    let bucket = bucket(&gateway, &org)?.clone();
    let project = live_project(&gateway, &org, &name)?;
    let Ok(_slot) = gateway.publishes.try_acquire() else {
        let limit = gateway.config.publishing.max_concurrent;
        let message = format!("this gateway is running as many publishes as it allows ({limit}); try again shortly");
        return Err(ApiError::unavailable(message, 5));
    };
    let limits = Limits::from(&gateway.config.publishing);
    // Archive bytes plus tar's own: a header per file, padding, and the end marker.
    let upload_limit = limits.max_bytes + limits.max_files * 1024 + (1 << 20);
    let body = Limited::new(request.into_body(), upload_limit as usize).into_data_stream().map_err(move |error| {
        if error.is::<http_body_util::LengthLimitError>() {
            io::Error::other(UploadTooLarge(upload_limit))
        } else {
            io::Error::other(error)
        }
    });
    let idle = gateway.config.publishing.upload_idle_timeout;
    let body = stall_after(body, idle, move || io::Error::new(io::ErrorKind::TimedOut, UploadStalled(idle)));
    hold_for_cleanup(&gateway, &project).await?;
    let standing = ProjectStanding::of(&gateway, &project);
    let manifest = publish::publish(&bucket, &org, &name, &publisher, StreamReader::new(body), limits, &standing)
        .await
        .map_err(publish_error)?;
    record(&gateway, &project, Some(&manifest), manifest.version).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "version": manifest.version,
            "files": manifest.files.len(),
            "bytes": manifest.bytes,
            "url": site_url(&gateway, &org, &name),
        })),
    ))
}

/// `GET …/versions`: every kept version, oldest first, and the live one.
pub async fn versions(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    access(&gateway, &session, &org, Role::Member)?;
    let project = live_project(&gateway, &org, &name)?;
    let published = project.status.as_ref().and_then(|s| s.published.clone()).unwrap_or_default();
    Ok(Json(json!({ "current": published.current, "versions": published.versions })))
}

/// `POST …/versions/{n}/activate`: serves version `n` again.
#[instrument(skip_all, fields(org = %org, project = %name, version))]
pub async fn activate(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, name, version)): ApiPath<(String, String, i64)>,
) -> ApiResult<Json<Value>> {
    access(&gateway, &session, &org, Role::Member)?;
    let project = live_project(&gateway, &org, &name)?;
    let bucket = bucket(&gateway, &org)?;
    let standing = ProjectStanding::of(&gateway, &project);
    publish::activate(bucket, &org, &name, version, &standing).await.map_err(publish_error)?;
    record(&gateway, &project, None, version).await?;
    Ok(Json(json!({ "current": version })))
}

/// Gives the project the finalizer by which the operator purges its site from S3 when the
/// project is deleted, before anything of it is put there: a project that never published needs
/// none, and goes at once. Refused for a project already being deleted, which takes no new
/// finalizers (nor, then, a site).
async fn hold_for_cleanup(gateway: &Gateway, project: &Project) -> ApiResult<()> {
    if project.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let api: Api<Project> = Api::namespaced(gateway.client.clone(), &project.namespace().unwrap_or_default());
    let name = project.name_any();
    let deleted = || ApiError::conflict("conflict", format!("project {name:?} is being deleted"));
    // A merge patch, never an apply: an apply would create a project deleted meanwhile. The list
    // is replaced whole, so it is guarded by the resourceVersion it was read at.
    for _ in 0..5 {
        let Some(live) = api.get_opt(&name).await? else { return Err(deleted()) };
        if live.metadata.uid != project.metadata.uid || live.metadata.deletion_timestamp.is_some() {
            return Err(deleted());
        }
        if live.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let mut finalizers = live.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": live.resource_version() } });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::conflict("conflict", "the project kept changing; nothing was published; retry"))
}

/// Who is publishing: the environment itself (its project's publish token, good for that
/// project only), or a member of the organisation (a session).
fn publisher(gateway: &Gateway, org: &str, name: &str, headers: &HeaderMap) -> ApiResult<String> {
    let Some(presented) = headers.get(PUBLISH_TOKEN_HEADER) else {
        let session = Session::from_headers(gateway, headers)?;
        access(gateway, &session, org, Role::Member)?;
        return Ok(session.email);
    };
    gateway.freshness.check()?;
    let secret = gateway.caches.secret(org, &publish_secret_name(name));
    let expected = secret.as_ref().and_then(|s| s.data.as_ref()?.get(TOKEN_KEY)).map(|t| t.0.clone());
    if expected.is_some_and(|t| bool::from(t.as_slice().ct_eq(presented.as_bytes()))) {
        Ok(ENVIRONMENT_PUBLISHER.to_owned())
    } else {
        Err(ApiError::unauthorized("the publish token is not valid for this project"))
    }
}

fn live_project(gateway: &Gateway, org: &str, name: &str) -> ApiResult<Arc<Project>> {
    gateway.caches.project(org, name).ok_or_else(|| ApiError::not_found(format!("project {name:?}")))
}

/// The bucket of the organisation's jurisdiction: never another.
fn bucket<'a>(gateway: &'a Gateway, org: &str) -> ApiResult<&'a crate::sites::Bucket> {
    let organisation =
        gateway.caches.organisation(org).ok_or_else(|| ApiError::not_found(format!("organisation {org:?}")))?;
    gateway.buckets.for_jurisdiction(&organisation.spec.jurisdiction).map_err(sites_error)
}

/// Where `org`'s project `name` serves its site, if the gateway serves sites.
pub fn site_url(gateway: &Gateway, org: &str, name: &str) -> Option<String> {
    let domain = gateway.config.sites_domain.as_ref()?;
    Some(format!("{}/", gateway.settings.public_origin(&format!("{name}--{org}.{domain}"))))
}

/// `stream`, ending with the error `stalled` makes once nothing has arrived for `idle`: a client
/// that stops sending would otherwise hold a publish slot, and S3 uploads, open for ever; an S3
/// that stops sending, a visitor's connection.
fn stall_after<S>(
    stream: S,
    idle: Duration,
    stalled: impl Fn() -> io::Error + Send + Sync + 'static,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static
where
    S: futures::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
{
    let stalled = Arc::new(stalled);
    futures::stream::unfold(Some(stream), move |stream| {
        let stalled = stalled.clone();
        async move {
            let mut stream = stream?;
            match tokio::time::timeout(idle, stream.next()).await {
                Ok(item) => item.map(|item| (item, Some(stream))),
                Err(_) => Some((Err(stalled()), None)),
            }
        }
    })
}

fn publish_error(error: PublishError) -> ApiError {
    match error {
        PublishError::Archive(ArchiveError::Stalled(idle)) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "upload_stalled",
            format!("nothing arrived for {}s; the publish was abandoned", idle.as_secs()),
        ),
        PublishError::Archive(ArchiveError::Read(error)) => {
            warn!(%error, "a publish upload broke off");
            ApiError::bad_request(format!("reading the upload failed: {error}"))
        }
        PublishError::Archive(error) if error.is_too_large() => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", error.to_string())
        }
        PublishError::Archive(error) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_archive", error.to_string()),
        PublishError::Storage(error) => sites_error(error),
        PublishError::ProjectDeleted => ApiError::not_found("project (deleted while publishing)"),
    }
}

/// The project a publish writes for, as the API server (not the watch cache) sees it now.
struct ProjectStanding {
    api: Api<Project>,
    name: String,
    uid: Option<String>,
}

impl ProjectStanding {
    fn of(gateway: &Gateway, project: &Project) -> Self {
        let api = Api::namespaced(gateway.client.clone(), &project.namespace().unwrap_or_default());
        Self { api, name: project.name_any(), uid: project.metadata.uid.clone() }
    }
}

impl publish::Standing for ProjectStanding {
    fn stands(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async move {
            match self.api.get_opt(&self.name).await {
                Ok(Some(project)) => project.metadata.uid == self.uid && project.metadata.deletion_timestamp.is_none(),
                Ok(None) => false,
                Err(error) => {
                    warn!(%error, "could not confirm the project still stands; withdrawing the publish");
                    false
                }
            }
        })
    }
}

fn sites_error(error: SitesError) -> ApiError {
    match error {
        SitesError::NotConfigured(_) => ApiError::conflict("sites_not_configured", error.to_string()),
        SitesError::NoSuchVersion(_) => ApiError::not_found(error.to_string().replace(" does not exist", "")),
        SitesError::Credentials { .. } | SitesError::Storage(_) => {
            warn!(%error, "object storage failed");
            ApiError::unavailable("object storage is unavailable; the live version is unchanged; try again", 5)
        }
    }
}

/// Writes `status.published` (as the gateway's own field manager): the new version appended if
/// there is one, and `current`. Conditional on the version read, retried on a conflict, so two
/// publishes finishing together both stay listed.
async fn record(gateway: &Gateway, project: &Project, added: Option<&Manifest>, current: i64) -> ApiResult<()> {
    let api: Api<Project> = Api::namespaced(gateway.client.clone(), &project.namespace().unwrap_or_default());
    let name = project.name_any();
    for _ in 0..5 {
        let live = api.get_status(&name).await?;
        let mut published: PublishedStatus = live.status.as_ref().and_then(|s| s.published.clone()).unwrap_or_default();
        if let Some(manifest) = added
            && !published.versions.iter().any(|v| v.version == manifest.version)
        {
            published.versions.push(PublishedVersion {
                version: manifest.version,
                published_at: Time(manifest.published_at.parse().unwrap_or_else(|_| Timestamp::now())),
                files: manifest.files.len() as i64,
                bytes: manifest.bytes as i64,
                publisher: manifest.publisher.clone(),
            });
            published.versions.sort_by_key(|v| v.version);
        }
        published.current = Some(current);
        let apply = json!({
            "apiVersion": "ooda.run/v1alpha1", "kind": "Project",
            "metadata": { "name": name, "resourceVersion": live.resource_version() },
            "status": { "published": published },
        });
        match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&apply)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::conflict("conflict", "the project kept changing; the version is live but not yet listed; retry"))
}

/// Serves a published site: the live version's file for the path, `index.html` for
/// directories, the site's `404.html` (or a plain 404) when there is none; with the object's
/// Content-Type and ETag, conditional requests (304) and ranges (206) answered by S3 itself.
#[instrument(skip_all, fields(site = label))]
pub async fn serve(gateway: Arc<Gateway>, label: &str, request: Request) -> Response<Body> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "sites are read-only")
            .into_response();
    }
    let found = parse_host_label(label).and_then(|(name, org)| {
        let project = gateway.caches.project(org, name)?;
        Some((org.to_owned(), name.to_owned(), project))
    });
    let Some((org, name, project)) = found else { return not_found_page() };
    let Some(version) = project.status.as_ref().and_then(|s| s.published.as_ref()?.current) else {
        return not_found_page();
    };
    let Ok(bucket) = bucket(&gateway, &org) else { return not_found_page() };
    let Some(path) = site_path(request.uri().path()) else { return not_found_page() };
    let prefix = layout::version(&org, &name, version);
    let wait = gateway.config.publishing.serve_timeout;
    let head = request.method() == Method::HEAD;
    let asked = answer(bucket, &prefix, path, request.uri().path(), request.headers(), head, wait);
    match tokio::time::timeout(wait, asked).await {
        Ok(response) => response,
        Err(_) => {
            warn!(after = ?wait, "the site's storage did not answer in time");
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "storage_timeout", "the site's storage did not answer in time")
                .into_response()
        }
    }
}

/// The answer to a site request for `path` of the version under `prefix`; a file's body is cut
/// off if S3 pauses within it for `idle`.
async fn answer(
    bucket: &crate::sites::Bucket,
    prefix: &str,
    path: String,
    request_path: &str,
    headers: &HeaderMap,
    head: bool,
    idle: Duration,
) -> Response<Body> {
    let candidates = if path.is_empty() || path.ends_with('/') {
        vec![format!("{path}index.html")]
    } else {
        vec![path.clone(), format!("{path}/index.html")]
    };
    for (i, candidate) in candidates.iter().enumerate() {
        // The second candidate only decides a redirect: its body is never wanted.
        let head = head || i == 1;
        match fetch(bucket, &format!("{prefix}{candidate}"), headers, head, StatusCode::OK, idle).await {
            Fetched::Found(_) if i == 1 => {
                // A directory without its slash: send the browser to it, so relative links work.
                let location = format!("{request_path}/");
                return Response::builder()
                    .status(StatusCode::MOVED_PERMANENTLY)
                    .header(header::LOCATION, location)
                    .body(Body::empty())
                    .expect("a valid redirect");
            }
            Fetched::Found(response) => return response,
            Fetched::Missing => continue,
            Fetched::Failed(response) => return response,
        }
    }
    match fetch(bucket, &format!("{prefix}404.html"), &HeaderMap::new(), head, StatusCode::NOT_FOUND, idle).await {
        Fetched::Found(response) => response,
        _ => not_found_page(),
    }
}

enum Fetched {
    Found(Response<Body>),
    Missing,
    Failed(Response<Body>),
}

/// One object as an HTTP response with `status`, passing conditional and range headers to S3.
async fn fetch(
    bucket: &crate::sites::Bucket,
    key: &str,
    headers: &HeaderMap,
    head: bool,
    status: StatusCode,
    idle: Duration,
) -> Fetched {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let ranged = status == StatusCode::OK;
    let request = bucket
        .client
        .get_object()
        .bucket(&bucket.name)
        .key(key)
        .set_if_none_match(text(header::IF_NONE_MATCH))
        .set_range(if ranged { text(header::RANGE) } else { None });
    match request.send().await {
        Ok(object) => {
            let status = if object.content_range().is_some() { StatusCode::PARTIAL_CONTENT } else { status };
            let mut response = Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, object.content_type().unwrap_or("application/octet-stream"))
                .header(header::CACHE_CONTROL, "public, max-age=60, must-revalidate")
                .header(header::ACCEPT_RANGES, "bytes")
                .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
            if let Some(etag) = object.e_tag() {
                response = response.header(header::ETAG, etag);
            }
            if let Some(range) = object.content_range() {
                response = response.header(header::CONTENT_RANGE, range);
            }
            if let Some(length) = object.content_length() {
                response = response.header(header::CONTENT_LENGTH, length);
            }
            let body = match head {
                true => Body::empty(),
                false => {
                    Body::from_stream(stall_after(ReaderStream::new(object.body.into_async_read()), idle, move || {
                        io::Error::new(io::ErrorKind::TimedOut, format!("the site's storage sent nothing for {idle:?}"))
                    }))
                }
            };
            Fetched::Found(response.body(body).expect("a valid response"))
        }
        Err(error) => {
            let code = error.raw_response().map(|r| r.status().as_u16());
            match code {
                Some(304) => {
                    let mut response = Response::builder().status(StatusCode::NOT_MODIFIED);
                    if let Some(etag) = text(header::IF_NONE_MATCH) {
                        response = response.header(header::ETAG, etag);
                    }
                    Fetched::Found(response.body(Body::empty()).expect("a valid response"))
                }
                Some(404) => Fetched::Missing,
                Some(416) => Fetched::Failed(
                    Response::builder()
                        .status(StatusCode::RANGE_NOT_SATISFIABLE)
                        .body(Body::empty())
                        .expect("a valid response"),
                ),
                _ => {
                    warn!(error = %aws_sdk_s3::error::DisplayErrorContext(&error), key, "reading a site object failed");
                    Fetched::Failed(ApiError::unavailable("the site is unavailable; try again", 5).into_response())
                }
            }
        }
    }
}

/// The object path a request path names, or `None` if it tries to leave the site.
fn site_path(path: &str) -> Option<String> {
    let decoded = percent_decode(path)?;
    let trailing = decoded.ends_with('/');
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.chars().any(|c| c.is_control() || c == '\\') => return None,
            s => segments.push(s),
        }
    }
    let mut joined = segments.join("/");
    if trailing && !joined.is_empty() {
        joined.push('/');
    }
    Some(joined)
}

fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The same for a path the site lacks, a site never published and a host that is no project's.
fn not_found_page() -> Response<Body> {
    ApiError::not_found("page").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_map_to_object_paths_inside_the_site() {
        assert_eq!(site_path("/").as_deref(), Some(""));
        assert_eq!(site_path("/docs/").as_deref(), Some("docs/"));
        assert_eq!(site_path("/a/./b//c.html").as_deref(), Some("a/b/c.html"));
        assert_eq!(site_path("/caf%C3%A9.html").as_deref(), Some("café.html"));
        for escape in ["/../secret", "/a/%2e%2e/%2e%2e/b", "/%zz", "/a%00b"] {
            assert_eq!(site_path(escape), None, "{escape}");
        }
    }
}
