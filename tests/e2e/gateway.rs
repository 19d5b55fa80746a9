//! The gateway as its users reach it: HTTPS to the API host, the preview hosts and the sites
//! hosts, every one of them sent to the one address the suite was given.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde_json::Value;

use crate::Preview;

/// The API's host name: any name reaches the gateway; this one is in its certificate.
const API_HOST: &str = "ooda.e2e.localhost";

pub struct Gateway {
    client: reqwest::Client,
    address: SocketAddr,
    ca: Option<String>,
}

/// Every host name resolves to the gateway's address, as DNS would send them to its Service.
struct ToGateway(SocketAddr);

impl Resolve for ToGateway {
    fn resolve(&self, _: Name) -> Resolving {
        let address = self.0;
        Box::pin(async move { Ok(Box::new(std::iter::once(address)) as Addrs) })
    }
}

impl Gateway {
    pub fn from_env() -> Self {
        let address = std::env::var("OODA_E2E_GATEWAY").expect("OODA_E2E_GATEWAY: host:port of the gateway's Service");
        let address: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&address)
            .unwrap_or_else(|e| panic!("OODA_E2E_GATEWAY {address}: {e}"))
            .next()
            .expect("an address");
        let mut client = reqwest::Client::builder()
            .dns_resolver(Arc::new(ToGateway(address)))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        let ca = std::env::var("OODA_E2E_CA").ok();
        if let Some(ca) = &ca {
            let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("OODA_E2E_CA {ca}: {e}"));
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"));
        }
        Self { client: client.build().expect("client"), address, ca }
    }

    /// `curl -s https://<API host><path> ARGS` as the README has users run it, told only where to
    /// connect (`--resolve`) and whom to trust (`--cacert`): (HTTP status, JSON answer).
    fn curl(&self, path: &str, args: &[&str]) -> (u16, Value) {
        let port = self.address.port();
        let resolve = format!("{API_HOST}:{port}:{}", self.address.ip());
        let mut command = std::process::Command::new("curl");
        command.args(["-s", "--resolve", &resolve, "-w", "\n%{http_code}"]);
        if let Some(ca) = &self.ca {
            command.args(["--cacert", ca]);
        }
        let output = command.arg(format!("https://{API_HOST}:{port}{path}")).args(args).output().expect("curl");
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        let (body, status) = text.rsplit_once('\n').unwrap_or_else(|| panic!("curl {path}: {text}"));
        let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("curl {path}: {e}: {body}"));
        (status.parse().expect("an HTTP status"), body)
    }

    /// `url` with the gateway's port: host names stay (SNI, Host), the port is the Service's.
    fn at_gateway(&self, url: &str) -> Url {
        let mut url = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        url.set_port(Some(self.address.port())).expect("an https URL has a port");
        url
    }

    pub fn api(&self, session: &str, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.at_gateway(&format!("https://{API_HOST}{path}"))).bearer_auth(session)
    }

    /// The README's sign-in: `ooda login --gateway https://<API host> --email … --password-stdin`,
    /// which derives the auth key from the password and prints a session token.
    pub async fn sign_in(&self, email: &str, password: &str) -> String {
        let port = self.address.port();
        let resolve = format!("{API_HOST}:{port}:{}", self.address.ip());
        let gateway = format!("https://{API_HOST}:{port}");
        let mut args =
            vec!["login", "--gateway", &gateway, "--email", email, "--password-stdin", "--resolve", &resolve];
        if let Some(ca) = &self.ca {
            args.extend(["--cacert", ca]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut login = std::process::Command::new(env!("CARGO_BIN_EXE_ooda"))
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run ooda login");
            let mut stdin = login.stdin.take().expect("stdin");
            std::io::Write::write_all(&mut stdin, format!("{password}\n").as_bytes()).expect("the password");
            drop(stdin);
            let output = login.wait_with_output().expect("ooda login");
            let stderr = String::from_utf8_lossy(&output.stderr);
            // The account was just written: a replica's watch may not have it yet.
            if !output.status.success() && stderr.contains("401") && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert!(output.status.success(), "ooda login: {stderr}");
            return String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();
        }
    }

    /// The README's `curl -s …/api/orgs/<org>/projects/<project>/preview -H "authorization: Bearer …"`.
    pub async fn preview(&self, session: &str, org: &str, project: &str) -> Preview {
        let authorization = format!("authorization: Bearer {session}");
        let (status, body) = self.curl(&format!("/api/orgs/{org}/projects/{project}/preview"), &["-H", &authorization]);
        assert_eq!(status, 200, "preview of {project}: {body}");
        let url = Url::parse(body["url"].as_str().expect("url")).expect("preview URL");
        Preview { host: url.host_str().expect("host").to_owned(), token: body["token"].as_str().expect("token").into() }
    }

    pub async fn preview_get(&self, preview: &Preview, path: &str) -> Response {
        let url = self.at_gateway(&format!("https://{}{path}", preview.host));
        self.client.get(url).header("x-ooda-preview-token", &preview.token).send().await.expect("preview request")
    }

    /// Polls the preview until it answers `status`.
    pub async fn until_status(&self, preview: &Preview, path: &str, status: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.preview_get(preview, path).await.status();
            if answer == status {
                return;
            }
            assert!(Instant::now() < deadline, "{} still answers {answer}, not {status}", preview.host);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes `files` as a tar archive made by `tar`, as a user's script would.
    pub async fn publish(&self, session: &str, org: &str, project: &str, files: &[(&str, &str)]) -> Value {
        let dir = std::env::temp_dir().join(format!("ooda-e2e-site-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("site dir");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("site file");
        }
        let archive = std::process::Command::new("tar").arg("-c").arg("-C").arg(&dir).arg(".").output().expect("tar");
        assert!(archive.status.success(), "tar: {}", String::from_utf8_lossy(&archive.stderr));
        std::fs::remove_dir_all(&dir).expect("remove site dir");
        let answer = self
            .api(session, Method::POST, &format!("/api/orgs/{org}/projects/{project}/publish"))
            .header("content-type", "application/x-tar")
            .body(archive.stdout)
            .send()
            .await
            .expect("publish");
        let status = answer.status();
        let body: Value = answer.json().await.expect("publish JSON");
        assert!(status.is_success(), "publish: {status} {body}");
        body
    }

    /// GET of a published site's URL (as `publish` answered it).
    pub async fn site_get(&self, url: &str) -> Response {
        self.client.get(self.at_gateway(url)).send().await.expect("site request")
    }
}
