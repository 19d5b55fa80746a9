//! Watch caches for both processes: a reflector that drops what is never read, a compact cache
//! for the many small children of thousands of projects, and readiness that is awaited rather
//! than polled. Readiness is read from the watch events themselves (a store's own
//! `wait_until_ready` wakes only the last task that polled it).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::error;

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
    pub(crate) fn done(&self) {
        self.readiness.pending.send_if_modified(|pending| pending.remove(self.name));
    }
}

/// Pacing for a request either process needs before it can start, retried while the API server
/// refuses it: installed in one `helm install` with its RBAC, a process can start before the API
/// server's authorizer has seen its bindings, and a 403 then means "not yet". Quick at first,
/// then a try (and the caller's warning) every 10 s.
pub struct StartRetry {
    next: Duration,
}

impl Default for StartRetry {
    fn default() -> Self {
        Self { next: Duration::from_millis(250) }
    }
}

impl StartRetry {
    /// The wait before the next try, doubled for the one after.
    pub fn wait(&mut self) -> tokio::time::Sleep {
        let wait = self.next;
        self.next = (wait * 2).min(Duration::from_secs(10));
        tokio::time::sleep(wait)
    }

    /// How long the next `wait` will be, for the caller's warning.
    pub fn next(&self) -> Duration {
        self.next
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
        })
        .then(yield_when_due);
    (store, stream)
}

/// A cache that holds each object as its JSON rather than as its typed form, compressed against
/// the first object it cached. Kubernetes' types give every absent optional field its place in
/// memory (a `Container` is over a kilobyte before it holds anything), so the JSON of a
/// StatefulSet is a fraction of its typed size; and the children of a kind that an operator
/// makes differ only in names, uids and tokens, so with one of them as the compressor's
/// dictionary each other is mostly references into it. A read decodes the one object asked for,
/// in microseconds. For caches of thousands of objects that are read once per reconcile.
pub struct Compact<K: Resource<DynamicType = ()>> {
    objects: Arc<RwLock<Encoded>>,
    /// The dictionary every entry is compressed against: the first object cached, as JSON. Never
    /// replaced, since the entries need it to decode.
    dictionary: Arc<OnceLock<Box<[u8]>>>,
    kind: PhantomData<fn() -> K>,
}

/// Objects as their compressed JSON, by `namespace/name` (or `name`).
type Encoded = HashMap<Box<str>, Box<[u8]>>;

impl<K: Resource<DynamicType = ()>> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self { objects: self.objects.clone(), dictionary: self.dictionary.clone(), kind: PhantomData }
    }
}

impl<K> Compact<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    fn new() -> Self {
        Self { objects: Arc::default(), dictionary: Arc::default(), kind: PhantomData }
    }

    /// The cached object `key` names, decoded.
    pub fn get(&self, key: &ObjectRef<K>) -> Option<Arc<K>> {
        let name = Self::key_of(key.namespace.as_deref(), &key.name);
        let objects = self.objects.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let compressed = objects.get(&name)?;
        let dictionary = self.dictionary.get().map_or(&[][..], |d| d);
        let decoded = lz4_flex::block::decompress_size_prepended_with_dict(compressed, dictionary)
            .map_err(|error| error.to_string())
            .and_then(|json| serde_json::from_slice(&json).map_err(|error| error.to_string()));
        match decoded {
            Ok(object) => Some(Arc::new(object)),
            // Cannot happen for what `encode` wrote; a miss makes the caller read or re-apply.
            Err(error) => {
                error!(object = %key, %error, "a cached object does not decode");
                None
            }
        }
    }

    /// Bytes held for the objects themselves (compressed) and the dictionary.
    pub fn bytes(&self) -> usize {
        let objects = self.objects.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dictionary = self.dictionary.get().map_or(0, |d| d.len());
        dictionary + objects.values().map(|compressed| compressed.len()).sum::<usize>()
    }

    fn key(object: &K) -> Box<str> {
        let meta = object.meta();
        Self::key_of(meta.namespace.as_deref(), meta.name.as_deref().unwrap_or_default())
    }

    /// `namespace/name`, or `name` for what has no namespace.
    fn key_of(namespace: Option<&str>, name: &str) -> Box<str> {
        match namespace {
            Some(namespace) => format!("{namespace}/{name}").into(),
            None => name.into(),
        }
    }

    fn encode(&self, object: &K) -> Box<[u8]> {
        let json = serde_json::to_vec(object).expect("Kubernetes objects serialise");
        let dictionary = self.dictionary.get_or_init(|| json.clone().into_boxed_slice());
        lz4_flex::block::compress_prepend_size_with_dict(&json, dictionary).into_boxed_slice()
    }
}

/// Applies watch events to a [`Compact`] cache, as a reflector's writer does: the initial list is
/// gathered aside and replaces the cache whole when complete, so a relist drops what is gone.
struct CompactWriter<K: Resource<DynamicType = ()>> {
    cache: Compact<K>,
    relisting: Option<Encoded>,
}

impl<K> CompactWriter<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    fn apply(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                if let Some(relisting) = self.relisting.as_mut() {
                    relisting.insert(Compact::key(object), self.cache.encode(object));
                }
            }
            watcher::Event::InitDone => {
                if let Some(mut listed) = self.relisting.take() {
                    listed.shrink_to_fit();
                    *self.cache.objects.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = listed;
                }
            }
            watcher::Event::Apply(object) => {
                let compressed = self.cache.encode(object);
                self.cache
                    .objects
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(Compact::key(object), compressed);
            }
            watcher::Event::Delete(object) => {
                self.cache
                    .objects
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&Compact::key(object));
            }
        }
    }
}

/// [`reflector`] into a [`Compact`] cache, without managed fields, and with `prune` removing
/// what the reader never looks at before the object is cached or passed on.
pub fn compact_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    prune: fn(&mut K),
    listed: Listed,
) -> (Compact<K>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let cache = Compact::new();
    let mut writer = CompactWriter { cache: cache.clone(), relisting: None };
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |object: &mut K| {
            object.meta_mut().managed_fields = None;
            prune(object);
        })
        .inspect(move |event| {
            if let Ok(event) = event {
                writer.apply(event);
                if let watcher::Event::InitDone = event {
                    listed.done();
                }
            }
        })
        .then(yield_when_due);
    (cache, stream)
}

/// Passes `event` on, first yielding to the runtime if this task has used its time slice. A
/// backlog of events is always ready, and the channels they come through do not count towards
/// tokio's budget: without this, one poll could apply thousands of them while nothing else in the
/// task (or on its thread) runs.
async fn yield_when_due<T>(event: T) -> T {
    tokio::task::coop::consume_budget().await;
    event
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

    fn config_map(name: &str, value: &str) -> k8s_openapi::api::core::v1::ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "ns", "labels": { "app": "x" } },
            "data": { "value": value },
        }))
        .unwrap()
    }

    #[test]
    fn a_compact_cache_follows_the_watch_and_returns_objects_as_they_were() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let cache = Compact::<ConfigMap>::new();
        let mut writer = CompactWriter { cache: cache.clone(), relisting: None };
        let key = |name: &str| ObjectRef::<ConfigMap>::new(name).within("ns");
        let (a, b, c) = (config_map("a", "1"), config_map("b", "2"), config_map("c", "3"));

        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(a.clone()));
        writer.apply(&watcher::Event::InitApply(b.clone()));
        assert!(cache.get(&key("a")).is_none(), "an initial list is not visible until it is complete");
        writer.apply(&watcher::Event::InitDone);
        assert_eq!(cache.get(&key("a")).as_deref(), Some(&a));
        assert_eq!(cache.get(&key("b")).as_deref(), Some(&b));
        assert!(cache.get(&ObjectRef::new("a").within("other")).is_none(), "keys carry the namespace");

        let changed = config_map("a", "changed");
        writer.apply(&watcher::Event::Apply(changed.clone()));
        writer.apply(&watcher::Event::Delete(b.clone()));
        assert_eq!(cache.get(&key("a")).as_deref(), Some(&changed));
        assert!(cache.get(&key("b")).is_none());

        // A relist replaces the cache whole: what it no longer lists is gone.
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(c.clone()));
        writer.apply(&watcher::Event::InitDone);
        assert!(cache.get(&key("a")).is_none());
        assert_eq!(cache.get(&key("c")).as_deref(), Some(&c));
    }

    /// A different 64-bit value for every `name` and `salt`, as a uid or hash is.
    fn digest(name: &str, salt: u8) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one((name, salt))
    }

    /// A project's StatefulSet as the API server would return it: its uid and applied hash differ
    /// from every sibling's.
    fn stateful_set(name: &str) -> k8s_openapi::api::apps::v1::StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "namespace": "org-acme",
                "uid": format!("{:016x}-{:016x}", digest(name, 1), digest(name, 2)),
                "labels": { "app.kubernetes.io/managed-by": "ooda", "ooda.run/project": name },
                "annotations": { "ooda.run/applied-hash": format!("{:016x}", digest(name, 3)) },
            },
            "spec": {
                "replicas": 1,
                "serviceName": name,
                "selector": { "matchLabels": { "ooda.run/project": name } },
                "template": {
                    "metadata": { "labels": { "ooda.run/project": name } },
                    "spec": {
                        "runtimeClassName": "gvisor",
                        "initContainers": [{ "name": "loader", "image": "ghcr.io/ooda/loader:1" }],
                        "containers": [{
                            "name": "workspace",
                            "image": "ghcr.io/ooda/workspace:1",
                            "ports": [{ "name": "web", "containerPort": 3000 }],
                            "resources": { "limits": { "cpu": "100m", "memory": "128Mi" } },
                            "volumeMounts": [{ "name": "workspace", "mountPath": "/workspace" }],
                        }],
                        "volumes": [{ "name": "workspace", "persistentVolumeClaim": { "claimName": format!("{name}-workspace") } }],
                    },
                },
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_compact_cache_holds_a_fraction_of_the_typed_size_of_a_stateful_set() {
        use k8s_openapi::api::apps::v1::StatefulSet;
        let cache = Compact::new();
        let mut writer = CompactWriter { cache: cache.clone(), relisting: None };
        writer.apply(&watcher::Event::Apply(stateful_set("web")));
        let held = cache.bytes();
        let typed = std::mem::size_of::<StatefulSet>()
            + std::mem::size_of::<k8s_openapi::api::core::v1::PodSpec>()
            + 2 * std::mem::size_of::<k8s_openapi::api::core::v1::Container>();
        assert!(held * 4 < typed, "{held} bytes held against at least {typed} bytes typed");
    }

    #[test]
    fn siblings_of_one_kind_cost_a_fraction_of_their_json_and_decode_as_they_were() {
        let cache = Compact::new();
        let mut writer = CompactWriter { cache: cache.clone(), relisting: None };
        let sets: Vec<_> = (0..200).map(|i| stateful_set(&format!("project-{i}"))).collect();
        for set in &sets {
            writer.apply(&watcher::Event::Apply(set.clone()));
        }
        let json: usize = sets.iter().map(|set| serde_json::to_vec(set).unwrap().len()).sum();
        assert!(cache.bytes() * 4 < json, "{} bytes held for {json} bytes of JSON", cache.bytes());
        for set in &sets {
            let key = ObjectRef::from_obj(set);
            assert_eq!(cache.get(&key).as_deref(), Some(set));
        }
    }
}
