//! On the bed's real node `real-0` (scripts/real-node-up.sh): projects of the `eu-real`
//! jurisdiction run for real, under gVisor, seeded from a Git repository over HTTPS, with their
//! own dev server (examples/dev-server) answering through the preview proxy, their workspace kept
//! across hibernation, and their NetworkPolicy enforced on real packets.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use ooda::crd::{Phase, Project};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::gateway::{ALICE, open_terminal, shell_and_job, still_running};
use crate::gateway_harness::{Gateway, PREVIEW_DOMAIN, add_user};
use crate::harness::{SETTLE, TEST_LABEL, client, eventually, install_crds, repo, unique_name, wait_deleted, wait_for};
use crate::kit::{GitServer, bridge_address, outside_address};
use crate::operator_harness::{World, project_phase};

/// The jurisdiction whose pods go to the real node (examples/operator-config.yaml).
const REAL: &str = "eu-real";
const DEV_PORT: u16 = 8080;
const REAL_NODE_TOLERATION: &str = "ooda.run/real-node";
/// Where the example configuration says the gateway's pods run (`gateway.namespace`).
const GATEWAY_NAMESPACE: &str = "ooda-system";

fn kubectl() -> Command {
    let binary = std::env::var_os("OODA_KUBECTL").expect("OODA_KUBECTL names the bed's kubectl (make test sets it)");
    let mut command = Command::new(binary);
    command.arg("--kubeconfig").arg(crate::harness::kubeconfig_path()).kill_on_drop(true);
    command
}

/// Runs `script` with `sh -c` in a container (kubectl exec, the terminal's path), feeding it
/// `stdin`; returns whether it succeeded and what it printed.
async fn exec(namespace: &str, pod: &str, container: &str, script: &str, stdin: &str) -> (bool, String) {
    let mut child = kubectl()
        .args(["exec", "-i", "-n", namespace, pod, "-c", container, "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(input);
    let output = tokio::time::timeout(SETTLE, child.wait_with_output()).await.expect("kubectl exec in time").unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        text.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    (output.status.success(), text)
}

/// Whether a TCP connection from the container to `address` opens within 3 s.
async fn connects(namespace: &str, pod: &str, container: &str, address: SocketAddr) -> bool {
    let script = format!(
        "python3 -c 'import socket; socket.create_connection((\"{}\", {}), timeout=3)' 2>/dev/null && echo open",
        address.ip(),
        address.port()
    );
    exec(namespace, pod, container, &script, "").await.1.trim() == "open"
}

/// The example configuration trusting the Git server's authority.
fn config_trusting(test: &str, ca: &str) -> PathBuf {
    let example = std::fs::read_to_string(crate::operator_harness::example_config()).expect("example config");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&example).expect("YAML");
    config["gitCaBundle"] = serde_yaml::Value::String(ca.to_owned());
    let path = std::env::temp_dir().join(format!("ooda-{test}-config.yaml"));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("write config");
    path
}

/// A test's world on the real node: an operator and a gateway trusting the Git server, and an
/// `eu-real` organisation with alice as admin.
struct Real {
    /// Released once the test and its cleanup are over (the last field dropped).
    _host_network: tokio::sync::RwLockReadGuard<'static, ()>,
    world: World,
    gateway: Gateway,
    git: GitServer,
    org: String,
    alice: String,
}

impl Real {
    async fn start(test: &str) -> Self {
        let host_network = crate::harness::HOST_NETWORK.read().await;
        let client = client().await;
        install_crds(&client).await;
        let test = unique_name(test);
        let git = GitServer::start(&repo(), &std::env::temp_dir().join(format!("ooda-{test}-git"))).await;
        let config = config_trusting(&test, &git.ca);
        let world = World::start_with(&client, &test, config.clone()).await;
        let org = world.ready_organisation(REAL).await.metadata.name.expect("name");
        add_user(&world, &world.home.name, ALICE).await;
        let args = ["--insecure-http", "--activity-interval", "2s"];
        let kubeconfig = crate::harness::kubeconfig_path();
        let gateway =
            Gateway::start_with(&world.home.name, &config, &args, kubeconfig, reqwest::Client::builder()).await;
        let alice = gateway.session(ALICE).await;
        Real { _host_network: host_network, world, gateway, git, org, alice }
    }

    fn namespace(&self) -> String {
        format!("org-{}", self.org)
    }

    fn projects(&self) -> Api<Project> {
        Api::namespaced(self.world.client.clone(), &self.namespace())
    }

    /// A gVisor project of `org` seeded from the Git server, with small dedicated resources.
    fn spec(&self, idle_timeout: &str) -> Value {
        json!({
            "source": { "git": { "url": self.git.url, "ref": "main" } },
            "isolation": "gvisor",
            "resources": { "cpu": "100m", "memory": "192Mi", "storage": "1Gi" },
            "ports": [{ "name": "web", "port": DEV_PORT, "preview": true }],
            "lifecycle": { "idleTimeout": idle_timeout },
        })
    }

    /// Creates a project through the API, waits until it runs, and returns its preview host and
    /// token.
    async fn running(&self, name: &str, idle_timeout: &str) -> (String, String) {
        let path = format!("/api/orgs/{}/projects", self.org);
        let body = json!({ "name": name, "spec": self.spec(idle_timeout) });
        let created = self.gateway.call(Method::POST, &path, Some(&self.alice), Some(body)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        wait_for(&self.projects(), name, project_phase(Phase::Running)).await;
        let preview = self.gateway.call(Method::GET, &format!("{path}/{name}/preview"), Some(&self.alice), None).await;
        assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
        let host = format!("{name}--{}.{PREVIEW_DOMAIN}", self.org);
        (host, preview.body["token"].as_str().expect("token").to_owned())
    }

    async fn get(&self, host: &str, token: &str, path: &str) -> reqwest::Response {
        let browser = self.gateway.preview_client(host);
        let request = browser.get(self.gateway.preview_url(host, path)).header("x-ooda-preview-token", token);
        request.send().await.expect("answer")
    }

    /// A WebSocket to the project's dev server, through the preview proxy.
    async fn websocket(
        &self,
        host: &str,
        token: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
        let url = format!("ws://127.0.0.1:{}/ws", self.gateway.addr.port());
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert("host", host.parse().unwrap());
        request.headers_mut().insert("x-ooda-preview-token", token.parse().unwrap());
        tokio_tungstenite::connect_async(request).await.expect("a WebSocket through the proxy").0
    }
}

fn pod_name(project: &str) -> String {
    format!("{project}-0")
}

async fn pod(client: &kube::Client, namespace: &str, project: &str) -> Pod {
    Api::<Pod>::namespaced(client.clone(), namespace).get(&pod_name(project)).await.expect("the project's pod")
}

#[tokio::test]
async fn a_gvisor_project_runs_its_repository_s_dev_server_behind_the_preview_proxy() {
    let s = Real::start("real-run").await;
    let (host, token) = s.running("shop", "15m").await;
    let ns = s.namespace();
    let pod = pod(&s.world.client, &ns, "shop").await;
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some("real-0"), "an eu-real project lands on the real node");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert!(spec.tolerations.iter().flatten().any(|t| t.key.as_deref() == Some(REAL_NODE_TOLERATION)));

    // gVisor's kernel, not the host's: what the container sees through the terminal's path.
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("host kernel").trim().to_owned();
    let (ok, seen) = exec(&ns, &pod_name("shop"), "workspace", "read line; echo \"$line\"; uname -r", "typed\n").await;
    assert!(ok, "kubectl exec: {seen}");
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "typed", "the terminal's input reaches the shell");
    assert!(lines[1].contains("gvisor") && lines[1] != host_kernel, "kernel seen: {seen}");
    let (_, dmesg) = exec(&ns, &pod_name("shop"), "workspace", "dmesg | head -n 1", "").await;
    assert!(dmesg.contains("gVisor"), "{dmesg}");

    // The gateway's terminal runs there, and one closed without a word leaves nothing running.
    let mut terminal = open_terminal(&s.gateway, &s.org, "shop", &s.alice).await.expect("a terminal");
    let left = shell_and_job(&mut terminal).await;
    assert_eq!(still_running(&s.world.client, &ns, "shop", &left).await, left, "both run while it is open");
    drop(terminal);
    eventually(SETTLE, "the closed terminal's shell and job end", || async {
        still_running(&s.world.client, &ns, "shop", &left).await.is_empty().then_some(())
    })
    .await;

    // The API server reaches the kubelet for logs too, with its own certificate.
    let logs = kubectl().args(["logs", "-n", &ns, &pod_name("shop"), "-c", "loader"]).output().await.expect("logs");
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("ooda-loader: checked out main"), "the loader's log: {logs}");

    // The loader seeded the workspace from the repository, as the environment's user.
    let (ok, files) =
        exec(&ns, &pod_name("shop"), "workspace", "cd /workspace && git log --format=%s && ls -A && id -u", "").await;
    assert!(ok, "{files}");
    assert_eq!(files.lines().collect::<Vec<_>>(), ["the shop", ".git", ".ooda", "index.html", "server.py", "1000"]);

    // The repository's dev server answers through the proxy: a page, a stream, a WebSocket.
    let page = s.get(&host, &token, "/").await;
    assert_eq!(page.status(), StatusCode::OK);
    let text = page.text().await.expect("page");
    assert!(text.contains("Hello from a real sandbox") && text.contains("gvisor"), "{text}");

    let download = s.get(&host, &token, "/stream?mib=8").await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.headers().get("transfer-encoding").map(|v| v.to_str().unwrap()), Some("chunked"));
    let mut body = download.bytes_stream();
    let (mut received, mut chunks) = (0usize, 0usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("a streamed chunk");
        assert!(chunk.iter().enumerate().all(|(i, b)| *b == ((received + i) % 256) as u8), "streamed bytes intact");
        received += chunk.len();
        chunks += 1;
    }
    assert_eq!(received, 8 << 20);
    assert!(chunks > 1, "the download arrived as a stream, not one buffer");

    let mut socket = s.websocket(&host, &token).await;
    for message in ["hello", "sandbox"] {
        socket.send(Message::text(message)).await.expect("send");
        let echoed = tokio::time::timeout(SETTLE, socket.next()).await.expect("an echo in time");
        assert_eq!(echoed.expect("open").expect("a message"), Message::text(message));
    }
    s.world.cleanup().await;
}

#[tokio::test]
async fn hibernation_keeps_the_workspace_and_a_preview_request_wakes_it() {
    let s = Real::start("real-nap").await;
    let (host, token) = s.running("nap", "10s").await;
    let ns = s.namespace();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.world.client.clone(), &ns);
    let claim_uid = claims.get("nap-workspace").await.expect("claim").metadata.uid;
    let (ok, out) = exec(&ns, &pod_name("nap"), "workspace", "echo kept > /workspace/notes.txt", "").await;
    assert!(ok, "{out}");

    // Idle: the pod goes away, the claim stays.
    let pods: Api<Pod> = Api::namespaced(s.world.client.clone(), &ns);
    let uid = pods.get(&pod_name("nap")).await.expect("pod").metadata.uid.expect("uid");
    wait_for(&s.projects(), "nap", project_phase(Phase::Hibernated)).await;
    wait_deleted(&pods, &pod_name("nap"), &uid).await;

    // A preview request wakes it and is answered by the woken dev server.
    let asked = Instant::now();
    let woken = s.get(&host, &token, "/").await;
    let latency = asked.elapsed();
    assert_eq!(woken.status(), StatusCode::OK);
    println!("real wake (gVisor, pod gone → first proxied answer): {latency:?}");
    let (ok, notes) = exec(&ns, &pod_name("nap"), "workspace", "cat /workspace/notes.txt", "").await;
    assert!(ok && notes.trim() == "kept", "the workspace kept its file: {notes}");
    let claim = claims.get("nap-workspace").await.expect("claim");
    assert_eq!(claim.metadata.uid, claim_uid, "the same volume");
    // Seeded once: the woken pod starts without the loader.
    assert_eq!(
        claim.metadata.annotations.unwrap_or_default().get("ooda.run/workspace-seeded").map(String::as_str),
        Some("true")
    );
    let woken_pod = pods.get(&pod_name("nap")).await.expect("the woken pod");
    assert!(woken_pod.spec.expect("spec").init_containers.unwrap_or_default().is_empty(), "the loader ran again");
    s.world.cleanup().await;
}

/// `GET /` through `kubectl port-forward` to the pod's `port`.
async fn port_forward_get(namespace: &str, pod: &str, port: u16) -> String {
    let mut forward = kubectl()
        .args(["port-forward", "-n", namespace, &format!("pod/{pod}"), &format!(":{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let mut lines = tokio::io::BufReader::new(forward.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(SETTLE, lines.next_line()).await.expect("forwarding in time").unwrap();
    // "Forwarding from 127.0.0.1:<port> -> <port>"
    let local = line.as_deref().and_then(|l| l.split_whitespace().nth(2)).expect("the forwarded address").to_owned();
    let page = reqwest::get(format!("http://{local}/")).await.expect("an answer through port-forward");
    page.text().await.expect("the page")
}

/// A pod on the real node running `python3 -c <program>` (or sleeping), in `namespace`.
async fn plain_pod(client: &kube::Client, namespace: &str, name: &str, labels: Value, program: Option<&str>) -> IpAddr {
    let command = match program {
        Some(program) => json!(["python3", "-c", program]),
        None => json!(["sleep", "infinity"]),
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "nodeSelector": { "kubernetes.io/hostname": "real-0" },
            "tolerations": [{ "key": REAL_NODE_TOLERATION, "operator": "Exists" }],
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "main",
                "image": "ooda.local/devenv:bookworm",
                "command": command,
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } },
            }],
        }
    }))
    .expect("pod");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let ready = wait_for(&pods, name, |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
    ready.status.and_then(|s| s.pod_ip).expect("pod IP").parse().expect("an IP")
}

/// An HTTP server on port 9000, serving the pod's root directory.
const LISTENER: &str = "import http.server, os\nos.chdir('/')\nhttp.server.ThreadingHTTPServer(('0.0.0.0', 9000), http.server.SimpleHTTPRequestHandler).serve_forever()";

async fn namespace(client: &kube::Client, name: &str, test: &str) -> Api<Namespace> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": { TEST_LABEL: test } } })).unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
    namespaces
}

#[tokio::test]
async fn network_policy_lets_only_the_gateway_in_and_keeps_projects_off_pods_and_denied_ranges() {
    let s = Real::start("real-netpol").await;
    let client = s.world.client.clone();
    for name in ["alpha", "beta"] {
        let path = format!("/api/orgs/{}/projects", s.org);
        let body = json!({ "name": name, "spec": s.spec("15m") });
        assert_eq!(s.gateway.call(Method::POST, &path, Some(&s.alice), Some(body)).await.status, StatusCode::CREATED);
    }
    // Another organisation's project.
    let other = s.world.ready_organisation(REAL).await.metadata.name.expect("name");
    let other_ns = format!("org-{other}");
    s.world.create_project(&other_ns, "gamma", s.spec("15m")).await;
    let ns = s.namespace();
    let mut addresses = Vec::new();
    for (namespace, project) in [(&ns, "alpha"), (&ns, "beta"), (&other_ns, "gamma")] {
        let projects: Api<Project> = Api::namespaced(client.clone(), namespace);
        wait_for(&projects, project, project_phase(Phase::Running)).await;
        let ip: IpAddr = pod(&client, namespace, project).await.status.unwrap().pod_ip.unwrap().parse().unwrap();
        addresses.push(SocketAddr::new(ip, DEV_PORT));
    }
    let [_alpha, beta, gamma] = addresses[..] else { unreachable!() };

    // A listener on a denied address on this machine (the pod network), in a namespace with no
    // policy; and one on the bed's outside address, which projects may reach.
    let open_ns = format!("open-{}", s.world.test);
    let namespaces = namespace(&client, &open_ns, &s.world.test).await;
    let listener = SocketAddr::new(plain_pod(&client, &open_ns, "listener", json!({}), Some(LISTENER)).await, 9000);
    let outside = tokio::net::TcpListener::bind((outside_address(), 0)).await.expect("listen on the outside address");
    let outside = outside.local_addr().unwrap();
    plain_pod(&client, &open_ns, "client", json!({}), None).await;

    let alpha = |target| connects(&ns, "alpha-0", "workspace", target);
    assert!(!alpha(beta).await, "a project reached another project's pod");
    assert!(!alpha(gamma).await, "a project reached another organisation's pod");
    assert!(!alpha(listener).await, "a project reached a pod on a denied range");
    assert!(
        !alpha(SocketAddr::new(bridge_address().into(), s.gateway.http.port())).await,
        "a project reached the host"
    );
    assert!(alpha(outside).await, "a project reaches addresses outside the denied ranges");
    // The refusals were the policy's: without one, the same pods are reachable.
    assert!(connects(&open_ns, "client", "main", listener).await, "an unconfined pod reaches the listener");
    // kubectl port-forward, through the API server and the kubelet with their certificates. (Into
    // a runc pod: containerd forwards inside the pod's network namespace, and a gVisor sandbox's
    // own network stack is not there.)
    assert!(port_forward_get(&open_ns, "listener", 9000).await.contains("Directory listing"));

    // Only the gateway's pods reach a project's preview port.
    let gateway_ns = GATEWAY_NAMESPACE;
    namespace(&client, gateway_ns, &s.world.test).await;
    let impostor_name = format!("impostor-{}", s.world.test);
    let gateway_name = format!("gateway-{}", s.world.test);
    plain_pod(&client, gateway_ns, &gateway_name, json!({ "app.kubernetes.io/name": "ooda-gateway" }), None).await;
    plain_pod(&client, gateway_ns, &impostor_name, json!({ "app.kubernetes.io/name": "not-the-gateway" }), None).await;
    assert!(connects(gateway_ns, &gateway_name, "main", beta).await, "the gateway reaches the preview port");
    assert!(!connects(gateway_ns, &impostor_name, "main", beta).await, "another pod reached the preview port");
    assert!(!connects(&open_ns, "client", "main", beta).await, "a pod elsewhere reached the preview port");

    let pods: Api<Pod> = Api::namespaced(client.clone(), gateway_ns);
    for name in [&gateway_name, &impostor_name] {
        pods.delete(name, &DeleteParams::default().grace_period(0)).await.expect("delete pod");
    }
    namespaces.delete(&open_ns, &DeleteParams::default()).await.expect("delete namespace");
    s.world.cleanup().await;
}

#[tokio::test]
async fn stop_drops_a_live_preview_and_delete_removes_pod_workspace_and_site() {
    let s = Real::start("real-end").await;
    let (host, token) = s.running("live", "15m").await;
    let mut socket = s.websocket(&host, &token).await;
    socket.send(Message::text("before")).await.expect("send");
    assert_eq!(socket.next().await.expect("open").expect("echo"), Message::text("before"));
    let stop = format!("/api/orgs/{}/projects/live/stop", s.org);
    assert_eq!(s.gateway.call(Method::POST, &stop, Some(&s.alice), None).await.status, StatusCode::ACCEPTED);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the live WebSocket was not dropped within 5 s of the stop");

    // A project with a published site and a workspace on disk, deleted.
    let (_, _) = s.running("gone", "15m").await;
    let ns = s.namespace();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.world.client.clone(), &ns);
    let volume = claims.get("gone-workspace").await.expect("claim").spec.and_then(|s| s.volume_name).expect("bound");
    let pv: PersistentVolume = Api::all(s.world.client.clone()).get(&volume).await.expect("volume");
    let spec = pv.spec.expect("spec");
    let on_disk =
        PathBuf::from(spec.host_path.map(|h| h.path).or(spec.local.map(|l| l.path)).expect("a directory on the node"));
    assert!(on_disk.is_dir(), "{on_disk:?}");
    let url = s.gateway.url(&format!("/api/orgs/{}/projects/gone/publish", s.org));
    let site = crate::sites::archive(&[("index.html", b"<h1>gone</h1>")], false);
    let published = reqwest::Client::new()
        .post(url)
        .bearer_auth(&s.alice)
        .header("content-type", "application/x-tar")
        .body(site)
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), StatusCode::CREATED);
    let s3 = crate::sites::bucket("ooda-sites-eu", crate::sites::S3);
    let prefix = format!("{}/gone/", s.org);
    assert!(!s3.list(&prefix).await.expect("list").is_empty());

    let pods: Api<Pod> = Api::namespaced(s.world.client.clone(), &ns);
    let pod_uid = pods.get("gone-0").await.expect("pod").metadata.uid.expect("uid");
    let project_uid = s.projects().get("gone").await.expect("project").metadata.uid.expect("uid");
    let delete = format!("/api/orgs/{}/projects/gone", s.org);
    assert_eq!(s.gateway.call(Method::DELETE, &delete, Some(&s.alice), None).await.status, StatusCode::ACCEPTED);
    wait_deleted(&s.projects(), "gone", &project_uid).await;
    wait_deleted(&pods, "gone-0", &pod_uid).await;
    eventually(SETTLE, "the workspace's directory removed from the node's disk", || async {
        (!on_disk.exists()).then_some(())
    })
    .await;
    assert!(s3.list(&prefix).await.expect("list").is_empty(), "published objects outlived the project");
    s.world.cleanup().await;
}
