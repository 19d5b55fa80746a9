//! The session signing keys, kept in one Secret in the gateway's namespace so every replica signs
//! and verifies with the same keys. The first replica to start creates it; a rotation (by
//! `ooda rotate-signing-key`) keeps the previous key verifying for one session lifetime (an
//! emergency rotation drops it at once), and every replica picks the change up from its watch.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

use crate::gateway::FIELD_MANAGER;
use crate::gateway::token::{KeyError, KeyRing, SigningKey};
use crate::watch::StartRetry;

pub const SECRET_NAME: &str = "ooda-gateway-signing-keys";

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {SECRET_NAME}: {0}")]
    Unreadable(#[from] KeyError),
}

/// The key ring, as [`load_or_create`] gives it, once the API server lets this gateway read it:
/// a refused or failed request is retried ([`StartRetry`]), never the end of the process. A
/// Secret that is there but unreadable is an error.
pub async fn load_when_allowed(secrets: &Api<Secret>) -> Result<KeyRing, KeysError> {
    let mut retry = StartRetry::default();
    loop {
        match load_or_create(secrets).await {
            Ok(ring) => return Ok(ring),
            Err(unreadable @ KeysError::Unreadable(_)) => return Err(unreadable),
            Err(KeysError::Kube(error)) => {
                warn!(%error, retry_in = ?retry.next(), "cannot read the session signing keys yet");
                retry.wait().await;
            }
        }
    }
}

/// The key ring from the Secret, creating the Secret with a fresh key if there is none.
async fn load_or_create(secrets: &Api<Secret>) -> Result<KeyRing, KeysError> {
    if let Some(secret) = secrets.get_opt(SECRET_NAME).await? {
        return Ok(KeyRing::from_secret(&secret)?);
    }
    let ring = KeyRing::new(SigningKey::generate());
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match secrets.create(&params, &labelled(ring.to_secret(SECRET_NAME, ""))).await {
        Ok(_) => {
            info!(kid = ring.current_kid(), "created the session signing key");
            Ok(ring)
        }
        // Another replica created it first: use theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Ok(KeyRing::from_secret(&secrets.get(SECRET_NAME).await?)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// How a rotation treats the sessions the old key signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// They stay valid until they expire: the old key verifies for one session lifetime.
    Graceful,
    /// They end now: the old key is dropped (it may have leaked).
    Emergency,
}

/// Replaces the current key with a new one.
pub async fn rotate(secrets: &Api<Secret>, rotation: Rotation) -> Result<KeyRing, KeysError> {
    let live = secrets.get(SECRET_NAME).await?;
    let ring = KeyRing::from_secret(&live)?;
    let ring = match rotation {
        Rotation::Graceful => ring.rotated(k8s_openapi::jiff::Timestamp::now()),
        Rotation::Emergency => ring.replaced(),
    };
    let mut secret = labelled(ring.to_secret(SECRET_NAME, ""));
    // Conditional on what was read: two rotations at once cannot lose a key silently.
    secret.metadata.resource_version = live.metadata.resource_version;
    secrets.replace(SECRET_NAME, &PostParams::default(), &secret).await?;
    Ok(ring)
}

/// Keeps `ring` equal to the Secret, for as long as the process runs.
pub fn follow(secrets: Api<Secret>, ring: Arc<RwLock<Arc<KeyRing>>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={SECRET_NAME}"));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(secrets, config).default_backoff().applied_objects());
        while let Some(event) = stream.next().await {
            let latest =
                event.map_err(|e| e.to_string()).and_then(|s| KeyRing::from_secret(&s).map_err(|e| e.to_string()));
            match latest {
                Ok(latest) => {
                    let mut current = ring.write().expect("key ring lock");
                    if current.current_kid() != latest.current_kid() {
                        info!(kid = latest.current_kid(), "session signing key changed");
                    }
                    *current = Arc::new(latest);
                }
                Err(error) => warn!(%error, "could not follow the signing keys"),
            }
        }
    });
}

fn labelled(mut secret: Secret) -> Secret {
    secret.metadata.namespace = None;
    secret.metadata.labels = Some(BTreeMap::from([("app.kubernetes.io/name".to_owned(), "ooda-gateway".to_owned())]));
    secret
}
