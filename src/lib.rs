//! ooda: a Kubernetes operator for sandboxed, hibernating cloud development environments.
//!
//! - [`crd`]: the `Organisation` and `Project` custom resources and their generated CRDs.
//! - [`config`]: the operator's configuration (jurisdictions, runtime classes, defaults).
//! - [`operator`]: the controllers, leader election, metrics and health endpoints.
//! - [`gateway`]: the HTTP(S) edge: sessions, the REST API, the preview proxy.
//! - [`sites`]: published static sites: archives, versions and purging in S3.
//! - [`accounts`]: user accounts (PBKDF2 password hashes in Secrets).
//! - [`cli`]: the `ooda` command line.

pub mod accounts;
pub mod cli;
pub mod config;
pub mod crd;
pub mod duration;
pub mod gateway;
pub mod operator;
pub mod signal;
pub mod sites;
pub mod watch;
