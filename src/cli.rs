//! The `ooda` command line: one binary, one subcommand per part of the system.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::accounts::{self, Account, AccountError, AccountStore, AuthKey};
use crate::gateway::forwarded::TrustedProxies;
use crate::{crd, duration, gateway, operator};

#[derive(Parser, Debug)]
#[command(name = "ooda", version, about = "Sandboxed, hibernating cloud development environments on Kubernetes")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the Organisation and Project controllers (leader-elected: run as many replicas as you like).
    Operator(OperatorArgs),
    /// Run the HTTP(S) edge: sign-in, the REST API and the preview proxy (stateless: run many).
    Gateway(Box<GatewayArgs>),
    /// Replace the session signing key. The previous one keeps verifying the sessions it signed
    /// until they expire (one session lifetime), unless `--emergency`.
    RotateSigningKey {
        /// Namespace of the gateway's signing keys: the operator's own.
        #[arg(long, env = "POD_NAMESPACE", default_value = "ooda-system")]
        namespace: String,
        /// Drop the previous key at once, ending every session it signed (the key may have leaked).
        #[arg(long)]
        emergency: bool,
    },
    /// Manage user accounts (platform-operator bootstrap): stored as Secrets; the password is
    /// derived to an auth key here, as a client would, and only that key's hash is stored.
    #[command(subcommand)]
    User(UserCommand),
    /// Sign in to a gateway and print a session token (for curl and scripts). The password is
    /// derived to an auth key here and never sent.
    Login(LoginArgs),
    /// Print the CustomResourceDefinitions generated from the Rust types, or write one file per CRD.
    Crds {
        /// Directory to write `<plural>.ooda.run.yaml` files into, instead of printing to stdout.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account. The password is read from standard input, never from arguments.
    Add(UserArgs),
    /// Set a new password for an existing account, read from standard input. Ends every session
    /// of the account, and every credential its invites made.
    ResetPassword(UserArgs),
}

#[derive(clap::Args, Debug)]
pub struct UserArgs {
    /// The user's sign-in email, lowercase.
    #[arg(long)]
    email: String,
    /// Read the password from standard input (the only way to give one).
    #[arg(long, required = true)]
    password_stdin: bool,
    /// Namespace holding the accounts: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ooda-system")]
    namespace: String,
    /// The server's PBKDF2-HMAC-SHA256 rounds over the auth key (the client derivation's rounds
    /// are fixed); lower than 1000 is refused.
    #[arg(long, default_value_t = accounts::DEFAULT_SERVER_ITERATIONS)]
    iterations: u32,
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The gateway's API URL, such as https://ooda.example.com.
    #[arg(long, env = "OODA_GATEWAY")]
    gateway: reqwest::Url,
    /// The sign-in email.
    #[arg(long)]
    email: String,
    /// Read the password from standard input instead of a terminal prompt.
    #[arg(long)]
    password_stdin: bool,
    /// PEM certificate authority to trust for the gateway, beside the system's.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Connect to ADDR for HOST:PORT, as curl's --resolve (HOST:PORT:ADDR).
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    resolve: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// Operator configuration file (jurisdictions, runtime classes, gateway, defaults).
    #[arg(long, env = "OODA_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "OODA_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Namespace of the leader Lease: the operator's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ooda-system")]
    namespace: String,
    /// Name of the leader Lease; replicas sharing it elect one leader.
    #[arg(long, default_value = "ooda-operator")]
    leader_lease: String,
    /// This replica's identity in the leader Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a leader Lease lasts without renewal before another replica may take over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// Manage only Organisations matching this label selector (and their projects).
    #[arg(long, value_name = "SELECTOR")]
    organisation_selector: Option<String>,
    /// Reconciliations run at once, per controller.
    #[arg(long, default_value_t = 32)]
    concurrency: u16,
}

#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// The configuration file shared with the operator (preview domain, jurisdictions).
    #[arg(long, env = "OODA_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Public address: the API and preview hosts.
    #[arg(long, env = "OODA_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "OODA_HTTP_ADDR", default_value = "127.0.0.1:8081")]
    http_addr: SocketAddr,
    /// PEM certificate chain for TLS on the public address.
    #[arg(long, env = "OODA_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "OODA_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP without a certificate. Only for local use; never on a network.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_offloaded"])]
    insecure_http: bool,
    /// A proxy in front (an Ingress, a load balancer) terminates TLS: serve plain HTTP on
    /// --listen, but to clients, who are on HTTPS, set `Secure` cookies and HSTS.
    #[arg(long, env = "OODA_TLS_OFFLOADED", conflicts_with = "tls_cert")]
    tls_offloaded: bool,
    /// Namespace of accounts, invites and signing keys: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ooda-system")]
    namespace: String,
    /// `iss` of session tokens.
    #[arg(long, default_value = "ooda")]
    issuer: String,
    /// `aud` of session tokens.
    #[arg(long, default_value = "ooda-api")]
    audience: String,
    /// How long a session token lasts.
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    session_ttl: Duration,
    /// How long an invite can be redeemed.
    #[arg(long, default_value = "72h", value_parser = parse_duration)]
    invite_ttl: Duration,
    /// Longest gap between activity Lease renewals of a busy project.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    activity_interval: Duration,
    /// How long a request waits for a hibernated project to wake before 503.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    wake_timeout: Duration,
    /// Longest the gateway goes on honouring preview tokens without hearing from the API server:
    /// past it (the API server unreachable, or the way to it stalled) previews answer 503 and
    /// /readyz fails, rather than honour a token that may have been revoked meanwhile.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    stale_after: Duration,
    /// The port in preview and site URLs, when clients reach the gateway on a non-default port;
    /// 0: the port --listen bound (clients reach the listener directly, as in local runs).
    #[arg(long)]
    public_port: Option<u16>,
    /// The server's PBKDF2-HMAC-SHA256 rounds over the auth keys of new credentials (clients do
    /// 600000 rounds of their own); lower than 1000 is refused.
    #[arg(long, env = "OODA_AUTH_KEY_ITERATIONS", default_value_t = accounts::DEFAULT_SERVER_ITERATIONS)]
    auth_key_iterations: u32,
    /// Key hashes computed at once (the rest queue); default half the cores.
    #[arg(long)]
    hashing_slots: Option<usize>,
    /// Load balancers or ingress proxies in front of the gateway (comma-separated addresses and
    /// CIDR networks): their X-Forwarded-For names the client for sign-in limits. Default none:
    /// the connection's own address is the client.
    #[arg(long, env = "OODA_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: TrustedProxies,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    match duration::parse(text) {
        Ok(d) if d >= Duration::from_secs(2) => Ok(d),
        Ok(_) => Err("must be at least 2s".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Operator(#[from] operator::RunError),
    #[error(transparent)]
    Gateway(#[from] gateway::RunError),
    #[error(transparent)]
    Keys(#[from] gateway::keys::KeysError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("reading the password: {0}")]
    Stdin(std::io::Error),
    #[error("signing in: {0}")]
    Login(String),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("could not render CRD YAML: {0}")]
    Render(#[from] serde_yaml::Error),
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The async runtime `command` runs on. The operator's work is waiting on the API server, and one
/// thread keeps up with thousands of projects (it spends a fraction of a core converging 1,000);
/// a thread of its own is less memory than a pool of them: one stack, and one set of the
/// allocator's per-thread pages, where each worker would keep its own half-empty ones. The gateway
/// serves requests on every core.
pub fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match command {
        Command::Operator(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Operator(args) => {
            let identity = args.identity.unwrap_or_else(default_identity);
            operator::run(operator::Options {
                config: args.config,
                http_addr: args.http_addr,
                namespace: args.namespace,
                leader_lease: args.leader_lease,
                identity,
                lease_duration: args.lease_duration,
                organisation_selector: args.organisation_selector,
                concurrency: args.concurrency,
            })
            .await?;
            Ok(())
        }
        Command::Gateway(args) => {
            gateway::run(gateway_options(*args)?).await?;
            Ok(())
        }
        Command::RotateSigningKey { namespace, emergency } => {
            let secrets = kube::Api::namespaced(kube::Client::try_default().await?, &namespace);
            let rotation =
                if emergency { gateway::keys::Rotation::Emergency } else { gateway::keys::Rotation::Graceful };
            let ring = gateway::keys::rotate(&secrets, rotation).await?;
            let previous = if emergency {
                "dropped the previous key"
            } else {
                "the previous key verifies its sessions until they expire"
            };
            eprintln!("rotated the session signing key; new key id {}; {previous}", ring.current_kid());
            Ok(())
        }
        Command::User(command) => user(command).await,
        Command::Login(args) => login(args).await,
        Command::Crds { out: None } => {
            let documents = crd::definitions().iter().map(crd::to_yaml).collect::<Result<Vec<_>, _>>()?;
            print!("{}", documents.join("---\n"));
            Ok(())
        }
        Command::Crds { out: Some(dir) } => write_crds(&dir),
    }
}

fn gateway_options(args: GatewayArgs) -> Result<gateway::Options, CliError> {
    let tls = args.tls_cert.zip(args.tls_key);
    if tls.is_none() && !args.insecure_http && !args.tls_offloaded {
        return Err(CliError::Usage(
            "the gateway needs --tls-cert and --tls-key, --tls-offloaded behind a proxy that terminates TLS, \
             or --insecure-http for local plain HTTP"
                .into(),
        ));
    }
    if args.auth_key_iterations < accounts::MIN_SERVER_ITERATIONS {
        return Err(AccountError::WeakIterations(args.auth_key_iterations).into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(gateway::Options {
        config: args.config,
        listen: args.listen,
        http_addr: args.http_addr,
        settings: gateway::Settings {
            namespace: args.namespace,
            issuer: args.issuer,
            audience: args.audience,
            session_ttl: args.session_ttl,
            token_leeway: Duration::from_secs(30),
            invite_ttl: args.invite_ttl,
            activity_interval: args.activity_interval,
            wake_timeout: args.wake_timeout,
            stale_after: args.stale_after,
            browser_hold: Duration::from_secs(2),
            tls: tls.is_some() || args.tls_offloaded,
            public_port: args.public_port,
            auth_key_iterations: args.auth_key_iterations,
            hashing_slots: args.hashing_slots.unwrap_or((cores / 2).max(1)),
            trusted_proxies: args.trusted_proxies,
        },
        tls,
    })
}

async fn user(command: UserCommand) -> Result<(), CliError> {
    let (args, adding) = match command {
        UserCommand::Add(args) => (args, true),
        UserCommand::ResetPassword(args) => (args, false),
    };
    accounts::check_email(&args.email)?;
    let password = read_password_stdin()?;
    accounts::check_password(&password)?;
    let (email, iterations) = (args.email.clone(), args.iterations);
    // Hundreds of thousands of HMAC rounds: keep them off the async workers.
    let account = tokio::task::spawn_blocking(move || {
        let key = AuthKey::for_email(&email, &password)?;
        Account::platform(&email, &key, iterations)
    })
    .await
    .expect("hashing does not panic")?;
    let store = AccountStore::new(kube::Client::try_default().await?, &args.namespace);
    if adding {
        store.create(&account).await?;
        eprintln!("created the account of {}", args.email);
    } else {
        store.reset_password(&account).await?;
        eprintln!("reset the password of {}; its sessions have ended", args.email);
    }
    Ok(())
}

/// One line of standard input, without its line ending, bounded like any password.
fn read_password_stdin() -> Result<String, CliError> {
    let mut password = String::new();
    Read::read_to_string(&mut std::io::stdin().take(accounts::MAX_PASSWORD_LEN as u64 + 2), &mut password)
        .map_err(CliError::Stdin)?;
    Ok(password.strip_suffix('\n').unwrap_or(&password).trim_end_matches('\r').to_owned())
}

/// `ooda login`: prelogin, the client derivation here, then the sign-in; the token on stdout.
async fn login(args: LoginArgs) -> Result<(), CliError> {
    let email = accounts::normalise_email(&args.email);
    let password = if args.password_stdin {
        read_password_stdin()?
    } else {
        rpassword::prompt_password(format!("password for {email}: ")).map_err(CliError::Stdin)?
    };
    let client = login_client(&args)?;
    let url = |path: &str| args.gateway.join(path).map_err(|e| CliError::Login(e.to_string()));
    let parameters: serde_json::Value =
        answer(client.post(url("/api/auth/prelogin")?).json(&serde_json::json!({ "email": email }))).await?;
    let kdf = parameters["kdf"].as_str().unwrap_or_default();
    let iterations = parameters["iterations"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    if kdf != accounts::CLIENT_KDF {
        return Err(AccountError::WeakClientKdf(kdf.to_owned()).into());
    }
    let salt = parameters["salt"]
        .as_str()
        .and_then(|s| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s).ok());
    let salt = salt.ok_or_else(|| CliError::Login("the prelogin answer has no salt".into()))?;
    let key = tokio::task::spawn_blocking(move || AuthKey::derive(&password, &salt, iterations))
        .await
        .expect("hashing does not panic")?;
    let body = serde_json::json!({ "email": email, "authKey": key.to_base64() });
    let session: serde_json::Value = answer(client.post(url("/api/auth/login")?).json(&body)).await?;
    let token = session["token"].as_str().ok_or_else(|| CliError::Login("the answer has no token".into()))?;
    println!("{token}");
    Ok(())
}

fn login_client(args: &LoginArgs) -> Result<reqwest::Client, CliError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .https_only(args.gateway.scheme() == "https");
    if let Some(path) = &args.cacert {
        let pem = std::fs::read(path).map_err(|e| CliError::Login(format!("{}: {e}", path.display())))?;
        let ca =
            reqwest::Certificate::from_pem(&pem).map_err(|e| CliError::Login(format!("{}: {e}", path.display())))?;
        builder = builder.add_root_certificate(ca);
    }
    for rule in &args.resolve {
        let parsed = rule.rsplit_once(':').and_then(|(host_port, addr)| {
            let (host, port) = host_port.rsplit_once(':')?;
            let ip: std::net::IpAddr = addr.trim_matches(['[', ']']).parse().ok()?;
            Some((host.to_owned(), SocketAddr::new(ip, port.parse().ok()?)))
        });
        let (host, address) = parsed.ok_or_else(|| CliError::Usage(format!("--resolve {rule}: not HOST:PORT:ADDR")))?;
        builder = builder.resolve(&host, address);
    }
    builder.build().map_err(|e| CliError::Login(e.to_string()))
}

/// The JSON of a 2xx answer; otherwise the gateway's error message.
async fn answer(request: reqwest::RequestBuilder) -> Result<serde_json::Value, CliError> {
    let response = request.send().await.map_err(|e| CliError::Login(e.to_string()))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or("no message");
        return Err(CliError::Login(format!("{status}: {message}")));
    }
    Ok(body)
}

fn write_crds(dir: &std::path::Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::Write { path: dir.to_owned(), source })?;
    for definition in crd::definitions() {
        let path = dir.join(crd::file_name(&definition));
        std::fs::write(&path, crd::to_yaml(&definition)?).map_err(|source| CliError::Write { path, source })?;
    }
    Ok(())
}

/// `<hostname>-<pid>`: unique per process, readable in the Lease.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}
