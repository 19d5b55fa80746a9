//! The operator's error type: each variant names the step that failed and the object it failed
//! on, keeps its source, and falls into a bounded category for metrics and Events.

use std::time::Duration;

/// What an external clean-up (published sites in S3, …) failed with.
pub type CleanupError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Server-side apply of a child failed.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    /// Another call to the API server failed; `action` says which, and on what.
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The object asks for something that cannot be provided; retrying will not help until it
    /// (or the operator's configuration) changes.
    #[error("{0}")]
    Invalid(String),

    /// Clean-up outside Kubernetes failed; deletion waits and retries.
    #[error("clean-up {cleanup} failed: {source}")]
    Cleanup {
        cleanup: &'static str,
        #[source]
        source: CleanupError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Names the API call a `kube::Error` came from.
pub trait During<T> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> During<T> for std::result::Result<T, kube::Error> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Api { action: action(), source })
    }
}

impl Error {
    /// Bounded label for metrics and the reason of Warning Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Apply { source, .. } | Error::Api { source, .. } => match source {
                kube::Error::Api(status) if status.code == 409 => "conflict",
                kube::Error::Api(status) if status.code == 422 || status.code == 400 => "rejected",
                kube::Error::Api(status) if status.code == 403 => "forbidden",
                _ => "api",
            },
            Error::Invalid(_) => "invalid",
            Error::Cleanup { .. } => "cleanup",
        }
    }

    /// Whether trying again later may succeed on its own: not for an invalid object, nor for a
    /// write the API server refused as invalid.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Invalid(_) => false,
            Error::Apply { source: kube::Error::Api(status), .. }
            | Error::Api { source: kube::Error::Api(status), .. } => !matches!(status.code, 400 | 422),
            Error::Apply { .. } | Error::Api { .. } | Error::Cleanup { .. } => true,
        }
    }
}

/// Exponential backoff for transient errors: 1s, 2s, 4s … 256s.
pub fn backoff(consecutive_failures: u32) -> Duration {
    Duration::from_secs(1u64 << consecutive_failures.min(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16) -> kube::Error {
        let status = kube::core::Status::failure("no", "Reason").with_code(code);
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(256));
    }

    #[test]
    fn invalid_objects_and_refused_writes_wait_for_a_change() {
        assert!(!Error::Invalid("x".into()).is_transient());
        let rejected = Error::Apply { kind: "StatefulSet", name: "shop".into(), source: refused(422) };
        assert!(!rejected.is_transient());
        assert_eq!(rejected.category(), "rejected");
        let conflict = Error::Api { action: "renewing Lease shop-activity".into(), source: refused(409) };
        assert!(conflict.is_transient());
        assert_eq!(conflict.category(), "conflict");
        assert!(Error::Cleanup { cleanup: "published-sites", source: "s3 down".into() }.is_transient());
    }

    #[test]
    fn errors_name_the_step_and_the_object() {
        let error = Error::Apply { kind: "StatefulSet", name: "org-acme/shop".into(), source: refused(403) };
        assert!(error.to_string().starts_with("applying StatefulSet org-acme/shop: "), "{error}");
        assert_eq!(error.category(), "forbidden");
        let source = std::error::Error::source(&error).expect("the API server's error is kept");
        assert!(source.to_string().contains("no"), "{source}");
    }
}
