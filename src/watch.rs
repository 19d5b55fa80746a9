//! Watch caches for both processes: a reflector that drops what is never read, and readiness
//! that is awaited rather than polled. Readiness is read from the watch events themselves (a
//! store's own `wait_until_ready` wakes only the last task that polled it).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Watches that have yet to deliver their initial list, by name.
#[derive(Clone)]
pub struct Readiness {
    pending: Arc<watch::Sender<BTreeSet<&'static str>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { pending: Arc::new(watch::Sender::new(BTreeSet::new())) }
    }
}

impl Readiness {
    /// A watch that must list before this is ready.
    pub fn register(&self, name: &'static str) -> Listed {
        self.pending.send_modify(|pending| {
            pending.insert(name);
        });
        Listed { readiness: self.clone(), name }
    }

    /// Every registered watch has listed.
    pub fn is_ready(&self) -> bool {
        self.pending.borrow().is_empty()
    }

    /// Resolves once every registered watch has listed.
    pub async fn ready(&self) {
        let mut changes = self.pending.subscribe();
        // The sender lives as long as `self`, so this ends only when the condition holds.
        let _ = changes.wait_for(BTreeSet::is_empty).await;
    }

    /// The watches still waiting for their initial list.
    pub fn pending(&self) -> Vec<&'static str> {
        self.pending.borrow().iter().copied().collect()
    }
}

/// Marks one registered watch as listed.
pub struct Listed {
    readiness: Readiness,
    name: &'static str,
}

impl Listed {
    fn done(&self) {
        self.readiness.pending.send_if_modified(|pending| pending.remove(self.name));
    }
}

/// Whether a cache keeps `managedFields`: most of an object's size, read only where ownership of
/// fields matters (an Organisation's members).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedFields {
    Keep,
    Drop,
}

/// A cache of what `config` selects through `api`, and the stream of watch events that fills
/// it; `listed` is marked when the first initial list is in. The stream must be polled.
pub fn reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    managed_fields: ManagedFields,
    listed: Listed,
) -> (Store<K>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |object: &mut K| {
            if managed_fields == ManagedFields::Drop {
                object.meta_mut().managed_fields = None;
            }
        })
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                listed.done();
            }
        });
    (store, stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_is_awaited_until_every_watch_has_listed() {
        let readiness = Readiness::default();
        assert!(readiness.is_ready(), "nothing to wait for");
        let (a, b) = (readiness.register("a"), readiness.register("b"));
        let waiting = tokio::spawn({
            let readiness = readiness.clone();
            async move { readiness.ready().await }
        });
        a.done();
        a.done();
        assert_eq!(readiness.pending(), ["b"]);
        assert!(!readiness.is_ready());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        b.done();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting).await.expect("woken").unwrap();
        assert!(readiness.is_ready());
    }
}
