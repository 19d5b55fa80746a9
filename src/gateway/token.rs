//! Session tokens: compact JWS (JWT) signed with Ed25519, by `jsonwebtoken` (on ring).
//!
//! A session token here has exactly one valid shape. Everything a general library would negotiate
//! (the algorithm, where the key comes from, critical extensions) is fixed by a thin policy around
//! the library, so none of it can be steered by the token: the classic `alg: none`,
//! HMAC-with-the-public-key and embedded-key attacks have nothing to bite. The tests below are the
//! acceptance suite for that policy, whatever does the decoding.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use ring::error::KeyRejected;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const ALGORITHM: &str = "EdDSA";
pub const TOKEN_TYPE: &str = "JWT";
/// Checked before any decoding, so an attacker cannot make the verifier allocate or parse much.
/// Well above a session token with a few dozen memberships, below common header size limits.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Marks the Secret as ours, so a Secret of another kind under the expected name is refused, not misread.
pub const SECRET_TYPE: &str = "ooda.run/signing-keys";
const CURRENT_ENTRY: &str = "current.pk8";
const PREVIOUS_ENTRY: &str = "previous.pk8";
/// When the previous key stopped signing (Unix seconds): it verifies for one session lifetime
/// after that, and never again.
const ROTATED_AT_ENTRY: &str = "previous.rotated-at";
/// Headers that would let the token name its own key or demand extensions we do not implement.
/// A session token never needs them, so their presence means the token is not one of ours.
const REFUSED_HEADERS: [&str; 5] = ["jku", "jwk", "x5u", "x5c", "crit"];

/// One organisation membership as carried in the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub org: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// Not before: honoured when present (ooda's own tokens do not need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    /// The account credential the session was opened with (see `crate::accounts`).
    #[serde(default)]
    pub cred: String,
    pub orgs: Vec<Membership>,
}

/// An Ed25519 key pair with the PKCS#8 document it came from, which is what gets persisted.
/// Shared rather than copied so a rotation can keep the old key without re-parsing it.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    public_key: Arc<[u8]>,
    pkcs8: Arc<[u8]>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Only the kid: the private key must never reach a log line.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn generate() -> SigningKey {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("the operating system provides randomness");
        SigningKey::from_pkcs8(pkcs8.as_ref()).expect("ring parses the PKCS#8 document it generated")
    }

    /// Only PKCS#8 v2 (with the public key) is accepted, so ring can check that the halves match.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, KeyError> {
        SigningKey::parse(der).map_err(KeyError::Rejected)
    }

    fn parse(der: &[u8]) -> Result<SigningKey, KeyRejected> {
        // ring checks the document here, and that its public half matches its private half.
        let pair = Ed25519KeyPair::from_pkcs8(der)?;
        let public_key: Arc<[u8]> = pair.public_key().as_ref().into();
        let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&public_key))
            .expect("a base64url Ed25519 public key is a decoding key");
        Ok(SigningKey {
            kid: kid_of(&public_key),
            encoding: EncodingKey::from_ed_der(der),
            decoding,
            public_key,
            pkcs8: der.into(),
        })
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn public_key(&self) -> &[u8] {
        &self.public_key
    }
}

/// Derived from the public key so the same key always has the same kid, across restarts and
/// replicas, without storing it.
fn kid_of(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    digest.as_ref().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The current key signs; the previous key (after a rotation) still verifies the sessions it
/// signed, until they have all expired.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: SigningKey,
    previous: Option<Retired>,
}

/// A key that no longer signs, and since when (Unix seconds).
#[derive(Debug, Clone)]
struct Retired {
    key: SigningKey,
    at: i64,
}

/// What a token must have been issued for. The leeway absorbs clock skew between replicas.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub leeway: Duration,
    /// The longest session: a retired key verifies for this long after its rotation.
    pub session_ttl: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a well-formed session token")]
    Malformed,
    #[error("the token is not signed with {ALGORITHM}")]
    Algorithm,
    #[error("the token's type is not {TOKEN_TYPE}")]
    Type,
    #[error("the token was signed by an unknown or retired key")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued in the future")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    Issuer,
    #[error("the token is meant for another audience")]
    Audience,
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLarge,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 private key in PKCS#8 v2 form: {0}")]
    Rejected(KeyRejected),
    #[error("the signing-key Secret's {entry} is not an Ed25519 private key in PKCS#8 v2 form: {reason}")]
    CorruptEntry { entry: &'static str, reason: KeyRejected },
    #[error("the signing-key Secret has type {0:?}, not {SECRET_TYPE:?}")]
    SecretType(Option<String>),
    #[error("the signing-key Secret has no {CURRENT_ENTRY}")]
    NoCurrentKey,
}

impl KeyRing {
    /// A ring of one key.
    pub fn new(current: SigningKey) -> KeyRing {
        KeyRing { current, previous: None }
    }

    pub fn current_kid(&self) -> &str {
        self.current.kid()
    }

    /// New current key; the old current becomes previous, and verifies the sessions it signed
    /// for one session lifetime after `now`; the old previous is dropped. Rotating at least one
    /// session lifetime apart never signs anyone out.
    pub fn rotated(&self, now: Timestamp) -> KeyRing {
        KeyRing {
            current: SigningKey::generate(),
            previous: Some(Retired { key: self.current.clone(), at: now.as_second() }),
        }
    }

    /// New current key and no other: every session signed before ends at once (a key that may
    /// have leaked).
    pub fn replaced(&self) -> KeyRing {
        KeyRing::new(SigningKey::generate())
    }

    /// Keep `claims.orgs` short: [`KeyRing::verify`] refuses tokens over [`MAX_TOKEN_LEN`].
    pub fn issue(&self, claims: &Claims) -> String {
        let header = Header { kid: Some(self.current.kid.clone()), ..Header::new(Algorithm::EdDSA) };
        jsonwebtoken::encode(&header, claims, &self.current.encoding)
            .expect("an Ed25519 key ring itself parsed signs, and claims are plain strings and integers")
    }

    /// jsonwebtoken checks the algorithm against the key's family, then the signature, and only
    /// then parses the claims and checks `iss` and `aud`. Around it, what it does not check: the
    /// size (before anything is decoded), the header's `typ`, a known and unretired `kid`, and no
    /// `jku`/`jwk`/`x5u`/`x5c`/`crit`; and after it, `exp`, `iat` and `nbf` against `now`.
    pub fn verify(&self, token: &str, expect: &Expectations, now: Timestamp) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let header_b64 = token.split('.').next().unwrap_or_default();
        let header: Map<String, Value> =
            serde_json::from_slice(&decode_segment(header_b64)?).map_err(|_| TokenError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some(ALGORITHM) {
            return Err(TokenError::Algorithm);
        }
        if header.get("typ").and_then(Value::as_str) != Some(TOKEN_TYPE) {
            return Err(TokenError::Type);
        }
        let kid = header.get("kid").and_then(Value::as_str).ok_or(TokenError::UnknownKey)?;
        let leeway = i64::try_from(expect.leeway.as_secs()).unwrap_or(i64::MAX);
        let ttl = i64::try_from(expect.session_ttl.as_secs()).unwrap_or(i64::MAX);
        let now = now.as_second();
        let key = match &self.previous {
            _ if self.current.kid == kid => &self.current,
            Some(retired) if retired.key.kid == kid && now <= retired.at.saturating_add(ttl).saturating_add(leeway) => {
                &retired.key
            }
            _ => return Err(TokenError::UnknownKey),
        };
        if REFUSED_HEADERS.iter().any(|name| header.contains_key(*name)) {
            return Err(TokenError::Malformed);
        }

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[expect.issuer]);
        validation.set_audience(&[expect.audience]);
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        // Times are checked below against the clock the caller gives.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidAudience => TokenError::Audience,
                _ => TokenError::Malformed,
            })?
            .claims;
        if claims.exp <= now.saturating_sub(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.iat > now.saturating_add(leeway) || claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// RFC 7517 JWK Set of the current and previous keys, so other services can verify
    /// sessions without holding any private key.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys()
            .map(|key| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(key.public_key()),
                    "kid": key.kid,
                    "alg": ALGORITHM,
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Persisted as a Secret so every replica signs with the same key and a restart keeps
    /// sessions valid. Only name and namespace are set; the caller adds labels.
    pub fn to_secret(&self, name: &str, namespace: &str) -> Secret {
        let mut data = BTreeMap::from([(CURRENT_ENTRY.to_owned(), ByteString(self.current.pkcs8().to_vec()))]);
        if let Some(previous) = &self.previous {
            data.insert(PREVIOUS_ENTRY.to_owned(), ByteString(previous.key.pkcs8().to_vec()));
            data.insert(ROTATED_AT_ENTRY.to_owned(), ByteString(previous.at.to_string().into_bytes()));
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.to_owned()),
            data: Some(data),
            ..Default::default()
        }
    }

    pub fn from_secret(secret: &Secret) -> Result<KeyRing, KeyError> {
        if secret.type_.as_deref() != Some(SECRET_TYPE) {
            return Err(KeyError::SecretType(secret.type_.clone()));
        }
        let entry = |entry: &'static str| {
            let der = secret.data.as_ref().and_then(|data| data.get(entry))?;
            Some(SigningKey::parse(&der.0).map_err(|reason| KeyError::CorruptEntry { entry, reason }))
        };
        let current = entry(CURRENT_ENTRY).ok_or(KeyError::NoCurrentKey)??;
        // A previous key without its rotation time cannot be bounded: it is not used.
        let rotated_at = secret.data.as_ref().and_then(|data| data.get(ROTATED_AT_ENTRY));
        let rotated_at = rotated_at.and_then(|at| std::str::from_utf8(&at.0).ok()?.parse::<i64>().ok());
        let previous = match (entry(PREVIOUS_ENTRY).transpose()?, rotated_at) {
            (Some(key), Some(at)) => Some(Retired { key, at }),
            _ => None,
        };
        Ok(KeyRing { current, previous })
    }

    fn keys(&self) -> impl Iterator<Item = &SigningKey> {
        std::iter::once(&self.current).chain(self.previous.as_ref().map(|retired| &retired.key))
    }
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use ring::hmac;

    use super::*;

    const NOW: i64 = 1_700_000_000;
    const ISSUER: &str = "https://ooda.example";
    const AUDIENCE: &str = "ooda-gateway";
    const TTL: Duration = Duration::from_secs(12 * 3600);

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    fn expect() -> Expectations<'static> {
        Expectations { issuer: ISSUER, audience: AUDIENCE, leeway: Duration::from_secs(60), session_ttl: TTL }
    }

    fn claims() -> Claims {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "alice@acme.example".into(),
            iat: NOW,
            exp: NOW + 3600,
            nbf: None,
            jti: "3q2-7wAAAAAAAAAAAAAAAA".into(),
            cred: "c1".into(),
            orgs: vec![Membership { org: "acme".into(), role: "admin".into() }],
        }
    }

    fn keyring() -> KeyRing {
        KeyRing::new(SigningKey::generate())
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Builds a token from any header and payload, signed however the test (or attacker) likes.
    fn forge(header: &Value, payload: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
        let signature = sign(input.as_bytes());
        format!("{input}.{}", b64(signature))
    }

    /// Signs with ring directly, not through the code under test.
    fn ed25519(key: &SigningKey) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
        |input| Ed25519KeyPair::from_pkcs8(key.pkcs8()).unwrap().sign(input).as_ref().to_vec()
    }

    fn header(kid: &str) -> Value {
        json!({ "alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": kid })
    }

    fn payload(claims: &Claims) -> Value {
        serde_json::to_value(claims).unwrap()
    }

    #[test]
    fn round_trip() {
        let keys = keyring();
        let claims = claims();
        let token = keys.issue(&claims);
        assert_eq!(keys.verify(&token, &expect(), now()), Ok(claims));

        let header_b64 = token.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).unwrap()).unwrap();
        assert_eq!(header, json!({ "alg": "EdDSA", "typ": "JWT", "kid": keys.current_kid() }));
    }

    #[test]
    fn forged_token_with_our_own_header_and_key_verifies() {
        // Guards the helpers: the attacks below fail for the reason they claim, not a helper bug.
        let keys = keyring();
        let claims = claims();
        let token = forge(&header(keys.current_kid()), &payload(&claims), ed25519(&keys.current));
        assert_eq!(keys.verify(&token, &expect(), now()), Ok(claims));
    }

    #[test]
    fn alg_none_with_empty_signature_is_refused() {
        let keys = keyring();
        let unsigned = json!({ "alg": "none", "typ": "JWT", "kid": keys.current_kid() });
        let token = forge(&unsigned, &payload(&claims()), |_| Vec::new());
        assert!(token.ends_with('.'));
        assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Algorithm));

        let without_kid = forge(&json!({ "alg": "none" }), &payload(&claims()), |_| Vec::new());
        assert_eq!(keys.verify(&without_kid, &expect(), now()), Err(TokenError::Algorithm));
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_refused() {
        let keys = keyring();
        let hs256 = json!({ "alg": "HS256", "typ": "JWT", "kid": keys.current_kid() });
        let mac_key = hmac::Key::new(hmac::HMAC_SHA256, keys.current.public_key());
        let token = forge(&hs256, &payload(&claims()), |input| hmac::sign(&mac_key, input).as_ref().to_vec());
        assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Algorithm));
    }

    #[test]
    fn es256_header_with_a_real_signature_is_refused() {
        let keys = keyring();
        let es256 = json!({ "alg": "ES256", "typ": "JWT", "kid": keys.current_kid() });
        let token = forge(&es256, &payload(&claims()), ed25519(&keys.current));
        assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Algorithm));
    }

    #[test]
    fn algorithm_must_match_exactly() {
        let keys = keyring();
        for alg in [json!("eddsa"), json!("Ed25519"), json!(["EdDSA"]), json!(null)] {
            let header = json!({ "alg": alg, "typ": "JWT", "kid": keys.current_kid() });
            let token = forge(&header, &payload(&claims()), ed25519(&keys.current));
            assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Algorithm), "alg {alg}");
        }
    }

    #[test]
    fn expiry_allows_the_leeway_and_no_more() {
        let keys = keyring();
        for (exp, want) in [
            (NOW - 61, Err(TokenError::Expired)),
            (NOW - 60, Err(TokenError::Expired)),
            (NOW - 59, Ok(())),
            (NOW + 1, Ok(())),
        ] {
            let token = keys.issue(&Claims { iat: NOW - 3600, exp, ..claims() });
            assert_eq!(keys.verify(&token, &expect(), now()).map(|_| ()), want, "exp = now {:+}", exp - NOW);
        }
        let no_leeway = Expectations { leeway: Duration::ZERO, ..expect() };
        let token = keys.issue(&Claims { exp: NOW, ..claims() });
        assert_eq!(keys.verify(&token, &no_leeway, now()), Err(TokenError::Expired));
    }

    #[test]
    fn issued_in_the_future_beyond_the_leeway_is_refused() {
        let keys = keyring();
        let ahead = keys.issue(&Claims { iat: NOW + 61, ..claims() });
        assert_eq!(keys.verify(&ahead, &expect(), now()), Err(TokenError::NotYetValid));
        let skewed = keys.issue(&Claims { iat: NOW + 60, ..claims() });
        assert!(keys.verify(&skewed, &expect(), now()).is_ok());
    }

    #[test]
    fn huge_leeway_does_not_overflow() {
        let keys = keyring();
        let token = keys.issue(&Claims { iat: i64::MAX, exp: NOW - 1_000_000_000, ..claims() });
        let forever = Expectations { leeway: Duration::MAX, ..expect() };
        assert!(keys.verify(&token, &forever, now()).is_ok());
    }

    #[test]
    fn wrong_audience_is_refused() {
        let keys = keyring();
        let token = keys.issue(&Claims { aud: "another-service".into(), ..claims() });
        assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Audience));
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let keys = keyring();
        let token = keys.issue(&Claims { iss: "https://evil.example".into(), ..claims() });
        assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Issuer));
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let keys = keyring();
        let token = keys.issue(&claims());
        let [header_b64, _, signature_b64] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
        let escalated = Claims {
            sub: "mallory@acme.example".into(),
            orgs: vec![Membership { org: "globex".into(), role: "admin".into() }],
            ..claims()
        };
        let tampered = format!("{header_b64}.{}.{signature_b64}", b64(serde_json::to_vec(&escalated).unwrap()));
        assert_eq!(keys.verify(&tampered, &expect(), now()), Err(TokenError::Signature));
    }

    #[test]
    fn tampered_signature_fails() {
        let keys = keyring();
        let token = keys.issue(&claims());
        let (input, signature_b64) = token.rsplit_once('.').unwrap();
        let mut signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();
        signature[0] ^= 1;
        let flipped = format!("{input}.{}", b64(&signature));
        assert_eq!(keys.verify(&flipped, &expect(), now()), Err(TokenError::Signature));
        let truncated = format!("{input}.{}", b64(&signature[..63]));
        assert_eq!(keys.verify(&truncated, &expect(), now()), Err(TokenError::Signature));
    }

    #[test]
    fn unknown_kid_is_refused() {
        let keys = keyring();
        let stranger = keyring();
        let token = stranger.issue(&claims());
        assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::UnknownKey));

        let no_kid = forge(&json!({ "alg": "EdDSA", "typ": "JWT" }), &payload(&claims()), ed25519(&keys.current));
        assert_eq!(keys.verify(&no_kid, &expect(), now()), Err(TokenError::UnknownKey));
    }

    #[test]
    fn our_kid_on_a_strangers_signature_fails_the_signature() {
        let keys = keyring();
        let stranger = SigningKey::generate();
        let token = forge(&header(keys.current_kid()), &payload(&claims()), ed25519(&stranger));
        assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Signature));
    }

    #[test]
    fn previous_key_verifies_until_rotated_out() {
        let first = keyring();
        let old_token = first.issue(&claims());

        let second = first.rotated(now());
        assert_ne!(second.current_kid(), first.current_kid());
        assert_eq!(second.previous.as_ref().map(|r| r.key.kid()), Some(first.current_kid()));
        assert!(second.verify(&old_token, &expect(), now()).is_ok());
        let new_token = second.issue(&claims());
        assert!(first.verify(&new_token, &expect(), now()).is_err());

        let third = second.rotated(now());
        assert_eq!(third.verify(&old_token, &expect(), now()), Err(TokenError::UnknownKey));
        assert!(third.verify(&new_token, &expect(), now()).is_ok());
    }

    #[test]
    fn a_retired_key_verifies_only_until_its_sessions_have_expired() {
        let first = keyring();
        let old_token = first.issue(&Claims { exp: NOW + TTL.as_secs() as i64, ..claims() });
        let second = first.rotated(now());
        let at = |seconds: i64| Timestamp::from_second(seconds).unwrap();
        let limit = NOW + TTL.as_secs() as i64 + 60;
        let far_future = Expectations { leeway: Duration::from_secs(60), ..expect() };
        // Still verifies at the end of its last session's lifetime (and leeway)…
        let long_lived = first.issue(&Claims { exp: limit + 3600, ..claims() });
        assert!(second.verify(&long_lived, &far_future, at(limit)).is_ok());
        // …and not a second after, whatever the token's own expiry says.
        assert_eq!(second.verify(&long_lived, &far_future, at(limit + 1)), Err(TokenError::UnknownKey));
        assert!(second.verify(&old_token, &expect(), now()).is_ok());
    }

    #[test]
    fn an_emergency_replacement_ends_every_earlier_session_at_once() {
        let first = keyring();
        let old_token = first.issue(&claims());
        let replaced = first.rotated(now()).replaced();
        assert!(replaced.previous.is_none());
        assert_eq!(replaced.verify(&old_token, &expect(), now()), Err(TokenError::UnknownKey));
        assert!(replaced.verify(&replaced.issue(&claims()), &expect(), now()).is_ok());
    }

    #[test]
    fn not_before_is_honoured_when_present() {
        let keys = keyring();
        let later = keys.issue(&Claims { nbf: Some(NOW + 61), ..claims() });
        assert_eq!(keys.verify(&later, &expect(), now()), Err(TokenError::NotYetValid));
        let within_leeway = keys.issue(&Claims { nbf: Some(NOW + 60), ..claims() });
        assert!(keys.verify(&within_leeway, &expect(), now()).is_ok());
        let mut body = payload(&claims());
        body["nbf"] = json!("tomorrow");
        let token = forge(&header(keys.current_kid()), &body, ed25519(&keys.current));
        assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Malformed));
    }

    #[test]
    fn wrong_typ_is_refused() {
        let keys = keyring();
        for typ in [json!("jwt"), json!("at+jwt"), json!("JWS"), json!(null)] {
            let header = json!({ "alg": "EdDSA", "typ": typ, "kid": keys.current_kid() });
            let token = forge(&header, &payload(&claims()), ed25519(&keys.current));
            assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Type), "typ {typ}");
        }
        let untyped = json!({ "alg": "EdDSA", "kid": keys.current_kid() });
        let token = forge(&untyped, &payload(&claims()), ed25519(&keys.current));
        assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Type));
    }

    #[test]
    fn key_locating_and_critical_headers_are_refused() {
        let keys = keyring();
        let jwk = keys.jwks()["keys"][0].clone();
        for (name, value) in [
            ("jku", json!("https://evil.example/jwks.json")),
            ("jwk", jwk),
            ("x5u", json!("https://evil.example/cert.pem")),
            ("x5c", json!(["MIIB"])),
            ("crit", json!(["exp"])),
            ("jku", json!(null)),
        ] {
            let mut header = header(keys.current_kid());
            header[name] = value;
            let token = forge(&header, &payload(&claims()), ed25519(&keys.current));
            assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Malformed), "header {name}");
        }
    }

    #[test]
    fn oversized_token_is_refused_before_parsing() {
        let keys = keyring();
        assert_eq!(keys.verify(&"a".repeat(MAX_TOKEN_LEN + 1), &expect(), now()), Err(TokenError::TooLarge));

        let membership = Membership { org: "an-organisation-with-a-long-name".into(), role: "member".into() };
        let bloated = keys.issue(&Claims { orgs: vec![membership; 200], ..claims() });
        assert!(bloated.len() > MAX_TOKEN_LEN);
        assert_eq!(keys.verify(&bloated, &expect(), now()), Err(TokenError::TooLarge));
    }

    #[test]
    fn malformed_shapes_are_refused() {
        let keys = keyring();
        let token = keys.issue(&claims());
        let [header_b64, payload_b64, signature_b64] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
        let padded_header = b64(header(keys.current_kid()).to_string()) + "=";
        let standard_signature = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(URL_SAFE_NO_PAD.decode(signature_b64).unwrap())
            .replace(|c: char| c != '+' && c != '/', "A");
        for bad in [
            String::new(),
            "..".into(),
            format!("{header_b64}.{payload_b64}"),
            format!("{header_b64}.{payload_b64}.{signature_b64}.{signature_b64}"),
            format!("{header_b64}.{payload_b64}.{signature_b64}="),
            format!("{padded_header}.{payload_b64}.{signature_b64}"),
            format!("{header_b64}.{payload_b64}.{standard_signature}+/"),
            format!("{}.{payload_b64}.{signature_b64}", b64("not json")),
            format!("{}.{payload_b64}.{signature_b64}", b64("[\"EdDSA\"]")),
            format!(" {token}"),
        ] {
            assert_eq!(keys.verify(&bad, &expect(), now()), Err(TokenError::Malformed), "token {bad:?}");
        }
    }

    #[test]
    fn signed_but_incomplete_or_mistyped_claims_are_malformed() {
        let keys = keyring();
        let mut missing_exp = payload(&claims());
        missing_exp.as_object_mut().unwrap().remove("exp");
        let mut string_exp = payload(&claims());
        string_exp["exp"] = json!((NOW + 3600).to_string());
        let mut aud_list = payload(&claims());
        aud_list["aud"] = json!([AUDIENCE]);
        for body in [missing_exp, string_exp, aud_list, json!("a string"), json!(null)] {
            let token = forge(&header(keys.current_kid()), &body, ed25519(&keys.current));
            assert_eq!(keys.verify(&token, &expect(), now()), Err(TokenError::Malformed), "payload {body}");
        }
    }

    #[test]
    fn unknown_claims_are_ignored() {
        let keys = keyring();
        let mut body = payload(&claims());
        body["nbf"] = json!(NOW);
        body["extra"] = json!({ "nested": true });
        let token = forge(&header(keys.current_kid()), &body, ed25519(&keys.current));
        assert!(keys.verify(&token, &expect(), now()).is_ok());
    }

    #[test]
    fn secret_round_trip_keeps_both_keys() {
        let keys = keyring().rotated(now());
        let old_token = KeyRing::new(keys.previous.clone().unwrap().key).issue(&claims());
        let new_token = keys.issue(&claims());

        let secret = keys.to_secret("gateway-signing-keys", "ooda-system");
        assert_eq!(secret.metadata.name.as_deref(), Some("gateway-signing-keys"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("ooda-system"));
        assert_eq!(secret.metadata.labels, None);
        assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
        let entries: Vec<&str> = secret.data.as_ref().unwrap().keys().map(String::as_str).collect();
        assert_eq!(entries, ["current.pk8", "previous.pk8", "previous.rotated-at"]);

        let restored = KeyRing::from_secret(&secret).unwrap();
        assert_eq!(restored.current_kid(), keys.current_kid());
        assert_eq!(restored.previous.as_ref().map(|r| r.key.kid()), keys.previous.as_ref().map(|r| r.key.kid()));
        assert!(restored.verify(&old_token, &expect(), now()).is_ok());
        assert!(restored.verify(&new_token, &expect(), now()).is_ok());
        assert!(keys.verify(&restored.issue(&claims()), &expect(), now()).is_ok());

        let fresh = keyring().to_secret("keys", "ns");
        assert_eq!(fresh.data.as_ref().unwrap().len(), 1);
        assert!(KeyRing::from_secret(&fresh).unwrap().previous.is_none());
    }

    #[test]
    fn unusable_secrets_are_refused() {
        let secret = keyring().rotated(now()).to_secret("keys", "ns");

        let opaque = Secret { type_: Some("Opaque".into()), ..secret.clone() };
        assert!(matches!(KeyRing::from_secret(&opaque), Err(KeyError::SecretType(Some(t))) if t == "Opaque"));

        let mut no_current = secret.clone();
        no_current.data.as_mut().unwrap().remove(CURRENT_ENTRY);
        assert!(matches!(KeyRing::from_secret(&no_current), Err(KeyError::NoCurrentKey)));
        let empty = Secret { data: None, ..secret.clone() };
        assert!(matches!(KeyRing::from_secret(&empty), Err(KeyError::NoCurrentKey)));

        let mut corrupt = secret;
        corrupt.data.as_mut().unwrap().insert(PREVIOUS_ENTRY.into(), ByteString(b"not a key".to_vec()));
        let err = KeyRing::from_secret(&corrupt).unwrap_err();
        assert!(matches!(err, KeyError::CorruptEntry { entry: PREVIOUS_ENTRY, .. }), "{err:?}");
    }

    #[test]
    fn jwks_lists_current_then_previous_public_keys() {
        let keys = keyring().rotated(now());
        let previous = &keys.previous.as_ref().unwrap().key;
        let jwks = keys.jwks();
        let listed = jwks["keys"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        for (jwk, key) in listed.iter().zip([&keys.current, previous]) {
            let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
            assert_eq!(x.len(), 32);
            assert_eq!(x, key.public_key());
            assert_eq!(
                *jwk,
                json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&x), "kid": key.kid(), "alg": "EdDSA", "use": "sig" })
            );
        }
        assert_eq!(keyring().jwks()["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn kid_is_a_stable_digest_of_the_public_key() {
        let key = SigningKey::generate();
        assert_eq!(key.kid().len(), 16);
        assert!(key.kid().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key());
        assert!(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>().starts_with(key.kid()));

        let reloaded = SigningKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(reloaded.kid(), key.kid());
        assert_ne!(SigningKey::generate().kid(), key.kid());
        assert!(matches!(SigningKey::from_pkcs8(b"garbage"), Err(KeyError::Rejected(_))));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = SigningKey::generate();
        let shown = format!("{key:?} {:?}", KeyRing::new(key.clone()).rotated(now()));
        assert!(shown.contains(key.kid()));
        let secret_bytes = &key.pkcs8()[key.pkcs8().len() - 32..];
        for needle in [b64(key.pkcs8()), b64(secret_bytes), format!("{:?}", key.pkcs8()), format!("{secret_bytes:?}")] {
            assert!(!shown.contains(&needle));
        }
        assert_eq!(format!("{key:?}"), format!("SigningKey {{ kid: {:?}, .. }}", key.kid()));
    }

    #[test]
    fn a_ring_generated_pkcs8_v2_document_signs_through_the_library_and_verifies() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = SigningKey::from_pkcs8(pkcs8.as_ref()).expect("PKCS#8 v2 from ring");
        let ring = KeyRing::new(key.clone());
        let token = ring.issue(&claims());
        assert_eq!(ring.verify(&token, &expect(), now()), Ok(claims()));
        // The library's signature is ring's: the same key verifies it directly.
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.public_key())
            .verify(input.as_bytes(), &signature)
            .expect("an Ed25519 signature by this key");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header, json!({ "alg": "EdDSA", "typ": "JWT", "kid": key.kid() }));
    }
}
