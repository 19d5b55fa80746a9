//! Writing children: server-side apply with one field manager, skipped when the live object
//! already matches, so a converged project costs no API writes.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::debug;

use sha2::{Digest, Sha256};

use super::context::Context;
use super::error::{Error, Result};

/// The one field manager every operator write uses.
pub const FIELD_MANAGER: &str = "ooda-operator";

/// Annotation holding a hash of what the operator last applied, so a field it stopped setting
/// (which a live object would still show) is noticed and removed by the next apply.
pub const APPLIED_HASH: &str = "ooda.run/applied-hash";

/// Stamps `object` with the hash of its desired content (excluding Secret data, which must not
/// leak into an annotation in any form). SHA-256, stable across Rust releases, so a new
/// toolchain does not re-apply every child once.
pub fn stamp<K: Resource + Serialize>(object: &mut K) {
    let mut value = serde_json::to_value(&*object).expect("Kubernetes objects serialise");
    if let Some(map) = value.as_object_mut() {
        map.remove("data");
        map.remove("stringData");
    }
    let digest = Sha256::digest(value.to_string().as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    object.annotations_mut().insert(APPLIED_HASH.to_owned(), hex);
}

/// Applies `desired` (already [`stamp`]ed) unless `live` already carries the same hash and every
/// field `desired` sets — the latter catches someone editing a field the operator owns.
/// Returns whether a write was made.
pub async fn apply<K>(api: &Api<K>, desired: &K, live: Option<&K>) -> Result<bool, kube::Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    if let Some(live) = live {
        let same_hash = live.annotations().get(APPLIED_HASH) == desired.annotations().get(APPLIED_HASH);
        let drift = first_difference(
            &serde_json::to_value(desired).expect("serialise"),
            &serde_json::to_value(live).expect("serialise"),
            String::new(),
        );
        match drift {
            None if same_hash => return Ok(false),
            None => debug!(object = %desired.name_any(), "desired state changed; applying"),
            Some(path) => debug!(object = %desired.name_any(), %path, "live object differs; applying"),
        }
    }
    api.patch(&desired.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(desired)).await?;
    Ok(true)
}

/// An `Api` for namespaced objects of any kind in `namespace`.
pub fn in_namespace<K>(ctx: &Context, namespace: &str) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(ctx.client.clone(), namespace)
}

/// [`apply`], counting the write by kind.
pub async fn apply_child<K>(ctx: &Context, api: &Api<K>, desired: &K, live: Option<&K>) -> Result<()>
where
    K: Resource + k8s_openapi::Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let written = apply(api, desired, live).await.map_err(|source| {
        let name = match desired.namespace() {
            Some(namespace) => format!("{namespace}/{}", desired.name_any()),
            None => desired.name_any(),
        };
        Error::Apply { kind, name, source }
    })?;
    if written {
        ctx.metrics.wrote(kind);
    }
    Ok(())
}

/// Writes `status` to `object`'s status subresource (server-side apply, the operator's field
/// manager) unless it equals `old` or was the last status written for this object — a reconcile
/// triggered before our own write reached the cache recomputes it from a stale `old`.
/// Returns whether it wrote; `kind` labels the write in metrics.
pub async fn apply_status<K, S>(
    ctx: &Context,
    api: &Api<K>,
    object: &K,
    old: &S,
    status: &S,
    kind: &'static str,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    S: Serialize + PartialEq,
{
    let uid = object.meta().uid.clone().unwrap_or_default();
    if status == old || !ctx.claim_status_write(&uid, status) {
        return Ok(false);
    }
    let patch = serde_json::json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    if let Err(error) =
        api.patch_status(&object.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
    {
        ctx.forget_status(&uid);
        return Err(Error::Api {
            action: format!("writing the status of {kind} {}", object.name_any()),
            source: error,
        });
    }
    ctx.metrics.wrote(kind);
    Ok(true)
}

/// The path of the first field of `desired` that `live` lacks or holds differently, if any.
/// Lists must have the same length (entries compared in order); maps may have extra keys
/// (server defaults).
pub fn first_difference(desired: &Value, live: &Value, path: String) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(k, v)| match l.get(k) {
            Some(lv) => first_difference(v, lv, format!("{path}.{k}")),
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => {
            d.iter().zip(l).enumerate().find_map(|(i, (dv, lv))| first_difference(dv, lv, format!("{path}[{i}]")))
        }
        _ if desired == live => None,
        _ => Some(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_applied_hash_is_a_fixed_function_of_the_content_without_secret_data() {
        let secret = |token: &[u8]| {
            let mut secret: k8s_openapi::api::core::v1::Secret =
                serde_json::from_value(json!({ "metadata": { "name": "shop-preview", "namespace": "org-acme" } }))
                    .unwrap();
            secret.data = Some([("token".to_owned(), k8s_openapi::ByteString(token.to_vec()))].into());
            stamp(&mut secret);
            secret.annotations()[APPLIED_HASH].clone()
        };
        // SHA-256 of the JSON without `data`: the same on every toolchain, never derived from the token.
        assert_eq!(secret(b"one"), secret(b"two"));
        let expected = Sha256::digest(
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"shop-preview","namespace":"org-acme"}}"#,
        );
        let expected: String = expected.iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(secret(b"one"), expected);
    }

    #[test]
    fn server_defaults_do_not_count_as_drift() {
        let desired = json!({ "spec": { "ports": [{ "name": "web", "port": 3000 }] } });
        let live =
            json!({ "spec": { "ports": [{ "name": "web", "port": 3000, "protocol": "TCP" }], "clusterIP": "None" } });
        assert_eq!(first_difference(&desired, &live, String::new()), None);
    }

    #[test]
    fn changed_and_removed_entries_count_as_drift() {
        let desired = json!({ "spec": { "replicas": 0, "ports": [{ "port": 3000 }] } });
        let diff = |live: Value| first_difference(&desired, &live, String::new());
        assert_eq!(
            diff(json!({ "spec": { "replicas": 1, "ports": [{ "port": 3000 }] } })).as_deref(),
            Some(".spec.replicas")
        );
        assert_eq!(
            diff(json!({ "spec": { "replicas": 0, "ports": [{ "port": 3000 }, { "port": 4000 }] } })).as_deref(),
            Some(".spec.ports")
        );
        // Keys are compared in order; `ports` comes first.
        assert_eq!(diff(json!({ "spec": {} })).as_deref(), Some(".spec.ports"));
    }
}
