//! What the cluster tests and the benchmarks share: a client for the local control plane, free
//! loopback ports, a minimal HTTP GET, the `ooda` binary as a child process whose log is named
//! when something fails, one way to wait for what has no watch, creating a project past quota
//! conflicts, the bed's Git server, and a stand-in for Anthropic's Messages API. Included by both as `#[path = "…/kit/mod.rs"] mod kit;`.

#![allow(dead_code)] // Each includer uses its own part.

pub mod anthropic;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Creates `project`, trying again while the quota admission plugin answers 409 because the
/// organisation's quota changed meanwhile (concurrent creates, or the controller manager
/// recounting it), as any client would.
pub async fn create_project(
    api: &kube::Api<ooda::crd::Project>,
    project: &ooda::crd::Project,
) -> Result<ooda::crd::Project, kube::Error> {
    let mut tries = 0;
    loop {
        match api.create(&kube::api::PostParams::default(), project).await {
            Err(kube::Error::Api(status))
                if status.code == 409 && status.message.contains("resourcequotas") && tries < 10 =>
            {
                tries += 1;
            }
            created => return created,
        }
    }
}

/// A client for the cluster in `kubeconfig`. Panics, with what to do, when there is none.
pub async fn client(kubeconfig: &Path) -> Client {
    let config = Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| {
        panic!(
            "no cluster: cannot read kubeconfig {}: {e}. Run `make cluster-up`, or `make test`.",
            kubeconfig.display()
        )
    });
    let config =
        Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await.expect("usable kubeconfig");
    let client = Client::try_from(config).expect("build client");
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("no cluster: the API server in {} does not answer: {e}", kubeconfig.display()));
    client
}

pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// `email`'s platform account as `ooda user add` makes it from `password`, with the server's
/// `iterations`; and the auth key (base64) a client derives from the password to sign in.
pub async fn platform_account(email: &str, password: &str, iterations: u32) -> (ooda::accounts::Account, String) {
    let (email, password) = (email.to_owned(), password.to_owned());
    tokio::task::spawn_blocking(move || {
        let key = ooda::accounts::AuthKey::for_email(&email, &password).expect("a client key");
        (ooda::accounts::Account::platform(&email, &key, iterations).expect("an account"), key.to_base64())
    })
    .await
    .expect("derivation")
}

/// A minimal HTTP/1.0 GET on loopback: enough for health and metrics endpoints.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Polls `check` until it returns `Some`, at most `within`; panics naming `what` at the deadline.
/// For what has no watch to wait on (HTTP answers, S3 listings, metrics).
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ooda <args…>` as a child process: killed when dropped, its log written to a file that is
/// named on standard error if the test (or benchmark) fails while it runs.
pub struct Ooda {
    pub child: Child,
    pub log: PathBuf,
}

impl Ooda {
    /// Starts `ooda` with `args` as the identity in `kubeconfig`, logging at `rust_log` to `log`.
    pub fn spawn(args: &[&str], kubeconfig: &Path, rust_log: &str, log: PathBuf) -> Ooda {
        let child = Command::new(env!("CARGO_BIN_EXE_ooda"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file {}: {e}", log.display())))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start ooda {}: {e}", args.first().unwrap_or(&"")));
        Ooda { child, log }
    }
}

impl Ooda {
    /// Asks the process to stop, as Kubernetes does a pod's (SIGTERM), and waits up to `within`
    /// for it to exit; its exit status.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("a running process").to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("ooda still running {within:?} after SIGTERM"))
            .expect("wait for ooda")
    }

    /// The first log line with `message`, waiting up to 30 s for it.
    pub async fn logged(&self, message: &str) -> String {
        let what = format!("`{message}` in {}", self.log.display());
        eventually(Duration::from_secs(30), &what, || async {
            let log = tokio::fs::read_to_string(&self.log).await.ok()?;
            log.lines().find(|line| line.contains(message)).map(str::to_owned)
        })
        .await
    }

    /// The address in field `field` of the first log line with `message`, waiting for it. Tests
    /// start `ooda` on port 0 and learn the bound address here: a port picked free and released
    /// beforehand can be taken by another test's process in between.
    pub async fn bound_address(&self, message: &str, field: &str) -> SocketAddr {
        let line = self.logged(message).await;
        let prefix = format!("{field}=");
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("no address in {field} of: {line}"))
    }
}

impl Drop for Ooda {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("ooda's log: {}", self.log.display());
        }
    }
}

/// The real node's address for what stands outside the cluster (scripts/lib.sh numbers it).
pub fn outside_address() -> Ipv4Addr {
    Ipv4Addr::new(198, 19, real_node_net(), 1)
}

/// The host's address on the real node's pod bridge.
pub fn bridge_address() -> Ipv4Addr {
    Ipv4Addr::new(198, 18, real_node_net(), 1)
}

fn real_node_net() -> u8 {
    std::env::var("OODA_REAL_NODE_NET").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A Git repository holding examples/dev-server, served over HTTPS on the bed's outside address
/// by scripts/git-server.py (killed when dropped), with a certificate authority of its own.
pub struct GitServer {
    _process: Child,
    /// The repository's URL.
    pub url: String,
    /// The certificate authority to trust, PEM.
    pub ca: String,
}

impl GitServer {
    /// Starts the server for `repo`'s checkout, keeping its files in `dir`.
    pub async fn start(repo: &Path, dir: &Path) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        let work = dir.join("work");
        copy_dir(&repo.join("examples/dev-server"), &work);
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .args(["-c", "user.name=ooda", "-c", "user.email=tests@ooda.example"])
                .args(args)
                .current_dir(&work)
                .stdout(Stdio::null())
                .status()
                .expect("run git");
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q", "-b", "main"]);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "the shop"]);
        git(&["clone", "-q", "--bare", ".", dir.join("root/shop.git").to_str().expect("utf-8 path")]);

        let mut process = Command::new("python3")
            .arg(repo.join("scripts/git-server.py"))
            .args(["--address", &outside_address().to_string(), "--root"])
            .arg(dir.join("root"))
            .arg("--tls-dir")
            .arg(dir.join("tls"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the git server");
        let mut lines = tokio::io::BufReader::new(process.stdout.take().expect("stdout")).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let base = base.expect("the git server started in time").expect("read").expect("the git server's URL");
        let ca = std::fs::read_to_string(dir.join("tls/ca.crt")).expect("the git server's CA");
        GitServer { _process: process, url: format!("{base}/shop.git"), ca }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
