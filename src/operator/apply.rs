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

use super::context::{Context, UntilCached};
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

/// [`apply`], counting the write by kind, unless this process applied exactly `desired` already
/// and its cache has not shown that yet (see [`Applied`]). Returns whether a write was made.
pub async fn apply_child<K>(ctx: &Context, api: &Api<K>, desired: &K, live: Option<&K>) -> Result<bool>
where
    K: Resource + k8s_openapi::Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let name = child_key(desired);
    let desired_hash = desired.annotations().get(APPLIED_HASH).map(String::as_str).unwrap_or_default();
    let live_hash = live.map(|live| live.annotations().get(APPLIED_HASH).map(String::as_str).unwrap_or_default());
    let written = match ctx.applied.ahead_of_cache(kind, &name, live_hash) {
        Some(ours) if ours == desired_hash => Ok(false),
        Some(_) => {
            debug!(object = %name, "the cache lags behind this process's last apply; applying");
            apply(api, desired, None).await
        }
        // Applied by this process and not yet delivered by the watch (a reconcile that another
        // child's event triggers right after creating it): a read, not a second write, says
        // whether it is there as applied.
        None if live.is_none() && ctx.applied.awaits_cache(kind, &name) => {
            debug!(object = %name, "applied but not cached yet; reading it");
            async { apply(api, desired, api.get_opt(&desired.name_any()).await?.as_ref()).await }.await
        }
        None => apply(api, desired, live).await,
    }
    .map_err(|source| Error::Apply { kind, name: name.clone(), source })?;
    if written {
        ctx.applied.remember(kind, &name, desired_hash);
        ctx.metrics.wrote(kind);
    }
    Ok(written)
}

/// The applied hash this process last wrote to each child, until its cache shows it. A reconcile
/// that runs before the watch delivers a write compares against the object as it was before:
/// it would apply the same again, or, worse, skip a change back to what the stale object shows
/// (a wake just after a hibernation: the cache still shows one replica while the API server
/// holds zero).
#[derive(Default)]
pub struct Applied(UntilCached<ChildKey, String>);

/// A child by kind and `namespace/name`.
type ChildKey = (&'static str, String);

/// `namespace/name`, or `name` for a cluster-scoped object.
fn child_key<K: Resource>(object: &K) -> String {
    match object.namespace() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

impl Applied {
    /// The hash last applied to `kind` `name` while the cache shows an older one (`live_hash`);
    /// `None` once the cache has caught up, or when the cache holds no such object (it is then
    /// created, as if for the first time).
    fn ahead_of_cache(&self, kind: &'static str, name: &str, live_hash: Option<&str>) -> Option<String> {
        let live_hash = live_hash?;
        self.0.pending(&(kind, name.to_owned()), |ours| ours == live_hash)
    }

    /// Whether the cache shows `live` as this process last applied it (or as someone else left
    /// it, if this process has not applied it).
    pub fn shows_last_apply<K: Resource + k8s_openapi::Resource>(&self, live: &K) -> bool {
        let live_hash = live.annotations().get(APPLIED_HASH).map(String::as_str).unwrap_or_default();
        self.ahead_of_cache(<K as k8s_openapi::Resource>::KIND, &child_key(live), Some(live_hash)).is_none()
    }

    /// Whether this process applied `kind` `name` and its cache has not shown that yet.
    fn awaits_cache(&self, kind: &'static str, name: &str) -> bool {
        self.0.contains(&(kind, name.to_owned()))
    }

    fn remember(&self, kind: &'static str, name: &str, hash: &str) {
        self.0.remember((kind, name.to_owned()), hash.to_owned());
    }
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
    if status == old || !ctx.written_status.claim(&uid, status) {
        return Ok(false);
    }
    let patch = serde_json::json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    if let Err(error) =
        api.patch_status(&object.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
    {
        ctx.written_status.forget(&uid);
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
        (Value::String(d), Value::String(l)) if holds_quantities(&path) && same_quantity(d, l) => None,
        _ => Some(path),
    }
}

/// Whether the field at `path` is an entry of a map of quantities (a quota's `hard`, a
/// container's `requests` and `limits`, a LimitRange's bounds), which the API server writes back
/// in canonical form.
fn holds_quantities(path: &str) -> bool {
    let Some((map, _key)) = path.rsplit_once('.') else { return false };
    let map = map.rsplit('.').next().unwrap_or_default();
    ["hard", "requests", "limits", "default", "defaultRequest", "max", "min", "maxLimitRequestRatio"].contains(&map)
}

/// Whether two Kubernetes quantities denote the same amount: `1000` and `1k`, `0.5` and `500m`,
/// `1024Mi` and `1Gi`. Anything that does not parse is compared as text (so, as different).
fn same_quantity(a: &str, b: &str) -> bool {
    matches!((Amount::parse(a), Amount::parse(b)), (Some(a), Some(b)) if a == b)
}

/// A quantity as `digits × 10^exponent`, without trailing zeros in `digits`: one form per amount.
#[derive(Debug, PartialEq, Eq)]
struct Amount {
    negative: bool,
    digits: u128,
    exponent: i32,
}

impl Amount {
    fn parse(text: &str) -> Option<Self> {
        let (negative, text) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
        let (number, suffix) = text.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let mut digits: u128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            digits = digits.checked_mul(10)?.checked_add(u128::from(digit - b'0'))?;
        }
        let mut exponent = -i32::try_from(fraction.len()).ok()?;
        let binary = |power: u32| 1u128.checked_shl(power);
        match suffix {
            "" => {}
            "n" => exponent -= 9,
            "u" => exponent -= 6,
            "m" => exponent -= 3,
            "k" => exponent += 3,
            "M" => exponent += 6,
            "G" => exponent += 9,
            "T" => exponent += 12,
            "P" => exponent += 15,
            "E" => exponent += 18,
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let power = 10 * (1 + ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].iter().position(|s| *s == suffix)? as u32);
                digits = digits.checked_mul(binary(power)?)?;
            }
            exponential => {
                let power = exponential.strip_prefix(['e', 'E'])?;
                exponent = exponent.checked_add(power.parse::<i32>().ok()?)?;
            }
        }
        while digits != 0 && digits.is_multiple_of(10) {
            digits /= 10;
            exponent += 1;
        }
        if digits == 0 {
            exponent = 0;
        }
        Some(Self { negative: negative && digits != 0, digits, exponent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_last_apply_counts_until_the_cache_shows_it() {
        let applied = Applied::default();
        assert_eq!(applied.ahead_of_cache("StatefulSet", "org-acme/shop", Some("one")), None, "nothing applied");
        applied.remember("StatefulSet", "org-acme/shop", "zero");
        // Hibernated (zero replicas) and woken before the cache saw the hibernation.
        assert_eq!(applied.ahead_of_cache("StatefulSet", "org-acme/shop", Some("one")).as_deref(), Some("zero"));
        assert_eq!(applied.ahead_of_cache("Service", "org-acme/shop", Some("one")), None, "by kind");
        assert_eq!(applied.ahead_of_cache("StatefulSet", "org-acme/blog", Some("one")), None, "by name");
        assert_eq!(applied.ahead_of_cache("StatefulSet", "org-acme/shop", None), None, "not cached: created");
        assert!(applied.awaits_cache("StatefulSet", "org-acme/shop"), "created, not yet cached: read before writing");
        // Caught up: forgotten, and the cache is the truth from then on (an edit by hand shows there).
        assert_eq!(applied.ahead_of_cache("StatefulSet", "org-acme/shop", Some("zero")), None);
        assert_eq!(applied.ahead_of_cache("StatefulSet", "org-acme/shop", Some("one")), None);
        assert!(!applied.awaits_cache("StatefulSet", "org-acme/shop"));
    }

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
    fn quantities_the_api_server_rewrote_in_canonical_form_are_not_drift() {
        for (desired, live) in [
            ("1000", "1k"),
            ("0.5", "500m"),
            ("1024Mi", "1Gi"),
            ("2000Gi", "2000Gi"),
            ("1e3", "1k"),
            ("0.1", "100m"),
            ("1.5Gi", "1536Mi"),
            ("0", "0"),
            ("+2", "2"),
        ] {
            assert!(same_quantity(desired, live), "{desired} = {live}");
        }
        for (desired, live) in
            [("1", "1k"), ("1Gi", "1G"), ("100m", "1"), ("-1", "1"), ("1x", "1x"), ("", ""), ("k", "k")]
        {
            assert!(!same_quantity(desired, live), "{desired} ≠ {live}");
        }
        let desired = json!({ "spec": { "hard": { "cpu": "1000", "memory": "2048Mi" }, "replicas": "1000" } });
        let live = json!({ "spec": { "hard": { "cpu": "1k", "memory": "2Gi" }, "replicas": "1000" } });
        assert_eq!(first_difference(&desired, &live, String::new()), None);
        let changed = json!({ "spec": { "hard": { "cpu": "2k", "memory": "2Gi" }, "replicas": "1000" } });
        assert_eq!(first_difference(&desired, &changed, String::new()).as_deref(), Some(".spec.hard.cpu"));
        // Only maps of quantities: other strings are compared as written.
        let elsewhere = json!({ "spec": { "hard": { "cpu": "1000", "memory": "2048Mi" }, "replicas": "1k" } });
        assert_eq!(first_difference(&desired, &elsewhere, String::new()).as_deref(), Some(".spec.replicas"));
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
