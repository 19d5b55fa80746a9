//! Running the real `ooda gateway` beside a test's operator, signing users in, and a stand-in
//! for a project's dev server: an HTTP and WebSocket server bound to the project pod's loopback
//! IP and preview port, as kwok reports them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use ooda::accounts::{AccountStore, AuthKey, DEFAULT_SERVER_ITERATIONS};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::harness::{SETTLE, eventually, unique_name};
use crate::kit::Ooda;
use crate::operator_harness::{DEFAULT_LOG, World, http_get};

pub const PASSWORD: &str = "correct horse battery staple";
pub const PREVIEW_DOMAIN: &str = "preview.ooda.localhost";

pub struct Gateway {
    pub process: Ooda,
    /// `http` or `https`.
    scheme: &'static str,
    pub addr: SocketAddr,
    pub http: SocketAddr,
    pub namespace: String,
    client: reqwest::Client,
}

impl Gateway {
    /// Starts a plain-HTTP gateway keeping its accounts and keys in `namespace`, as the cluster
    /// admin, and waits until it is ready.
    pub async fn start(namespace: &str, extra: &[&str]) -> Self {
        let args = [&["--insecure-http"], extra].concat();
        Self::start_as(namespace, &args, crate::harness::kubeconfig_path(), reqwest::Client::builder()).await
    }

    /// The same with the identity in `kubeconfig`, any arguments (TLS or not), and a client
    /// built from `client` (trusting a test certificate, say).
    pub async fn start_as(
        namespace: &str,
        args: &[&str],
        kubeconfig: std::path::PathBuf,
        client: reqwest::ClientBuilder,
    ) -> Self {
        let config = crate::operator_harness::example_config();
        Self::start_with(namespace, &config, args, kubeconfig, client).await
    }

    /// The same with the configuration file `config`.
    pub async fn start_with(
        namespace: &str,
        config: &std::path::Path,
        args: &[&str],
        kubeconfig: std::path::PathBuf,
        client: reqwest::ClientBuilder,
    ) -> Self {
        let gateway = Self::spawn(namespace, config, args, kubeconfig, client, DEFAULT_LOG).await;
        gateway.wait_ready().await;
        gateway
    }

    /// The same, logging at `rust_log`, once it listens, whether or not it is ready (`wait_ready`).
    pub async fn spawn(
        namespace: &str,
        config: &std::path::Path,
        args: &[&str],
        kubeconfig: std::path::PathBuf,
        client: reqwest::ClientBuilder,
        rust_log: &str,
    ) -> Self {
        let log = std::env::temp_dir().join(format!("ooda-gateway-{namespace}-{}.log", unique_name("run")));
        let base = [
            "gateway",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--namespace",
            namespace,
        ];
        let process = Ooda::spawn(&[&base[..], args].concat(), &kubeconfig, rust_log, log);
        let addr = process.bound_address("gateway listening", "addr").await;
        let http = process.bound_address("gateway listening", "http_addr").await;
        let client = client.redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let scheme = if args.contains(&"--tls-cert") { "https" } else { "http" };
        Self { process, scheme, addr, http, namespace: namespace.to_owned(), client }
    }

    pub async fn wait_ready(&self) {
        eventually(SETTLE, &format!("gateway on {} ready", self.addr), || async {
            http_get(self.http, "/readyz").await.ok().filter(|(status, body)| *status == 200 && body == "gateway ready")
        })
        .await;
    }

    /// The API's URL on the loopback address (the API answers on any host but preview hosts).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// The same under a host name, as the client was told to resolve it to this gateway.
    pub fn url_at(&self, host: &str, path: &str) -> String {
        format!("{}://{host}:{}{path}", self.scheme, self.addr.port())
    }

    /// A request to the API, with `token` as the session if given.
    pub async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Answer::from(request.send().await.expect("gateway answers")).await
    }

    /// Signs in as a client does: the derivation's parameters from prelogin, then the auth key.
    pub async fn login(&self, email: &str, password: &str) -> Answer {
        let body = json!({ "email": email, "authKey": self.auth_key(email, password).await });
        self.call(reqwest::Method::POST, "/api/auth/login", None, Some(body)).await
    }

    /// A sign-in as relayed by a proxy that names the client in `X-Forwarded-For`.
    pub async fn login_forwarded_for(&self, client: &str, email: &str, password: &str) -> Answer {
        let request = self.client.post(self.url("/api/auth/login")).header("x-forwarded-for", client);
        let request = request.json(&json!({ "email": email, "authKey": self.auth_key(email, password).await }));
        Answer::from(request.send().await.expect("gateway answers")).await
    }

    /// The auth key a client derives for `password`, with the parameters prelogin answers for
    /// `email` (base64, as sign-ins and invites take it).
    pub async fn auth_key(&self, email: &str, password: &str) -> String {
        let answer =
            self.call(reqwest::Method::POST, "/api/auth/prelogin", None, Some(json!({ "email": email }))).await;
        assert_eq!(answer.status, StatusCode::OK, "prelogin: {:?}", answer.body);
        assert_eq!(answer.body["kdf"], "pbkdf2-sha256");
        let salt = base64::engine::general_purpose::STANDARD.decode(answer.body["salt"].as_str().expect("salt"));
        let iterations = answer.body["iterations"].as_u64().expect("iterations") as u32;
        derive_auth_key(password, &salt.expect("base64 salt"), iterations).await
    }

    /// Signs in and returns the session token.
    pub async fn session(&self, email: &str) -> String {
        let answer = self.login(email, PASSWORD).await;
        assert_eq!(answer.status, StatusCode::OK, "sign-in of {email}: {:?}", answer.body);
        answer.body["token"].as_str().expect("token").to_owned()
    }

    /// A client whose requests for `host` reach this gateway (as DNS would send them).
    pub fn preview_client(&self, host: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(host, self.addr)
            .build()
            .expect("preview client")
    }

    pub fn preview_url(&self, host: &str, path: &str) -> String {
        self.url_at(host, path)
    }

    /// CPU time the gateway process has used so far (user and system), in seconds: the work it
    /// did, whatever else the machine is doing.
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.process.child.id().expect("the gateway is running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the gateway's /proc stat");
        // Fields after the parenthesised command name: state is the 3rd, utime the 14th, stime the 15th.
        let fields: Vec<&str> = stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        ticks / clock_ticks_per_second()
    }

    pub async fn metrics(&self) -> String {
        http_get(self.http, "/metrics").await.expect("GET /metrics").1
    }
}

fn clock_ticks_per_second() -> f64 {
    let output = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("CLK_TCK")
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Self { status, body, headers }
    }
}

/// The client derivation, remembered: its 600,000 rounds on every sign-in would be most of the
/// tests' time, and each (password, salt) always derives the same key.
pub async fn derive_auth_key(password: &str, salt: &[u8], iterations: u32) -> String {
    type Derived = HashMap<(String, Vec<u8>, u32), String>;
    static KEYS: LazyLock<Mutex<Derived>> = LazyLock::new(Default::default);
    let id = (password.to_owned(), salt.to_vec(), iterations);
    if let Some(key) = KEYS.lock().expect("keys lock").get(&id) {
        return key.clone();
    }
    let (password, salt) = (id.0.clone(), id.1.clone());
    let key = tokio::task::spawn_blocking(move || AuthKey::derive(&password, &salt, iterations))
        .await
        .expect("derivation")
        .expect("parameters a client accepts")
        .to_base64();
    KEYS.lock().expect("keys lock").insert(id, key.clone());
    key
}

/// Creates an account (as `ooda user add` does).
pub async fn add_user(world: &World, namespace: &str, email: &str) {
    let (account, _) = crate::kit::platform_account(email, PASSWORD, DEFAULT_SERVER_ITERATIONS).await;
    AccountStore::new(world.client.clone(), namespace).create(&account).await.expect("add account");
}

/// The IP kwok gave the project's pod, once it has one.
pub async fn pod_ip(client: &kube::Client, namespace: &str, project: &str) -> std::net::IpAddr {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = crate::harness::wait_for(&pods, &format!("{project}-0"), |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.pod_ip.as_ref()).is_some()
    })
    .await;
    pod.status.and_then(|s| s.pod_ip).expect("pod IP").parse().expect("an IP address")
}

/// A stand-in dev server on `address`: `GET /…` answers a JSON echo of the request (method,
/// path, query, headers); `/ws` is a WebSocket echo; `/set-cookie` also tries to set ooda's own
/// preview cookies (under both names) beside one of its own, `theme=dark`.
pub async fn upstream(address: SocketAddr) -> JoinHandle<()> {
    let listener = TcpListener::bind(address).await.unwrap_or_else(|e| panic!("bind upstream on {address}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(serve_upstream_connection(stream));
        }
    })
}

async fn serve_upstream_connection(stream: tokio::net::TcpStream) {
    let service = hyper::service::service_fn(|request: hyper::Request<Incoming>| async move {
        if request.headers().get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
            return Ok::<_, std::convert::Infallible>(websocket_echo(request));
        }
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_str().unwrap_or_default().to_owned())))
            .collect();
        let echo = json!({
            "method": request.method().as_str(),
            "path": request.uri().path(),
            "query": request.uri().query(),
            "headers": headers,
        });
        let mut response = hyper::Response::builder().header("content-type", "application/json");
        if request.uri().path() == "/set-cookie" {
            response = response
                .header("set-cookie", "ooda_preview=planted; Path=/")
                .header("set-cookie", "theme=dark; Path=/")
                .header("set-cookie", "__Host-ooda_preview=planted; Path=/; Secure");
        }
        Ok(response.body(Full::new(Bytes::from(echo.to_string()))).expect("response"))
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let _ = connection.with_upgrades().await;
}

/// Accepts a WebSocket (on any request of a kept-alive connection) and echoes every message.
fn websocket_echo(mut request: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let key = request.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())).unwrap_or_default();
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() || socket.send(message).await.is_err() {
                return;
            }
        }
    });
    hyper::Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", key)
        .body(Full::new(Bytes::new()))
        .expect("response")
}

/// Keeps a stand-in dev server on whatever IP the project's pod has: started for the current
/// pod, and again whenever the pod is recreated (a wake gives it a new IP).
pub fn follow_pod(client: &kube::Client, namespace: &str, project: &str, port: u16) -> JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={project}-0"));
    tokio::spawn(async move {
        let mut servers: Vec<(String, JoinHandle<()>)> = Vec::new();
        let mut events = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(watcher(pods, config)));
        while let Some(Ok(pod)) = events.next().await {
            let Some(ip) = pod.status.and_then(|s| s.pod_ip) else { continue };
            if servers.iter().any(|(serving, _)| *serving == ip) {
                continue;
            }
            let address = SocketAddr::new(ip.parse().expect("pod IP"), port);
            servers.push((ip, upstream(address).await));
        }
    })
}
