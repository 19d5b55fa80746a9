//! `ooda gateway`: the HTTP(S) edge. Accounts and sessions, the REST API, and the preview proxy
//! with wake-on-request. Stateless apart from in-memory caches and rate limits: run as many
//! replicas as you like.

pub mod account_writes;
pub mod activity;
pub mod api;
pub mod auth;
pub mod cache;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod extract;
pub mod forwarded;
pub mod freshness;
pub mod invites;
pub mod keys;
pub mod limiter;
pub mod login;
pub mod members;
pub mod metrics;
pub mod proxy;
pub mod relay;
pub mod server;
pub mod sites;
pub mod terminal;
#[cfg(test)]
mod tests;
pub mod token;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use base64::Engine;
use kube::Client;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{error, info};

use crate::accounts::{AccountStore, Accounts, Kdf, MIN_SERVER_ITERATIONS};
use crate::config::{ConfigError, OperatorConfig};
use crate::crd::Project;
use activity::Activity;
use cache::Caches;
use error::ApiError;
use limiter::LoginLimiter;
use metrics::Metrics;
use token::KeyRing;
use upstream::Held;

/// The field manager of every write the gateway makes.
pub const FIELD_MANAGER: &str = "ooda-gateway";

/// How `ooda gateway` was started.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics`, apart from the public listener.
    pub http_addr: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub settings: Settings,
}

/// What the gateway's behaviour depends on, beyond the shared configuration file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of accounts, invites and signing keys (the operator's).
    pub namespace: String,
    pub issuer: String,
    pub audience: String,
    pub session_ttl: Duration,
    /// Clock skew tolerated on `exp` and `iat`.
    pub token_leeway: Duration,
    pub invite_ttl: Duration,
    /// Longest gap between two renewals of a busy project's activity Lease.
    pub activity_interval: Duration,
    /// How long a request may wait for a hibernated project to wake.
    pub wake_timeout: Duration,
    /// How long the caches are trusted without the API server confirming it is reachable.
    pub stale_after: Duration,
    /// How long a browser waits before it is shown the "waking" page instead.
    pub browser_hold: Duration,
    /// Whether clients reach the gateway over TLS, its own or a proxy's in front (HSTS, `Secure`
    /// cookies, `X-Forwarded-Proto`, preview URLs).
    pub tls: bool,
    /// The port in preview URLs, when clients reach the gateway on a non-default one.
    pub public_port: Option<u16>,
    /// PBKDF2 rounds over the auth keys of new credentials.
    pub auth_key_iterations: u32,
    /// Key hashes computed at once; the rest queue.
    pub hashing_slots: usize,
    /// Proxies in front of the gateway whose `X-Forwarded-For` names the client.
    pub trusted_proxies: forwarded::TrustedProxies,
}

impl Settings {
    /// `scheme://host[:port]` as clients reach `host` through this gateway.
    pub fn public_origin(&self, host: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match self.public_port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }
    }
}

pub struct Gateway {
    pub client: Client,
    pub config: Arc<OperatorConfig>,
    pub settings: Settings,
    pub caches: Caches,
    pub accounts: Arc<dyn Accounts>,
    pub activity: Arc<Activity>,
    pub metrics: Arc<Metrics>,
    pub limiter: Mutex<LoginLimiter>,
    /// Sign-in attempts wait their turn per account.
    pub turns: limiter::Turns,
    pub hashing: Semaphore,
    /// Used when the email is unknown, so that costs what a wrong password does.
    pub decoy_kdf: Kdf,
    /// Idle connections to project pods, for downstream connections that hold none yet.
    pub upstreams: Arc<upstream::Upstreams>,
    /// Each jurisdiction's bucket for published sites.
    pub buckets: crate::sites::Buckets,
    /// Publishes in progress on this replica, up to `publishing.maxConcurrent`.
    pub publishes: Semaphore,
    /// Event streams open on this replica, up to [`events::MAX_STREAMS`].
    pub event_streams: Arc<Semaphore>,
    /// Terminals open on this replica, up to [`terminal::MAX_TERMINALS`].
    pub terminals: Arc<Semaphore>,
    /// The AI relay's upstream clients and the organisations' AI limits.
    pub relay: relay::Relay,
    /// When the API server last answered: the watch caches are trusted only that long after.
    pub freshness: Arc<freshness::Freshness>,
    /// Cancelled when the gateway is asked to stop: requests held for a wake are answered 503
    /// at once (clients retry on another replica), rather than cut off when the drain ends.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Project pods' preview addresses seen accepting connections: a request to any other waits
    /// for it to listen first.
    serving: Mutex<std::collections::HashSet<SocketAddr>>,
    keys: Arc<RwLock<Arc<KeyRing>>>,
}

impl Gateway {
    /// The one way a gateway is assembled, by `run` and by the tests alike: what the rest
    /// (semaphores, limiter, activity, the upstream pool) follows from these.
    pub fn new(
        client: Client,
        config: Arc<OperatorConfig>,
        settings: Settings,
        caches: Caches,
        accounts: Arc<dyn Accounts>,
        keys: Arc<RwLock<Arc<KeyRing>>>,
        buckets: crate::sites::Buckets,
    ) -> Gateway {
        let metrics = Arc::new(Metrics::default());
        Gateway {
            accounts,
            activity: Arc::new(Activity::new(client.clone(), settings.activity_interval, metrics.clone())),
            limiter: Mutex::new(LoginLimiter::default()),
            turns: limiter::Turns::default(),
            hashing: Semaphore::new(settings.hashing_slots.max(1)),
            decoy_kdf: Kdf::new(settings.auth_key_iterations.max(MIN_SERVER_ITERATIONS))
                .expect("at least the minimum iterations"),
            upstreams: Arc::default(),
            buckets,
            publishes: Semaphore::new(config.publishing.max_concurrent),
            event_streams: Arc::new(Semaphore::new(events::MAX_STREAMS)),
            terminals: Arc::new(Semaphore::new(terminal::MAX_TERMINALS)),
            relay: relay::Relay::new(&config),
            serving: Mutex::default(),
            stopping: tokio_util::sync::CancellationToken::new(),
            freshness: Arc::new(freshness::Freshness::new(settings.stale_after)),
            client,
            config,
            settings,
            caches,
            metrics,
            keys,
        }
    }

    /// Whether `address` was seen accepting connections (and not refusing one since).
    pub fn serving(&self, address: SocketAddr) -> bool {
        self.serving.lock().expect("serving lock").contains(&address)
    }

    pub fn mark_serving(&self, address: SocketAddr, serving: bool) {
        let mut known = self.serving.lock().expect("serving lock");
        if serving {
            // Pods come and go with new addresses: forgetting them all now and then costs one
            // connection check each, and bounds the set.
            if known.len() >= MAX_SERVING {
                known.clear();
            }
            known.insert(address);
        } else {
            known.remove(&address);
        }
    }

    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.read().expect("key ring lock").clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("signing keys: {0}")]
    Keys(#[from] keys::KeysError),
    #[error("TLS: {0}")]
    Tls(#[from] server::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

pub async fn run(options: Options) -> Result<(), RunError> {
    let config = Arc::new(OperatorConfig::load(&options.config)?);
    let tls = match &options.tls {
        Some((cert, key)) => Some(server::tls_acceptor(cert, key)?),
        None => None,
    };
    // The public address first: once /readyz says ready, it must already accept connections.
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| RunError::Listen { addr: options.listen, source })?;
    let health = tokio::net::TcpListener::bind(options.http_addr)
        .await
        .map_err(|source| RunError::Listen { addr: options.http_addr, source })?;
    // The bound addresses, not the configured ones: with port 0 the log is how callers learn them.
    let bound = |listener: &tokio::net::TcpListener, addr| {
        listener.local_addr().map_err(|source| RunError::Listen { addr, source })
    };
    let (addr, http_addr) = (bound(&listener, options.listen)?, bound(&health, options.http_addr)?);

    let client = Client::try_default().await?;
    let mut settings = options.settings.clone();
    if settings.public_port == Some(0) {
        settings.public_port = Some(addr.port());
    }
    // Health first: the signing keys may take a while (see `keys::load_when_allowed`), and until
    // then the process is alive but not ready.
    let started = Arc::new(OnceLock::new());
    let health_router = health_router(started.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(health, health_router).await {
            error!(%error, "gateway health endpoints stopped");
        }
    });
    info!(%addr, %http_addr, tls = tls.is_some(), "gateway listening");
    let secrets = kube::Api::namespaced(client.clone(), &settings.namespace);
    let keys = Arc::new(RwLock::new(Arc::new(keys::load_when_allowed(&secrets).await?)));
    let buckets = crate::sites::Buckets::from_config(&config, &secrets).await;
    keys::follow(secrets, keys.clone());
    let ai_credentials = config.jurisdictions.values().filter_map(|j| Some(j.ai.as_ref()?.credentials_secret.clone()));
    let caches = Caches::start(&client, &settings.namespace, &ai_credentials.collect());
    let accounts = Arc::new(AccountStore::new(client.clone(), &settings.namespace));
    let gateway = Arc::new(Gateway::new(client, config, settings, caches, accounts, keys, buckets));
    tokio::spawn(freshness::confirm(gateway.client.clone(), gateway.freshness.clone()));
    started.get_or_init(|| gateway.clone());
    let stopping = gateway.stopping.clone();
    let shutdown = async move {
        crate::signal::shutdown().await;
        info!("stopping: requests waiting for a wake are answered 503");
        stopping.cancel();
    };
    server::serve(listener, App::new(gateway), tls, shutdown, Duration::from_secs(10)).await;
    Ok(())
}

/// Preview addresses remembered as serving, at most.
const MAX_SERVING: usize = 65_536;

/// Largest JSON body any API endpoint takes.
pub const MAX_API_BODY: usize = 64 * 1024;

/// The public service, one per listener: preview and site hosts go straight to the proxy and to
/// published sites, with no router in their way; every other host to the API's router.
#[derive(Clone)]
pub struct App {
    gateway: Arc<Gateway>,
    router: Router,
}

impl App {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { router: router(gateway.clone()), gateway }
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Answers one request from `peer`, which came on a connection holding `upstream` (none when
    /// called from outside a served connection). Counts every answer.
    pub async fn handle<B>(self, request: hyper::Request<B>, peer: SocketAddr, upstream: Option<Arc<Held>>) -> Response
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let started = Instant::now();
        let gateway = self.gateway;
        if !gateway.caches.synced() {
            return ApiError::unavailable("the gateway is starting", 1).into_response();
        }
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if let Some(label) = gateway.config.sites_domain.as_deref().and_then(|domain| proxy::host_label(&host, domain))
        {
            let response = sites::serve(gateway.clone(), label, request.map(Body::new)).await;
            gateway.metrics.answered("sites", response.status().as_u16(), started.elapsed());
            return response;
        }
        if let Some(label) = proxy::host_label(&host, &gateway.config.preview_domain) {
            let response = proxy::handle(gateway.clone(), label, peer, upstream, request.map(Body::new)).await;
            gateway.metrics.answered("preview", response.status().as_u16(), started.elapsed());
            return response;
        }
        // Everything else is the API, with its security headers whatever the answer.
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let Ok(mut response) = self.router.oneshot(request).await;
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if gateway.settings.tls {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
        }
        gateway.metrics.answered("api", response.status().as_u16(), started.elapsed());
        response
    }
}

/// The API's routes: the one list the router is built from, and the one the tests walk (a route
/// cannot be served without being in it).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<Arc<Gateway>>)> {
    vec![
        ("/api/auth/prelogin", post(login::prelogin)),
        ("/api/auth/login", post(login::login)),
        ("/api/auth/invite-details", post(invites::details)),
        ("/api/auth/accept-invite", post(invites::accept)),
        ("/api/auth/sign-out-everywhere", post(login::sign_out_everywhere)),
        ("/api/me", get(api::me)),
        ("/api/orgs/{org}", get(api::organisation)),
        ("/api/orgs/{org}/events", get(events::events)),
        ("/api/orgs/{org}/members", get(api::list_members)),
        ("/api/orgs/{org}/members/{email}", put(api::put_member).delete(api::delete_member)),
        ("/api/orgs/{org}/members/{email}/sign-out", post(api::sign_out_member)),
        ("/api/orgs/{org}/invites", post(invites::create)),
        ("/api/orgs/{org}/projects", get(api::list_projects).post(api::create_project)),
        ("/api/orgs/{org}/projects/{project}", get(api::get_project).delete(api::delete_project)),
        ("/api/orgs/{org}/projects/{project}/start", post(api::start_project)),
        ("/api/orgs/{org}/projects/{project}/stop", post(api::stop_project)),
        ("/api/orgs/{org}/projects/{project}/wake", post(api::wake_project)),
        ("/api/orgs/{org}/projects/{project}/preview", get(api::preview)),
        ("/api/orgs/{org}/projects/{project}/terminal", get(terminal::terminal)),
        ("/api/orgs/{org}/projects/{project}/publish", post(sites::publish)),
        ("/api/orgs/{org}/projects/{project}/versions", get(sites::versions)),
        ("/api/orgs/{org}/projects/{project}/versions/{version}/activate", post(sites::activate)),
        ("/api/orgs/{org}/projects/{project}/ai/v1/messages", post(relay::messages)),
        ("/api/orgs/{org}/projects/{project}/ai/v1/messages/count_tokens", post(relay::count_tokens)),
        ("/api/orgs/{org}/projects/{project}/ai/v1/models", get(relay::models)),
        ("/api/openapi.json", get(openapi)),
        ("/.well-known/jwks.json", get(jwks)),
        ("/", get(dashboard::index)),
        ("/terminal", get(dashboard::terminal)),
        ("/assets/{*path}", get(dashboard::asset)),
    ]
}

/// The API's router.
fn router(gateway: Arc<Gateway>) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| router.route(path, methods))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
        })
        .layer(DefaultBodyLimit::max(MAX_API_BODY))
        .with_state(gateway)
}

pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn jwks(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    axum::Json(gateway.keys().jwks())
}

/// `/healthz`, `/readyz` and `/metrics`, served from before the gateway has `started`.
fn health_router(started: Arc<OnceLock<Arc<Gateway>>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(started): State<Arc<OnceLock<Arc<Gateway>>>>| async move {
                let Some(gateway) = started.get() else {
                    return (StatusCode::SERVICE_UNAVAILABLE, "loading the session signing keys");
                };
                if gateway.stopping.is_cancelled() {
                    (StatusCode::SERVICE_UNAVAILABLE, "stopping")
                } else if !gateway.caches.synced() {
                    (StatusCode::SERVICE_UNAVAILABLE, "waiting for watches to sync")
                } else if !gateway.freshness.is_fresh() {
                    (StatusCode::SERVICE_UNAVAILABLE, "the API server has not answered lately: previews are refused")
                } else {
                    (StatusCode::OK, "gateway ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(started): State<Arc<OnceLock<Arc<Gateway>>>>| async move {
                let Some(gateway) = started.get() else {
                    return (StatusCode::SERVICE_UNAVAILABLE, "the gateway is starting").into_response();
                };
                (
                    [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    gateway.metrics.encode(),
                )
                    .into_response()
            }),
        )
        .with_state(started)
}

/// A project's idle timeout (see `Config::idle_timeout`); the API server has checked it, so an
/// unreadable one (which the operator reports) falls back to the default here.
pub fn idle_timeout(gateway: &Gateway, project: &Project) -> Duration {
    gateway.config.idle_timeout(project).unwrap_or_else(|_| gateway.config.default_idle_timeout())
}

/// `bytes` random bytes from the operating system, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the operating system provides randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer)
}
