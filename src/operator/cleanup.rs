//! Clean-ups the project finalizer runs for what a project owns outside Kubernetes.

use futures::future::BoxFuture;
use kube::api::Api;

use crate::crd::Project;
use crate::operator::context::ExternalCleanup;
use crate::operator::error::CleanupError;
use crate::sites::Buckets;

/// Deleting a project deletes every published object under its prefix, in its organisation's
/// jurisdiction's bucket (the operator's finalizer runs this before letting the project go).
pub struct SitesPurge {
    pub buckets: Buckets,
    pub client: kube::Client,
}

impl ExternalCleanup for SitesPurge {
    fn name(&self) -> &'static str {
        "published-sites"
    }

    fn purge<'a>(&'a self, organisation: &'a str, project: &'a Project) -> BoxFuture<'a, Result<(), CleanupError>> {
        Box::pin(async move {
            // A provisioned organisation outlives its projects' finalizers (its own finalizer
            // waits for them); one that never was (an unknown jurisdiction) may already be gone.
            let organisations: Api<crate::crd::Organisation> = Api::all(self.client.clone());
            let org = organisations
                .get_opt(organisation)
                .await
                .map_err(|source| format!("reading organisation {organisation} to find its bucket: {source}"))?;
            let buckets: Vec<&crate::sites::Bucket> = match org {
                Some(org) => match self.buckets.for_jurisdiction(&org.spec.jurisdiction) {
                    Ok(bucket) => vec![bucket],
                    // No sites storage there: nothing was ever published.
                    Err(crate::sites::SitesError::NotConfigured(_)) => Vec::new(),
                    Err(unavailable) => return Err(unavailable.into()),
                },
                // Its jurisdiction is unknown now: look under the project's prefix everywhere
                // (deleting writes nothing anywhere, so residency holds).
                None => self.buckets.all()?,
            };
            let name = project.metadata.name.as_deref().unwrap_or_default();
            for bucket in buckets {
                let removed = bucket.purge(&crate::sites::layout::project(organisation, name)).await?;
                tracing::info!(organisation, project = name, bucket = bucket.name, removed, "purged published sites");
            }
            Ok(())
        })
    }
}
