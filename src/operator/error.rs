//! The operator's error type, with a bounded category for metrics and Events.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// The object asks for something that cannot be provided; retrying will not help until it
    /// (or the operator's configuration) changes.
    #[error("{0}")]
    Invalid(String),

    /// Clean-up outside Kubernetes failed; deletion waits and retries.
    #[error("clean-up failed: {0}")]
    Cleanup(String),

    #[error("finalizer: {0}")]
    Finalizer(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Bounded label for metrics and the reason of Warning Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => "rejected",
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => "forbidden",
            Error::Kube(_) => "api",
            Error::Invalid(_) => "invalid",
            Error::Cleanup(_) => "cleanup",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// Whether trying again later may succeed on its own.
    pub fn is_transient(&self) -> bool {
        !matches!(self.category(), "invalid" | "rejected")
    }
}

/// Exponential backoff for transient errors: 1s, 2s, 4s … 256s.
pub fn backoff(consecutive_failures: u32) -> Duration {
    Duration::from_secs(1u64 << consecutive_failures.min(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(256));
    }

    #[test]
    fn invalid_objects_wait_for_a_change() {
        assert!(!Error::Invalid("x".into()).is_transient());
        assert!(Error::Cleanup("s3 down".into()).is_transient());
    }
}
