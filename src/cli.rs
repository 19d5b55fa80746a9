//! The `ooda` command line: one binary, one subcommand per part of the system.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::accounts::{self, AccountError, AccountStore, PasswordHash};
use crate::{crd, duration, operator};

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
    /// Manage user accounts (platform-operator bootstrap): stored as Secrets, passwords hashed.
    #[command(subcommand)]
    User(UserCommand),
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
    /// Set a new password for an existing account, read from standard input.
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
    /// PBKDF2-HMAC-SHA256 rounds; lower than 600000 is refused.
    #[arg(long, default_value_t = accounts::MIN_ITERATIONS)]
    iterations: u32,
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
    Account(#[from] AccountError),
    #[error("reading the password from standard input: {0}")]
    Stdin(std::io::Error),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("could not render CRD YAML: {0}")]
    Render(#[from] serde_yaml::Error),
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
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
        Command::User(command) => user(command).await,
        Command::Crds { out: None } => {
            let documents = crd::definitions().iter().map(crd::to_yaml).collect::<Result<Vec<_>, _>>()?;
            print!("{}", documents.join("---\n"));
            Ok(())
        }
        Command::Crds { out: Some(dir) } => write_crds(&dir),
    }
}

async fn user(command: UserCommand) -> Result<(), CliError> {
    let (args, adding) = match command {
        UserCommand::Add(args) => (args, true),
        UserCommand::ResetPassword(args) => (args, false),
    };
    accounts::check_email(&args.email)?;
    let mut password = String::new();
    Read::read_to_string(&mut std::io::stdin().take(accounts::MAX_PASSWORD_LEN as u64 + 2), &mut password)
        .map_err(CliError::Stdin)?;
    let password = password.strip_suffix('\n').unwrap_or(&password).trim_end_matches('\r').to_owned();
    let iterations = args.iterations;
    // Hundreds of thousands of HMAC rounds: keep them off the async workers.
    let hash = tokio::task::spawn_blocking(move || PasswordHash::new(&password, iterations))
        .await
        .expect("hashing does not panic")?;
    let store = AccountStore::new(kube::Client::try_default().await?, &args.namespace);
    if adding {
        store.add(&args.email, &hash).await?;
        eprintln!("created the account of {}", args.email);
    } else {
        store.reset_password(&args.email, &hash).await?;
        eprintln!("reset the password of {}", args.email);
    }
    Ok(())
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
