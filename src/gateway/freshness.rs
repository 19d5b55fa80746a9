//! Whether the gateway's watch caches can be trusted now. A watch that has stalled, or an API
//! server that cannot be reached, looks exactly like a quiet cluster: the caches keep answering
//! with what they last saw, and a preview token revoked meanwhile would still open its project.
//! So the gateway asks the API server whether it is ready (`/readyz`, which includes its storage:
//! an API server without etcd delivers no watch events either) every quarter of the bound, over
//! the same client (and so the same way) as its watches, and honours preview tokens only while
//! the last answer is younger than the bound (`--stale-after`, 10 s by default): past it,
//! previews fail closed with 503 (so do the AI relay and terminals, which rest on the same
//! caches) and `/readyz` fails, until the API server answers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube::Client;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::gateway::error::ApiError;

pub struct Freshness {
    bound: Duration,
    /// Read on every preview request: times are nanoseconds since `origin`, lock-free.
    origin: Instant,
    /// When the API server last answered, after `origin`; 0 before it ever has.
    confirmed: AtomicU64,
}

impl Freshness {
    pub fn new(bound: Duration) -> Self {
        Self { bound, origin: Instant::now(), confirmed: AtomicU64::new(0) }
    }

    /// Whether the API server answered within the bound.
    pub fn is_fresh(&self) -> bool {
        let confirmed = self.confirmed.load(Ordering::Acquire);
        confirmed != 0 && self.since_origin(Instant::now()).saturating_sub(confirmed) <= self.bound.as_nanos() as u64
    }

    /// The refusal of whatever rests on the caches' word (a token, a membership) while they
    /// cannot be trusted.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.is_fresh() { Ok(()) } else { Err(stale()) }
    }

    pub(crate) fn confirm(&self, at: Instant) {
        self.confirmed.fetch_max(self.since_origin(at).max(1), Ordering::AcqRel);
    }

    /// As if the API server had never answered: for tests of what fails closed.
    #[cfg(test)]
    pub(crate) fn forget(&self) {
        self.confirmed.store(0, Ordering::Release);
    }

    fn since_origin(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64
    }
}

/// What a request resting on stale caches is told.
pub fn stale() -> ApiError {
    ApiError::unavailable("the gateway cannot confirm access right now; try again", 2)
}

/// The API server's own readiness, etcd included (readable by every client: the
/// `system:public-info-viewer` role).
async fn ready(client: &Client) -> Result<String, kube::Error> {
    let request = http::Request::get("/readyz").body(Vec::new()).expect("a valid request");
    client.request_text(request).await
}

/// Asks the API server every quarter of the bound, for as long as the process runs. A question
/// counts from when it was asked, so a slow answer cannot stretch the bound.
pub async fn confirm(client: Client, freshness: Arc<Freshness>) {
    let bound = freshness.bound;
    let every = bound / 4;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reachable = true;
    loop {
        ticker.tick().await;
        let asked = Instant::now();
        match tokio::time::timeout(bound / 2, ready(&client)).await {
            Ok(Ok(_)) => {
                freshness.confirm(asked);
                if !reachable {
                    info!("the API server answers again: previews are served");
                    reachable = true;
                }
            }
            failed => {
                if reachable && !freshness.is_fresh() {
                    let reason = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => format!("no answer within {:?}", bound / 2),
                    };
                    warn!(%reason, "the API server has not answered within the bound: previews are refused");
                    reachable = false;
                }
            }
        }
    }
}
