//! The public service in process: requests go straight into [`App::handle`], the watch
//! caches hold fixture objects, and the Kubernetes client points at a closed loopback port, or,
//! for the write paths, at a mock API server (tower-test) that checks what the gateway sends.
//!
//! Every response to an API host is checked for the API's security headers by [`send`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::auth::memberships;
use super::cache::Caches;
use super::limiter::{ACCOUNT_POLICY, ADDRESS_POLICY};
use super::proxy::{TOKEN_HEADER, TOKEN_QUERY, host_label};
use super::token::{Claims, Expectations, KeyRing, Membership, SigningKey};
use super::{App, Gateway, MAX_API_BODY, Settings, random_token};
use crate::accounts::{
    Account, AccountError, Accounts, Admission, AuthKey, CLIENT_ITERATIONS, Kdf, MIN_SERVER_ITERATIONS, client_salt,
};
use crate::config::OperatorConfig;
use crate::crd::names::{TOKEN_KEY, TOKEN_STATE, organisation_namespace, preview_secret_name, project_host};
use crate::crd::{
    DesiredState, Member, Organisation, OrganisationSpec, Phase, Project, ProjectSpec, ProjectStatus, Role,
};

const ALICE: &str = "alice@acme.example";
const BOB: &str = "bob@acme.example";
const CAROL: &str = "carol@globex.example";
const PASSWORD: &str = "correct horse battery staple";
/// ALICE's auth key for PASSWORD, computed independently with Python's `hashlib.pbkdf2_hmac`
/// (see `accounts`' vectors): her sign-ins check the client derivation against another
/// implementation.
const ALICE_AUTH_KEY: &str = "kzq9NKlqdV5cZZ+rgOxRR1gP5UlMPYc+mDJVozLf3Tk=";
/// The fixture accounts' server salt: bytes 1 to 16.
const SERVER_SALT: &str = "AQIDBAUGBwgJCgsMDQ4PEA";
const NAMESPACE: &str = "ooda-system";

const API_HOST: &str = "ooda.localhost";
const SHOP_TOKEN: &str = "c2hvcC1wcmV2aWV3LXRva2VuLWZvci10aGUtdGVzdHM";
const BLOG_TOKEN: &str = "YmxvZy1wcmV2aWV3LXRva2VuLWZvci10aGUtdGVzdHM";
const PORTAL_TOKEN: &str = "cG9ydGFsLXByZXZpZXctdG9rZW4tZm9yLXRoZS10ZXN0";
const PEER: ([u8; 4], u16) = ([192, 0, 2, 10], 40000);

/// The routes the router serves (`super::routes`), with their methods: a test fails until a new
/// route is listed here, and with it in every test that walks this list.
const ROUTES: [(&str, &[&str]); 30] = [
    ("/api/auth/prelogin", &["post"]),
    ("/api/auth/login", &["post"]),
    ("/api/auth/invite-details", &["post"]),
    ("/api/auth/accept-invite", &["post"]),
    ("/api/auth/sign-out-everywhere", &["post"]),
    ("/api/me", &["get"]),
    ("/api/orgs/{org}", &["get"]),
    ("/api/orgs/{org}/events", &["get"]),
    ("/api/orgs/{org}/members", &["get"]),
    ("/api/orgs/{org}/members/{email}", &["put", "delete"]),
    ("/api/orgs/{org}/members/{email}/sign-out", &["post"]),
    ("/api/orgs/{org}/invites", &["post"]),
    ("/api/orgs/{org}/projects", &["get", "post"]),
    ("/api/orgs/{org}/projects/{project}", &["get", "delete"]),
    ("/api/orgs/{org}/projects/{project}/start", &["post"]),
    ("/api/orgs/{org}/projects/{project}/stop", &["post"]),
    ("/api/orgs/{org}/projects/{project}/wake", &["post"]),
    ("/api/orgs/{org}/projects/{project}/preview", &["get"]),
    ("/api/orgs/{org}/projects/{project}/terminal", &["get"]),
    ("/api/orgs/{org}/projects/{project}/publish", &["post"]),
    ("/api/orgs/{org}/projects/{project}/versions", &["get"]),
    ("/api/orgs/{org}/projects/{project}/versions/{version}/activate", &["post"]),
    ("/api/orgs/{org}/projects/{project}/ai/v1/messages", &["post"]),
    ("/api/orgs/{org}/projects/{project}/ai/v1/messages/count_tokens", &["post"]),
    ("/api/orgs/{org}/projects/{project}/ai/v1/models", &["get"]),
    ("/api/openapi.json", &["get"]),
    ("/.well-known/jwks.json", &["get"]),
    ("/", &["get"]),
    ("/terminal", &["get"]),
    ("/assets/{*path}", &["get"]),
];

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Accounts in memory instead of Secrets.
struct MemoryAccounts(Mutex<HashMap<String, Account>>);

impl Accounts for MemoryAccounts {
    fn get<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<Option<Account>, AccountError>> {
        let found = self.0.lock().expect("accounts lock").get(email).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn create<'a>(&'a self, account: &'a Account) -> BoxFuture<'a, Result<Account, AccountError>> {
        let mut accounts = self.0.lock().expect("accounts lock");
        let result = match accounts.contains_key(&account.email) {
            true => Err(AccountError::Exists(account.email.clone())),
            false => {
                accounts.insert(account.email.clone(), account.clone());
                Ok(account.clone())
            }
        };
        Box::pin(async move { result })
    }

    fn replace<'a>(&'a self, account: &'a Account) -> BoxFuture<'a, Result<Account, AccountError>> {
        self.0.lock().expect("accounts lock").insert(account.email.clone(), account.clone());
        let written = account.clone();
        Box::pin(async move { Ok(written) })
    }
}

/// The id of `email`'s one credential in the fixtures.
fn credential_id(email: &str) -> String {
    format!("cred-{}", email.split('@').next().unwrap_or_default())
}

/// The auth key a client derives for `email` and `password`, remembered: each is 600,000 rounds.
fn auth_key(email: &str, password: &str) -> String {
    static KEYS: LazyLock<Mutex<HashMap<(String, String), String>>> = LazyLock::new(Default::default);
    let id = (email.to_owned(), password.to_owned());
    if let Some(key) = KEYS.lock().expect("keys lock").get(&id) {
        return key.clone();
    }
    let key = AuthKey::for_email(email, password).expect("a client key").to_base64();
    KEYS.lock().expect("keys lock").insert(id, key.clone());
    key
}

/// `email`'s account as `ooda user add` makes it for [`PASSWORD`], with a fixed server salt.
fn account(email: &str) -> Account {
    let kdf: Kdf =
        serde_json::from_value(json!({ "iterations": MIN_SERVER_ITERATIONS, "salt": SERVER_SALT, "input": "authKey" }))
            .expect("a valid kdf");
    let key = AuthKey::parse(&auth_key(email, PASSWORD)).expect("a key");
    let mut account = Account::new(email, kdf.clone(), kdf.derive(&key), Admission::Platform);
    account.credentials[0].id = credential_id(email);
    account
}

/// The account's Secret as the gateway's watch sees it.
fn account_secret(email: &str) -> Secret {
    let mut secret = account(email).to_secret();
    secret.metadata.namespace = Some(NAMESPACE.into());
    secret
}

fn organisation(name: &str, members: &[(&str, Role)]) -> Organisation {
    let members = members.iter().map(|(email, role)| Member { email: (*email).to_owned(), role: *role }).collect();
    Organisation::new(
        name,
        OrganisationSpec { display_name: None, jurisdiction: "eu".into(), members, quota: None, ai: None },
    )
}

fn project(org: &str, name: &str, phase: Phase, preview_domain: &str) -> Project {
    let spec: ProjectSpec =
        serde_json::from_value(json!({ "ports": [{ "name": "web", "port": 3000, "preview": true }] }))
            .expect("a valid project spec");
    let mut project = Project::new(name, spec);
    project.metadata.namespace = Some(organisation_namespace(org));
    project.status = Some(ProjectStatus {
        phase: Some(phase),
        preview_host: Some(project_host(name, org, preview_domain)),
        ..Default::default()
    });
    project
}

/// The `<project>-preview` Secret as the operator writes it.
fn preview_secret(org: &str, project: &str, token: &str, state: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(preview_secret_name(project)),
            namespace: Some(organisation_namespace(org)),
            annotations: Some(BTreeMap::from([(TOKEN_STATE.to_owned(), state.to_owned())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), ByteString(token.as_bytes().to_vec()))])),
        ..Default::default()
    }
}

/// acme: alice (admin), bob (member); projects shop and blog (its preview token marked stopped).
/// globex: carol (admin), alice (member); project portal. initech's project lab is cached, but
/// not yet its namespace (its Organisation is not cached either: it has just become Ready).
fn gateway() -> Arc<Gateway> {
    gateway_with(|_| {})
}

/// The fixture gateway with `edit` applied to its settings.
fn gateway_with(edit: impl FnOnce(&mut Settings)) -> Arc<Gateway> {
    let unreachable = kube::Config::new("http://127.0.0.1:9".parse().expect("a valid URL"));
    fixture(kube::Client::try_from(unreachable).expect("a client for a plain HTTP URL"), edit)
}

/// What reaches the API server in the write-path tests: a mock service standing in for it.
type ApiServer = tower_test::mock::Handle<Request<kube::client::Body>, axum::http::Response<kube::client::Body>>;

/// The fixture gateway whose Kubernetes client talks to a mock API server.
fn gateway_with_api() -> (Arc<Gateway>, ApiServer) {
    let (service, api) =
        tower_test::mock::pair::<Request<kube::client::Body>, axum::http::Response<kube::client::Body>>();
    (fixture(kube::Client::new(service, "default"), |_| {}), api)
}

/// Takes the next request the gateway sends the API server and answers it `status` with
/// `answer`; returns the request's method, path and query, and JSON body.
async fn api_call(api: &mut ApiServer, status: u16, answer: Value) -> (Method, String, Value) {
    use http_body_util::BodyExt;
    let (request, respond) = tokio::time::timeout(Duration::from_secs(5), api.next_request())
        .await
        .expect("the gateway calls the API server")
        .expect("a request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.expect("a readable body").to_bytes();
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
    let response = axum::http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(kube::client::Body::from(answer.to_string().into_bytes()))
        .expect("a response");
    respond.send_response(response);
    (parts.method, parts.uri.to_string(), json)
}

/// The fixture gateway with `edit` applied to its settings, its Kubernetes calls going to `client`.
fn fixture(client: kube::Client, edit: impl FnOnce(&mut Settings)) -> Arc<Gateway> {
    let config =
        OperatorConfig::parse("examples/operator-config.yaml", include_str!("../../examples/operator-config.yaml"))
            .expect("the example configuration is valid");
    let domain = config.preview_domain.clone();
    let organisations = vec![
        organisation("acme", &[(ALICE, Role::Admin), (BOB, Role::Member)]),
        organisation("globex", &[(CAROL, Role::Admin), (ALICE, Role::Member)]),
    ];
    let mut blog = project("acme", "blog", Phase::Running, &domain);
    // The Secret's watch is ahead of the Project's: the token is already marked stopped while the
    // cached spec still says Running. The annotation alone must close the preview.
    blog.spec.lifecycle.state = DesiredState::Running;
    let projects = vec![
        project("acme", "shop", Phase::Running, &domain),
        blog,
        project("globex", "portal", Phase::Running, &domain),
        // In an organisation whose namespace this gateway has not listed yet.
        project("initech", "lab", Phase::Running, &domain),
    ];
    let secrets = vec![
        preview_secret("acme", "shop", SHOP_TOKEN, "running"),
        preview_secret("acme", "blog", BLOG_TOKEN, "stopped"),
        preview_secret("globex", "portal", PORTAL_TOKEN, "running"),
    ];

    let accounts = [ALICE, BOB, CAROL].map(|email| (email.to_owned(), account(email)));
    let mut settings = Settings {
        namespace: NAMESPACE.into(),
        issuer: "ooda".into(),
        audience: "ooda-api".into(),
        session_ttl: Duration::from_secs(3600),
        token_leeway: Duration::from_secs(30),
        invite_ttl: Duration::from_secs(7 * 24 * 3600),
        activity_interval: Duration::from_secs(30),
        wake_timeout: Duration::from_secs(60),
        stale_after: Duration::from_secs(3600),
        browser_hold: Duration::from_secs(2),
        tls: false,
        public_port: None,
        auth_key_iterations: MIN_SERVER_ITERATIONS,
        hashing_slots: 4,
        trusted_proxies: Default::default(),
    };
    edit(&mut settings);
    let caches = Caches::from_objects(
        organisations,
        projects,
        Vec::new(),
        secrets,
        [ALICE, BOB, CAROL].map(account_secret).to_vec(),
        NAMESPACE,
    );
    let keys = Arc::new(RwLock::new(Arc::new(KeyRing::new(SigningKey::generate()))));
    let accounts = Arc::new(MemoryAccounts(Mutex::new(HashMap::from(accounts))));
    let buckets = crate::sites::Buckets::default();
    let gateway = Gateway::new(client, Arc::new(config), settings, caches, accounts, keys, buckets);
    // The fixture's caches are the truth, as if the API server had just answered.
    gateway.freshness.confirm(tokio::time::Instant::now());
    Arc::new(gateway)
}

fn expectations(gateway: &Gateway) -> Expectations<'_> {
    let settings = &gateway.settings;
    Expectations {
        issuer: &settings.issuer,
        audience: &settings.audience,
        leeway: settings.token_leeway,
        session_ttl: settings.session_ttl,
    }
}

/// Claims for `email` naming `orgs`, valid for an hour from now.
fn claims(gateway: &Gateway, email: &str, orgs: Vec<Membership>) -> Claims {
    let now = Timestamp::now().as_second();
    Claims {
        iss: gateway.settings.issuer.clone(),
        aud: gateway.settings.audience.clone(),
        sub: email.to_owned(),
        iat: now,
        exp: now + 3600,
        nbf: None,
        jti: random_token(16),
        cred: credential_id(email),
        orgs,
    }
}

/// A session token for `email` claiming `orgs`, signed with the gateway's key.
fn session_claiming(gateway: &Gateway, email: &str, orgs: Vec<Membership>) -> String {
    gateway.keys().issue(&claims(gateway, email, orgs))
}

/// A session token for `email` as signing in now would issue it, without the password check.
fn session(gateway: &Gateway, email: &str) -> String {
    session_claiming(
        gateway,
        email,
        memberships(gateway, &account(email), &credential_id(email), Timestamp::now().as_second()),
    )
}

fn membership(org: &str, role: &str) -> Membership {
    Membership { org: org.into(), role: role.into() }
}

// ---------------------------------------------------------------------------------------------
// Requests

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: impl header::AsHeaderName) -> &str {
        self.headers.get(name).map(|v| v.to_str().expect("a text header")).unwrap_or_default()
    }

    /// The status, and a JSON error body with this code and a message.
    #[track_caller]
    fn assert_error(&self, status: StatusCode, code: &str) -> Value {
        let body = self.json();
        assert_eq!((self.status, body["error"].as_str()), (status, Some(code)), "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {body}");
        assert!(self.header(header::CONTENT_TYPE).starts_with("application/json"));
        body
    }
}

/// Sends `request` through the gateway's service from [`PEER`]. Answers on API hosts must carry the API's
/// security headers, whatever the status.
async fn send(gateway: &Arc<Gateway>, request: Request<Body>) -> Reply {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let api = host_label(host, &gateway.config.preview_domain).is_none();
    let response = App::new(gateway.clone()).handle(request, SocketAddr::from(PEER), None).await;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("a readable body").to_vec();
    let reply = Reply { status: parts.status, headers: parts.headers, body };
    if api {
        assert_eq!(reply.header(header::CACHE_CONTROL), "no-store", "status {}", reply.status);
        assert_eq!(reply.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "status {}", reply.status);
    }
    reply
}

fn api(method: Method, uri: &str, token: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri).header(header::HOST, API_HOST);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::empty()).expect("a valid request")
}

async fn get(gateway: &Arc<Gateway>, uri: &str, token: &str) -> Reply {
    send(gateway, api(Method::GET, uri, Some(token))).await
}

async fn login(gateway: &Arc<Gateway>, body: impl Into<Body>) -> Reply {
    send(gateway, login_request().body(body.into()).expect("a valid request")).await
}

fn login_request() -> axum::http::request::Builder {
    Request::post("/api/auth/login").header(header::HOST, API_HOST).header(header::CONTENT_TYPE, "application/json")
}

/// Records an address's whole free allowance of failures, as guesses at other accounts would.
fn exhaust_address(gateway: &Gateway, address: [u8; 4]) {
    for i in 0..=ADDRESS_POLICY.free_failures {
        let guess = format!("guess{i}@elsewhere.example");
        gateway.limiter.lock().unwrap().begin(&guess, address.into(), Instant::now()).expect("admitted");
    }
}

/// A sign-in body as a client sends it: the auth key of `password`, derived for `email`.
fn credentials(email: &str, password: &str) -> String {
    json!({ "email": email, "authKey": auth_key(&crate::accounts::normalise_email(email), password) }).to_string()
}

/// A request to `project`'s preview host in `org`.
fn preview(gateway: &Gateway, org: &str, project: &str, uri: &str) -> axum::http::request::Builder {
    let host = project_host(project, org, &gateway.config.preview_domain);
    Request::get(uri).header(header::HOST, host)
}

// ---------------------------------------------------------------------------------------------
// Signing in

async fn prelogin(gateway: &Arc<Gateway>, email: &str) -> Reply {
    let request = Request::post("/api/auth/prelogin")
        .header(header::HOST, API_HOST)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "email": email }).to_string()))
        .expect("a valid request");
    send(gateway, request).await
}

#[tokio::test]
async fn prelogin_answers_every_email_alike_with_a_salt_of_the_email_alone() {
    let gateway = gateway();
    let known = prelogin(&gateway, " Alice@Acme.Example").await;
    let unknown = prelogin(&gateway, "mallory@acme.example").await;
    assert_eq!((known.status, unknown.status), (StatusCode::OK, StatusCode::OK));
    let (known, unknown) = (known.json(), unknown.json());
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&known), keys(&unknown), "the same shape");
    assert_eq!((&known["kdf"], &known["iterations"]), (&json!("pbkdf2-sha256"), &json!(CLIENT_ITERATIONS)));
    assert_eq!((&known["kdf"], &known["iterations"]), (&unknown["kdf"], &unknown["iterations"]));
    use base64::Engine;
    let salt = |email: &str| base64::engine::general_purpose::STANDARD.encode(client_salt(email));
    assert_eq!((&known["salt"], &unknown["salt"]), (&json!(salt(ALICE)), &json!(salt("mallory@acme.example"))));

    let long_email = format!("{}@acme.example", "a".repeat(250));
    prelogin(&gateway, &long_email).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn alice_signs_in_with_the_auth_key_python_derived_from_her_password() {
    let gateway = gateway();
    assert_eq!(auth_key(ALICE, PASSWORD), ALICE_AUTH_KEY, "ring and Python agree");
    let reply = login(&gateway, json!({ "email": ALICE, "authKey": ALICE_AUTH_KEY }).to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
}

#[tokio::test]
async fn login_with_the_right_password_issues_a_token_naming_the_cached_memberships() {
    let gateway = gateway();
    let reply = login(&gateway, credentials("  Alice@Acme.Example ", PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
    let body = reply.json();
    let orgs = json!([{ "org": "acme", "role": "admin" }, { "org": "globex", "role": "member" }]);
    assert_eq!((&body["email"], &body["tokenType"], &body["organisations"]), (&json!(ALICE), &json!("Bearer"), &orgs));

    let token = body["token"].as_str().expect("a token");
    let claims = gateway.keys().verify(token, &expectations(&gateway), Timestamp::now()).expect("a valid token");
    assert_eq!((claims.sub.as_str(), claims.iss.as_str(), claims.aud.as_str()), (ALICE, "ooda", "ooda-api"));
    assert_eq!(claims.orgs, [membership("acme", "admin"), membership("globex", "member")]);
    assert_eq!(claims.exp - claims.iat, 3600);

    let me = get(&gateway, "/api/me", token).await;
    assert_eq!((me.status, &me.json()["organisations"]), (StatusCode::OK, &orgs));
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_get_the_same_401_and_body() {
    let gateway = gateway();
    let unknown = login(&gateway, credentials("mallory@acme.example", "a guess at a password")).await;
    let wrong = login(&gateway, credentials(ALICE, "a guess at a password")).await;
    unknown.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!((wrong.status, &wrong.body), (unknown.status, &unknown.body));
    assert_eq!(wrong.header(header::WWW_AUTHENTICATE), unknown.header(header::WWW_AUTHENTICATE));
}

#[tokio::test]
async fn a_password_instead_of_an_auth_key_or_an_over_long_email_is_a_400() {
    let gateway = gateway();
    // A client that sends the password where the key goes is refused, and told what to send.
    let password = login(&gateway, json!({ "email": ALICE, "authKey": PASSWORD }).to_string()).await;
    let body = password.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("prelogin"), "{body}");
    let short = json!({ "email": ALICE, "authKey": &ALICE_AUTH_KEY[..40] }).to_string();
    login(&gateway, short).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let long_email = format!("{}@acme.example", "a".repeat(250));
    let body = json!({ "email": long_email, "authKey": ALICE_AUTH_KEY }).to_string();
    login(&gateway, body).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn an_account_from_before_the_client_derivation_is_refused_like_a_wrong_password() {
    let mut legacy: Account = serde_json::from_value(json!({
        "kdf": { "iterations": 600000, "salt": SERVER_SALT },
        "credentials": [{ "id": "old", "hash": SERVER_SALT.repeat(2)[..43].to_owned(), "admission": "platform" }],
    }))
    .expect("a 0.1 account");
    let gateway = gateway();
    legacy.email = ALICE.into();
    gateway.accounts.replace(&legacy).await.expect("stored");
    let old = login(&gateway, credentials(ALICE, PASSWORD)).await;
    let unknown = login(&gateway, credentials("mallory@acme.example", PASSWORD)).await;
    old.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    assert_eq!((old.status, &old.body), (unknown.status, &unknown.body));
}

#[tokio::test]
async fn a_login_body_that_is_not_the_expected_json_is_refused_with_the_reason() {
    let gateway = gateway();
    login(&gateway, "{\"email\": ").await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");

    let extra = json!({ "email": ALICE, "authKey": ALICE_AUTH_KEY, "admin": true }).to_string();
    let body = login(&gateway, extra).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("admin"), "names the field: {body}");
    let missing = login(&gateway, json!({ "email": ALICE }).to_string()).await;
    let body = missing.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("authKey"), "names the field: {body}");
    // The old body, with the password itself, is refused for its field: it is never read.
    let plaintext = json!({ "email": ALICE, "password": PASSWORD }).to_string();
    let body = login(&gateway, plaintext).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("password"), "names the field: {body}");

    let untyped = Request::post("/api/auth/login")
        .header(header::HOST, API_HOST)
        .body(Body::from(credentials(ALICE, PASSWORD)))
        .unwrap();
    send(&gateway, untyped).await.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
}

#[tokio::test]
async fn a_login_body_over_64_kib_is_413_too_large() {
    let gateway = gateway();
    let padding = "p".repeat(MAX_API_BODY);
    let reply = login(&gateway, json!({ "email": ALICE, "authKey": padding }).to_string()).await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
}

#[tokio::test]
async fn after_six_failures_an_email_gets_429_with_retry_after_even_with_the_right_password() {
    let gateway = gateway();
    // The failures are recorded directly, from other addresses (only the account's count may
    // block): through the router each would cost a PBKDF2 check, and the time it takes would
    // eat into the one-second wait this test looks at.
    for i in 0..=ACCOUNT_POLICY.free_failures {
        gateway.limiter.lock().unwrap().begin(ALICE, [198, 51, 100, i as u8].into(), Instant::now()).expect("admitted");
    }
    let limited = login(&gateway, credentials(ALICE, PASSWORD)).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    assert_eq!(limited.header(header::RETRY_AFTER), "1");
    let differently_typed = login(&gateway, credentials(" ALICE@acme.example", PASSWORD)).await;
    differently_typed.assert_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    let other = login(&gateway, credentials(BOB, "a guess at a password")).await;
    other.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_cannot_evade_the_address_limit() {
    let gateway = gateway();
    exhaust_address(&gateway, PEER.0);
    let spoofed =
        login_request().header("x-forwarded-for", "198.51.100.99").body(Body::from(credentials(ALICE, PASSWORD)));
    send(&gateway, spoofed.unwrap()).await.assert_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_address_limit() {
    let gateway = gateway_with(|settings| settings.trusted_proxies = "192.0.2.0/24".parse().unwrap());
    let guesser = [198, 51, 100, 66];
    exhaust_address(&gateway, guesser);
    let from =
        |client: &str| login_request().header("x-forwarded-for", client).body(Body::from(credentials(ALICE, PASSWORD)));
    let limited = send(&gateway, from("198.51.100.66").unwrap()).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    // Another client behind the same proxy is not locked out by the guesser.
    assert_eq!(send(&gateway, from("203.0.113.5").unwrap()).await.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[tokio::test]
async fn the_api_without_a_valid_bearer_token_is_401() {
    let gateway = gateway();
    send(&gateway, api(Method::GET, "/api/me", None)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let basic = Request::get("/api/me")
        .header(header::HOST, API_HOST)
        .header(header::AUTHORIZATION, "Basic YWxpY2U6cGFzc3dvcmQ=")
        .body(Body::empty())
        .unwrap();
    send(&gateway, basic).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let valid = claims(
        &gateway,
        ALICE,
        memberships(&gateway, &account(ALICE), &credential_id(ALICE), Timestamp::now().as_second()),
    );
    let expired = gateway.keys().issue(&Claims { iat: valid.iat - 7200, exp: valid.iat - 3600, ..valid.clone() });
    let foreign = KeyRing::new(SigningKey::generate()).issue(&valid);
    for token in [expired.as_str(), foreign.as_str(), "not-a-token", ""] {
        get(&gateway, "/api/me", token).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn api_me_lists_the_callers_organisations_from_the_cache() {
    let gateway = gateway();
    let reply = get(&gateway, "/api/me", &session(&gateway, BOB)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "email": BOB, "organisations": [{ "org": "acme", "role": "member" }] }));
}

#[tokio::test]
async fn an_organisation_the_caller_is_not_in_is_404_as_if_it_did_not_exist() {
    let gateway = gateway();
    let bob = session(&gateway, BOB);
    let theirs = get(&gateway, "/api/orgs/globex", &bob).await;
    theirs.assert_error(StatusCode::NOT_FOUND, "not_found");
    get(&gateway, "/api/orgs/nowhere", &bob).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    get(&gateway, "/api/orgs/globex/members", &bob).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    get(&gateway, "/api/orgs/globex/projects", &bob).await.assert_error(StatusCode::NOT_FOUND, "not_found");

    let own = get(&gateway, "/api/orgs/acme", &bob).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!((&own.json()["name"], &own.json()["yourRole"]), (&json!("acme"), &json!("member")));
}

#[tokio::test]
async fn a_token_claiming_an_organisation_the_user_has_left_is_401_there() {
    let gateway = gateway();
    let stale = session_claiming(&gateway, BOB, vec![membership("acme", "member"), membership("globex", "admin")]);
    get(&gateway, "/api/orgs/globex", &stale).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    get(&gateway, "/api/orgs/globex/projects", &stale).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(get(&gateway, "/api/orgs/acme", &stale).await.status, StatusCode::OK, "still a member of acme");
}

#[tokio::test]
async fn a_member_may_not_change_members_403() {
    let gateway = gateway();
    let bob = session(&gateway, BOB);
    let delete = send(&gateway, api(Method::DELETE, &format!("/api/orgs/acme/members/{ALICE}"), Some(&bob))).await;
    delete.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let put = Request::put(format!("/api/orgs/acme/members/{CAROL}"))
        .header(header::HOST, API_HOST)
        .header(header::AUTHORIZATION, format!("Bearer {bob}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "role": "admin" }).to_string()))
        .unwrap();
    send(&gateway, put).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
}

// ---------------------------------------------------------------------------------------------
// Projects, from the cache

#[tokio::test]
async fn a_member_lists_and_reads_their_organisations_projects() {
    let gateway = gateway();
    let bob = session(&gateway, BOB);
    let list = get(&gateway, "/api/orgs/acme/projects", &bob).await;
    assert_eq!(list.status, StatusCode::OK);
    let projects = list.json()["projects"].as_array().expect("a list").clone();
    let names: Vec<&str> = projects.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["blog", "shop"], "sorted by name, only acme's");

    let one = get(&gateway, "/api/orgs/acme/projects/shop", &bob).await;
    assert_eq!(one.status, StatusCode::OK);
    let shop = one.json();
    assert_eq!(shop, projects[1]);
    assert_eq!(shop["organisation"], "acme");
    assert_eq!(shop["phase"], "Running");
    assert_eq!(shop["state"], "Running");
    assert_eq!(shop["previewHost"], "shop--acme.preview.ooda.localhost");
    assert_eq!(shop["spec"]["ports"], json!([{ "name": "web", "port": 3000, "preview": true }]));
}

#[tokio::test]
async fn another_organisations_project_is_404() {
    let gateway = gateway();
    let bob = session(&gateway, BOB);
    let by_own_org = get(&gateway, "/api/orgs/acme/projects/portal", &bob).await;
    by_own_org.assert_error(StatusCode::NOT_FOUND, "not_found");
    let by_its_org = get(&gateway, "/api/orgs/globex/projects/portal", &bob).await;
    by_its_org.assert_error(StatusCode::NOT_FOUND, "not_found");
    let preview = get(&gateway, "/api/orgs/acme/projects/portal/preview", &bob).await;
    preview.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_preview_link_from_the_api_opens_the_preview_as_a_cookie() {
    let gateway = gateway();
    let reply = get(&gateway, "/api/orgs/acme/projects/shop/preview", &session(&gateway, BOB)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    let url = format!("http://shop--acme.preview.ooda.localhost/?{TOKEN_QUERY}={SHOP_TOKEN}");
    assert_eq!(
        body,
        json!({ "host": "shop--acme.preview.ooda.localhost", "url": url, "token": SHOP_TOKEN, "header": TOKEN_HEADER })
    );

    let link = preview(&gateway, "acme", "shop", &format!("/?{TOKEN_QUERY}={SHOP_TOKEN}")).body(Body::empty()).unwrap();
    let opened = send(&gateway, link).await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER);
    assert_eq!(opened.header(header::LOCATION), "/");
}

// ---------------------------------------------------------------------------------------------
// The preview proxy, up to the point it would wake or forward

#[tokio::test]
async fn a_preview_request_without_a_token_is_401() {
    let gateway = gateway();
    let reply = send(&gateway, preview(&gateway, "acme", "shop", "/").body(Body::empty()).unwrap()).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_wrong_preview_token_is_401_in_header_cookie_or_query() {
    let gateway = gateway();
    let requests = [
        preview(&gateway, "acme", "shop", "/").header(TOKEN_HEADER, PORTAL_TOKEN),
        preview(&gateway, "acme", "shop", "/").header(header::COOKIE, format!("ooda_preview={PORTAL_TOKEN}")),
        preview(&gateway, "acme", "shop", &format!("/?{TOKEN_QUERY}={PORTAL_TOKEN}")),
        preview(&gateway, "acme", "shop", "/").header(TOKEN_HEADER, format!("{SHOP_TOKEN}x")),
        preview(&gateway, "globex", "portal", "/").header(TOKEN_HEADER, SHOP_TOKEN),
    ];
    for request in requests {
        let reply = send(&gateway, request.body(Body::empty()).unwrap()).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn the_token_of_a_project_whose_preview_secret_is_marked_stopped_is_403() {
    let gateway = gateway();
    let request = preview(&gateway, "acme", "blog", "/").header(TOKEN_HEADER, BLOG_TOKEN).body(Body::empty()).unwrap();
    send(&gateway, request).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let link = preview(&gateway, "acme", "blog", &format!("/?{TOKEN_QUERY}={BLOG_TOKEN}")).body(Body::empty()).unwrap();
    send(&gateway, link).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn an_unknown_preview_host_answers_exactly_as_a_wrong_token_does() {
    let gateway = gateway();
    let answer = |org: &'static str, project: &'static str, token: Option<&'static str>| {
        let gateway = gateway.clone();
        async move {
            let mut request = preview(&gateway, org, project, "/");
            if let Some(token) = token {
                request = request.header(TOKEN_HEADER, token);
            }
            let reply = send(&gateway, request.body(Body::empty()).unwrap()).await;
            (reply.status, reply.body)
        }
    };
    let wrong_token = answer("acme", "shop", Some("not-the-token")).await;
    assert_eq!(wrong_token.0, StatusCode::UNAUTHORIZED);
    assert_eq!(answer("acme", "shop", None).await, wrong_token);
    for (org, project) in [("acme", "nope"), ("nowhere", "shop"), ("globex", "shop")] {
        assert_eq!(answer(org, project, Some(SHOP_TOKEN)).await, wrong_token, "{project}--{org}");
        assert_eq!(answer(org, project, None).await, wrong_token, "{project}--{org}");
    }
}

#[tokio::test]
async fn a_project_whose_namespace_has_not_listed_yet_is_503_to_retry_not_a_wrong_token() {
    let gateway = gateway();
    let request = preview(&gateway, "initech", "lab", "/").header(TOKEN_HEADER, "a-token-not-known-yet");
    let reply = send(&gateway, request.body(Body::empty()).unwrap()).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(reply.header(header::RETRY_AFTER), "2");
}

#[tokio::test]
async fn while_the_caches_cannot_be_confirmed_no_token_or_session_is_honoured() {
    let gateway = gateway();
    let alice = session(&gateway, ALICE);
    gateway.freshness.forget();
    let refusals = [
        preview(&gateway, "acme", "shop", "/").header(TOKEN_HEADER, SHOP_TOKEN).body(Body::empty()).unwrap(),
        api(Method::GET, "/api/me", Some(&alice)),
        api(Method::GET, "/api/orgs/acme/projects", Some(&alice)),
        api(Method::POST, "/api/orgs/acme/projects/shop/stop", Some(&alice)),
    ];
    for request in refusals {
        let uri = request.uri().clone();
        let reply = send(&gateway, request).await;
        reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        assert_eq!(reply.header(header::RETRY_AFTER), "2", "{uri}");
    }
    // What needs no cached word still answers: the login page's salt, and a missing session.
    assert_eq!(prelogin(&gateway, ALICE).await.status, StatusCode::OK);
    send(&gateway, api(Method::GET, "/api/me", None)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_link_token_is_swapped_for_a_secure_cookie_and_dropped_from_the_url() {
    let gateway = gateway();
    let link = preview(&gateway, "acme", "shop", &format!("/page?x=1&{TOKEN_QUERY}={SHOP_TOKEN}&y=2"))
        .body(Body::empty())
        .unwrap();
    let reply = send(&gateway, link).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header(header::LOCATION), "/page?x=1&y=2");
    assert_eq!(
        reply.header(header::SET_COOKIE),
        format!("ooda_preview={SHOP_TOKEN}; Path=/; Secure; HttpOnly; SameSite=Lax")
    );
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
    assert_eq!(reply.header(header::REFERRER_POLICY), "no-referrer");
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn a_fresh_link_replaces_a_stale_cookie_from_before_the_token_rotated() {
    let gateway = gateway();
    let link = preview(&gateway, "acme", "shop", &format!("/?{TOKEN_QUERY}={SHOP_TOKEN}"))
        .header(header::COOKIE, "ooda_preview=the-token-before-the-project-was-stopped")
        .body(Body::empty())
        .unwrap();
    let reply = send(&gateway, link).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.header(header::SET_COOKIE).starts_with(&format!("ooda_preview={SHOP_TOKEN};")));
}

#[tokio::test]
async fn a_wrong_link_token_never_becomes_the_cookie() {
    let gateway = gateway();
    let link = preview(&gateway, "acme", "shop", &format!("/?{TOKEN_QUERY}={PORTAL_TOKEN}"))
        .header(header::COOKIE, format!("ooda_preview={SHOP_TOKEN}"))
        .header(TOKEN_HEADER, SHOP_TOKEN)
        .body(Body::empty())
        .unwrap();
    let reply = send(&gateway, link).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(reply.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn api_paths_on_a_preview_host_go_to_the_proxy_not_the_api() {
    let gateway = gateway();
    let alice = session(&gateway, ALICE);
    let request = preview(&gateway, "acme", "shop", "/api/me")
        .header(header::AUTHORIZATION, format!("Bearer {alice}"))
        .body(Body::empty())
        .unwrap();
    let body = send(&gateway, request).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(body["message"].as_str().unwrap().contains("preview token"), "the proxy's answer: {body}");
    let with_port = Request::get("/api/me")
        .header(header::HOST, "shop--acme.preview.ooda.localhost:8443")
        .header(header::AUTHORIZATION, format!("Bearer {alice}"))
        .body(Body::empty())
        .unwrap();
    send(&gateway, with_port).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

// ---------------------------------------------------------------------------------------------
// Routing

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let gateway = gateway();
    for path in ["/api", "/api/nothing", "/api/orgs/acme/projects/shop/extra", "/healthz", "/metrics", "/assets/x.js"] {
        send(&gateway, api(Method::GET, path, None)).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let gateway = gateway();
    send(&gateway, api(Method::GET, "/api/auth/login", None))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    send(&gateway, api(Method::POST, "/api/me", None))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn every_api_answer_carries_no_store_and_nosniff() {
    // `send` asserts the headers on every API-host answer; these cover each kind of answer.
    let gateway = gateway();
    let token = session(&gateway, ALICE);
    let statuses = [
        send(&gateway, api(Method::GET, "/api/me", Some(&token))).await.status,
        send(&gateway, api(Method::GET, "/api/openapi.json", None)).await.status,
        send(&gateway, api(Method::GET, "/.well-known/jwks.json", None)).await.status,
        send(&gateway, api(Method::GET, "/api/me", None)).await.status,
        send(&gateway, api(Method::GET, "/api/orgs/initech", Some(&token))).await.status,
        send(&gateway, api(Method::PATCH, "/api/me", None)).await.status,
        login(&gateway, "not json").await.status,
        login(&gateway, json!({ "email": ALICE, "authKey": "p".repeat(MAX_API_BODY) }).to_string()).await.status,
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [200, 200, 200, 401, 404, 405, 400, 413]);
}

#[tokio::test]
async fn the_jwks_lists_the_key_that_signs_sessions() {
    let gateway = gateway();
    let reply = send(&gateway, api(Method::GET, "/.well-known/jwks.json", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let keys = reply.json()["keys"].as_array().expect("a key list").clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], gateway.keys().current_kid());
}

#[tokio::test]
async fn the_route_list_matches_the_router() {
    // Every listed method of every listed path is routed (not the 404 or 405 fallback) and every
    // other method is 405, so ROUTES cannot drift from `router()` unnoticed. No request gets as far
    // as the API server: each is refused for want of a session or a JSON body first.
    let served: Vec<&str> = super::routes().into_iter().map(|(path, _)| path).collect();
    let listed: Vec<&str> = ROUTES.iter().map(|(path, _)| *path).collect();
    assert_eq!(served, listed, "ROUTES lists every route the router serves, in its order");
    let gateway = gateway();
    for (path, methods) in ROUTES {
        let uri = path
            .replace("{org}", "acme")
            .replace("{project}", "shop")
            .replace("{email}", BOB)
            .replace("{*path}", "app.js");
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let reply = send(&gateway, api(method.clone(), &uri, None)).await;
            let listed = methods.contains(&method.as_str().to_lowercase().as_str());
            let want = match (listed, path) {
                (false, _) => StatusCode::METHOD_NOT_ALLOWED,
                (
                    true,
                    "/api/auth/prelogin" | "/api/auth/login" | "/api/auth/invite-details" | "/api/auth/accept-invite",
                ) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                (true, "/api/openapi.json" | "/.well-known/jwks.json" | "/" | "/terminal" | "/assets/{*path}") => {
                    StatusCode::OK
                }
                (true, _) => StatusCode::UNAUTHORIZED,
            };
            assert_eq!(reply.status, want, "{method} {uri}");
        }
    }
}

#[tokio::test]
async fn another_organisation_s_admin_finds_nothing_on_any_route_of_an_organisation() {
    // Every method of every organisation's route, as carol (globex's admin, not in acme), on
    // acme's objects, and on objects that do not exist: all answer 404, as if acme did not exist:
    // never 403 (which would confirm it), never 200, and never a 4xx about the request that a
    // stranger could tell apart. Each request is well formed and carries carol's session the way
    // its route takes it, so only membership can refuse it.
    let gateway = gateway();
    let carol = session(&gateway, CAROL);
    let routes = ROUTES.iter().filter(|(path, _)| path.starts_with("/api/orgs/{org}"));
    for (path, methods) in routes {
        for (org, project) in [("acme", "shop"), ("acme", "nothing"), ("nowhere", "shop")] {
            let uri = path
                .replace("{org}", org)
                .replace("{project}", project)
                .replace("{email}", BOB)
                .replace("{version}", "1");
            for method in *methods {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
                let request = as_member(method.clone(), &uri, &carol);
                let reply = send(&gateway, request).await;
                assert_eq!(
                    reply.status,
                    StatusCode::NOT_FOUND,
                    "{method} {uri}: {}",
                    String::from_utf8_lossy(&reply.body)
                );
                if uri.contains("/ai/v1/") {
                    // The relay answers in the Messages API's error shape, so SDKs raise it.
                    assert_eq!(reply.json()["error"]["type"], "not_found_error", "{method} {uri}");
                } else {
                    reply.assert_error(StatusCode::NOT_FOUND, "not_found");
                }
            }
        }
    }
}

/// The operations of an organisation's routes that only its admins may call; every other one is
/// any member's.
const ADMIN_ONLY: &[(&str, &str)] = &[
    ("/api/orgs/{org}/members/{email}", "put"),
    ("/api/orgs/{org}/members/{email}", "delete"),
    ("/api/orgs/{org}/members/{email}/sign-out", "post"),
    ("/api/orgs/{org}/invites", "post"),
    ("/api/orgs/{org}/projects/{project}", "delete"),
];

#[tokio::test]
async fn every_organisation_route_answers_each_role_as_the_role_allows() {
    // Generated from ROUTES, which the router is checked against: a new route is in the matrix
    // the moment it is served, and a new admin-only one fails here until ADMIN_ONLY names it.
    // Each method of each route of acme, on its project shop, as no one (401), as another
    // organisation's admin (carol: 404, as if acme did not exist), as a member (bob: 403 where
    // only admins may, otherwise past the membership check) and as an admin (alice: past it).
    // Past it, requests go on to an API server that cannot be reached; what they answer then is
    // not this test's business, only that it is not a refusal of the caller.
    let gateway = gateway();
    let (alice, bob, carol) = (session(&gateway, ALICE), session(&gateway, BOB), session(&gateway, CAROL));
    let mut admin_only_routed = 0;
    for (path, methods) in ROUTES.iter().filter(|(path, _)| path.starts_with("/api/orgs/{org}")) {
        let uri = path
            .replace("{org}", "acme")
            .replace("{project}", "shop")
            .replace("{email}", BOB)
            .replace("{version}", "1");
        for method_name in *methods {
            let method = Method::from_bytes(method_name.to_uppercase().as_bytes()).expect("a method");
            let what = format!("{method} {uri}");
            let mut nobody = as_member(method.clone(), &uri, "");
            nobody.headers_mut().remove(header::AUTHORIZATION);
            nobody.headers_mut().remove(header::SEC_WEBSOCKET_PROTOCOL);
            let (status, _) = answer(&gateway, nobody).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "no one: {what}");
            let (status, stranger) = answer(&gateway, as_member(method.clone(), &uri, &carol)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "another organisation's admin: {what}");

            let admin_only = ADMIN_ONLY.contains(&(*path, *method_name));
            admin_only_routed += usize::from(admin_only);
            let (status, body) = answer(&gateway, as_member(method.clone(), &uri, &bob)).await;
            if admin_only {
                assert_eq!(status, StatusCode::FORBIDDEN, "a member: {what}: {body}");
            } else {
                assert_admitted(status, &body, &stranger, &format!("a member: {what}"));
            }
            let (status, body) = answer(&gateway, as_member(method, &uri, &alice)).await;
            assert_admitted(status, &body, &stranger, &format!("an admin: {what}"));
        }
    }
    assert_eq!(admin_only_routed, ADMIN_ONLY.len(), "every admin-only operation is routed");
}

/// The status of `request`'s answer, and its body unless it succeeded: a successful event stream
/// would never end.
async fn answer(gateway: &Arc<Gateway>, request: Request<Body>) -> (StatusCode, String) {
    let response = App::new(gateway.clone()).handle(request, SocketAddr::from(PEER), None).await;
    let status = response.status();
    if status.is_success() {
        return (status, String::new());
    }
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a readable body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Whether an answer came from past the membership check: neither a refusal of the session or
/// role, nor the answer a stranger to the organisation gets.
fn assert_admitted(status: StatusCode, body: &str, stranger: &str, what: &str) {
    assert!(!matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), "{what}: {status} {body}");
    assert_ne!(body, stranger, "{what}: answered as to a stranger");
}

/// A well-formed request with the session `token` in every place a route may take one from: the
/// Authorization header, and the terminal's WebSocket subprotocol.
fn as_member(method: Method, uri: &str, token: &str) -> Request<Body> {
    let json = |value: Value| Body::from(value.to_string());
    let body = match (&method, uri.rsplit('/').next().unwrap_or_default()) {
        // An empty tar archive: its two zero blocks.
        (_, "publish") => Body::from(vec![0u8; 1024]),
        (_, "messages" | "count_tokens") => json(
            json!({ "model": "claude-sonnet-4-5", "max_tokens": 1, "messages": [{ "role": "user", "content": "hi" }] }),
        ),
        (&Method::PUT, _) => json(json!({ "role": "member" })),
        (&Method::POST, "invites") => json(json!({ "email": "dave@globex.example", "role": "member" })),
        (&Method::POST, "projects") => json(json!({ "name": "intruder" })),
        (&Method::POST, _) => json(json!({})),
        _ => Body::empty(),
    };
    let content_type = if uri.ends_with("/publish") { "application/x-tar" } else { "application/json" };
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, API_HOST)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::SEC_WEBSOCKET_PROTOCOL, format!("ooda.terminal.v1, ooda.bearer.{token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .expect("a valid request")
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_of_the_router() {
    let gateway = gateway();
    let reply = send(&gateway, api(Method::GET, "/api/openapi.json", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
    let document = reply.json();
    let paths = document["paths"].as_object().expect("a paths object");
    // The dashboard's pages and assets are not the API's.
    let api_routes =
        || ROUTES.iter().filter(|(path, _)| path.starts_with("/api/") || path.starts_with("/.well-known/"));
    for (path, methods) in api_routes() {
        let described = paths.get(*path).and_then(Value::as_object).unwrap_or_else(|| panic!("{path} is undocumented"));
        let mut described: Vec<&str> = described
            .keys()
            .map(String::as_str)
            .filter(|k| !matches!(*k, "parameters" | "summary" | "description"))
            .collect();
        let mut routed = methods.to_vec();
        described.sort_unstable();
        routed.sort_unstable();
        assert_eq!(described, routed, "methods of {path}");
    }
    let routed: Vec<&str> = api_routes().map(|(path, _)| *path).collect();
    let extra: Vec<&String> = paths.keys().filter(|p| !routed.contains(&p.as_str())).collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}
// ---------------------------------------------------------------------------------------------
// Write paths, against a mock API server

#[tokio::test]
async fn setting_a_role_applies_the_member_list_under_the_gateway_s_field_manager() {
    let (gateway, mut server) = gateway_with_api();
    let alice = session(&gateway, ALICE);
    let mut request = api(Method::PUT, &format!("/api/orgs/acme/members/{CAROL}"), Some(&alice));
    request.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    *request.body_mut() = Body::from(r#"{"role":"admin"}"#);
    let reply = tokio::spawn({
        let gateway = gateway.clone();
        async move { send(&gateway, request).await }
    });
    let organisation =
        serde_json::to_value(organisation("acme", &[(ALICE, Role::Admin), (CAROL, Role::Admin)])).unwrap();
    let (method, path, body) = api_call(&mut server, 200, organisation).await;
    assert_eq!(method, Method::PATCH);
    assert!(path.starts_with("/apis/ooda.run/v1alpha1/organisations/acme?"), "{path}");
    assert!(path.contains("fieldManager=ooda-gateway") && path.contains("force=true"), "{path}");
    assert_eq!(body["kind"], "Organisation");
    // Only the entries this manager applies: carol, not the ones declared elsewhere.
    assert_eq!(body["spec"]["members"], json!([{ "email": CAROL, "role": "admin" }]));
    let reply = reply.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
}

#[tokio::test]
async fn stopping_a_project_applies_its_desired_state() {
    let (gateway, mut server) = gateway_with_api();
    let bob = session(&gateway, BOB);
    let request = api(Method::POST, "/api/orgs/acme/projects/shop/stop", Some(&bob));
    let reply = tokio::spawn({
        let gateway = gateway.clone();
        async move { send(&gateway, request).await }
    });
    let mut stopped = project("acme", "shop", Phase::Running, "preview.ooda.localhost");
    stopped.spec.lifecycle.state = DesiredState::Stopped;
    let (method, path, body) = api_call(&mut server, 200, serde_json::to_value(&stopped).unwrap()).await;
    assert_eq!(method, Method::PATCH);
    assert!(path.starts_with("/apis/ooda.run/v1alpha1/namespaces/org-acme/projects/shop?"), "{path}");
    assert!(path.contains("fieldManager=ooda-gateway"), "{path}");
    assert_eq!(body["spec"], json!({ "lifecycle": { "state": "Stopped" } }), "only the state, nothing else");
    let reply = reply.await.unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.json()["state"], "Stopped");
}

#[tokio::test]
async fn a_project_past_the_organisation_s_quota_is_a_409_naming_the_quota() {
    let (gateway, mut server) = gateway_with_api();
    let bob = session(&gateway, BOB);
    let mut request = api(Method::POST, "/api/orgs/acme/projects", Some(&bob));
    request.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    *request.body_mut() = Body::from(r#"{"name":"extra"}"#);
    let reply = tokio::spawn({
        let gateway = gateway.clone();
        async move { send(&gateway, request).await }
    });
    let refusal = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": "projects.ooda.run \"extra\" is forbidden: exceeded quota: organisation-quota, requested: count/projects.ooda.run=1, used: count/projects.ooda.run=2, limited: count/projects.ooda.run=2",
    });
    let (method, path, _) = api_call(&mut server, 403, refusal).await;
    assert_eq!(
        (method, path.split('?').next().unwrap()),
        (Method::POST, "/apis/ooda.run/v1alpha1/namespaces/org-acme/projects")
    );
    let reply = reply.await.unwrap();
    reply.assert_error(StatusCode::CONFLICT, "quota_exceeded");
    assert!(reply.json()["message"].as_str().unwrap().contains("exceeded quota: organisation-quota"));
}

/// Bob asks the fixture gateway (at a mock API server) to create project `extra` in acme.
fn create_extra(gateway: &Arc<Gateway>) -> tokio::task::JoinHandle<Reply> {
    let bob = session(gateway, BOB);
    let mut request = api(Method::POST, "/api/orgs/acme/projects", Some(&bob));
    request.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    *request.body_mut() = Body::from(r#"{"name":"extra"}"#);
    let gateway = gateway.clone();
    tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(10), send(&gateway, request)).await.expect("the gateway answers")
    })
}

/// What the API server says when a concurrent write changed the quota's usage first.
fn quota_conflict() -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
        "message": "Operation cannot be fulfilled on resourcequotas \"organisation-quota\": the object has been modified; please apply your changes to the latest version and try again",
    })
}

#[tokio::test]
async fn a_create_the_quota_admission_answers_with_a_conflict_is_tried_again() {
    let (gateway, mut server) = gateway_with_api();
    let reply = create_extra(&gateway);
    let (_, _, first) = api_call(&mut server, 409, quota_conflict()).await;
    let mut created = project("acme", "extra", Phase::Pending, "preview.test");
    created.metadata.uid = Some("uid-extra".into());
    let (method, _, second) = api_call(&mut server, 201, serde_json::to_value(&created).unwrap()).await;
    assert_eq!((method, first["metadata"]["name"].clone()), (Method::POST, second["metadata"]["name"].clone()));
    let reply = reply.await.unwrap();
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json());
    assert_eq!(reply.json()["name"], "extra");
}

#[tokio::test]
async fn a_quota_that_stays_contended_is_a_503_to_retry_and_a_taken_name_a_409() {
    let (gateway, mut server) = gateway_with_api();
    let reply = create_extra(&gateway);
    for _ in 0..4 {
        api_call(&mut server, 409, quota_conflict()).await;
    }
    let reply = reply.await.unwrap();
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(reply.header(header::RETRY_AFTER), "1");

    let reply = create_extra(&gateway);
    let taken = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409,
        "message": "projects.ooda.run \"extra\" already exists",
    });
    api_call(&mut server, 409, taken).await;
    let reply = reply.await.unwrap();
    reply.assert_error(StatusCode::CONFLICT, "exists");
}

// ---------------------------------------------------------------------------------------------
// The dashboard and its event stream

#[tokio::test]
async fn the_dashboard_is_served_on_the_api_host_under_a_strict_content_security_policy() {
    let gateway = gateway();
    let page = send(&gateway, api(Method::GET, "/", None)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    let policy = page.header(header::CONTENT_SECURITY_POLICY);
    for directive in ["default-src 'self'", "script-src 'self';", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
    assert_eq!(page.header(header::X_FRAME_OPTIONS), "DENY");
    let page_text = String::from_utf8(page.body.to_vec()).expect("UTF-8");
    assert!(page_text.contains(r#"<script type="module" src="/assets/app.js">"#), "{page_text}");
    assert!(!page_text.contains("<script>"), "no inline script");

    let script = send(&gateway, api(Method::GET, "/assets/vendor/preact.js", None)).await;
    assert_eq!(
        (script.status, script.header(header::CONTENT_TYPE)),
        (StatusCode::OK, "text/javascript; charset=utf-8")
    );
    send(&gateway, api(Method::GET, "/assets/../Cargo.toml", None))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    // A preview host is the project's, never the dashboard's.
    let previewed = send(&gateway, preview(&gateway, "acme", "nonexistent", "/").body(Body::empty()).unwrap()).await;
    assert!(!String::from_utf8_lossy(&previewed.body).contains("/assets/app.js"));
}

#[tokio::test]
async fn the_event_stream_opens_with_the_organisations_projects_for_members_only() {
    let gateway = gateway();
    let token = session(&gateway, ALICE);
    let request = api(Method::GET, "/api/orgs/acme/events", Some(&token));
    let response = App::new(gateway.clone()).handle(request, SocketAddr::from(PEER), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = response.into_body().into_data_stream();
    let first = futures::StreamExt::next(&mut body).await.expect("a first message").expect("bytes");
    let text = String::from_utf8(first.to_vec()).expect("UTF-8");
    let data = text.strip_prefix("event: projects\ndata: ").and_then(|t| t.strip_suffix("\n\n")).expect(&text);
    let listed = get(&gateway, "/api/orgs/acme/projects", &token).await.json();
    assert_eq!(serde_json::from_str::<Value>(data).expect("JSON"), listed, "the same as GET …/projects");

    send(&gateway, api(Method::GET, "/api/orgs/acme/events", None))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let bob = session(&gateway, BOB);
    send(&gateway, api(Method::GET, "/api/orgs/initech/events", Some(&bob)))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_terminal_is_for_members_with_a_session_offered_as_a_subprotocol() {
    let gateway = gateway();
    let terminal = |org: &str, project: &str, protocols: Option<String>| {
        let mut request =
            Request::get(format!("/api/orgs/{org}/projects/{project}/terminal")).header(header::HOST, API_HOST);
        if let Some(protocols) = protocols {
            request = request.header(header::SEC_WEBSOCKET_PROTOCOL, protocols);
        }
        request.body(Body::empty()).expect("a valid request")
    };
    let offer = |token: &str| Some(format!("ooda.terminal.v1, ooda.bearer.{token}"));
    let (alice, bob) = (session(&gateway, ALICE), session(&gateway, BOB));

    // No token, a token without the bridge's protocol, a token in the Authorization header only.
    send(&gateway, terminal("acme", "shop", None)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let bare = terminal("acme", "shop", Some(format!("ooda.bearer.{alice}")));
    send(&gateway, bare).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    send(&gateway, api(Method::GET, "/api/orgs/acme/projects/shop/terminal", Some(&alice)))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    send(&gateway, terminal("acme", "shop", offer("forged.token.here")))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // Another organisation's project, and one that does not exist, are not there.
    send(&gateway, terminal("globex", "portal", offer(&bob))).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    send(&gateway, terminal("acme", "nothing", offer(&alice))).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    // A member, a running project, but no WebSocket handshake: told what the endpoint is.
    let plain = send(&gateway, terminal("acme", "shop", offer(&bob))).await;
    plain.assert_error(StatusCode::UPGRADE_REQUIRED, "upgrade_required");
}

#[tokio::test]
async fn health_answers_while_the_gateway_starts_and_is_ready_only_once_it_has() {
    use tower::ServiceExt;
    let started = Arc::new(std::sync::OnceLock::new());
    let health = super::health_router(started.clone());
    let probe = |path: &'static str| {
        let health = health.clone();
        async move {
            let Ok(response) = health.oneshot(Request::get(path).body(Body::empty()).expect("request")).await;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
            (status, String::from_utf8(body.to_vec()).expect("UTF-8"))
        }
    };
    assert_eq!(probe("/healthz").await, (StatusCode::OK, "ok".to_owned()));
    let loading = (StatusCode::SERVICE_UNAVAILABLE, "loading the session signing keys".to_owned());
    assert_eq!(probe("/readyz").await, loading);
    assert_eq!(probe("/metrics").await.0, StatusCode::SERVICE_UNAVAILABLE);

    started.get_or_init(gateway);
    assert_eq!(probe("/readyz").await, (StatusCode::OK, "gateway ready".to_owned()));
    let (status, metrics) = probe("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
}
