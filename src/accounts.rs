//! User accounts: one Secret per user in the operator's namespace, holding a PBKDF2-HMAC-SHA256
//! hash of the password with its parameters. No plaintext password is ever stored or logged.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The floor (and default) for PBKDF2-HMAC-SHA256 rounds, after OWASP's current advice.
pub const MIN_ITERATIONS: u32 = 600_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// Longer passwords only cost hashing time: bounded so a request cannot make the server spin.
pub const MAX_PASSWORD_LEN: usize = 1024;
pub const MIN_PASSWORD_LEN: usize = 12;

pub const USER_LABEL: &str = "ooda.run/user";
const EMAIL_KEY: &str = "email";
const PASSWORD_KEY: &str = "password";
const FIELD_MANAGER: &str = "ooda-accounts";

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0:?} is not a lowercase email address such as alice@acme.example")]
    InvalidEmail(String),
    #[error("a password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes long")]
    PasswordLength,
    #[error("PBKDF2 iterations must be at least {MIN_ITERATIONS}, not {0}")]
    WeakIterations(u32),
    #[error("an account for {0} already exists")]
    Exists(String),
    #[error("there is no account for {0}")]
    NotFound(String),
    #[error("the stored password hash of {0} is unreadable")]
    CorruptHash(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// A salted PBKDF2-HMAC-SHA256 hash and the parameters that made it, stored as
/// `pbkdf2-sha256$<iterations>$<salt>$<hash>` (standard base64 without padding).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: u32,
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHash").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt. CPU-heavy: call it off the async workers.
    pub fn new(password: &str, iterations: u32) -> Result<Self, AccountError> {
        check_password(password)?;
        if iterations < MIN_ITERATIONS {
            return Err(AccountError::WeakIterations(iterations));
        }
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).expect("the operating system provides randomness");
        Ok(Self { iterations, salt, hash: derive(password, &salt, iterations) })
    }

    /// Whether `password` matches, compared in constant time. CPU-heavy, like [`PasswordHash::new`].
    pub fn verify(&self, password: &str) -> bool {
        if password.len() > MAX_PASSWORD_LEN {
            return false;
        }
        derive(password, &self.salt, self.iterations).ct_eq(&self.hash).into()
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn encode(&self) -> String {
        format!(
            "pbkdf2-sha256${}${}${}",
            self.iterations,
            STANDARD_NO_PAD.encode(self.salt),
            STANDARD_NO_PAD.encode(self.hash)
        )
    }

    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('$');
        if parts.next()? != "pbkdf2-sha256" {
            return None;
        }
        let iterations = parts.next()?.parse().ok()?;
        let salt = STANDARD_NO_PAD.decode(parts.next()?).ok()?.try_into().ok()?;
        let hash = STANDARD_NO_PAD.decode(parts.next()?).ok()?.try_into().ok()?;
        parts.next().is_none().then_some(Self { iterations, salt, hash })
    }
}

fn derive(password: &str, salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    let rounds = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one round");
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, password.as_bytes(), &mut out);
    out
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&password.len()) {
        Ok(())
    } else {
        Err(AccountError::PasswordLength)
    }
}

/// Lowercase `local@domain.tld`, at most 254 characters: what Organisation members may be.
pub fn check_email(email: &str) -> Result<(), AccountError> {
    let invalid = || AccountError::InvalidEmail(email.to_owned());
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let local_ok = !local.is_empty()
        && local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._%+-".contains(&b));
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if email.len() <= 254 && local_ok && domain_ok { Ok(()) } else { Err(invalid()) }
}

/// The Secret holding `email`'s account: emails are not valid object names, so a digest is.
pub fn secret_name(email: &str) -> String {
    let digest = Sha256::digest(email.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("user-{hex}")
}

/// Accounts stored as Secrets in one namespace.
pub struct AccountStore {
    secrets: Api<Secret>,
}

impl AccountStore {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self { secrets: Api::namespaced(client, namespace) }
    }

    /// Creates an account; refuses if one exists for `email`.
    pub async fn add(&self, email: &str, hash: &PasswordHash) -> Result<(), AccountError> {
        check_email(email)?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name(email)),
                labels: Some(BTreeMap::from([(USER_LABEL.to_owned(), "true".to_owned())])),
                ..Default::default()
            },
            type_: Some("ooda.run/user".into()),
            data: Some(data(email, hash)),
            ..Default::default()
        };
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.secrets.create(&params, &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(AccountError::Exists(email.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the password of an existing account.
    pub async fn reset_password(&self, email: &str, hash: &PasswordHash) -> Result<(), AccountError> {
        check_email(email)?;
        let name = secret_name(email);
        if self.secrets.get_opt(&name).await?.is_none() {
            return Err(AccountError::NotFound(email.to_owned()));
        }
        let patch = serde_json::json!({ "data": data(email, hash) });
        self.secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// The stored hash of `email`'s password, if the account exists.
    pub async fn password_hash(&self, email: &str) -> Result<Option<PasswordHash>, AccountError> {
        let Some(secret) = self.secrets.get_opt(&secret_name(email)).await? else { return Ok(None) };
        let stored =
            secret.data.as_ref().and_then(|d| d.get(PASSWORD_KEY)).map(|v| String::from_utf8_lossy(&v.0).into_owned());
        stored
            .as_deref()
            .and_then(PasswordHash::parse)
            .map(Some)
            .ok_or_else(|| AccountError::CorruptHash(email.to_owned()))
    }
}

fn data(email: &str, hash: &PasswordHash) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (EMAIL_KEY.to_owned(), ByteString(email.as_bytes().to_vec())),
        (PASSWORD_KEY.to_owned(), ByteString(hash.encode().into_bytes())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let hash = PasswordHash::new("correct horse battery", MIN_ITERATIONS).unwrap();
        assert!(hash.verify("correct horse battery"));
        assert!(!hash.verify("correct horse batterY"));
        assert!(!hash.verify(""));
        assert!(!hash.verify(&"x".repeat(MAX_PASSWORD_LEN + 1)));
    }

    #[test]
    fn every_hash_has_its_own_salt() {
        let a = PasswordHash::new("the same password", MIN_ITERATIONS).unwrap();
        let b = PasswordHash::new("the same password", MIN_ITERATIONS).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn the_encoding_keeps_the_parameters_and_round_trips() {
        let hash = PasswordHash::new("a long enough one", MIN_ITERATIONS + 1).unwrap();
        let text = hash.encode();
        assert!(text.starts_with("pbkdf2-sha256$600001$"), "{text}");
        assert!(!text.contains("a long enough one"));
        assert_eq!(PasswordHash::parse(&text), Some(hash));
        for bad in ["", "md5$1$a$b", "pbkdf2-sha256$x$AAAA$AAAA", "pbkdf2-sha256$600000$AAAA$AAAA$extra"] {
            assert_eq!(PasswordHash::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn weak_parameters_and_bad_passwords_are_refused() {
        assert!(matches!(
            PasswordHash::new("long enough password", 100_000),
            Err(AccountError::WeakIterations(100_000))
        ));
        assert!(matches!(PasswordHash::new("short", MIN_ITERATIONS), Err(AccountError::PasswordLength)));
        assert!(matches!(
            PasswordHash::new(&"p".repeat(MAX_PASSWORD_LEN + 1), MIN_ITERATIONS),
            Err(AccountError::PasswordLength)
        ));
    }

    #[test]
    fn the_derivation_matches_a_known_pbkdf2_sha256_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1, 64), first 32 bytes.
        let expected = "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc";
        let hex: String = derive("passwd", b"salt", 1).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn emails_are_checked_and_named_stably() {
        assert!(check_email("alice@acme.example").is_ok());
        for bad in
            ["Alice@acme.example", "alice", "alice@acme", "@acme.example", "a b@acme.example", "alice@-acme.example"]
        {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert_eq!(secret_name("alice@acme.example"), secret_name("alice@acme.example"));
        assert_ne!(secret_name("alice@acme.example"), secret_name("bob@acme.example"));
        assert_eq!(secret_name("alice@acme.example").len(), 5 + 32);
    }
}
