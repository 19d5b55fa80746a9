//! The gateway against the real control plane and the real operator: sessions, the API's
//! scoping and roles, the preview proxy (HTTP and WebSocket) to a server on the pod's IP, stop
//! refusing previews, and wake-on-request.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use ooda::accounts::AccountStore;
use ooda::crd::{Organisation, Phase, Project};
use ooda::gateway::token::{Claims, KeyRing, SigningKey};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::gateway_harness::{Gateway, PREVIEW_DOMAIN, add_user, derive_auth_key, follow_pod, pod_ip, upstream};
use crate::harness::{client, eventually, install_crds, unique_name, wait_for};
use crate::operator_harness::{World, organisation_ready, project_phase};

pub const ALICE: &str = "alice@acme.example";
pub const BOB: &str = "bob@acme.example";

/// An organisation with alice as admin and bob as member, managed by the test's operator.
pub async fn organisation(world: &World) -> String {
    let name = unique_name("org");
    let mut manifest = world.organisation_manifest(&name, "eu");
    manifest["spec"]["members"] = json!([{ "email": ALICE, "role": "admin" }, { "email": BOB, "role": "member" }]);
    let api: Api<Organisation> = Api::all(world.client.clone());
    let org: Organisation = serde_json::from_value(manifest).expect("organisation");
    api.create(&PostParams::default(), &org).await.expect("create organisation");
    wait_for(&api, &name, organisation_ready()).await;
    name
}

pub fn project_body(name: &str, port: u16, idle_timeout: &str) -> Value {
    json!({
        "name": name,
        "spec": {
            "image": "registry.example/devenv:1",
            "ports": [{ "name": "web", "port": port, "preview": true }],
            "lifecycle": { "idleTimeout": idle_timeout },
        }
    })
}

/// A port for the stand-in dev server, different per call so tests never share a listener.
pub fn dev_port() -> u16 {
    crate::operator_harness::free_port().port()
}

pub struct Setup {
    pub world: World,
    pub gateway: Gateway,
    pub org: String,
    pub alice: String,
}

pub async fn setup(test: &str) -> Setup {
    setup_with(test, &[]).await
}

/// The same with extra gateway arguments.
pub async fn setup_with(test: &str, gateway_args: &[&str]) -> Setup {
    setup_through(test, gateway_args, |_| crate::harness::kubeconfig_path()).await
}

/// The same with the gateway reaching the API server as the kubeconfig `kubeconfig` makes for
/// the test's home namespace says.
pub async fn setup_through(
    test: &str,
    gateway_args: &[&str],
    kubeconfig: impl FnOnce(&str) -> std::path::PathBuf,
) -> Setup {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, test).await;
    let org = organisation(&world).await;
    add_user(&world, &world.home.name, ALICE).await;
    add_user(&world, &world.home.name, BOB).await;
    let args = [&["--insecure-http", "--activity-interval", "2s"], gateway_args].concat();
    let kubeconfig = kubeconfig(&world.home.name);
    let gateway = Gateway::start_as(&world.home.name, &args, kubeconfig, reqwest::Client::builder()).await;
    let alice = gateway.session(ALICE).await;
    Setup { world, gateway, org, alice }
}

/// Creates a project through the API and waits until it runs; returns its preview URL's host
/// and token.
pub async fn running_project(s: &Setup, name: &str, port: u16, idle_timeout: &str) -> (String, String) {
    let path = format!("/api/orgs/{}/projects", s.org);
    let created =
        s.gateway.call(Method::POST, &path, Some(&s.alice), Some(project_body(name, port, idle_timeout))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &format!("org-{}", s.org));
    wait_for(&projects, name, project_phase(Phase::Running)).await;
    let preview = s.gateway.call(Method::GET, &format!("{path}/{name}/preview"), Some(&s.alice), None).await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    let host = preview.body["host"].as_str().expect("host").to_owned();
    assert_eq!(host, format!("{name}--{}.{PREVIEW_DOMAIN}", s.org));
    (host, preview.body["token"].as_str().expect("token").to_owned())
}

/// A [`running_project`] whose pod answers its previews: a stand-in dev server listens on the
/// pod's address. Returns the preview host and token, and the server's task.
pub async fn serving_project(s: &Setup, name: &str) -> (String, String, tokio::task::JoinHandle<()>) {
    let port = dev_port();
    let (host, token) = running_project(s, name, port, "15m").await;
    let ip = pod_ip(&s.world.client, &format!("org-{}", s.org), name).await;
    (host, token, upstream(std::net::SocketAddr::new(ip, port)).await)
}

#[tokio::test]
async fn sign_in_create_a_project_and_reach_it_through_the_preview_proxy() {
    let s = setup("gw-preview").await;
    let port = dev_port();
    let (host, token) = running_project(&s, "shop", port, "15m").await;
    let ns = format!("org-{}", s.org);
    let ip = pod_ip(&s.world.client, &ns, "shop").await;
    let _dev = upstream(std::net::SocketAddr::new(ip, port)).await;
    let browser = s.gateway.preview_client(&host);

    // No token: refused, and the dev server never sees the request.
    let bare = browser.get(s.gateway.preview_url(&host, "/")).send().await.expect("answer");
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);

    // The link's token becomes a host-only cookie and leaves the address bar.
    let link = s.gateway.preview_url(&host, &format!("/app?x=1&ooda_token={token}"));
    let redirect = browser.get(&link).send().await.expect("answer");
    assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
    assert_eq!(redirect.headers()["location"], "/app?x=1");
    let cookie = redirect.headers()["set-cookie"].to_str().expect("ascii").to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "host-only: {cookie}");

    let cookie_pair = cookie.split(';').next().expect("name=value");
    let proxied = browser
        .get(s.gateway.preview_url(&host, "/app?x=1"))
        .header("cookie", format!("theme=dark; {cookie_pair}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(proxied.status(), StatusCode::OK);
    let echo: Value = proxied.json().await.expect("echo");
    assert_eq!(echo["path"], "/app");
    assert_eq!(echo["query"], "x=1");
    let headers = &echo["headers"];
    assert_eq!(headers["cookie"], "theme=dark", "the ooda cookie stays at the gateway");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], format!("{host}:{}", s.gateway.addr.port()));
    assert!(!echo.to_string().contains(&token), "the token never reaches the project: {echo}");

    // The header works for API clients; another project's token does not open this one.
    let by_header = browser
        .get(s.gateway.preview_url(&host, "/api"))
        .header("x-ooda-preview-token", &token)
        .send()
        .await
        .expect("answer");
    assert_eq!(by_header.status(), StatusCode::OK);
    let echo: Value = by_header.json().await.expect("echo");
    assert!(echo["headers"].get("x-ooda-preview-token").is_none());

    let (other_host, other_token) = running_project(&s, "blog", dev_port(), "15m").await;
    let crossed = browser
        .get(s.gateway.preview_url(&host, "/"))
        .header("x-ooda-preview-token", &other_token)
        .send()
        .await
        .expect("answer");
    assert_eq!(crossed.status(), StatusCode::UNAUTHORIZED, "project blog's token on project shop");
    assert_ne!(other_host, host);

    // A WebSocket through the proxy echoes.
    let mut request = format!("ws://{host}:{}/ws", s.gateway.addr.port()).into_client_request().expect("ws request");
    request.headers_mut().insert("x-ooda-preview-token", token.parse().expect("header"));
    let stream = tokio::net::TcpStream::connect(s.gateway.addr).await.expect("connect");
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream).await.expect("WebSocket handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "through the gateway"] {
        socket.send(Message::text(text)).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("echo in time");
        assert_eq!(echoed.expect("a message").expect("no error"), Message::text(text));
    }
    socket.close(None).await.expect("close");

    // Traffic renewed the activity Lease.
    let metrics = s.gateway.metrics().await;
    assert!(crate::operator_harness::metric_sum(&metrics, "ooda_gateway_activity_renewals_total") >= 1.0, "{metrics}");
    s.world.cleanup().await;
}

#[tokio::test]
async fn a_stopped_or_deleted_project_is_refused_within_a_second_and_not_woken() {
    let s = setup("gw-stop").await;
    let (host, token, _dev) = serving_project(&s, "halt").await;
    let browser = s.gateway.preview_client(&host);
    let get = || browser.get(s.gateway.preview_url(&host, "/")).header("x-ooda-preview-token", &token).send();
    assert_eq!(get().await.expect("answer").status(), StatusCode::OK);

    let stop = format!("/api/orgs/{}/projects/halt/stop", s.org);
    let stopped = s.gateway.call(Method::POST, &stop, Some(&s.alice), None).await;
    assert_eq!(stopped.status, StatusCode::ACCEPTED, "{:?}", stopped.body);
    let refused = eventually(Duration::from_secs(1), "the preview refused after the stop", || async {
        Some(get().await.expect("answer").status()).filter(|status| *status != StatusCode::OK)
    })
    .await;
    assert!(refused == StatusCode::UNAUTHORIZED || refused == StatusCode::FORBIDDEN, "{refused}");

    // The stopped project's new token is refused too, and does not wake it.
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &format!("org-{}", s.org));
    wait_for(&projects, "halt", project_phase(Phase::Stopped)).await;
    let preview = format!("/api/orgs/{}/projects/halt/preview", s.org);
    let current = s.gateway.call(Method::GET, &preview, Some(&s.alice), None).await.body["token"].clone();
    let with_new =
        browser.get(s.gateway.preview_url(&host, "/")).header("x-ooda-preview-token", current.as_str().expect("token"));
    assert_eq!(with_new.send().await.expect("answer").status(), StatusCode::FORBIDDEN);
    let wake =
        s.gateway.call(Method::POST, &format!("/api/orgs/{}/projects/halt/wake", s.org), Some(&s.alice), None).await;
    assert_eq!(wake.status, StatusCode::CONFLICT);
    assert_eq!(projects.get("halt").await.expect("project").status.expect("status").phase, Some(Phase::Stopped));

    // Deleting a running project (admin) closes its preview as promptly.
    let (host, token, _dev) = serving_project(&s, "gone").await;
    let browser = s.gateway.preview_client(&host);
    let get = || browser.get(s.gateway.preview_url(&host, "/")).header("x-ooda-preview-token", &token).send();
    assert_eq!(get().await.expect("answer").status(), StatusCode::OK);
    let delete = format!("/api/orgs/{}/projects/gone", s.org);
    assert_eq!(s.gateway.call(Method::DELETE, &delete, Some(&s.alice), None).await.status, StatusCode::ACCEPTED);
    let refused = eventually(Duration::from_secs(1), "the preview refused after the delete", || async {
        Some(get().await.expect("answer").status()).filter(|status| *status != StatusCode::OK)
    })
    .await;
    // As a host that never was a project's: no answer tells them apart.
    assert_eq!(refused, StatusCode::UNAUTHORIZED, "a deleted project's host is refused");
    s.world.cleanup().await;
}

#[tokio::test]
async fn fifty_requests_to_a_hibernated_project_wake_it_once_and_are_all_served() {
    let s = setup("gw-wake").await;
    let port = dev_port();
    let (host, token) = running_project(&s, "nap", port, "10s").await;
    let ns = format!("org-{}", s.org);
    let _dev = follow_pod(&s.world.client, &ns, "nap", port);
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &ns);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(s.world.client.clone(), &ns);
    let pod_uid = pods.get("nap-0").await.expect("the running pod").metadata.uid.expect("uid");
    wait_for(&projects, "nap", project_phase(Phase::Hibernated)).await;
    // Hibernated is decided when the StatefulSet is scaled down; until its pod is gone, requests
    // still reach it (and keep it awake). Asleep means no pod.
    crate::harness::wait_deleted(&pods, "nap-0", &pod_uid).await;

    let browser = s.gateway.preview_client(&host);
    let requests = (0..50).map(|i| {
        let request = browser
            .get(s.gateway.preview_url(&host, &format!("/r{i}")))
            .header("x-ooda-preview-token", &token)
            .timeout(Duration::from_secs(90));
        async move { request.send().await.map(|r| r.status()) }
    });
    let statuses = futures::future::join_all(requests).await;
    let served = statuses.iter().filter(|s| matches!(s, Ok(StatusCode::OK))).count();
    assert_eq!(served, 50, "{statuses:?}");
    // The operator records the wake when it next reconciles, which may be just after.
    wait_for(&projects, "nap", |p: Option<&Project>| p.and_then(|p| p.status.as_ref()?.last_wake.as_ref()).is_some())
        .await;
    let metrics = s.gateway.metrics().await;
    assert_eq!(crate::operator_harness::metric_sum(&metrics, "ooda_gateway_wakes_total{outcome=\"ready\"}"), 50.0);
    s.world.cleanup().await;
}

/// A project that ran (10s idle timeout) and hibernated, its pod gone; no dev server listens on
/// `port`, so a wake's pod comes back Ready with nothing accepting there. Its host and token.
async fn hibernated_project_without_a_server(s: &Setup, name: &str, port: u16) -> (String, String) {
    let (host, token) = running_project(s, name, port, "10s").await;
    let ns = format!("org-{}", s.org);
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &ns);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(s.world.client.clone(), &ns);
    let pod = format!("{name}-0");
    let pod_uid = pods.get(&pod).await.expect("the running pod").metadata.uid.expect("uid");
    wait_for(&projects, name, project_phase(Phase::Hibernated)).await;
    crate::harness::wait_deleted(&pods, &pod, &pod_uid).await;
    (host, token)
}

#[tokio::test]
async fn a_wake_that_outlasts_its_timeout_answers_503_and_browsers_get_a_page_that_retries() {
    let s = setup_with("gw-slow-wake", &["--wake-timeout", "4s"]).await;
    let port = dev_port();
    let (host, token) = hibernated_project_without_a_server(&s, "slow", port).await;
    let ns = format!("org-{}", s.org);

    let client = s.gateway.preview_client(&host);
    let request = |accept: &str| {
        let request = client
            .get(s.gateway.preview_url(&host, "/"))
            .header("x-ooda-preview-token", &token)
            .header("accept", accept.to_owned());
        async move {
            let started = Instant::now();
            let response = request.send().await.expect("answer");
            let waited = started.elapsed();
            (response.status(), response.headers().clone(), response.text().await.expect("body"), waited)
        }
    };
    let (api, browser) =
        tokio::join!(request("application/json"), request("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"));

    let (status, headers, body, waited) = api;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "2");
    let error: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(error["error"], "unavailable", "{error}");
    assert!(error["message"].as_str().expect("message").contains("within 4s"), "{error}");
    assert!(waited >= Duration::from_secs(4), "an API client is held for the whole wake timeout: {waited:?}");

    let (status, headers, page, waited) = browser;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(page.contains(r#"<meta http-equiv="refresh" content="2">"#), "the page reloads by itself: {page}");
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(4), "a browser is not held: {waited:?}");
    let metrics = s.gateway.metrics().await;
    assert_eq!(crate::operator_harness::metric_sum(&metrics, "ooda_gateway_wakes_total{outcome=\"timeout\"}"), 2.0);

    // The page's reload, once the dev server listens, gets the project.
    let _dev = follow_pod(&s.world.client, &ns, "slow", port);
    eventually(Duration::from_secs(10), "the reload gets the project", || async {
        let reload = request("text/html").await;
        (reload.0 == StatusCode::OK).then_some(())
    })
    .await;
    s.world.cleanup().await;
}

#[tokio::test]
async fn a_gateway_stopped_while_wakes_are_held_answers_each_and_a_new_one_serves_at_once() {
    let mut s = setup_with("gw-stop-wake", &["--wake-timeout", "60s"]).await;
    let port = dev_port();
    // A wake holds its requests for the whole minute.
    let (host, token) = hibernated_project_without_a_server(&s, "held", port).await;
    let ns = format!("org-{}", s.org);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(s.world.client.clone(), &ns);

    let client = s.gateway.preview_client(&host);
    let held: Vec<_> = ["application/json", "application/json", "application/json", "text/html"]
        .into_iter()
        .map(|accept| {
            let request = client
                .get(s.gateway.preview_url(&host, "/"))
                .header("x-ooda-preview-token", &token)
                .header("accept", accept)
                .send();
            tokio::spawn(async move {
                let response = request.await.expect("an answer, not a dropped connection");
                (response.status(), response.headers().get("retry-after").cloned(), response.text().await)
            })
        })
        .collect();
    // The wake is under way (the operator scaled the project up for it): the requests wait on it.
    wait_for(&pods, "held-0", |pod: Option<&k8s_openapi::api::core::v1::Pod>| pod.is_some()).await;

    let stopped = Instant::now();
    let exit = s.gateway.process.terminate(Duration::from_secs(15)).await;
    assert!(exit.success(), "the gateway exits cleanly: {exit}");
    for request in held {
        let (status, retry_after, body) = request.await.expect("the request task");
        let body = body.expect("a whole body");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(retry_after.as_ref().and_then(|v| v.to_str().ok()), Some("2"), "{body}");
        assert!(body.contains("stopping") || body.contains("http-equiv=\"refresh\""), "{body}");
    }
    assert!(stopped.elapsed() < Duration::from_secs(5), "answered {:?} after SIGTERM", stopped.elapsed());

    // Its successor serves the project as soon as it is ready: the wake went on without the gateway.
    let _dev = follow_pod(&s.world.client, &ns, "held", port);
    s.gateway = Gateway::start(&s.world.home.name, &["--activity-interval", "2s"]).await;
    let client = s.gateway.preview_client(&host);
    let started = Instant::now();
    let answer = client
        .get(s.gateway.preview_url(&host, "/"))
        .header("x-ooda-preview-token", &token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::OK, "{:?}", answer.text().await);
    assert!(started.elapsed() < Duration::from_secs(10), "served after {:?}", started.elapsed());
    s.world.cleanup().await;
}

/// The claims of a session token (whose signature the gateway has checked).
fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).expect("a payload segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("claims")
}

/// A token signed with the gateway's own current key (read from its Secret), with `edit` applied
/// to otherwise valid claims (alice's session's).
async fn forged(s: &Setup, edit: impl FnOnce(&mut Claims)) -> String {
    let secrets: Api<Secret> = Api::namespaced(s.world.client.clone(), &s.gateway.namespace);
    let ring = KeyRing::from_secret(&secrets.get("ooda-gateway-signing-keys").await.expect("keys")).expect("ring");
    let now = Timestamp::now().as_second();
    let mut claims = Claims { iat: now, exp: now + 600, jti: "test".into(), ..claims_of(&s.alice) };
    edit(&mut claims);
    ring.issue(&claims)
}

#[tokio::test]
async fn every_bad_session_token_is_refused() {
    let s = setup("gw-jwt").await;
    let me = format!("/api/orgs/{}", s.org);
    assert_eq!(s.gateway.call(Method::GET, &me, Some(&s.alice), None).await.status, StatusCode::OK);
    let control = forged(&s, |_| {}).await;
    assert_eq!(s.gateway.call(Method::GET, &me, Some(&control), None).await.status, StatusCode::OK, "the forger works");

    let segments: Vec<&str> = s.alice.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segments[0]).unwrap()).unwrap();
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", encode(&json!({ "alg": "none", "typ": "JWT", "kid": header["kid"] })), segments[1]);

    let jwks = s.gateway.call(Method::GET, "/.well-known/jwks.json", None, None).await;
    let public = URL_SAFE_NO_PAD.decode(jwks.body["keys"][0]["x"].as_str().expect("x")).expect("key bytes");
    let hs_header = encode(&json!({ "alg": "HS256", "typ": "JWT", "kid": header["kid"] }));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public);
    let signed = format!("{hs_header}.{}", segments[1]);
    let hs256 = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, signed.as_bytes())));

    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segments[1]).unwrap()).unwrap();
    payload["sub"] = json!(BOB);
    let tampered = format!("{}.{}.{}", segments[0], encode(&payload), segments[2]);

    let stranger = KeyRing::new(SigningKey::generate());
    let claims: Claims = serde_json::from_value(payload.clone()).expect("claims");
    let unknown_kid = stranger.issue(&Claims { sub: ALICE.into(), ..claims });

    let expired = forged(&s, |c| c.exp = Timestamp::now().as_second() - 3600).await;
    let wrong_aud = forged(&s, |c| c.aud = "someone-else".into()).await;
    let wrong_iss = forged(&s, |c| c.iss = "someone-else".into()).await;
    let not_yet = forged(&s, |c| c.nbf = Some(Timestamp::now().as_second() + 3600)).await;
    let other_credential = forged(&s, |c| c.cred = "0123456789abcdef01234567".into()).await;

    for (case, token) in [
        ("alg none", none),
        ("HS256 signed with the public key", hs256),
        ("tampered payload", tampered),
        ("unknown kid", unknown_kid),
        ("expired", expired),
        ("wrong aud", wrong_aud),
        ("wrong iss", wrong_iss),
        ("not before a time to come", not_yet),
        ("a credential the account does not have", other_credential),
        ("garbage", "not.a.token".into()),
    ] {
        let answer = s.gateway.call(Method::GET, &me, Some(&token), None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{case}: {:?}", answer.body);
        assert_eq!(answer.body["error"], "unauthorized", "{case}");
    }

    // A removed member's unexpired token stops working on the next request.
    let bob = s.gateway.session(BOB).await;
    let projects = format!("/api/orgs/{}/projects", s.org);
    assert_eq!(s.gateway.call(Method::GET, &projects, Some(&bob), None).await.status, StatusCode::OK);
    let remove = format!("/api/orgs/{}/members/{BOB}", s.org);
    let removed = s.gateway.call(Method::DELETE, &remove, Some(&s.alice), None).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{:?}", removed.body);
    eventually(Duration::from_secs(5), "the removed member loses access", || async {
        let status = s.gateway.call(Method::GET, &projects, Some(&bob), None).await.status;
        assert!(status == StatusCode::OK || status == StatusCode::UNAUTHORIZED, "{status}");
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    s.world.cleanup().await;
}

#[tokio::test]
async fn roles_and_organisations_bound_what_a_session_can_do() {
    let s = setup("gw-roles").await;
    let bob = s.gateway.session(BOB).await;
    let members = format!("/api/orgs/{}/members", s.org);

    // Any member reads members; only an admin changes them.
    let listed = s.gateway.call(Method::GET, &members, Some(&bob), None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["members"].as_array().expect("members").len(), 2);
    let promote_self =
        s.gateway.call(Method::PUT, &format!("{members}/{BOB}"), Some(&bob), Some(json!({ "role": "admin" }))).await;
    assert_eq!(promote_self.status, StatusCode::FORBIDDEN, "{:?}", promote_self.body);
    assert_eq!(promote_self.body["error"], "forbidden");

    // The last admin can be neither demoted nor removed.
    let alice_path = format!("{members}/{ALICE}");
    let demote = s.gateway.call(Method::PUT, &alice_path, Some(&s.alice), Some(json!({ "role": "member" }))).await;
    assert_eq!((demote.status, demote.body["error"].as_str()), (StatusCode::CONFLICT, Some("last_admin")));
    let remove = s.gateway.call(Method::DELETE, &format!("{members}/{ALICE}"), Some(&s.alice), None).await;
    assert_eq!(remove.status, StatusCode::CONFLICT);

    // An admin adds a member by server-side apply; entries others declared keep their owner.
    let carol = "carol@acme.example";
    let added = s
        .gateway
        .call(Method::PUT, &format!("{members}/{carol}"), Some(&s.alice), Some(json!({ "role": "member" })))
        .await;
    assert_eq!(added.status, StatusCode::OK, "{:?}", added.body);
    let orgs: Api<Organisation> = Api::all(s.world.client.clone());
    let org = orgs.get(&s.org).await.expect("organisation");
    let emails: Vec<&str> = org.spec.members.iter().map(|m| m.email.as_str()).collect();
    assert_eq!(emails, [ALICE, BOB, carol]);
    let gateway_fields = org
        .managed_fields()
        .iter()
        .find(|f| f.manager.as_deref() == Some("ooda-gateway") && f.operation.as_deref() == Some("Apply"))
        .expect("the gateway applied")
        .fields_v1
        .clone()
        .expect("fields")
        .0
        .to_string();
    assert!(gateway_fields.contains(carol) && !gateway_fields.contains(BOB), "{gateway_fields}");

    // Another organisation's objects answer 404, as if they did not exist.
    let other = organisation(&s.world).await;
    let orgs_api = Api::<Organisation>::all(s.world.client.clone());
    let mut foreign = orgs_api.get(&other).await.expect("other org");
    foreign.spec.members = vec![ooda::crd::Member { email: "zed@other.example".into(), role: ooda::crd::Role::Admin }];
    orgs_api.replace(&other, &PostParams::default(), &foreign).await.expect("other org without alice");
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &format!("org-{other}"));
    let secret: Project =
        serde_json::from_value(json!({ "metadata": { "name": "secret" }, "spec": {} })).expect("project");
    projects.create(&PostParams::default(), &secret).await.expect("a project in the other org");
    for path in [format!("/api/orgs/{other}"), format!("/api/orgs/{other}/projects/secret")] {
        // The gateway's cache may still hold the org with alice as a member for a moment.
        let answer = eventually(Duration::from_secs(5), "the other organisation hidden", || async {
            Some(s.gateway.call(Method::GET, &path, Some(&s.alice), None).await).filter(|a| a.status != StatusCode::OK)
        })
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}: {:?}", answer.body);
    }

    // Oversized and malformed bodies get 4xx JSON errors; nothing is created.
    let projects_path = format!("/api/orgs/{}/projects", s.org);
    let huge = json!({ "name": "big", "spec": { "image": "x".repeat(70 * 1024) } });
    let too_large = s.gateway.call(Method::POST, &projects_path, Some(&s.alice), Some(huge)).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", too_large.body);
    assert_eq!(too_large.body["error"], "too_large");
    let unknown_field = s.gateway.call(Method::POST, &projects_path, Some(&s.alice), Some(json!({ "nme": "x" }))).await;
    assert_eq!(unknown_field.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", unknown_field.body);
    assert!(unknown_field.body["message"].as_str().expect("message").contains("nme"), "{:?}", unknown_field.body);
    let bad_body = project_body("Bad_Name", 3000, "15m");
    let bad_name = s.gateway.call(Method::POST, &projects_path, Some(&s.alice), Some(bad_body)).await;
    assert_eq!(bad_name.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", bad_name.body);
    // Each field the API server refuses is named on its own, for a form to show beside it.
    let bad_port =
        json!({ "name": "badport", "spec": { "ports": [{ "name": "web", "port": 70000, "preview": true }] } });
    let refused = s.gateway.call(Method::POST, &projects_path, Some(&s.alice), Some(bad_port)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", refused.body);
    let fields = refused.body["fields"].as_array().expect("the refused fields");
    assert!(fields.iter().any(|f| f["field"] == "spec.ports[0].port" && f["message"].is_string()), "{fields:?}");
    let listed = s.gateway.call(Method::GET, &projects_path, Some(&s.alice), None).await;
    assert_eq!(listed.body["projects"], json!([]));

    // Members create projects; only admins delete them.
    let created =
        s.gateway.call(Method::POST, &projects_path, Some(&bob), Some(project_body("mine", 3000, "15m"))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    // Until the gateway's cache has the new project, it is not found.
    let delete = eventually(Duration::from_secs(5), "the new project known to the gateway", || async {
        let answer = s.gateway.call(Method::DELETE, &format!("{projects_path}/mine"), Some(&bob), None).await;
        (answer.status != StatusCode::NOT_FOUND).then_some(answer)
    })
    .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    s.world.cleanup().await;
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_look_the_same_and_guessing_is_limited() {
    // Server rounds high enough that a few sign-ins' hashing shows in the process's CPU time
    // (counted in 10 ms ticks) well above the rest of a sign-in on a fast core (five hashes at
    // 300,000 rounds took 0.29 s here): alice's account and the decoy both at that count.
    let iterations = 1_000_000;
    let s = setup_with("gw-login", &["--auth-key-iterations", &iterations.to_string()]).await;
    let (alice, _) = crate::kit::platform_account(ALICE, crate::gateway_harness::PASSWORD, iterations).await;
    let store = AccountStore::new(s.world.client.clone(), &s.world.home.name);
    store.reset_password(&alice).await.expect("alice at the gateway's rounds");
    // The same work, measured as the gateway's own CPU time: other tests share the machine, and
    // wall time under their load said more about them than about this (two samples of five each,
    // minima or medians alike, were seen 4× apart both ways). Without the decoy hash an unknown
    // email would cost next to nothing.
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    let (mut wrong_cpu, mut unknown_cpu) = (0.0, 0.0);
    for i in 0..5 {
        let before = s.gateway.cpu_seconds();
        wrong.push(s.gateway.login(ALICE, "not the password at all").await);
        let between = s.gateway.cpu_seconds();
        unknown.push(s.gateway.login(&format!("nobody{i}@acme.example"), "not the password at all").await);
        wrong_cpu += between - before;
        unknown_cpu += s.gateway.cpu_seconds() - between;
    }
    for (a, b) in wrong.iter().zip(&unknown) {
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!((a.status, &a.body), (b.status, &b.body), "same status and body");
    }
    assert!(wrong_cpu > 0.2, "five wrong passwords cost {wrong_cpu:.2}s of CPU: are they hashed?");
    let ratio = unknown_cpu / wrong_cpu;
    assert!((0.67..1.5).contains(&ratio), "unknown/wrong CPU {unknown_cpu:.2}s/{wrong_cpu:.2}s = {ratio:.2}");

    // Past the free failures the account must wait, whatever the password. Each wait starts
    // when its attempt does, and a wrong password takes a while to check, so the first waits
    // may pass while the next guess is being hashed; they double until one holds. The right
    // password is tried inside a wait long enough that a loaded machine cannot outlast it: a
    // shorter one is waited out (as Retry-After asks) and guessed past, doubling it again.
    let mut attempts = 0;
    let limited = loop {
        attempts += 1;
        assert!(attempts < 20, "still no lasting limit after {attempts} attempts");
        let answer = s.gateway.login(ALICE, "still not it, sorry").await;
        if answer.status == StatusCode::UNAUTHORIZED {
            continue;
        }
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", answer.body);
        let retry_after: u64 = answer.headers["retry-after"].to_str().unwrap().parse().expect("seconds");
        if retry_after >= 3 {
            break answer;
        }
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
    };
    assert!(limited.headers.contains_key("retry-after"));
    let locked_out = s.gateway.login(ALICE, crate::gateway_harness::PASSWORD).await;
    assert_eq!(locked_out.status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert_eq!(
        s.gateway.login(BOB, crate::gateway_harness::PASSWORD).await.status,
        StatusCode::OK,
        "others are not locked"
    );
    s.world.cleanup().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_not_the_proxy() {
    // The test client connects from 127.0.0.1: here it plays the ingress in front of the gateway.
    let s = setup_with("gw-proxied", &["--trusted-proxies", "127.0.0.0/8"]).await;
    let (guesser, neighbour) = ("198.51.100.66", "203.0.113.5");
    let mut guesses = 0;
    let mut first_limited = None;
    // As above: the waits double, and the right password is tried inside one long enough that a
    // loaded machine cannot outlast it (a short one, served at its end, would let it through).
    loop {
        guesses += 1;
        assert!(guesses <= 60, "still no lasting limit after {guesses} guesses");
        let email = format!("guess{guesses}@acme.example");
        let answer = s.gateway.login_forwarded_for(guesser, &email, "a guess").await;
        if answer.status == StatusCode::UNAUTHORIZED {
            continue;
        }
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", answer.body);
        first_limited.get_or_insert(guesses);
        let retry_after: u64 = answer.headers["retry-after"].to_str().unwrap().parse().expect("seconds");
        if retry_after >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
    }
    let first_limited = first_limited.expect("limited");
    assert!(first_limited > 20, "the first 20 failures are free, limited after {first_limited}");
    let password = crate::gateway_harness::PASSWORD;
    let held = s.gateway.login_forwarded_for(guesser, ALICE, password).await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS, "the guessing client waits even with a right password");
    // Everyone else behind the same ingress signs in: the limit is the client's, not the proxy's.
    assert_eq!(s.gateway.login_forwarded_for(neighbour, ALICE, password).await.status, StatusCode::OK);
    s.world.cleanup().await;
}

#[tokio::test]
async fn an_invite_is_redeemed_once_to_set_a_password() {
    let s = setup("gw-invite").await;
    let invites = format!("/api/orgs/{}/invites", s.org);
    let dave = "dave@acme.example";
    let invited =
        s.gateway.call(Method::POST, &invites, Some(&s.alice), Some(json!({ "email": dave, "role": "member" }))).await;
    assert_eq!(invited.status, StatusCode::CREATED, "{:?}", invited.body);
    let token = invited.body["inviteToken"].as_str().expect("an invite token").to_owned();

    // The secret part is stored only hashed.
    let secrets: Api<Secret> = Api::namespaced(s.world.client.clone(), &s.gateway.namespace);
    let stored = secrets.list(&kube::api::ListParams::default().labels("ooda.run/invite=true")).await.expect("list");
    let secret_part = token.split_once('.').expect("id.secret").1;
    assert_eq!(stored.items.len(), 1);
    assert!(!format!("{:?}", stored.items[0].data).contains(secret_part));

    // Knowing the email is not enough; a wrong secret is refused.
    assert_eq!(s.gateway.login(dave, crate::gateway_harness::PASSWORD).await.status, StatusCode::UNAUTHORIZED);
    let guess = format!("{}.{}", token.split_once('.').unwrap().0, URL_SAFE_NO_PAD.encode([7u8; 32]));
    let dave_key = s.gateway.auth_key(dave, "dave's own long password").await;
    let accept = |token: String| {
        s.gateway.call(
            Method::POST,
            "/api/auth/accept-invite",
            None,
            Some(json!({ "token": token, "authKey": dave_key })),
        )
    };
    assert_eq!(accept(guess.clone()).await.status, StatusCode::BAD_REQUEST);
    // Its holder may ask whom it is for (a client derives the key for that email), any number of
    // times, without using it up; a wrong secret learns nothing.
    let details =
        |token: String| s.gateway.call(Method::POST, "/api/auth/invite-details", None, Some(json!({ "token": token })));
    for _ in 0..2 {
        let told = details(token.clone()).await;
        assert_eq!(told.status, StatusCode::OK, "{:?}", told.body);
        assert_eq!((&told.body["email"], &told.body["organisation"]), (&json!(dave), &json!(s.org)));
    }
    assert_eq!(details(guess).await.body["error"], "invalid_invite");
    let accepted = accept(token.clone()).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{:?}", accepted.body);
    assert_ne!(accept(token.clone()).await.status, StatusCode::CREATED, "single use");
    assert_eq!(details(token).await.body["error"], "invalid_invite", "a used invite tells nothing more");

    let signed_in = s.gateway.login(dave, "dave's own long password").await;
    assert_eq!(signed_in.status, StatusCode::OK);
    assert_eq!(signed_in.body["organisations"], json!([{ "org": s.org, "role": "member" }]));
    let projects = format!("/api/orgs/{}/projects", s.org);
    let token = signed_in.body["token"].as_str().expect("token");
    assert_eq!(s.gateway.call(Method::GET, &projects, Some(token), None).await.status, StatusCode::OK);
    s.world.cleanup().await;
}

#[tokio::test]
async fn the_api_describes_itself_and_publishes_its_keys() {
    let s = setup("gw-meta").await;
    let spec = s.gateway.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(spec.status, StatusCode::OK);
    assert_eq!(spec.body["openapi"], "3.1.0");
    assert!(spec.body["paths"]["/api/orgs/{org}/projects/{project}/preview"]["get"].is_object());
    let jwks = s.gateway.call(Method::GET, "/.well-known/jwks.json", None, None).await;
    let key = &jwks.body["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s.alice.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["kid"], key["kid"]);
    let missing = s.gateway.call(Method::GET, "/api/nothing-here", None, None).await;
    assert_eq!((missing.status, missing.body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    s.world.cleanup().await;
}

#[tokio::test]
async fn with_a_certificate_the_gateway_speaks_tls_and_asks_for_it_to_stay_that_way() {
    let client = client().await;
    install_crds(&client).await;
    let world = World::start(&client, "gw-tls").await;
    let org = organisation(&world).await;
    add_user(&world, &world.home.name, ALICE).await;
    let dir = std::env::temp_dir().join(format!("ooda-tls-{}", world.home.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (ca, cert, key) = certificates(&dir);
    let args = ["--tls-cert", cert.to_str().expect("utf-8"), "--tls-key", key.to_str().expect("utf-8")];
    let kubeconfig = crate::harness::kubeconfig_path();
    let gateway = Gateway::start_as(&world.home.name, &args, kubeconfig, reqwest::Client::builder()).await;

    // Certificates name hosts, so the client resolves ooda.localhost to the gateway.
    let trust = reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("CA")).expect("PEM certificate");
    let tls_client = reqwest::Client::builder()
        .add_root_certificate(trust)
        .resolve("ooda.localhost", gateway.addr)
        .build()
        .expect("client");
    let prelogin =
        tls_client.post(gateway.url_at("ooda.localhost", "/api/auth/prelogin")).json(&json!({ "email": ALICE }));
    let parameters: Value = prelogin.send().await.expect("HTTPS answers").json().await.expect("json");
    let salt = STANDARD.decode(parameters["salt"].as_str().expect("salt")).expect("base64 salt");
    let key =
        derive_auth_key(crate::gateway_harness::PASSWORD, &salt, parameters["iterations"].as_u64().unwrap() as u32);
    let login = tls_client
        .post(gateway.url_at("ooda.localhost", "/api/auth/login"))
        .json(&json!({ "email": ALICE, "authKey": key.await }))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(login.status(), StatusCode::OK);
    assert_eq!(login.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(login.headers()["cache-control"], "no-store");
    let token = login.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_owned();

    // Preview URLs are https; plain HTTP on the TLS port gets no answer.
    let body = project_body("secure", dev_port(), "15m");
    let path = format!("/api/orgs/{org}/projects");
    let created = tls_client.post(gateway.url_at("ooda.localhost", &path)).bearer_auth(&token).json(&body).send();
    assert_eq!(created.await.expect("answer").status(), StatusCode::CREATED);
    let projects: Api<Project> = Api::namespaced(world.client.clone(), &format!("org-{org}"));
    wait_for(&projects, "secure", project_phase(Phase::Running)).await;
    let preview =
        tls_client.get(gateway.url_at("ooda.localhost", &format!("{path}/secure/preview"))).bearer_auth(&token);
    let preview: Value = preview.send().await.expect("answer").json().await.expect("json");
    assert!(preview["url"].as_str().expect("url").starts_with(&format!("https://secure--{org}.{PREVIEW_DOMAIN}")));

    // Under TLS the preview cookie is `__Host-` prefixed: no sibling host can set or shadow it.
    let host = preview["host"].as_str().expect("host").to_owned();
    let trust = reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("CA")).expect("PEM certificate");
    let browser = reqwest::Client::builder()
        .add_root_certificate(trust)
        .resolve(&host, gateway.addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let token = preview["token"].as_str().expect("token");
    let link = gateway.url_at(&host, &format!("/?ooda_token={token}"));
    let redirect = browser.get(link).send().await.expect("answer");
    assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
    let cookie = redirect.headers()["set-cookie"].to_str().expect("ascii");
    assert!(
        cookie.starts_with("__Host-ooda_preview=") && cookie.contains("Path=/") && cookie.contains("Secure"),
        "{cookie}"
    );
    assert!(!cookie.to_lowercase().contains("domain="), "{cookie}");

    // A connection that never starts its handshake is closed by the gateway.
    let mut silent = tokio::net::TcpStream::connect(gateway.addr).await.expect("connect");
    let closed =
        tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncReadExt::read(&mut silent, &mut [0u8; 1])).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the silent connection was not closed: {closed:?}");
    let plain = reqwest::Client::new().get(format!("http://{}/api/openapi.json", gateway.addr)).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()), "plain HTTP must not be served");
    std::fs::remove_dir_all(dir).expect("remove temp dir");
    world.cleanup().await;
}

/// A throw-away CA and a certificate it signed for the gateway's hosts, made with openssl:
/// `(ca.crt, tls.crt, tls.key)`.
fn certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let made = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(made.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&made.stderr));
    };
    let p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509", "-days", "1", "-subj", "/CN=ooda test CA", "-keyout", "ca.key", "-out", "ca.crt"],
            &p256[..],
        ]
        .concat(),
    );
    openssl(&[&["req", "-subj", "/CN=ooda.localhost", "-keyout", "tls.key", "-out", "tls.csr"], &p256[..]].concat());
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:ooda.localhost,DNS:*.preview.ooda.localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions file");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "san.ext",
        "-out",
        "tls.crt",
    ]);
    (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"))
}

/// A client of `GET /api/orgs/{org}/events`: the stream read as it arrives, event by event.
struct EventStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl EventStream {
    async fn open(gateway: &Gateway, org: &str, session: &str) -> Self {
        let response = reqwest::Client::new()
            .get(gateway.url(&format!("/api/orgs/{org}/events")))
            .bearer_auth(session)
            .send()
            .await
            .expect("the stream opens");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { body: Box::pin(response.bytes_stream()), buffer: String::new() }
    }

    /// The next event (heartbeat comments skipped): its name and data; `None` when the stream ends.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let message: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| message.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
                if let (Some(event), Some(data)) = (field("event: "), field("data: ")) {
                    return Some((event, serde_json::from_str(&data).expect("JSON data")));
                }
            }
            let chunk =
                tokio::time::timeout(crate::harness::SETTLE, self.body.next()).await.expect("an event in time")?;
            self.buffer.push_str(std::str::from_utf8(&chunk.expect("the stream reads")).expect("UTF-8"));
        }
    }

    /// Reads events until one satisfies `wanted`; returns it.
    async fn until(&mut self, what: &str, wanted: impl Fn(&str, &Value) -> bool) -> Value {
        loop {
            let (event, data) = self.next().await.unwrap_or_else(|| panic!("the stream ended before {what}"));
            if wanted(&event, &data) {
                return data;
            }
        }
    }
}

#[tokio::test]
async fn the_event_stream_pushes_project_changes_and_ends_with_the_membership() {
    let s = setup("gw-events").await;
    let mut alice = EventStream::open(&s.gateway, &s.org, &s.alice).await;
    assert_eq!(alice.next().await, Some(("projects".to_owned(), json!({ "projects": [] }))));

    let projects = format!("/api/orgs/{}/projects", s.org);
    let body = project_body("live", dev_port(), "15m");
    assert_eq!(s.gateway.call(Method::POST, &projects, Some(&s.alice), Some(body)).await.status, StatusCode::CREATED);
    let live = |phase: &'static str| {
        move |event: &str, p: &Value| event == "project" && p["name"] == "live" && p["phase"] == phase
    };
    alice.until("live Running", live("Running")).await;
    let stop = s.gateway.call(Method::POST, &format!("{projects}/live/stop"), Some(&s.alice), None).await;
    assert!(stop.status.is_success(), "{:?}", stop.body);
    let stopped = alice.until("live Stopped", live("Stopped")).await;
    assert_eq!(stopped["state"], "Stopped");

    // bob's stream ends when he stops being a member; alice's sees the project go.
    let bob_session = s.gateway.session(BOB).await;
    let mut bob = EventStream::open(&s.gateway, &s.org, &bob_session).await;
    assert_eq!(bob.next().await.expect("a first event").0, "projects");
    let removed =
        s.gateway.call(Method::DELETE, &format!("/api/orgs/{}/members/{BOB}", s.org), Some(&s.alice), None).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{:?}", removed.body);
    bob.until("bob's stream to end", |event, _| event == "ended").await;
    assert_eq!(bob.next().await, None, "and close");
    let deleted = s.gateway.call(Method::DELETE, &format!("{projects}/live"), Some(&s.alice), None).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    let gone = alice.until("live deleted", |event, _| event == "deleted").await;
    assert_eq!(gone, json!({ "name": "live" }));
    s.world.cleanup().await;
}

/// Opens the terminal of `project` as the holder of `session`: the socket, or the refusal's
/// status and body.
pub async fn open_terminal(
    gateway: &Gateway,
    org: &str,
    project: &str,
    session: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, (StatusCode, String)> {
    let url = format!("ws://ooda.localhost:{}/api/orgs/{org}/projects/{project}/terminal", gateway.addr.port());
    let mut request = url.into_client_request().expect("ws request");
    let protocols = format!("ooda.terminal.v1, ooda.bearer.{session}");
    request.headers_mut().insert("sec-websocket-protocol", protocols.parse().expect("header"));
    let stream = tokio::net::TcpStream::connect(gateway.addr).await.expect("connect");
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, response)) => {
            assert_eq!(response.headers()["sec-websocket-protocol"], "ooda.terminal.v1");
            Ok(socket)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            Err((response.status(), body))
        }
        Err(other) => panic!("terminal handshake: {other}"),
    }
}

/// Reads (and drops) the terminal's output until its closing message; returns that.
async fn closing_message(socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("closed in time") {
            Some(Ok(Message::Text(text))) => {
                let closed: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(closed["type"], "closed");
                return closed;
            }
            Some(Ok(Message::Binary(_))) => continue,
            other => panic!("{other:?} before the closing message"),
        }
    }
}

/// Reads the terminal's output until it contains every one of `wanted`; returns all of it.
pub async fn terminal_output(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    wanted: &[&str],
) -> String {
    let mut output = String::new();
    while !wanted.iter().all(|w| output.contains(w)) {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {wanted:?} in the terminal's output: {output:?}"));
        match message.expect("the socket is open").expect("a message") {
            Message::Binary(bytes) => output.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("{other:?} before {wanted:?}; output so far {output:?}"),
        }
    }
    output
}

/// Starts a job in the terminal's shell; the shell's and the job's process ids. (What a hangup
/// ends is asserted on the real node, in a container: kwok runs a simulated pod's terminal as a
/// host process, whose signals are not a container's.)
pub async fn shell_and_job(socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Vec<u32> {
    // The arithmetic keeps the echoed command line from matching what its output is read for.
    socket
        .send(Message::binary(b"sleep 600 & echo \"pids-$((1+1)) $$ $! end-$((1+2))\"\n".to_vec()))
        .await
        .expect("type");
    let output = terminal_output(socket, &["pids-2 ", " end-3"]).await;
    let line = output.split("pids-2 ").nth(1).and_then(|rest| rest.split(" end-3").next()).expect("the ids");
    line.split_whitespace().map(|pid| pid.parse().expect("a process id")).collect()
}

/// Those of `pids` still running (zombies are not) in the project's workspace container.
pub async fn still_running(client: &kube::Client, namespace: &str, project: &str, pids: &[u32]) -> Vec<u32> {
    use tokio::io::AsyncReadExt;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let script =
        r#"for p; do read -r _ _ state _ 2>/dev/null <"/proc/$p/stat" && [ "$state" != Z ] && echo "$p"; done; exit 0"#;
    let mut command = vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned(), "still-running".to_owned()];
    command.extend(pids.iter().map(u32::to_string));
    let params = kube::api::AttachParams::default().container("workspace").stderr(false);
    let mut process = pods.exec(&format!("{project}-0"), command, &params).await.expect("exec in the workspace");
    let mut output = String::new();
    process.stdout().expect("stdout").read_to_string(&mut output).await.expect("the output");
    process.join().await.expect("the exec ends");
    output.split_whitespace().map(|pid| pid.parse().expect("a process id")).collect()
}

#[tokio::test]
async fn a_member_opens_a_terminal_in_a_running_project_until_it_stops() {
    let s = setup("gw-terminal").await;
    let projects = format!("/api/orgs/{}/projects", s.org);
    let body = project_body("shell", dev_port(), "15m");
    assert_eq!(s.gateway.call(Method::POST, &projects, Some(&s.alice), Some(body)).await.status, StatusCode::CREATED);
    let api: Api<Project> = Api::namespaced(s.world.client.clone(), &format!("org-{}", s.org));
    wait_for(&api, "shell", project_phase(Phase::Running)).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(s.world.client.clone(), &format!("org-{}", s.org));
    let renewed = || async { leases.get("shell-activity").await.ok().and_then(|l| l.spec?.renew_time) };
    let before = renewed().await;

    // Refusals are the API's JSON: no session, a plain GET, another organisation's project.
    let (status, _) = open_terminal(&s.gateway, &s.org, "shell", "not-a-token").await.expect_err("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let plain = reqwest::Client::new()
        .get(s.gateway.url(&format!("{projects}/shell/terminal")))
        .header("sec-websocket-protocol", format!("ooda.terminal.v1, ooda.bearer.{}", s.alice))
        .send()
        .await
        .expect("answer");
    assert_eq!(plain.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(plain.json::<Value>().await.expect("JSON")["error"], "upgrade_required");
    let (status, _) = open_terminal(&s.gateway, &s.org, "nothing-here", &s.alice).await.expect_err("refused");
    assert_eq!(status, StatusCode::NOT_FOUND);

    // bob, a member, types; the terminal has his size and streams the shell's answers.
    let bob = s.gateway.session(BOB).await;
    let mut socket = open_terminal(&s.gateway, &s.org, "shell", &bob).await.expect("a terminal");
    socket.send(Message::text(r#"{"type":"resize","cols":101,"rows":33}"#)).await.expect("resize");
    // The size and the keystrokes travel on different exec channels: ask until the size is in.
    let mut sized = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sized.contains("33 101") {
        assert!(Instant::now() < deadline, "the terminal never took its size: {sized:?}");
        socket.send(Message::binary(b"stty size\n".to_vec())).await.expect("type");
        while let Ok(Some(Ok(Message::Binary(bytes)))) =
            tokio::time::timeout(Duration::from_millis(500), socket.next()).await
        {
            sized.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    socket.send(Message::binary(b"echo hello-$((6*7)); id -un\n".to_vec())).await.expect("type");
    let output = terminal_output(&mut socket, &["hello-42", "nobody"]).await;
    assert!(!output.contains("root"), "{output}");
    eventually(Duration::from_secs(10), "the terminal renews the activity Lease", || async {
        (renewed().await > before).then_some(())
    })
    .await;
    // Removing bob closes his terminal, saying why; alice's stays open.
    let mut alice = open_terminal(&s.gateway, &s.org, "shell", &s.alice).await.expect("alice's terminal");
    let bob_path = format!("/api/orgs/{}/members/{BOB}", s.org);
    let removed = s.gateway.call(Method::DELETE, &bob_path, Some(&s.alice), None).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{:?}", removed.body);
    let closed = closing_message(&mut socket).await;
    assert!(closed["reason"].as_str().expect("a reason").contains("membership"), "{closed}");
    alice.send(Message::binary(b"echo still-$((1+1))\n".to_vec())).await.expect("type");
    terminal_output(&mut alice, &["still-2"]).await;

    // Stopping the project closes the terminal, saying why; a stopped project opens none.
    let stop = s.gateway.call(Method::POST, &format!("{projects}/shell/stop"), Some(&s.alice), None).await;
    assert!(stop.status.is_success(), "{:?}", stop.body);
    let closed = closing_message(&mut alice).await;
    assert!(closed["reason"].as_str().expect("a reason").contains("not running"), "{closed}");
    wait_for(&api, "shell", project_phase(Phase::Stopped)).await;
    let (status, body) = open_terminal(&s.gateway, &s.org, "shell", &s.alice).await.expect_err("refused");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    s.world.cleanup().await;
}

/// A TCP forwarder to the API server that can be frozen: connections stay open and new ones are
/// accepted, but no byte passes either way until it thaws. A stalled network path, which looks
/// to the gateway like a quiet cluster.
struct Stall {
    address: std::net::SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl Stall {
    async fn to(server: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the forwarder");
        let address = listener.local_addr().expect("address");
        let (frozen, _) = tokio::sync::watch::channel(false);
        let thawed = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(server).await else { continue };
                let ((client_read, client_write), (server_read, server_write)) =
                    (inbound.into_split(), outbound.into_split());
                tokio::spawn(pump(client_read, server_write, thawed.subscribe()));
                tokio::spawn(pump(server_read, client_write, thawed.subscribe()));
            }
        });
        Self { address, frozen }
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// The test's kubeconfig with the API server reached through this forwarder (its certificate
    /// names 127.0.0.1, which the forwarder is too).
    fn kubeconfig(&self, test: &str) -> std::path::PathBuf {
        let original = std::fs::read_to_string(crate::harness::kubeconfig_path()).expect("kubeconfig");
        let server = api_server_address();
        let text = original.replace(&format!("https://{server}"), &format!("https://{}", self.address));
        assert_ne!(text, original, "the kubeconfig names the API server at {server}");
        let path = std::env::temp_dir().join(format!("ooda-{test}-kubeconfig.yaml"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

/// Copies bytes one way while the forwarder is not frozen; bytes read as it freezes wait.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if frozen.wait_for(|frozen| !frozen).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if frozen.wait_for(|frozen| !frozen).await.is_err() || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// The API server's `host:port` in the test kubeconfig.
fn api_server_address() -> std::net::SocketAddr {
    let kubeconfig = std::fs::read_to_string(crate::harness::kubeconfig_path()).expect("kubeconfig");
    let server = kubeconfig.lines().find_map(|line| line.trim().strip_prefix("server: https://")).expect("a server");
    server.trim().parse().expect("an address")
}

#[tokio::test]
async fn a_gateway_cut_off_from_the_api_server_refuses_previews_within_its_bound_and_recovers() {
    // The gateway reaches the API server through a forwarder that the test freezes. Its default
    // bound is 10 s: past it, it must stop honouring tokens it can no longer confirm, here a
    // token revoked (the project stopped) while the gateway could not see it.
    let stall = Stall::to(api_server_address()).await;
    let s = setup_through("gw-stale", &[], |home| stall.kubeconfig(home)).await;
    let (host, token, _dev) = serving_project(&s, "cut").await;
    let browser = s.gateway.preview_client(&host);
    let get = || browser.get(s.gateway.preview_url(&host, "/")).header("x-ooda-preview-token", &token).send();
    assert_eq!(get().await.expect("answer").status(), StatusCode::OK);

    stall.freeze();
    let frozen_at = Instant::now();
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &format!("org-{}", s.org));
    let stop = json!({ "spec": { "lifecycle": { "state": "Stopped" } } });
    projects.patch("cut", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&stop)).await.expect("stop");
    let refused = eventually(Duration::from_secs(15), "the preview refused while the gateway is cut off", || async {
        Some(get().await.expect("answer")).filter(|answer| answer.status() != StatusCode::OK)
    })
    .await;
    let took = frozen_at.elapsed();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE, "refused as unavailable, not as a bad token");
    assert!(refused.headers().contains_key("retry-after"));
    assert!(took <= Duration::from_secs(11), "refused {took:?} after the cut: the bound is 10 s");
    let (status, body) = crate::operator_harness::http_get(s.gateway.http, "/readyz").await.expect("readyz");
    assert_eq!(status, 503, "{body}");
    // What else rests on the caches' word refuses as well: the AI relay and terminals.
    let models = format!("/api/orgs/{}/projects/cut/ai/v1/models", s.org);
    let relayed = s.gateway.call(Method::GET, &models, Some(&s.alice), None).await;
    assert_eq!(relayed.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", relayed.body);
    let terminal = s.gateway.url(&format!("/api/orgs/{}/projects/cut/terminal", s.org));
    let offer = format!("ooda.terminal.v1, ooda.bearer.{}", s.alice);
    let opened = reqwest::Client::new().get(terminal).header("sec-websocket-protocol", offer).send().await;
    assert_eq!(opened.expect("answer").status(), StatusCode::SERVICE_UNAVAILABLE);
    // And so does the REST API: a session rests on the cached account and memberships.
    let projects_route = format!("/api/orgs/{}/projects", s.org);
    let listed = s.gateway.call(Method::GET, &projects_route, Some(&s.alice), None).await;
    assert_eq!(listed.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", listed.body);

    // Once the way is open again the gateway catches up: the stopped project's token is refused
    // for what it is, and the gateway is ready again.
    stall.thaw();
    let after =
        eventually(Duration::from_secs(30), "the revoked token refused once the gateway catches up", || async {
            Some(get().await.expect("answer").status()).filter(|status| *status != StatusCode::SERVICE_UNAVAILABLE)
        })
        .await;
    assert!(after == StatusCode::UNAUTHORIZED || after == StatusCode::FORBIDDEN, "{after}");
    eventually(Duration::from_secs(30), "the gateway ready again", || async {
        crate::operator_harness::http_get(s.gateway.http, "/readyz").await.ok().filter(|(status, _)| *status == 200)
    })
    .await;
    let listed = s.gateway.call(Method::GET, &projects_route, Some(&s.alice), None).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    s.world.cleanup().await;
}
