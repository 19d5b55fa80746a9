//! The preview proxy on `<project>--<org>.<previewDomain>`: checks the project's preview token
//! (constant time, against the watch cache, so a stopped or deleted project is refused as soon as
//! the watch sees it), wakes a hibernated project, and forwards to the pod's IP and preview port
//! — never a Service address — over keep-alive connections each downstream connection holds
//! ([`upstream`]), with streamed bodies and WebSocket tunnels. Traffic renews the project's activity Lease.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::{Method, Request, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tracing::{debug, instrument, warn};

use crate::crd::names::{TokenState, parse_host_label};
use crate::crd::{DesiredState, Project};
use crate::gateway::Gateway;
use crate::gateway::cache::{ready_pod_ip, waking_pod_ip};
use crate::gateway::error::ApiError;
use crate::gateway::upstream::{self, Held};

/// Query parameter carrying the token on a preview link; swapped for a cookie at once.
pub const TOKEN_QUERY: &str = "ooda_token";
/// Header carrying the token for API clients and scripts.
pub const TOKEN_HEADER: &str = "x-ooda-preview-token";
/// The cookie on plain HTTP (local use only).
const TOKEN_COOKIE: &str = "ooda_preview";
/// The cookie under TLS: browsers keep a `__Host-` cookie only if it is Secure, host-only and
/// for `/`, so no sibling host (another tenant's preview) can set or shadow it.
const TOKEN_COOKIE_TLS: &str = "__Host-ooda_preview";
/// Both names, for what must never pass the proxy in either direction.
const TOKEN_COOKIES: [&str; 2] = [TOKEN_COOKIE, TOKEN_COOKIE_TLS];
/// Longest token accepted from a client (ours are 43 characters).
const MAX_TOKEN_LEN: usize = 128;

/// The label of a project host under `domain`: `<project>--<org>.<domain>`.
pub fn host_label<'a>(host: &'a str, preview_domain: &str) -> Option<&'a str> {
    let host = host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |h| h.0);
    let label = host.strip_suffix(preview_domain)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.')).then_some(label)
}

/// Why a preview request is not served.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    UnknownProject,
    NoToken,
    WrongToken,
    Stopped,
    NoPreviewPort,
    /// The caches may be behind a revocation: see `freshness`.
    Stale,
    /// The project's namespace has not listed yet (its organisation has just become Ready, or
    /// this gateway has just started): its token is not known yet, which is not a wrong one.
    /// This tells a caller that the project exists, for those seconds only.
    NotListedYet,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> axum::response::Response {
        let error = match self {
            // One answer for all three: a host must not tell whether its project exists.
            Self::UnknownProject | Self::NoToken | Self::WrongToken => {
                ApiError::unauthorized("a valid preview token is required: open the project's preview link")
            }
            Self::Stopped => ApiError::forbidden("the project is stopped"),
            Self::NoPreviewPort => ApiError::not_found("preview port"),
            Self::Stale | Self::NotListedYet => crate::gateway::freshness::stale(),
        };
        error.into_response()
    }
}

struct Target {
    org: String,
    name: String,
    project: Arc<Project>,
    port: u16,
}

/// Whether `presented` opens `org`/`project` right now.
fn authorise(gateway: &Gateway, org: &str, name: &str, presented: &[u8]) -> Result<Target, Refusal> {
    if !gateway.freshness.is_fresh() {
        return Err(Refusal::Stale);
    }
    let project = gateway.caches.project(org, name).ok_or(Refusal::UnknownProject)?;
    if !gateway.caches.namespace_listed(org) {
        return Err(Refusal::NotListedYet);
    }
    let current = gateway.caches.preview_token(org, name).ok_or(Refusal::WrongToken)?;
    if presented.is_empty() {
        return Err(Refusal::NoToken);
    }
    if !bool::from(current.token.as_slice().ct_eq(presented)) {
        return Err(Refusal::WrongToken);
    }
    if current.state == TokenState::Stopped || project.spec.lifecycle.state == DesiredState::Stopped {
        return Err(Refusal::Stopped);
    }
    let port = project.spec.ports.iter().find(|p| p.preview).ok_or(Refusal::NoPreviewPort)?.port;
    Ok(Target {
        org: org.to_owned(),
        name: name.to_owned(),
        port: u16::try_from(port).map_err(|_| Refusal::NoPreviewPort)?,
        project,
    })
}

#[instrument(skip_all, fields(host = label))]
pub async fn handle(
    gateway: Arc<Gateway>,
    label: &str,
    peer: SocketAddr,
    upstream: Option<Arc<Held>>,
    request: Request<Body>,
) -> Response<Body> {
    let Some((name, org)) = parse_host_label(label) else {
        return Refusal::UnknownProject.into_response();
    };
    let (org, name) = (org.to_owned(), name.to_owned());
    let cookie = cookie_name(gateway.settings.tls);
    let query_token = query_token(request.uri());
    let presented = presented_token(query_token.clone(), request.headers(), cookie);
    let target = match authorise(&gateway, &org, &name, presented.as_bytes()) {
        Ok(target) => target,
        Err(refusal) => return refusal.into_response(),
    };
    // A link's token becomes a host-only cookie, and the address bar loses it.
    if let Some(token) = query_token
        && matches!(*request.method(), Method::GET | Method::HEAD)
    {
        return swap_query_for_cookie(request.uri(), &token, cookie);
    }
    let idle_timeout = crate::gateway::idle_timeout(&gateway, &target.project);
    let browser = wants_html(request.headers());
    let ip = match gateway.caches.pod(&org, &name).as_deref().and_then(ready_pod_ip) {
        Some(ip) => ip,
        None => match wake(&gateway, &target, &presented, browser).await {
            Ok(ip) => ip,
            Err(response) => return response,
        },
    };
    let address = SocketAddr::new(ip, target.port);
    // Ready, but not yet seen answering here (just started, or its server restarted): the first
    // request waits for the port to listen, as during a wake, rather than get a 502.
    if !gateway.serving(address)
        && let Err(response) = await_listening(&gateway, address, Instant::now(), browser).await
    {
        return response;
    }
    gateway.activity.touch(&org, &name, idle_timeout, "http");
    forward(gateway, target, presented, address, peer, upstream, request).await
}

/// Waits for a sleeping project: renews its Lease (the operator scales it up), then waits on the
/// watch caches for its new pod's address, and for the pod to accept connections there. Browsers are shown a
/// page that retries by itself if this takes more than a moment; API clients are held until
/// the wake timeout, then get 503 with Retry-After.
async fn wake(gateway: &Gateway, target: &Target, presented: &str, browser: bool) -> Result<IpAddr, Response<Body>> {
    let started = Instant::now();
    let mut changes = gateway.caches.changes();
    changes.borrow_and_update();
    let name = &target.name;
    if let Err(error) = gateway.activity.renew_for_wake(&target.org, name).await {
        warn!(%error, "could not renew the activity lease to wake the project");
        return Err(ApiError::unavailable("could not wake the project; try again", 2).into_response());
    }
    let settings = &gateway.settings;
    let deadline =
        started + if browser { settings.browser_hold.min(settings.wake_timeout) } else { settings.wake_timeout };
    let ip = loop {
        if let Err(refusal) = authorise(gateway, &target.org, name, presented.as_bytes()) {
            return Err(refusal.into_response());
        }
        if let Some(ip) = gateway.caches.pod(&target.org, name).as_deref().and_then(waking_pod_ip) {
            break ip;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Err(stopping(browser)) },
            () = tokio::time::sleep_until(deadline) => {
                gateway.metrics.woke("timeout", started.elapsed());
                return Err(still_waking(browser, settings.wake_timeout));
            }
            () = gateway.stopping.cancelled() => {
                gateway.metrics.woke("stopping", started.elapsed());
                return Err(stopping(browser));
            }
        }
    };
    // The pod has an address; its dev server may still be starting (or its loader running).
    await_listening(gateway, SocketAddr::new(ip, target.port), started, browser).await.inspect_err(|_| {
        let outcome = if gateway.stopping.is_cancelled() { "stopping" } else { "timeout" };
        gateway.metrics.woke(outcome, started.elapsed());
    })?;
    gateway.metrics.woke("ready", started.elapsed());
    debug!(took_ms = started.elapsed().as_millis() as u64, "woke the project");
    Ok(ip)
}

/// The longest one connection attempt of a wake may take.
const CONNECT_ATTEMPT: Duration = Duration::from_millis(500);

/// Waits until `address` accepts a connection, up to the wake timeout from `started` (a
/// browser's hold, then the waking page, for browsers); then remembers it as serving.
async fn await_listening(
    gateway: &Gateway,
    address: SocketAddr,
    started: Instant,
    browser: bool,
) -> Result<(), Response<Body>> {
    let settings = &gateway.settings;
    let deadline =
        started + if browser { settings.browser_hold.min(settings.wake_timeout) } else { settings.wake_timeout };
    let mut pause = Duration::from_millis(5);
    loop {
        // A sandbox whose network is not up yet may drop the SYN rather than refuse it: each try
        // is bounded, so a retransmission cannot outlast the deadline.
        let attempt =
            deadline.saturating_duration_since(Instant::now()).min(CONNECT_ATTEMPT).max(Duration::from_millis(10));
        if matches!(tokio::time::timeout(attempt, tokio::net::TcpStream::connect(address)).await, Ok(Ok(_))) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(still_waking(browser, settings.wake_timeout));
        }
        // The last try is at the deadline itself: the whole timeout is given. Short pauses: a
        // dev server that has just started listening is answered within one.
        tokio::select! {
            () = tokio::time::sleep_until((Instant::now() + pause).min(deadline)) => {}
            () = gateway.stopping.cancelled() => return Err(stopping(browser)),
        }
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    gateway.mark_serving(address, true);
    Ok(())
}

fn still_waking(browser: bool, wake_timeout: Duration) -> Response<Body> {
    let message = format!("the project is waking up and was not ready within {}s; retry", wake_timeout.as_secs());
    retry_soon(browser, message)
}

/// The answer to a request held for a wake when the gateway stops: the wake goes on without it,
/// and the retry reaches another replica (or this one's successor).
fn stopping(browser: bool) -> Response<Body> {
    retry_soon(browser, "the project is waking up and this gateway is stopping; retry".to_owned())
}

/// 503 with Retry-After: JSON saying why for API clients, a page that reloads itself for browsers.
fn retry_soon(browser: bool, message: String) -> Response<Body> {
    if !browser {
        return ApiError::unavailable(message, 2).into_response();
    }
    let mut response = Response::new(Body::from(WAKING_PAGE));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const WAKING_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Waking up…</title>
<style>body{font:16px system-ui,sans-serif;display:grid;place-items:center;height:100vh;margin:0;color:#333}</style>
</head><body><main><h1>Waking up your project…</h1><p>This page reloads by itself as soon as it is ready.</p></main></body></html>
"#;

fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}

/// The token a request presents, empty if none (or one too long to be ours). A link's token
/// comes first: it is the one that becomes the cookie, and it replaces a stale cookie left from
/// before the token rotated.
fn presented_token(query_token: Option<String>, headers: &HeaderMap, cookie: &str) -> String {
    let presented = query_token.or_else(|| header_token(headers)).or_else(|| cookie_token(headers, cookie));
    presented.filter(|t| t.len() <= MAX_TOKEN_LEN).unwrap_or_default()
}

fn query_token(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| pair.strip_prefix(TOKEN_QUERY)?.strip_prefix('=')).map(str::to_owned)
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    headers.get(TOKEN_HEADER)?.to_str().ok().map(str::to_owned)
}

/// The preview cookie's name: `__Host-` prefixed where TLS makes that possible.
fn cookie_name(tls: bool) -> &'static str {
    if tls { TOKEN_COOKIE_TLS } else { TOKEN_COOKIE }
}

fn cookie_token(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

/// Whether a `name=value` cookie pair, or a `Set-Cookie` value, is one of ooda's own.
fn is_token_cookie(pair: &[u8]) -> bool {
    let name = pair.split(|b| *b == b'=').next().unwrap_or_default().trim_ascii();
    TOKEN_COOKIES.iter().any(|ours| name.eq_ignore_ascii_case(ours.as_bytes()))
}

/// The query without the token parameter, if anything is left.
fn query_without_token(uri: &Uri) -> Option<String> {
    let kept: Vec<&str> = uri.query()?.split('&').filter(|p| !p.starts_with(&format!("{TOKEN_QUERY}="))).collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

fn swap_query_for_cookie(uri: &Uri, token: &str, cookie_name: &str) -> Response<Body> {
    // One leading slash: `//other.example/` or `/\other.example/` would be read by browsers as
    // another host, and this redirect must stay on this one.
    let path = format!("/{}", uri.path().trim_start_matches(['/', '\\']));
    let location = match query_without_token(uri) {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    // Secure even on plain HTTP: browsers accept it from localhost, the only place plain HTTP
    // is meant for.
    let cookie = format!("{cookie_name}={token}; Path=/; Secure; HttpOnly; SameSite=Lax");
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .header(header::SET_COOKIE, cookie)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::REFERRER_POLICY, "no-referrer")
        .body(Body::empty())
        .expect("a valid redirect")
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, not the message.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&listed) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The request's cookies without ooda's own, which the project must never see. Left as they are
/// when none is ooda's.
fn strip_token_from_cookie_headers(headers: &mut HeaderMap) {
    let pairs = || headers.get_all(header::COOKIE).iter().flat_map(|v| v.as_bytes().split(|b| *b == b';'));
    if !pairs().any(is_token_cookie) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_token_cookie(pair.as_bytes()))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// A project must not set, replace or expire ooda's own cookie on its preview host.
fn strip_token_cookies(headers: &mut HeaderMap) {
    if !headers.get_all(header::SET_COOKIE).iter().any(|value| is_token_cookie(value.as_bytes())) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|value| !is_token_cookie(value.as_bytes()))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection = headers.get(header::CONNECTION)?.to_str().ok()?;
    connection
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        .then(|| headers.get(header::UPGRADE).cloned())?
}

/// Entry points for the fuzz targets in `fuzz/` (built with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::*;

    /// The token a preview request presents, and the request as its project receives it.
    pub fn preview_request(request: Request<Body>, peer: SocketAddr, tls: bool) -> (String, Request<Body>) {
        let presented = presented_token(query_token(request.uri()), request.headers(), cookie_name(tls));
        let pod = SocketAddr::from(([198, 18, 0, 2], 3000));
        (presented, upstream_request(request, pod, peer, tls))
    }

    /// A project's response headers as its client receives them.
    pub fn preview_response_headers(headers: &mut HeaderMap) {
        strip_token_cookies(headers);
    }

    /// Whether a cookie pair, or a `Set-Cookie` value, is ooda's own.
    pub fn is_ooda_cookie(pair: &[u8]) -> bool {
        is_token_cookie(pair)
    }
}

/// The request as the upstream should see it: its own URI, no hop-by-hop headers, no trace of
/// the ooda token (header, cookie or query), and `X-Forwarded-*` describing the client.
fn upstream_request(mut request: Request<Body>, address: SocketAddr, peer: SocketAddr, tls: bool) -> Request<Body> {
    let uri = request.uri();
    let path_and_query = match uri.query() {
        Some(query) if query.contains(TOKEN_QUERY) => match query_without_token(uri) {
            Some(query) => format!("{}?{query}", uri.path()).parse().expect("a valid path and query"),
            None => uri.path().parse().expect("a valid path"),
        },
        _ => uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    *request.uri_mut() = Uri::from(path_and_query);
    let upgrade = upgrade_protocol(request.headers());
    let headers = request.headers_mut();
    let host = headers.get(header::HOST).cloned();
    if host.is_none() {
        headers.insert(header::HOST, HeaderValue::from_str(&address.to_string()).expect("an address is a valid host"));
    }
    strip_hop_by_hop(headers);
    headers.remove(TOKEN_HEADER);
    strip_token_from_cookie_headers(headers);
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(if tls { "https" } else { "http" }));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    request
}

async fn forward(
    gateway: Arc<Gateway>,
    target: Target,
    presented: String,
    address: SocketAddr,
    peer: SocketAddr,
    held: Option<Arc<Held>>,
    mut request: Request<Body>,
) -> Response<Body> {
    let client_upgrade = upgrade_protocol(request.headers()).map(|_| hyper::upgrade::on(&mut request));
    let upstream = upstream_request(request, address, peer, gateway.settings.tls);
    let sent = match held {
        Some(held) if client_upgrade.is_none() => held.send(address, upstream).await,
        // An upgrade takes its connection for good; a request from outside a served connection
        // (the router called directly) has none to hold.
        _ => upstream::send_alone(address, upstream).await,
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            if error.is_connect() {
                gateway.mark_serving(address, false);
            }
            debug!(%error, %address, "upstream request failed");
            return ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway", "the project did not answer").into_response();
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(gateway, target, presented, client_upgrade, upstream_upgrade));
        let (mut parts, _) = response.into_parts();
        strip_token_cookies(&mut parts.headers);
        return Response::from_parts(parts, Body::empty());
    }
    strip_hop_by_hop(response.headers_mut());
    strip_token_cookies(response.headers_mut());
    response.map(Body::new)
}

/// Copies bytes both ways for an upgraded connection (WebSocket), renewing activity while it is
/// open and closing it when the project stops or its token changes.
async fn tunnel(
    gateway: Arc<Gateway>,
    target: Target,
    presented: String,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            debug!(%error, "upgrade failed");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    let idle_timeout = crate::gateway::idle_timeout(&gateway, &target.project);
    let mut changes = gateway.caches.changes();
    let mut ticker = tokio::time::interval(gateway.settings.activity_interval.min(idle_timeout / 3));
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            _ = &mut copy => break,
            _ = ticker.tick() => {
                if !gateway.freshness.is_fresh() {
                    debug!("closing a tunnel: the gateway cannot confirm its preview access");
                    break;
                }
                gateway.activity.touch(&target.org, &target.name, idle_timeout, "websocket");
            }
            changed = changes.changed() => {
                if changed.is_err() || authorise(&gateway, &target.org, &target.name, presented.as_bytes()).is_err() {
                    debug!("closing a tunnel: the project's preview access ended");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_hosts_name_a_label_under_the_domain() {
        let domain = "preview.ooda.localhost";
        assert_eq!(host_label("shop--acme.preview.ooda.localhost", domain), Some("shop--acme"));
        assert_eq!(host_label("shop--acme.preview.ooda.localhost:8443", domain), Some("shop--acme"));
        assert_eq!(host_label("preview.ooda.localhost", domain), None);
        assert_eq!(host_label("a.b.preview.ooda.localhost", domain), None);
        assert_eq!(host_label("shop--acme.evilpreview.ooda.localhost", domain), None);
        assert_eq!(host_label("api.ooda.localhost", domain), None);
    }

    #[test]
    fn only_ooda_s_own_cookies_are_recognised_as_the_token() {
        for ours in [&b"ooda_preview=x"[..], b"__Host-ooda_preview=x; Path=/", b" OODA_PREVIEW=x", b"ooda_preview"] {
            assert!(is_token_cookie(ours), "{}", String::from_utf8_lossy(ours));
        }
        for theirs in [&b"ooda_preview_x=1"[..], b"theme=ooda_preview", b"session=\xff"] {
            assert!(!is_token_cookie(theirs), "{}", String::from_utf8_lossy(theirs));
        }
    }

    #[test]
    fn an_upstream_cannot_set_ooda_s_cookie() {
        let mut headers = HeaderMap::new();
        headers.append(header::SET_COOKIE, HeaderValue::from_static("theme=dark; Path=/"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("ooda_preview=evil; Path=/"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("__Host-ooda_preview=evil; Path=/; Secure"));
        strip_token_cookies(&mut headers);
        let left: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["theme=dark; Path=/"]);
    }

    #[test]
    fn the_token_swap_redirect_stays_on_this_host() {
        for (path, expected) in [
            ("//evil.example/x?ooda_token=t", "/evil.example/x"),
            ("/\\evil.example/?ooda_token=t&a=1", "/evil.example/?a=1"),
            ("///x?ooda_token=t", "/x"),
            ("/?ooda_token=t", "/"),
        ] {
            let response = swap_query_for_cookie(&path.parse().unwrap(), "t", TOKEN_COOKIE);
            assert_eq!(response.headers()[header::LOCATION], expected, "{path}");
        }
    }

    #[test]
    fn the_token_is_found_in_header_cookie_or_query() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; ooda_preview=tok; b=2"));
        assert_eq!(cookie_token(&headers, TOKEN_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie_token(&headers, TOKEN_COOKIE_TLS), None);
        headers.insert(TOKEN_HEADER, HeaderValue::from_static("hdr"));
        assert_eq!(header_token(&headers).as_deref(), Some("hdr"));
        let uri: Uri = "/x?a=1&ooda_token=q&b=2".parse().unwrap();
        assert_eq!(query_token(&uri).as_deref(), Some("q"));
        assert_eq!(query_without_token(&uri).as_deref(), Some("a=1&b=2"));
        assert_eq!(query_without_token(&"/x?ooda_token=q".parse().unwrap()), None);
    }

    #[test]
    fn the_upstream_sees_no_token_and_no_hop_by_hop_headers() {
        let request = Request::builder()
            .uri("/app?x=1&ooda_token=secret")
            .header(header::HOST, "shop--acme.preview.example")
            .header(header::COOKIE, "theme=dark; ooda_preview=secret")
            .header(TOKEN_HEADER, "secret")
            .header(header::CONNECTION, "keep-alive, x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-for", "203.0.113.9")
            .body(Body::empty())
            .unwrap();
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let out = upstream_request(request, "127.1.0.7:3000".parse().unwrap(), peer, true);
        assert_eq!(out.uri().to_string(), "/app?x=1");
        let h = out.headers();
        assert_eq!(h.get(header::COOKIE).unwrap(), "theme=dark");
        assert!(h.get(TOKEN_HEADER).is_none());
        assert!(h.get(header::CONNECTION).is_none() && h.get("x-private").is_none() && h.get("keep-alive").is_none());
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "shop--acme.preview.example");
        assert_eq!(h.get(header::HOST).unwrap(), "shop--acme.preview.example");
        assert!(!format!("{h:?}").contains("secret"));
    }

    #[test]
    fn a_request_with_nothing_of_ooda_s_passes_with_its_path_query_and_cookies_as_they_were() {
        let request = Request::builder()
            .uri("/a%20b?q=ooda&x=1")
            .header(header::HOST, "shop--acme.preview.example")
            .header(header::COOKIE, "theme=dark;session=abc")
            .body(Body::empty())
            .unwrap();
        let out = upstream_request(request, "127.1.0.7:3000".parse().unwrap(), "127.0.0.1:1".parse().unwrap(), false);
        assert_eq!(out.uri().to_string(), "/a%20b?q=ooda&x=1");
        assert_eq!(out.headers().get(header::COOKIE).unwrap(), "theme=dark;session=abc");
    }

    #[test]
    fn ooda_s_cookie_is_found_in_any_cookie_header_even_one_that_is_not_text() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark"));
        headers.append(header::COOKIE, HeaderValue::from_bytes(b"x=\xff; ooda_preview=secret").unwrap());
        strip_token_from_cookie_headers(&mut headers);
        let left: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(left, ["theme=dark"]);
    }

    #[test]
    fn websocket_upgrades_keep_their_upgrade_headers() {
        let request = Request::builder()
            .uri("/ws")
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Body::empty())
            .unwrap();
        let out = upstream_request(request, "127.1.0.7:3000".parse().unwrap(), "127.0.0.1:1".parse().unwrap(), false);
        assert_eq!(out.headers().get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(out.headers().get(header::UPGRADE).unwrap(), "websocket");
    }

    #[test]
    fn a_link_token_becomes_a_host_only_secure_cookie() {
        let response = swap_query_for_cookie(&"/page?ooda_token=abc&x=1".parse().unwrap(), "abc", TOKEN_COOKIE_TLS);
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers().get(header::LOCATION).unwrap(), "/page?x=1");
        let cookie = response.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap();
        assert_eq!(cookie, "__Host-ooda_preview=abc; Path=/; Secure; HttpOnly; SameSite=Lax");
        assert!(!cookie.contains("Domain"));
    }
}
