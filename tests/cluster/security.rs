//! The holes a security review found, each tried as an attacker would against the real gateway,
//! operator and API server: invites that took over other organisations' members, sessions that
//! outlived a reset or a sign-out, a retired signing key that never retired, ambiguous host
//! names, refusals that were 500 or plain text, existence oracles, and cookie and redirect
//! tricks on preview hosts. (Under TLS: gateway.rs's TLS test.)

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use ooda::crd::{Organisation, Project};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::accounts::ooda_user;
use crate::gateway::{ALICE, BOB, dev_port, project_body, running_project, serving_project, setup};
use crate::gateway_harness::{Gateway, PREVIEW_DOMAIN, add_user, pod_ip, upstream};
use crate::harness::{api_error, eventually, kubeconfig_path, unique_name, wait_for};
use crate::operator_harness::{World, organisation_ready};

const CAROL: &str = "carol@globex.example";
const ERIN: &str = "erin@globex.example";
/// How long a change may take to reach the gateway's watch caches.
const PROPAGATION: Duration = Duration::from_secs(10);

/// Another organisation managed by the test's operator, with these members; waits until Ready.
async fn organisation_with(world: &World, members: Value, quota_projects: u32) -> String {
    let name = unique_name("org");
    let mut manifest = world.organisation_manifest(&name, "eu");
    manifest["spec"]["members"] = members;
    manifest["spec"]["quota"]["projects"] = json!(quota_projects);
    let api: Api<Organisation> = Api::all(world.client.clone());
    let org: Organisation = serde_json::from_value(manifest).expect("organisation");
    api.create(&PostParams::default(), &org).await.expect("create organisation");
    wait_for(&api, &name, organisation_ready()).await;
    name
}

async fn invite(gateway: &Gateway, org: &str, admin: &str, email: &str) -> Value {
    let path = format!("/api/orgs/{org}/invites");
    let invited =
        gateway.call(Method::POST, &path, Some(admin), Some(json!({ "email": email, "role": "member" }))).await;
    assert_eq!(invited.status, StatusCode::CREATED, "{:?}", invited.body);
    invited.body
}

fn keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body.as_object().expect("an object").keys().cloned().collect();
    keys.sort();
    keys
}

async fn accept(
    gateway: &Gateway,
    invite: &Value,
    session: Option<&str>,
    password: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({ "token": invite["inviteToken"] });
    if let Some(password) = password {
        let email = invite["email"].as_str().expect("the invite's email");
        body["authKey"] = json!(gateway.auth_key(email, password).await);
    }
    let answer = gateway.call(Method::POST, "/api/auth/accept-invite", session, Some(body)).await;
    (answer.status, answer.body)
}

/// Signs in and returns `(token, organisations)`.
async fn sign_in(gateway: &Gateway, email: &str, password: &str) -> (String, Value) {
    let answer = gateway.login(email, password).await;
    assert_eq!(answer.status, StatusCode::OK, "sign-in of {email}: {:?}", answer.body);
    (answer.body["token"].as_str().expect("token").to_owned(), answer.body["organisations"].clone())
}

async fn status(gateway: &Gateway, path: &str, session: &str) -> StatusCode {
    gateway.call(Method::GET, path, Some(session), None).await.status
}

#[tokio::test]
async fn an_invite_admits_its_own_organisation_and_never_another() {
    let s = setup("sec-invite").await;
    // globex lists erin in Git; she has no account yet. carol is its admin.
    let members = json!([{ "email": CAROL, "role": "admin" }, { "email": ERIN, "role": "member" }]);
    let globex = organisation_with(&s.world, members, 10).await;
    add_user(&s.world, &s.world.home.name, CAROL).await;
    let carol = s.gateway.session(CAROL).await;
    let acme = s.org.clone();

    // acme's admin invites erin and redeems the invite with a password of their own choosing.
    let from_acme = invite(&s.gateway, &acme, &s.alice, ERIN).await;
    let (accepted, _) = accept(&s.gateway, &from_acme, None, Some("acme admin's own choice")).await;
    assert_eq!(accepted, StatusCode::CREATED);
    let (squatter, orgs) = sign_in(&s.gateway, ERIN, "acme admin's own choice").await;
    assert_eq!(orgs, json!([{ "org": acme, "role": "member" }]), "the invite opens acme, and only acme");
    for path in
        [format!("/api/orgs/{globex}"), format!("/api/orgs/{globex}/projects"), format!("/api/orgs/{globex}/members")]
    {
        assert_eq!(status(&s.gateway, &path, &squatter).await, StatusCode::NOT_FOUND, "{path}");
    }
    let me = s.gateway.call(Method::GET, "/api/me", Some(&squatter), None).await;
    assert_eq!(me.body["organisations"], json!([{ "org": acme, "role": "member" }]));

    // Invites say nothing of whether the email has an account: erin has one now, bob and carol
    // have platform accounts, a stranger has none; every answer has the same shape.
    let shapes = [
        keys(&invite(&s.gateway, &globex, &carol, ERIN).await),
        keys(&invite(&s.gateway, &globex, &carol, BOB).await),
        keys(&invite(&s.gateway, &globex, &carol, "nobody@globex.example").await),
        keys(&from_acme),
    ];
    assert!(shapes.iter().all(|shape| shape == &shapes[0]), "{shapes:?}");
    assert!(!shapes[0].iter().any(|key| key.to_lowercase().contains("account")), "{shapes:?}");

    // globex's own invite for erin still works, for whoever holds it: erin, with her password.
    let from_globex = invite(&s.gateway, &globex, &carol, ERIN).await;
    let (accepted, body) = accept(&s.gateway, &from_globex, None, Some("erin's very own password")).await;
    assert_eq!(accepted, StatusCode::CREATED, "{body:?}");
    let (erin, orgs) = sign_in(&s.gateway, ERIN, "erin's very own password").await;
    assert_eq!(orgs, json!([{ "org": globex, "role": "member" }]));
    assert_eq!(status(&s.gateway, &format!("/api/orgs/{acme}"), &erin).await, StatusCode::NOT_FOUND);
    let (_, orgs) = sign_in(&s.gateway, ERIN, "acme admin's own choice").await;
    assert_eq!(orgs, json!([{ "org": acme, "role": "member" }]), "acme's credential gained nothing");

    // An account holder accepts a further invite while signed in: the session's own credential
    // is admitted, with no password sent.
    let again = invite(&s.gateway, &acme, &s.alice, ERIN).await;
    let bob = s.gateway.session(BOB).await;
    let (refused, body) = accept(&s.gateway, &again, Some(&bob), None).await;
    assert_eq!((refused, &body["error"]), (StatusCode::CONFLICT, &json!("invite_for_another_email")), "{body:?}");
    let (refused, _) = accept(&s.gateway, &again, Some(&erin), Some("a password as well")).await;
    assert_eq!(refused, StatusCode::BAD_REQUEST);
    let (accepted, body) = accept(&s.gateway, &again, Some(&erin), None).await;
    assert_eq!(accepted, StatusCode::CREATED, "{body:?}");
    assert_eq!(status(&s.gateway, &format!("/api/orgs/{acme}/projects"), &erin).await, StatusCode::OK);
    let (again_used, _) = accept(&s.gateway, &again, Some(&erin), None).await;
    assert_eq!(again_used, StatusCode::BAD_REQUEST, "single use");
    s.world.cleanup().await;
}

#[tokio::test]
async fn a_reset_password_or_a_sign_out_everywhere_ends_the_sessions_it_should() {
    let s = setup("sec-sessions").await;
    let projects = format!("/api/orgs/{}/projects", s.org);
    let (first, second) = (s.gateway.session(BOB).await, s.gateway.session(BOB).await);
    assert_eq!(status(&s.gateway, &projects, &first).await, StatusCode::OK);

    // A user signs out everywhere: every session of theirs ends at once.
    let out = s.gateway.call(Method::POST, "/api/auth/sign-out-everywhere", Some(&first), None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{:?}", out.body);
    assert_eq!(status(&s.gateway, &projects, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&s.gateway, &projects, &second).await, StatusCode::UNAUTHORIZED);
    let third = s.gateway.session(BOB).await;
    assert_eq!(status(&s.gateway, &projects, &third).await, StatusCode::OK, "signing in again works at once");

    // An admin signs a member out of the organisation; a member may not.
    let sign_out = |who: &str| format!("/api/orgs/{}/members/{who}/sign-out", s.org);
    let by_member = s.gateway.call(Method::POST, &sign_out(ALICE), Some(&third), None).await;
    assert_eq!(by_member.status, StatusCode::FORBIDDEN);
    let stranger = s.gateway.call(Method::POST, &sign_out("nobody@acme.example"), Some(&s.alice), None).await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
    let by_admin = s.gateway.call(Method::POST, &sign_out(BOB), Some(&s.alice), None).await;
    assert_eq!(by_admin.status, StatusCode::NO_CONTENT, "{:?}", by_admin.body);
    assert_eq!(status(&s.gateway, &projects, &third).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&s.gateway, &projects, &s.alice).await, StatusCode::OK, "only bob was signed out");
    let fourth = s.gateway.session(BOB).await;
    assert_eq!(status(&s.gateway, &projects, &fourth).await, StatusCode::OK);

    // A platform operator resets the password: every session ends, and the old password.
    let (ok, stderr) = ooda_user(&s.world.home.name, &["reset-password", "--email", BOB], "bob's brand new password");
    assert!(ok, "{stderr}");
    eventually(PROPAGATION, "the reset ends bob's session", || async {
        (status(&s.gateway, &projects, &fourth).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    let old = s.gateway.login(BOB, crate::gateway_harness::PASSWORD).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let (fifth, _) = sign_in(&s.gateway, BOB, "bob's brand new password").await;
    assert_eq!(status(&s.gateway, &projects, &fifth).await, StatusCode::OK);
    s.world.cleanup().await;
}

/// Runs `ooda rotate-signing-key` against the test's namespace.
fn rotate(namespace: &str, emergency: bool) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ooda"));
    command.args(["rotate-signing-key", "--namespace", namespace]).env("KUBECONFIG", kubeconfig_path());
    if emergency {
        command.arg("--emergency");
    }
    let output = command.output().expect("run ooda rotate-signing-key");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().expect("a header");
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap())
            .expect("JSON header");
    header["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test]
async fn a_rotated_key_retires_after_one_session_lifetime_and_an_emergency_rotation_at_once() {
    let s = setup("sec-rotate").await;
    let me = "/api/me";
    let old = s.alice.clone();

    // A rotation: new sessions get the new key; the old ones keep working.
    rotate(&s.world.home.name, false);
    let new = eventually(PROPAGATION, "sessions signed with the new key", || async {
        let token = s.gateway.session(ALICE).await;
        (kid_of(&token) != kid_of(&old)).then_some(token)
    })
    .await;
    assert_eq!(status(&s.gateway, me, &old).await, StatusCode::OK, "the previous key still verifies");
    let jwks = s.gateway.call(Method::GET, "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks.body["keys"].as_array().expect("keys").len(), 2);

    // Only for one session lifetime (12h, and 30s of leeway) after the rotation: move the
    // rotation's recorded time back past that, as if it happened yesterday.
    let secrets: Api<Secret> = Api::namespaced(s.world.client.clone(), &s.world.home.name);
    let yesterday = Timestamp::now().as_second() - 12 * 3600 - 31;
    let patch = json!({ "data": { "previous.rotated-at": ByteString(yesterday.to_string().into_bytes()) } });
    let keys = "ooda-gateway-signing-keys";
    secrets.patch(keys, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch the key ring");
    eventually(PROPAGATION, "the retired key stops verifying", || async {
        (status(&s.gateway, me, &old).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert_eq!(status(&s.gateway, me, &new).await, StatusCode::OK);

    // An emergency rotation drops the key in use at once: its sessions end with it.
    rotate(&s.world.home.name, true);
    eventually(PROPAGATION, "an emergency rotation ends the current sessions", || async {
        (status(&s.gateway, me, &new).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    let ring = secrets.get(keys).await.expect("key ring");
    assert!(!ring.data.expect("data").contains_key("previous.pk8"), "no previous key is kept");
    let after = s.gateway.session(ALICE).await;
    assert_eq!(status(&s.gateway, me, &after).await, StatusCode::OK);
    s.world.cleanup().await;
}

#[tokio::test]
async fn names_with_a_double_dash_are_refused_so_every_host_has_one_reading() {
    let s = setup("sec-hosts").await;
    let namespace = format!("org-{}", s.org);
    // `a--b` in org `c` and `a` in org `b--c` would both be `a--b--c.<domain>`.
    let projects: Api<Project> = Api::namespaced(s.world.client.clone(), &namespace);
    let project: Project = serde_json::from_value(json!({
        "apiVersion": "ooda.run/v1alpha1", "kind": "Project",
        "metadata": { "name": "my--shop" }, "spec": {},
    }))
    .expect("project");
    let status = api_error(projects.create(&PostParams::default(), &project).await);
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("metadata.name") && status.message.contains("'--'"), "{}", status.message);
    let organisations: Api<Organisation> = Api::all(s.world.client.clone());
    let mut manifest = s.world.organisation_manifest("acme--eu", "eu");
    manifest["metadata"]["name"] = json!("acme--eu");
    let organisation: Organisation = serde_json::from_value(manifest).expect("organisation");
    let status = api_error(organisations.create(&PostParams::default(), &organisation).await);
    assert!(status.message.contains("'--'"), "{}", status.message);

    // Through the gateway, the API server's refusal names the field.
    let path = format!("/api/orgs/{}/projects", s.org);
    let created =
        s.gateway.call(Method::POST, &path, Some(&s.alice), Some(project_body("my--shop", 3000, "15m"))).await;
    assert_eq!(created.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", created.body);
    assert!(created.body["message"].as_str().expect("message").contains("'--'"));
    s.world.cleanup().await;
}

#[tokio::test]
async fn refusals_are_json_4xx_never_500_or_plain_text() {
    let s = setup("sec-refusals").await;
    let small = organisation_with(&s.world, json!([{ "email": ALICE, "role": "admin" }]), 1).await;
    let path = format!("/api/orgs/{small}/projects");
    let first = s.gateway.call(Method::POST, &path, Some(&s.alice), Some(project_body("one", 3000, "15m"))).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let second = s.gateway.call(Method::POST, &path, Some(&s.alice), Some(project_body("two", 3000, "15m"))).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{:?}", second.body);
    assert_eq!(second.body["error"], "quota_exceeded");
    assert!(second.body["message"].as_str().expect("message").contains("organisation-quota"), "{:?}", second.body);

    let org = &s.org;
    let cases = [
        (Method::POST, format!("/api/orgs/{org}/projects/one/versions/latest/activate"), StatusCode::BAD_REQUEST),
        (
            Method::POST,
            format!("/api/orgs/{org}/projects/one/versions/99999999999999999999/activate"),
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/api/no/such/route".to_owned(), StatusCode::NOT_FOUND),
        (Method::PATCH, "/api/me".to_owned(), StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, "/api/orgs/%FF".to_owned(), StatusCode::BAD_REQUEST),
    ];
    for (method, path, expected) in cases {
        let answer = s.gateway.call(method.clone(), &path, Some(&s.alice), None).await;
        assert_eq!(answer.status, expected, "{method} {path}: {:?}", answer.body);
        assert!(
            answer.body["error"].is_string() && answer.body["message"].is_string(),
            "{method} {path}: {:?}",
            answer.body
        );
        assert_eq!(answer.headers["content-type"], "application/json", "{method} {path}");
    }

    // The scheme name of `Authorization: Bearer` is case-insensitive.
    let lower = reqwest::Client::new()
        .get(s.gateway.url("/api/me"))
        .header("authorization", format!("bearer {}", s.alice))
        .send()
        .await
        .expect("answer");
    assert_eq!(lower.status(), StatusCode::OK);
    s.world.cleanup().await;
}

#[tokio::test]
async fn preview_and_site_hosts_tell_nothing_about_projects_and_keep_ooda_s_cookie_ooda_s() {
    let s = setup("sec-oracle").await;
    let (host, token, _dev) = serving_project(&s, "shop").await;

    // A host of no project answers exactly as a real one does without the right token.
    let answer = |host: String, token: Option<&'static str>| {
        let client = s.gateway.preview_client(&host);
        let url = s.gateway.preview_url(&host, "/");
        async move {
            let mut request = client.get(url);
            if let Some(token) = token {
                request = request.header("x-ooda-preview-token", token);
            }
            let response = request.send().await.expect("answer");
            (response.status(), response.text().await.expect("body"))
        }
    };
    let real = host.clone();
    let reference = answer(real.clone(), None).await;
    assert_eq!(reference.0, StatusCode::UNAUTHORIZED);
    let missing = format!("nope--{}.{PREVIEW_DOMAIN}", s.org);
    let ambiguous = format!("shop--{}--x.{PREVIEW_DOMAIN}", s.org);
    for (case, host, token) in [
        ("a wrong token", real.clone(), Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
        ("no project, no token", missing.clone(), None),
        ("no project, a token", missing, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
        ("two separators", ambiguous, None),
    ] {
        assert_eq!(answer(host, token).await, reference, "{case}");
    }

    // Site hosts: a project that never published and no project at all look the same.
    let site = |label: String| {
        let host = format!("{label}.sites.ooda.localhost");
        let client = s.gateway.preview_client(&host);
        let url = s.gateway.preview_url(&host, "/index.html");
        async move {
            let response = client.get(url).send().await.expect("answer");
            (response.status(), response.text().await.expect("body"))
        }
    };
    let unpublished = site(format!("shop--{}", s.org)).await;
    assert_eq!(unpublished.0, StatusCode::NOT_FOUND);
    assert_eq!(site(format!("nope--{}", s.org)).await, unpublished);
    assert!(serde_json::from_str::<Value>(&unpublished.1).is_ok(), "JSON, not plain text: {}", unpublished.1);

    // The project cannot set, replace or expire ooda's own cookie; its own cookies pass.
    let browser = s.gateway.preview_client(&host);
    let response = browser
        .get(s.gateway.preview_url(&host, "/set-cookie"))
        .header("x-ooda-preview-token", &token)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let set: Vec<&str> = response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(set, ["theme=dark; Path=/"]);

    // The link-to-cookie redirect stays on this host, whatever the path looks like.
    for (path, location) in [("//evil.example/x", "/evil.example/x"), ("///evil.example", "/evil.example")] {
        let link = s.gateway.preview_url(&host, &format!("{path}?ooda_token={token}"));
        let redirect = browser.get(link).send().await.expect("answer");
        assert_eq!(redirect.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(redirect.headers()["location"], location, "{path}");
    }
    s.world.cleanup().await;
}

#[tokio::test]
async fn a_request_to_a_ready_pod_whose_server_is_not_listening_yet_waits_for_it() {
    let s = setup("sec-listen").await;
    let port = dev_port();
    let (host, token) = running_project(&s, "late", port, "15m").await;
    let ip = pod_ip(&s.world.client, &format!("org-{}", s.org), "late").await;
    // The pod is Ready (kwok says so), but nothing listens on the preview port yet. The request
    // must still be waiting after a while (an observation window: there is no event to await).
    let browser = s.gateway.preview_client(&host);
    let request = browser.get(s.gateway.preview_url(&host, "/first")).header("x-ooda-preview-token", &token).send();
    let pending = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!pending.is_finished(), "the request was answered before the server listened");
    let _dev = upstream(std::net::SocketAddr::new(ip, port)).await;
    let answer = pending.await.expect("join").expect("answer");
    assert_eq!(answer.status(), StatusCode::OK, "held until the server listened, not a 502");
    let echo: Value = answer.json().await.expect("the dev server's echo");
    assert_eq!(echo["path"], "/first");
    s.world.cleanup().await;
}
