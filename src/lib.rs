//! ooda: a Kubernetes operator for sandboxed, hibernating cloud development environments.
//!
//! - [`crd`]: the `Organisation` and `Project` custom resources and their generated CRDs.
//! - [`cli`]: the `ooda` command line.

pub mod cli;
pub mod crd;
