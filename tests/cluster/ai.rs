//! The AI relay against the real control plane, operator and gateway, with stand-ins for
//! Anthropic's Messages API on loopback (one per jurisdiction) and Anthropic's own Python SDK as
//! the client: the project's token and the real key, zero retention at trace level, every
//! refusal, residency, and streams that end with their client or their project.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, verbs};
use ooda::crd::Organisation;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::gateway_harness::{Gateway, add_user};
use crate::harness::{SETTLE, client, eventually, install_crds, repo, unique_name, wait_for};
use crate::kit::anthropic::StandIn;
use crate::operator_harness::{World, organisation_ready};

const ALICE: &str = "alice@acme.example";
const CAROL: &str = "carol@globex.example";
const MODEL: &str = "claude-test-1";
const PUBLIC_URL: &str = "https://ooda.example.test";

/// Two jurisdictions with a relay each (eu, us), one without (eu-real), and their stand-ins.
struct Relays {
    world: World,
    gateway: Gateway,
    eu: StandIn,
    us: StandIn,
    eu_key: String,
    us_key: String,
    alice: String,
}

impl Relays {
    async fn start(test: &str, rust_log: &str) -> Self {
        let client = client().await;
        install_crds(&client).await;
        let (eu, us) = (StandIn::start("eu").await, StandIn::start("us").await);
        let config = relay_config(test, &eu, &us);
        let world = World::start_logging(&client, test, config.clone(), rust_log).await;
        let (eu_key, us_key) =
            (format!("sk-real-eu-{}", unique_name("key")), format!("sk-real-us-{}", unique_name("key")));
        for (name, key) in [("anthropic-eu", &eu_key), ("anthropic-us", &us_key)] {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": { "name": name }, "stringData": { "apiKey": key },
            }))
            .expect("secret");
            world.home.api().create(&PostParams::default(), &secret).await.expect("create the AI credentials");
        }
        add_user(&world, &world.home.name, ALICE).await;
        add_user(&world, &world.home.name, CAROL).await;
        let gateway = Gateway::spawn(
            &world.home.name,
            &config,
            &["--insecure-http"],
            crate::harness::kubeconfig_path(),
            reqwest::Client::builder(),
            rust_log,
        )
        .await;
        gateway.wait_ready().await;
        let alice = gateway.session(ALICE).await;
        Relays { world, gateway, eu, us, eu_key, us_key, alice }
    }

    /// A Ready organisation in `jurisdiction` with `members` and the AI limits `ai`.
    async fn organisation(&self, jurisdiction: &str, members: Value, ai: Option<Value>) -> String {
        let name = unique_name("org");
        let mut manifest = self.world.organisation_manifest(&name, jurisdiction);
        manifest["spec"]["members"] = members;
        if let Some(ai) = ai {
            manifest["spec"]["ai"] = ai;
        }
        let api: Api<Organisation> = Api::all(self.world.client.clone());
        let org: Organisation = serde_json::from_value(manifest).expect("organisation");
        api.create(&PostParams::default(), &org).await.expect("create organisation");
        wait_for(&api, &name, organisation_ready()).await;
        name
    }

    /// Creates `name` in `org` and returns its AI token, as its environment gets it, once the
    /// gateway knows it (its watch follows the operator's write).
    async fn project(&self, org: &str, name: &str) -> String {
        let namespace = format!("org-{org}");
        self.world.create_project(&namespace, name, json!({})).await;
        let token = ai_token(&self.world.client, &namespace, name, None).await;
        let models = self.url(org, name, "/v1/models");
        eventually(SETTLE, &format!("the gateway knows {name}'s AI token"), || async {
            let answer = reqwest::Client::new().get(&models).header("x-api-key", &token).send().await.ok()?;
            (answer.status() != StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
        token
    }

    fn url(&self, org: &str, project: &str, path: &str) -> String {
        self.gateway.url(&format!("/api/orgs/{org}/projects/{project}/ai{path}"))
    }

    /// The JSON answer to `method url` with `key` as `x-api-key` and `body`, if any.
    async fn json(&self, method: Method, url: String, key: &str, body: Option<&Value>) -> Value {
        let mut request = reqwest::Client::new().request(method, url).header("x-api-key", key);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("answer").json().await.expect("JSON")
    }

    /// `POST …/ai/v1/messages` with `key` as `x-api-key` (or `session` as bearer).
    async fn ask(&self, org: &str, project: &str, credential: Credential<'_>, body: &Value) -> (StatusCode, Value) {
        let response = self.send(org, project, credential, body).await;
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, org: &str, project: &str, credential: Credential<'_>, body: &Value) -> reqwest::Response {
        self.try_send(org, project, credential, body).await.expect("the gateway answers")
    }

    async fn try_send(
        &self,
        org: &str,
        project: &str,
        credential: Credential<'_>,
        body: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        let request = reqwest::Client::new().post(self.url(org, project, "/v1/messages")).json(body);
        let request = match credential {
            Credential::Key(key) => request.header("x-api-key", key),
            Credential::Session(token) => request.bearer_auth(token),
            Credential::None => request,
        };
        request.send().await
    }
}

#[derive(Clone, Copy)]
enum Credential<'a> {
    Key(&'a str),
    Session(&'a str),
    None,
}

/// The AI relay's credentials Secret `name` in ooda's namespace, holding `key`.
pub(crate) async fn add_ai_credentials(world: &World, name: &str, key: &str) {
    let secret: Secret =
        serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": { "apiKey": key } }))
            .expect("secret");
    world.home.api().create(&PostParams::default(), &secret).await.expect("create the AI credentials");
}

/// The example configuration with a relay for eu and us (eu-real has none), and a public URL.
pub(crate) fn relay_config(test: &str, eu: &StandIn, us: &StandIn) -> PathBuf {
    let example = std::fs::read_to_string(repo().join("examples/operator-config.yaml")).expect("example config");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&example).expect("YAML");
    let relay = |stand_in: &StandIn, secret: &str, models: &[&str]| {
        serde_yaml::to_value(json!({
            "endpoint": stand_in.endpoint(), "credentialsSecret": secret, "models": models,
            "maxRequestBytes": "64Ki", "idleTimeout": "2s",
        }))
        .expect("YAML")
    };
    config["jurisdictions"]["eu"]["ai"] = relay(eu, "anthropic-eu", &[MODEL, "claude-test-2"]);
    config["jurisdictions"]["us"]["ai"] = relay(us, "anthropic-us", &[MODEL]);
    config["gateway"]["publicUrl"] = PUBLIC_URL.into();
    let path = std::env::temp_dir().join(format!("{}.yaml", unique_name(test)));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("write the configuration");
    path
}

/// The project's AI token once the operator has issued it (one other than `not`, if given).
async fn ai_token(client: &kube::Client, namespace: &str, project: &str, not: Option<&str>) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = wait_for(&secrets, &format!("{project}-ai"), |s: Option<&Secret>| {
        let token = s.and_then(|s| s.data.as_ref()?.get("token")).map(|t| String::from_utf8_lossy(&t.0).into_owned());
        token.is_some_and(|t| Some(t.as_str()) != not)
    })
    .await;
    String::from_utf8(secret.data.expect("data")["token"].0.clone()).expect("a UTF-8 token")
}

fn message(model: &str, prompt: &str) -> Value {
    json!({ "model": model, "max_tokens": 64, "messages": [{ "role": "user", "content": prompt }] })
}

/// Anthropic's Python SDK, from the virtualenv `make tools` prepares.
fn python_sdk() -> PathBuf {
    crate::harness::cached_tool("anthropic", "ANTHROPIC_SDK_VERSION").join("bin/python")
}

/// Every object of every kind the API server lists: (kind, namespace/name, the object as JSON).
async fn every_object(client: &kube::Client) -> Vec<(String, String, String)> {
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let mut all = Vec::new();
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if !capabilities.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            for object in api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
                let at = format!("{}/{}", object.metadata.namespace.as_deref().unwrap_or(""), object.name_any());
                all.push((resource.kind.clone(), at, serde_json::to_string(&object).expect("JSON")));
            }
        }
    }
    all
}

#[tokio::test]
async fn the_official_sdk_reaches_claude_through_the_relay_with_the_projects_token_and_nothing_is_kept() {
    // Trace level everywhere: whatever any library would log, the test sees.
    let relays = Relays::start("ai-sdk", "trace").await;
    let (acme, globex) = tokio::join!(
        relays.organisation("eu", json!([{ "email": ALICE, "role": "admin" }]), None),
        relays.organisation("us", json!([{ "email": CAROL, "role": "admin" }]), None),
    );
    let token = relays.project(&acme, "shop").await;
    let marker = unique_name("marker-of-a-private-conversation");
    let prompt = format!("please keep {marker} to yourself");

    // The environment's view: the key and base URL come from the pod spec, the key by Secret.
    let sets: Api<StatefulSet> = Api::namespaced(relays.world.client.clone(), &format!("org-{acme}"));
    let set = wait_for(&sets, "shop", |s: Option<&StatefulSet>| s.is_some()).await;
    let workspace = &set.spec.unwrap().template.spec.unwrap().containers[0];
    let env = |name: &str| workspace.env.iter().flatten().find(|e| e.name == name).cloned().expect(name);
    assert_eq!(env("ANTHROPIC_BASE_URL").value, Some(format!("{PUBLIC_URL}/api/orgs/{acme}/projects/shop/ai")));
    let key_ref = env("ANTHROPIC_API_KEY").value_from.and_then(|v| v.secret_key_ref).expect("from a Secret");
    assert_eq!((key_ref.name.as_str(), key_ref.key.as_str()), ("shop-ai", "token"));

    // Anthropic's SDK, streamed and not, with the project's token and the relay as base URL.
    let output = tokio::process::Command::new(python_sdk())
        .arg(repo().join("tests/ai/anthropic_sdk.py"))
        .env("ANTHROPIC_BASE_URL", relays.url(&acme, "shop", ""))
        .env("ANTHROPIC_API_KEY", &token)
        .env("OODA_MODEL", MODEL)
        .env("OODA_PROMPT", &prompt)
        .output()
        .await
        .expect("run the SDK");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the SDK failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let answered: Value = serde_json::from_str(&stdout).expect("the SDK's JSON line");
    let heard = format!("eu heard: {prompt}");
    assert_eq!(answered["streamed"], heard.as_str(), "{answered}");
    assert_eq!(answered["created"], heard.as_str(), "{answered}");
    let input = prompt.split_whitespace().count() as u64 + 10;
    assert_eq!(answered["streamed_usage"], json!({ "input": input, "output": 5 }));
    assert_eq!(answered["created_usage"], json!({ "input": input, "output": 7 }));
    assert!(!stdout.contains(&relays.eu_key));
    // The environment's AI requests are its activity: it does not hibernate while an agent works.
    let leases: Api<Lease> = Api::namespaced(relays.world.client.clone(), &format!("org-{acme}"));
    wait_for(&leases, "shop-activity", |l: Option<&Lease>| {
        l.is_some_and(|l| l.annotations().get("ooda.run/last-signal").is_some_and(|s| s == "ai"))
    })
    .await;

    // The upstream got the real key, the client's version and beta headers, the body as sent,
    // and never the project's token; the other jurisdiction's endpoint got nothing.
    let received = relays.eu.received();
    assert_eq!(received.len(), 2, "{received:?}");
    for request in &received {
        assert_eq!(request.api_key.as_deref(), Some(relays.eu_key.as_str()));
        assert!(request.version.as_deref().is_some_and(|v| v.starts_with("20")), "the SDK's own version");
        assert!(!request.headers.contains(&token), "the project's token went upstream: {}", request.headers);
        assert!(!request.headers.to_ascii_lowercase().contains("authorization"), "{}", request.headers);
        assert!(request.body.contains(&marker));
    }
    assert_eq!(received[1].beta.as_deref(), Some("ooda-test-beta"));
    assert!(relays.us.received().is_empty(), "an EU request reached the US endpoint");

    // A member's session reaches the same endpoint; no answer carries the real key.
    let response = relays.send(&acme, "shop", Credential::Session(&relays.alice), &message(MODEL, &prompt)).await;
    let headers = format!("{:?}", response.headers());
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["request-id"], "req_standin");
    let text = response.text().await.expect("body");
    assert!(text.contains(&heard) && !text.contains(&relays.eu_key) && !headers.contains(&relays.eu_key));
    let by_session = relays.eu.received().pop().expect("the session's request");
    assert_eq!(by_session.version.as_deref(), Some("2023-06-01"), "a client that names no version gets the first");

    // Residency: the US organisation's requests go to the US endpoint only, with its key.
    let globex_token = relays.project(&globex, "site").await;
    let (status, body) = relays.ask(&globex, "site", Credential::Key(&globex_token), &message(MODEL, "hello")).await;
    assert_eq!((status, body["content"][0]["text"].as_str()), (StatusCode::OK, Some("us heard: hello")));
    let us = relays.us.received();
    assert_eq!((us.len(), us[0].api_key.as_deref()), (1, Some(relays.us_key.as_str())));
    assert_eq!(relays.eu.received().len(), 3, "the EU endpoint saw only the EU organisation's three requests");

    // Usage is counted, by organisation, model and outcome, and nothing else.
    let metrics = relays.gateway.metrics().await;
    let series = |name: &str, labels: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let completed = format!("organisation=\"{acme}\",model=\"{MODEL}\",outcome=\"completed\"");
    assert_eq!(series("ooda_gateway_ai_requests_total", &completed), Some(3), "{metrics}");
    let output_tokens = format!("organisation=\"{acme}\",model=\"{MODEL}\",kind=\"output\"");
    assert_eq!(series("ooda_gateway_ai_tokens_total", &output_tokens), Some(5 + 7 + 7), "{metrics}");
    assert!(!metrics.contains(&marker));

    // Zero retention: at trace level, the marker (in the prompt and in every reply) is in no log
    // line of either process, and in no object of any kind in the cluster.
    for log in [&relays.gateway.process.log, &relays.world.operator.process.log] {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(
            text.contains(" TRACE "),
            "{} is not at trace level: the check below would prove nothing",
            log.display()
        );
        let leaked: Vec<&str> = text.lines().filter(|l| l.contains(&marker)).collect();
        assert!(leaked.is_empty(), "{} kept the conversation: {leaked:?}", log.display());
        assert!(!text.contains(&relays.eu_key), "{} holds the real key", log.display());
        assert!(!text.contains(&token), "{} holds the project's AI token", log.display());
    }
    // The real key is in one object: its Secret in ooda's namespace.
    let credentials = format!("{}/anthropic-eu", relays.world.home.name);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&relays.eu_key);
    for (kind, at, object) in every_object(&relays.world.client).await {
        assert!(!object.contains(&marker), "{kind} {at} holds the conversation");
        let holds_key = object.contains(&relays.eu_key) || object.contains(&encoded);
        assert!(!holds_key || (kind == "Secret" && at == credentials), "{kind} {at} holds the real key");
    }
    relays.world.cleanup().await;
}

#[tokio::test]
async fn the_relay_refuses_what_it_must_in_the_messages_apis_own_shape() {
    // The eu-real organisation's project runs on the real node, whose pods change the host's
    // network (see harness::HOST_NETWORK); released last, after the cleanup.
    let _host_network = crate::harness::HOST_NETWORK.read().await;
    let relays = Relays::start("ai-refusals", crate::operator_harness::DEFAULT_LOG).await;
    let alice_admin = json!([{ "email": ALICE, "role": "admin" }]);
    let (acme, limited, local, globex, frugal) = tokio::join!(
        relays.organisation("eu", alice_admin.clone(), None),
        relays.organisation("eu", alice_admin.clone(), Some(json!({ "requestsPerMinute": 2 }))),
        relays.organisation("eu-real", alice_admin.clone(), None),
        relays.organisation("us", json!([{ "email": CAROL, "role": "admin" }]), None),
        // Tokens per day: the stand-in counts 11 input and 7 output tokens for "hello", so a day
        // of 15 allows one answer.
        relays.organisation("eu", alice_admin, Some(json!({ "tokensPerDay": 15 }))),
    );
    let shop = relays.project(&acme, "shop").await;
    let blog = relays.project(&acme, "blog").await;
    let hello = message(MODEL, "hello");
    let refused = |(status, body): (StatusCode, Value), expected: StatusCode, kind: &str| {
        assert_eq!(status, expected, "{body}");
        assert_eq!((body["type"].as_str(), body["error"]["type"].as_str()), (Some("error"), Some(kind)), "{body}");
        body["error"]["message"].as_str().expect("a message").to_owned()
    };

    // Tokens are per project; sessions per organisation.
    refused(
        relays.ask(&acme, "shop", Credential::Key(&blog), &hello).await,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    );
    refused(
        relays.ask(&acme, "shop", Credential::None, &hello).await,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    );
    let carol = relays.gateway.session(CAROL).await;
    refused(
        relays.ask(&acme, "shop", Credential::Session(&carol), &hello).await,
        StatusCode::NOT_FOUND,
        "not_found_error",
    );
    let globex_site = relays.project(&globex, "site").await;
    refused(
        relays.ask(&acme, "shop", Credential::Key(&globex_site), &hello).await,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
    );

    // Models the jurisdiction does not allow (us allows only claude-test-1), and size.
    let message_ = refused(
        relays.ask(&globex, "site", Credential::Key(&globex_site), &message("claude-test-2", "hi")).await,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
    );
    assert!(message_.contains("claude-test-2") && message_.contains(MODEL), "{message_}");
    let large = message(MODEL, &"x".repeat(100 * 1024));
    let message_ = refused(
        relays.ask(&acme, "shop", Credential::Key(&shop), &large).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
    );
    assert!(message_.contains("65536"), "{message_}");
    let not_json = reqwest::Client::new()
        .post(relays.url(&acme, "shop", "/v1/messages"))
        .header("x-api-key", &shop)
        .body("{\"model\": ")
        .send()
        .await
        .expect("answer");
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);

    // The upstream's own refusal passes through as it is.
    let too_many = json!({ "model": MODEL, "max_tokens": 200_000, "messages": [{ "role": "user", "content": "hi" }] });
    let response = relays.send(&acme, "shop", Credential::Key(&shop), &too_many).await;
    assert_eq!(
        (response.status(), response.headers()["request-id"].to_str().unwrap()),
        (StatusCode::BAD_REQUEST, "req_standin")
    );
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["message"], "max_tokens: 200000 > 64000, which is the maximum allowed");

    // A jurisdiction without a relay, named; its projects get no AI token at all.
    let local_namespace = format!("org-{local}");
    relays.world.create_project(&local_namespace, "lab", json!({})).await;
    let sets: Api<StatefulSet> = Api::namespaced(relays.world.client.clone(), &local_namespace);
    // Applied after every other child.
    wait_for(&sets, "lab", |set: Option<&StatefulSet>| set.is_some()).await;
    let secrets: Api<Secret> = Api::namespaced(relays.world.client.clone(), &local_namespace);
    assert!(secrets.get_opt("lab-preview").await.expect("read").is_some());
    assert!(secrets.get_opt("lab-ai").await.expect("read").is_none(), "a token for a relay that is not there");
    let message_ = refused(
        relays.ask(&local, "lab", Credential::Session(&relays.alice), &hello).await,
        StatusCode::CONFLICT,
        "invalid_request_error",
    );
    assert!(message_.contains("eu-real"), "{message_}");

    // A deleted project's token is refused.
    assert_eq!(relays.ask(&acme, "blog", Credential::Key(&blog), &hello).await.0, StatusCode::OK);
    let projects: Api<ooda::crd::Project> = Api::namespaced(relays.world.client.clone(), &format!("org-{acme}"));
    projects.delete("blog", &Default::default()).await.expect("delete blog");
    eventually(SETTLE, "the deleted project's token refused", || async {
        // A request in flight as the deletion reaches the gateway may be cut off, as streams are.
        let response = relays.try_send(&acme, "blog", Credential::Key(&blog), &hello).await.ok()?;
        (response.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;

    // The API server checks the limits; the day's tokens run out.
    let api: Api<Organisation> = Api::all(relays.world.client.clone());
    let mut manifest = relays.world.organisation_manifest(&unique_name("org"), "eu");
    manifest["spec"]["ai"] = json!({ "requestsPerMinute": 0 });
    let invalid: Organisation = serde_json::from_value(manifest).expect("organisation");
    let status = crate::harness::api_error(api.create(&PostParams::default(), &invalid).await);
    assert!(status.code == 422 && status.message.contains("spec.ai.requestsPerMinute"), "{}", status.message);
    let notes = relays.project(&frugal, "notes").await;
    assert_eq!(relays.ask(&frugal, "notes", Credential::Key(&notes), &hello).await.0, StatusCode::OK);
    let response = relays.send(&frugal, "notes", Credential::Key(&notes), &hello).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().expect("seconds");
    assert!((1..=86_400).contains(&retry_after), "until midnight UTC: {retry_after}");

    // The organisation's requests per minute: two, then 429 with Retry-After.
    let tools = relays.project(&limited, "tools").await;
    for _ in 0..2 {
        assert_eq!(relays.ask(&limited, "tools", Credential::Key(&tools), &hello).await.0, StatusCode::OK);
    }
    let response = relays.send(&limited, "tools", Credential::Key(&tools), &hello).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().expect("seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        relays.ask(&acme, "shop", Credential::Key(&shop), &hello).await.0,
        StatusCode::OK,
        "another organisation's limit"
    );

    // What clients ask besides messages: the allowed models, and token counts.
    let models = relays.json(Method::GET, relays.url(&acme, "shop", "/v1/models"), &shop, None).await;
    let ids: Vec<&str> = models["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, [MODEL, "claude-test-2"]);
    let count = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "one two three" }] });
    let counted = relays
        .json(Method::POST, relays.url(&acme, "shop", "/v1/messages/count_tokens?beta=true"), &shop, Some(&count))
        .await;
    assert_eq!(counted, json!({ "input_tokens": 13 }));
    let last = relays.eu.received().pop().expect("the count's request");
    assert_eq!((last.path.as_str(), last.query.as_deref()), ("/v1/messages/count_tokens", Some("beta=true")));
    let upstream_paths: Vec<String> = relays.eu.received().into_iter().map(|r| r.path).collect();
    assert!(upstream_paths.iter().all(|p| p.starts_with("/v1/messages")), "{upstream_paths:?}");
    assert!(relays.us.received().is_empty(), "every refused US request stopped at the relay");
    relays.world.cleanup().await;
}

#[tokio::test]
async fn a_relayed_stream_ends_with_its_client_and_with_its_project() {
    let relays = Relays::start("ai-streams", crate::operator_harness::DEFAULT_LOG).await;
    let acme = relays.organisation("eu", json!([{ "email": ALICE, "role": "admin" }]), None).await;
    let token = relays.project(&acme, "shop").await;
    let slow = json!({
        "model": MODEL, "max_tokens": 64, "stream": true,
        "messages": [{ "role": "user", "content": "answer slowly" }],
    });
    let mut cancelled = relays.eu.cancelled.clone();

    // The client goes mid-stream: the upstream request goes within a second.
    let response = relays.send(&acme, "shop", Credential::Key(&token), &slow).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first piece").expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(body);
    let seen = tokio::time::timeout(Duration::from_secs(1), cancelled.wait_for(|n| *n >= 1)).await.is_ok();
    assert!(seen, "the upstream still streams a second after the client went");

    // The project stops mid-stream: the stream ends, the upstream request with it, and the
    // token is refused from then on (the operator issues a new one).
    let response = relays.send(&acme, "shop", Credential::Key(&token), &slow).await;
    let mut body = response.bytes_stream();
    body.next().await.expect("a first piece").expect("bytes");
    let stop = relays
        .gateway
        .call(Method::POST, &format!("/api/orgs/{acme}/projects/shop/stop"), Some(&relays.alice), None)
        .await;
    assert_eq!(stop.status, StatusCode::ACCEPTED, "{:?}", stop.body);
    let rest = tokio::time::timeout(SETTLE, async {
        let mut text = String::new();
        while let Some(Ok(piece)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&piece));
        }
        text
    })
    .await
    .expect("the stream ends once the project stops");
    assert!(!rest.contains("message_stop"), "the stream ran to its end");
    assert!(rest.is_empty() || rest.contains("event: error"), "a stream closed between events says why: {rest}");
    let seen = tokio::time::timeout(Duration::from_secs(1), cancelled.wait_for(|n| *n >= 2)).await.is_ok();
    assert!(seen, "the upstream still streams after the project stopped");
    let (status, _) = relays.ask(&acme, "shop", Credential::Key(&token), &message(MODEL, "hi")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let rotated = ai_token(&relays.world.client, &format!("org-{acme}"), "shop", Some(&token)).await;
    assert_ne!(rotated, token);
    let (status, body) = relays.ask(&acme, "shop", Credential::Session(&relays.alice), &message(MODEL, "hi")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("project_stopped")));

    // An upstream that falls silent: after idleTimeout (2s here) the stream ends with an error
    // event, and the upstream request is let go.
    relays.world.create_project(&format!("org-{acme}"), "lab", json!({})).await;
    let lab = ai_token(&relays.world.client, &format!("org-{acme}"), "lab", None).await;
    let stall = json!({
        "model": MODEL, "max_tokens": 64, "stream": true,
        "messages": [{ "role": "user", "content": "stall" }],
    });
    let response = eventually(SETTLE, "the gateway knows lab's AI token", || async {
        let response = relays.send(&acme, "lab", Credential::Key(&lab), &stall).await;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    let text =
        tokio::time::timeout(SETTLE, response.text()).await.expect("the stalled stream ends").unwrap_or_default();
    assert!(
        text.contains("message_start") && text.contains("event: error") && text.contains("sent nothing for 2s"),
        "{text}"
    );
    let seen = tokio::time::timeout(Duration::from_secs(1), cancelled.wait_for(|n| *n >= 3)).await.is_ok();
    assert!(seen, "the stalled upstream request was kept");

    // The project stops while the upstream is still thinking: its answer, when it comes, is
    // refused in the API's shape, neither handed over nor cut off unanswered.
    let held = message(MODEL, "hold on");
    let stop_while_held = async {
        eventually(SETTLE, "the held request reaches the upstream", || async {
            relays.eu.received().iter().any(|r| r.body.contains("hold on")).then_some(())
        })
        .await;
        let stop = relays
            .gateway
            .call(Method::POST, &format!("/api/orgs/{acme}/projects/lab/stop"), Some(&relays.alice), None)
            .await;
        assert_eq!(stop.status, StatusCode::ACCEPTED, "{:?}", stop.body);
        let models = relays.url(&acme, "lab", "/v1/models");
        eventually(SETTLE, "the gateway sees lab stopped", || async {
            let answer = reqwest::Client::new().get(&models).header("x-api-key", &lab).send().await.ok()?;
            (answer.status() == StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
        relays.eu.release_one();
    };
    let ((status, body), ()) = tokio::join!(relays.ask(&acme, "lab", Credential::Key(&lab), &held), stop_while_held);
    assert_eq!((status, body["error"]["type"].as_str()), (StatusCode::UNAUTHORIZED, Some("authentication_error")));

    let metrics = relays.gateway.metrics().await;
    for (outcome, count) in [("client_closed", 1), ("closed", 2), ("upstream_timeout", 1)] {
        let series = format!(
            "ooda_gateway_ai_requests_total{{organisation=\"{acme}\",model=\"{MODEL}\",outcome=\"{outcome}\"}} {count}"
        );
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    relays.world.cleanup().await;
}
