//! User accounts: one Secret per email in the operator's namespace. The server never sees a
//! password (Bitwarden's model):
//!
//! - The client derives an *auth key*: PBKDF2-HMAC-SHA256 of the password over a salt made from
//!   the normalised email ([`client_salt`]), [`CLIENT_ITERATIONS`] rounds, 32 bytes. That is all
//!   it sends. `POST /api/auth/prelogin` tells clients the parameters, the same for every email.
//! - The server stores PBKDF2-HMAC-SHA256 of the auth key with a random salt per account and a
//!   few thousand rounds ([`DEFAULT_SERVER_ITERATIONS`]): a leaked Secret does not hold what
//!   signs in, and guessing a password from it still costs the client's rounds per guess.
//!
//! An account holds one or more *credentials*: a hash and the organisations
//! it was admitted to. A platform operator's `ooda user add` makes a credential good for every
//! organisation that lists the email; redeeming an organisation's invite makes (or extends) a
//! credential good for that organisation only. Invites are handed out by organisation admins,
//! so an invite proves nothing about the email beyond that organisation: whoever redeems it,
//! even for an email that other organisations list, gets into the inviting one and no other.
//!
//! Every credential of an account shares the account's salt and work factor, so a sign-in
//! derives one key and compares it with each stored hash in constant time: how long it takes
//! says nothing about how many credentials, or whether any, an email has.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Rounds of the client's derivation (OWASP's advice for PBKDF2-HMAC-SHA256): what every guess at
/// a password costs. Clients refuse parameters with fewer.
pub const CLIENT_ITERATIONS: u32 = 600_000;
/// The name clients are told for the client derivation.
pub const CLIENT_KDF: &str = "pbkdf2-sha256";
/// The server's rounds over an auth key, by default: see the README's "Passwords" for why so few.
pub const DEFAULT_SERVER_ITERATIONS: u32 = 10_000;
/// The floor for the server's rounds.
pub const MIN_SERVER_ITERATIONS: u32 = 1_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// Longer passwords only cost hashing time: bounded so no client spins on one.
pub const MAX_PASSWORD_LEN: usize = 1024;
pub const MIN_PASSWORD_LEN: usize = 12;
/// What separates ooda's client salts from any other use of SHA-256 over an email.
const CLIENT_SALT_CONTEXT: &[u8] = b"ooda.run/auth-key/v1\0";
/// Credentials one account may hold: one per organisation that invited it is the most anyone
/// needs; the bound keeps the Secret (and a sign-in's comparisons) small.
pub const MAX_CREDENTIALS: usize = 64;

pub const USER_LABEL: &str = "ooda.run/user";
pub const SECRET_TYPE: &str = "ooda.run/user";
const EMAIL_KEY: &str = "email";
const ACCOUNT_KEY: &str = "account";
const FIELD_MANAGER: &str = "ooda-accounts";

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0:?} is not a lowercase email address such as alice@acme.example")]
    InvalidEmail(String),
    #[error("a password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes long")]
    PasswordLength,
    #[error("PBKDF2 iterations must be at least {MIN_SERVER_ITERATIONS} on the server, not {0}")]
    WeakIterations(u32),
    #[error("the key derivation offered ({0}) is weaker than {CLIENT_KDF} with {CLIENT_ITERATIONS} rounds")]
    WeakClientKdf(String),
    #[error("an account for {0} already exists")]
    Exists(String),
    #[error("there is no account for {0}")]
    NotFound(String),
    #[error("the account of {0} is unreadable")]
    Corrupt(String),
    #[error("the account of {0} already has {MAX_CREDENTIALS} credentials")]
    TooManyCredentials(String),
    #[error("the account of {0} changed meanwhile; try again")]
    Conflict(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// An email as accounts know it: trimmed and lowercase.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The salt of the client derivation for `email` (normalised): fixed per email, so the answer to
/// a prelogin needs no account and looks the same for every email, known or not.
pub fn client_salt(email: &str) -> [u8; 32] {
    Sha256::new().chain_update(CLIENT_SALT_CONTEXT).chain_update(email.as_bytes()).finalize().into()
}

/// What a client sends instead of a password: PBKDF2-HMAC-SHA256(password, salt, rounds, 32).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey([u8; HASH_LEN]);

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

impl AuthKey {
    /// The client's derivation, with the parameters a prelogin answered. CPU-heavy: call it off
    /// the async workers. Refuses fewer than [`CLIENT_ITERATIONS`] rounds, so a gateway cannot
    /// talk a client into a weak key, and over-long passwords.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Result<AuthKey, AccountError> {
        if iterations < CLIENT_ITERATIONS {
            return Err(AccountError::WeakClientKdf(format!("{CLIENT_KDF} with {iterations} rounds")));
        }
        if password.len() > MAX_PASSWORD_LEN {
            return Err(AccountError::PasswordLength);
        }
        Ok(AuthKey(pbkdf2(password.as_bytes(), salt, iterations)))
    }

    /// [`AuthKey::derive`] with ooda's own parameters for `email`: what `ooda user` uses.
    pub fn for_email(email: &str, password: &str) -> Result<AuthKey, AccountError> {
        AuthKey::derive(password, &client_salt(email), CLIENT_ITERATIONS)
    }

    /// The key in standard base64 (44 characters), as clients send it.
    pub fn parse(text: &str) -> Option<AuthKey> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
        Some(AuthKey(bytes.try_into().ok()?))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

/// How an auth key becomes what is stored: PBKDF2-HMAC-SHA256 with this salt and round count.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    iterations: u32,
    #[serde(with = "base64_array")]
    salt: [u8; SALT_LEN],
    /// What the stored hashes were derived from.
    #[serde(default)]
    input: KdfInput,
}

/// Accounts made before the client derivation hashed passwords; they can only be reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KdfInput {
    #[default]
    Password,
    AuthKey,
}

impl std::fmt::Debug for Kdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kdf").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

/// A derived key: what is stored for a credential, and what a sign-in compares with it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; HASH_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Kdf {
    /// A fresh random salt with `iterations` rounds (at least [`MIN_SERVER_ITERATIONS`]).
    pub fn new(iterations: u32) -> Result<Kdf, AccountError> {
        if iterations < MIN_SERVER_ITERATIONS {
            return Err(AccountError::WeakIterations(iterations));
        }
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).expect("the operating system provides randomness");
        Ok(Kdf { iterations, salt, input: KdfInput::AuthKey })
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Whether this account's hashes are of auth keys: those from before the client derivation
    /// are of passwords, which the server no longer sees, so nothing can match them.
    pub fn takes_auth_keys(&self) -> bool {
        self.input == KdfInput::AuthKey
    }

    /// Derives what is stored for `key`. CPU-heavy (a few thousand rounds): call it off the async
    /// workers.
    pub fn derive(&self, key: &AuthKey) -> Key {
        Key(pbkdf2(&key.0, &self.salt, self.iterations))
    }
}

fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    let rounds = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one round");
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, password, &mut out);
    out
}

/// Which organisations a credential may act in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Admission {
    /// Made by a platform operator (`ooda user`): every organisation that lists the email.
    Platform,
    /// Made or extended by redeeming these organisations' invites.
    Organisations(BTreeSet<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// Named in the sessions it opens, so they end with it.
    pub id: String,
    #[serde(with = "base64_array")]
    hash: [u8; HASH_LEN],
    pub admission: Admission,
    /// Sessions of this credential issued at or before this Unix second are over ("sign out
    /// everywhere").
    #[serde(default)]
    pub sessions_not_before: i64,
}

impl Credential {
    fn new(key: Key, admission: Admission) -> Credential {
        Credential { id: random_id(), hash: key.0, admission, sessions_not_before: 0 }
    }

    pub fn admits(&self, organisation: &str) -> bool {
        match &self.admission {
            Admission::Platform => true,
            Admission::Organisations(admitted) => admitted.contains(organisation),
        }
    }

    /// Adds `organisation` to what this credential may act in.
    pub fn admit(&mut self, organisation: &str) {
        if let Admission::Organisations(admitted) = &mut self.admission {
            admitted.insert(organisation.to_owned());
        }
    }
}

/// One email's account, as stored in its Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    #[serde(skip)]
    pub email: String,
    pub kdf: Kdf,
    pub credentials: Vec<Credential>,
    /// Per organisation: sessions issued at or before this Unix second may no longer act there
    /// (an organisation admin's "sign out everywhere" for this member).
    #[serde(default)]
    pub organisation_sessions_not_before: BTreeMap<String, i64>,
    /// The Secret's version this was read at; writes are conditional on it.
    #[serde(skip)]
    resource_version: Option<String>,
}

impl Account {
    /// A new account whose one credential, `key` (derived with `kdf`), has `admission`.
    pub fn new(email: &str, kdf: Kdf, key: Key, admission: Admission) -> Account {
        Account {
            email: email.to_owned(),
            kdf,
            credentials: vec![Credential::new(key, admission)],
            organisation_sessions_not_before: BTreeMap::new(),
            resource_version: None,
        }
    }

    /// A platform operator's account (`ooda user add`): one credential, good wherever the email
    /// is a member, for the auth key the client derived. CPU-heavy: call it off the async workers.
    pub fn platform(email: &str, key: &AuthKey, iterations: u32) -> Result<Account, AccountError> {
        check_email(email)?;
        let kdf = Kdf::new(iterations)?;
        let stored = kdf.derive(key);
        Ok(Account::new(email, kdf, stored, Admission::Platform))
    }

    /// The credential `key` opens. Every stored hash is compared, in constant time, whether or
    /// not an earlier one matched. Hashes of passwords (accounts from before the client
    /// derivation) open nothing.
    pub fn credential_for(&self, key: &Key) -> Option<&Credential> {
        if !self.kdf.takes_auth_keys() {
            return None;
        }
        let mut found = None;
        for credential in &self.credentials {
            if bool::from(credential.hash.ct_eq(&key.0)) {
                found = Some(credential);
            }
        }
        found
    }

    pub fn credential(&self, id: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.id == id)
    }

    pub fn credential_mut(&mut self, id: &str) -> Option<&mut Credential> {
        self.credentials.iter_mut().find(|c| c.id == id)
    }

    /// Moves the account to `kdf` if it predates the client derivation: its credentials, hashes
    /// of passwords that no key opens, go with the old parameters.
    pub fn rehash(&mut self, kdf: Kdf) {
        if !self.kdf.takes_auth_keys() {
            self.kdf = kdf;
            self.credentials.clear();
        }
    }

    /// Admits `organisation` for the holder of `key`: the credential it opens, or a new one good
    /// for that organisation alone.
    pub fn admit_key(&mut self, key: Key, organisation: &str) -> Result<(), AccountError> {
        if let Some(id) = self.credential_for(&key).map(|c| c.id.clone()) {
            self.credential_mut(&id).expect("just found").admit(organisation);
            return Ok(());
        }
        if self.credentials.len() >= MAX_CREDENTIALS {
            return Err(AccountError::TooManyCredentials(self.email.clone()));
        }
        let admitted = BTreeSet::from([organisation.to_owned()]);
        self.credentials.push(Credential::new(key, Admission::Organisations(admitted)));
        Ok(())
    }

    /// Whether a session of credential `id` issued at `issued_at` may act in `organisation` now.
    pub fn session_admits(&self, id: &str, issued_at: i64, organisation: &str) -> bool {
        let Some(credential) = self.credential(id) else { return false };
        let not_before = self.organisation_sessions_not_before.get(organisation).copied().unwrap_or(i64::MIN);
        credential.admits(organisation) && issued_at > not_before
    }

    /// Whether a session of credential `id` issued at `issued_at` is still a session at all.
    pub fn session_valid(&self, id: &str, issued_at: i64) -> bool {
        self.credential(id).is_some_and(|c| issued_at > c.sessions_not_before)
    }

    /// The issue time of a session opened `now`, and the time a sign-out `now` records: later
    /// than every sign-out so far. So a session opened right after a sign-out is not caught by
    /// it, and a sign-out catches every session opened before it, even within the same second.
    pub fn session_time(&self, now: i64) -> i64 {
        let credentials = self.credentials.iter().map(|c| c.sessions_not_before);
        let latest = credentials.chain(self.organisation_sessions_not_before.values().copied()).max();
        now.max(latest.map_or(i64::MIN, |t| t.saturating_add(1)))
    }

    fn from_secret(secret: &Secret) -> Result<Account, AccountError> {
        let data = secret.data.as_ref();
        let field = |key: &str| data.and_then(|d| d.get(key)).map(|v| v.0.as_slice());
        let email = field(EMAIL_KEY).and_then(|e| std::str::from_utf8(e).ok()).unwrap_or_default().to_owned();
        let corrupt = || AccountError::Corrupt(email.clone());
        let mut account: Account =
            serde_json::from_slice(field(ACCOUNT_KEY).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
        if account.credentials.is_empty() || account.credentials.len() > MAX_CREDENTIALS {
            return Err(corrupt());
        }
        account.email = email;
        account.resource_version = secret.metadata.resource_version.clone();
        Ok(account)
    }

    /// The Secret this account is stored as.
    pub fn to_secret(&self) -> Secret {
        let document = serde_json::to_vec(self).expect("an account serialises to JSON");
        Secret {
            metadata: ObjectMeta {
                name: Some(secret_name(&self.email)),
                labels: Some(BTreeMap::from([(USER_LABEL.to_owned(), "true".to_owned())])),
                resource_version: self.resource_version.clone(),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.into()),
            data: Some(BTreeMap::from([
                (EMAIL_KEY.to_owned(), ByteString(self.email.as_bytes().to_vec())),
                (ACCOUNT_KEY.to_owned(), ByteString(document)),
            ])),
            ..Default::default()
        }
    }

    /// The account in `secret`, if it is one (the gateway reads accounts from its watch cache).
    pub fn from_cached(secret: &Secret) -> Option<Account> {
        Account::from_secret(secret).ok()
    }

    /// The resource version of the Secret this account was read from or last written as.
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }
}

pub fn check_password(password: &str) -> Result<(), AccountError> {
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
    format!("user-{}", digest_hex(email.as_bytes()))
}

/// The first 128 bits of SHA-256, in hex: a stable, name-safe digest.
pub fn digest_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn random_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where accounts are kept: Secrets ([`AccountStore`]) in the gateway, memory in its unit tests.
pub trait Accounts: Send + Sync {
    fn get<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<Option<Account>, AccountError>>;
    /// Refuses with [`AccountError::Exists`] if the email has an account.
    fn create<'a>(&'a self, account: &'a Account) -> BoxFuture<'a, Result<Account, AccountError>>;
    /// Refuses with [`AccountError::Conflict`] if the account changed since it was read.
    fn replace<'a>(&'a self, account: &'a Account) -> BoxFuture<'a, Result<Account, AccountError>>;
}

impl Accounts for AccountStore {
    fn get<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<Option<Account>, AccountError>> {
        Box::pin(AccountStore::get(self, email))
    }

    fn create<'a>(&'a self, account: &'a Account) -> BoxFuture<'a, Result<Account, AccountError>> {
        Box::pin(AccountStore::create(self, account))
    }

    fn replace<'a>(&'a self, account: &'a Account) -> BoxFuture<'a, Result<Account, AccountError>> {
        Box::pin(AccountStore::replace(self, account))
    }
}

/// Accounts stored as Secrets in one namespace.
pub struct AccountStore {
    secrets: Api<Secret>,
}

impl AccountStore {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self { secrets: Api::namespaced(client, namespace) }
    }

    /// Creates `account`; refuses if one exists for its email. Returns it as written.
    pub async fn create(&self, account: &Account) -> Result<Account, AccountError> {
        check_email(&account.email)?;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.secrets.create(&params, &account.to_secret()).await {
            Ok(secret) => Account::from_secret(&secret),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(AccountError::Exists(account.email.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `account` back, only if its Secret has not changed since it was read.
    pub async fn replace(&self, account: &Account) -> Result<Account, AccountError> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.secrets.replace(&secret_name(&account.email), &params, &account.to_secret()).await {
            Ok(secret) => Account::from_secret(&secret),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(AccountError::Conflict(account.email.clone())),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(AccountError::NotFound(account.email.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// A platform operator's reset: one new credential good wherever the email is a member, with
    /// a fresh salt; every other credential, and so every session, ends. (Also how an account
    /// from before the client derivation gets one that signs in.)
    /// `replacement` is a new [`Account::platform`] for the same email.
    pub async fn reset_password(&self, replacement: &Account) -> Result<Account, AccountError> {
        let email = &replacement.email;
        let mut account = self.get(email).await?.ok_or_else(|| AccountError::NotFound(email.clone()))?;
        account.kdf = replacement.kdf.clone();
        account.credentials = replacement.credentials.clone();
        self.replace(&account).await
    }

    /// `email`'s account, if there is one.
    pub async fn get(&self, email: &str) -> Result<Option<Account>, AccountError> {
        let Some(secret) = self.secrets.get_opt(&secret_name(email)).await? else { return Ok(None) };
        Account::from_secret(&secret).map(Some)
    }
}

/// Fixed-size byte arrays as standard base64 without padding.
mod base64_array {
    use super::*;

    pub fn serialize<S: serde::Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD_NO_PAD.decode(text).map_err(serde::de::Error::custom)?;
        bytes.try_into().map_err(|_| serde::de::Error::custom(format!("expected {N} bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kdf() -> Kdf {
        Kdf::new(MIN_SERVER_ITERATIONS).unwrap()
    }

    /// An auth key as a client would send it, without its 600,000 rounds: any 32 bytes do here.
    fn auth(text: &str) -> AuthKey {
        AuthKey(Sha256::digest(text.as_bytes()).into())
    }

    #[test]
    fn a_key_opens_its_credential_and_nothing_else() {
        let kdf = kdf();
        let account = Account::new("a@b.example", kdf.clone(), kdf.derive(&auth("right")), Admission::Platform);
        assert!(account.credential_for(&kdf.derive(&auth("right"))).is_some());
        assert!(account.credential_for(&kdf.derive(&auth("wrong"))).is_none());
        assert!(account.credential_for(&kdf.derive(&AuthKey([0; HASH_LEN]))).is_none());
    }

    #[test]
    fn every_account_has_its_own_salt() {
        let (a, b) = (kdf(), kdf());
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.derive(&auth("the same key")), b.derive(&auth("the same key")));
    }

    #[test]
    fn an_invite_admits_one_organisation_to_the_credential_that_redeemed_it() {
        let kdf = kdf();
        let mut account =
            Account::new("bob@b.example", kdf.clone(), kdf.derive(&auth("bob's own")), Admission::Platform);
        // Someone else redeems acme's invite for bob's email with a password of their own.
        account.admit_key(kdf.derive(&auth("acme admin's choice")), "acme").unwrap();
        let squatter = account.credential_for(&kdf.derive(&auth("acme admin's choice"))).unwrap();
        assert!(squatter.admits("acme") && !squatter.admits("globex"));
        let bob = account.credential_for(&kdf.derive(&auth("bob's own"))).unwrap();
        assert!(bob.admits("globex"), "bob's own credential is untouched");
        assert_ne!(bob.id, squatter.id);
        // Redeeming another invite with a password that opens a credential extends that one.
        account.admit_key(kdf.derive(&auth("acme admin's choice")), "initech").unwrap();
        assert_eq!(account.credentials.len(), 2);
        let squatter = account.credential_for(&kdf.derive(&auth("acme admin's choice"))).unwrap();
        assert!(squatter.admits("initech"));
    }

    #[test]
    fn sign_outs_end_the_sessions_issued_before_them() {
        let kdf = kdf();
        let mut account = Account::new("a@b.example", kdf.clone(), kdf.derive(&auth("a")), Admission::Platform);
        let id = account.credentials[0].id.clone();
        assert!(account.session_valid(&id, 100) && account.session_admits(&id, 100, "acme"));
        account.credential_mut(&id).unwrap().sessions_not_before = 100;
        assert!(!account.session_valid(&id, 100) && account.session_valid(&id, 101));
        account.organisation_sessions_not_before.insert("acme".into(), 200);
        assert!(!account.session_admits(&id, 200, "acme") && account.session_admits(&id, 200, "globex"));
        assert_eq!(account.session_time(150), 201, "after the last sign-out");
        assert_eq!(account.session_time(300), 300);
        // A sign-out in the same second as a sign-in that was pushed past the last one still
        // catches it: it records the same session time, and sessions must be later.
        let opened = account.session_time(150);
        account.credential_mut(&id).unwrap().sessions_not_before = account.session_time(150);
        assert!(!account.session_valid(&id, opened));
        assert!(!account.session_valid("another", 1000));
    }

    #[test]
    fn an_account_round_trips_through_its_secret_holding_neither_password_nor_auth_key() {
        let password = "a long enough password";
        let key = AuthKey::for_email("a@b.example", password).unwrap();
        let kdf = kdf();
        let mut account = Account::new("a@b.example", kdf.clone(), kdf.derive(&key), Admission::Platform);
        account.admit_key(kdf.derive(&auth("another")), "acme").unwrap();
        let secret = account.to_secret();
        let document = String::from_utf8(secret.data.as_ref().unwrap()[ACCOUNT_KEY].0.clone()).unwrap();
        assert!(!document.contains(password) && !document.contains(&key.to_base64()), "{document}");
        assert!(document.contains(r#""input":"authKey""#), "{document}");
        assert_eq!(Account::from_secret(&secret).unwrap(), account);
        let mut broken = secret.clone();
        broken.data.as_mut().unwrap().insert(ACCOUNT_KEY.into(), ByteString(b"{}".to_vec()));
        assert!(matches!(Account::from_secret(&broken), Err(AccountError::Corrupt(_))));
    }

    #[test]
    fn an_account_from_before_the_client_derivation_opens_for_no_key() {
        // As 0.1 stored it: a hash of the password itself, no `input`.
        let legacy: Account = serde_json::from_value(serde_json::json!({
            "kdf": { "iterations": 600000, "salt": "AQIDBAUGBwgJCgsMDQ4PEA" },
            "credentials": [{ "id": "c", "hash": "AAjmm4n/rBqnux9EKJumWvqnEd1FDwqrbDIuTNV7shY", "admission": "platform" }],
        }))
        .unwrap();
        assert!(!legacy.kdf.takes_auth_keys());
        let stored = Key(legacy.credentials[0].hash);
        assert!(legacy.credential_for(&stored).is_none(), "not even the stored hash itself");
    }

    #[test]
    fn weak_parameters_and_bad_passwords_are_refused() {
        assert!(matches!(Kdf::new(MIN_SERVER_ITERATIONS - 1), Err(AccountError::WeakIterations(_))));
        let salt = client_salt("a@b.example");
        assert!(matches!(AuthKey::derive("a password, long", &salt, 100_000), Err(AccountError::WeakClientKdf(_))));
        let long = "p".repeat(MAX_PASSWORD_LEN + 1);
        assert!(matches!(AuthKey::derive(&long, &salt, CLIENT_ITERATIONS), Err(AccountError::PasswordLength)));
        assert!(matches!(check_password("short"), Err(AccountError::PasswordLength)));
        assert!(matches!(check_password(&long), Err(AccountError::PasswordLength)));
    }

    #[test]
    fn auth_keys_are_exactly_32_bytes_of_standard_base64() {
        let key = auth("k");
        assert_eq!(AuthKey::parse(&key.to_base64()), Some(key.clone()));
        assert_eq!(key.to_base64().len(), 44);
        for bad in ["", "not base64!", &STANDARD_NO_PAD.encode([0u8; 31]), &STANDARD_NO_PAD.encode([0u8; 33])] {
            assert_eq!(AuthKey::parse(bad), None, "{bad:?}");
        }
        assert_eq!(format!("{key:?}"), "AuthKey(..)", "never printed");
    }

    #[test]
    fn the_derivations_match_known_pbkdf2_sha256_vectors() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1, 64), first 32 bytes.
        let expected = "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc";
        let hex: String = pbkdf2(b"passwd", b"salt", 1).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
        // The client's, computed independently with Python's hashlib:
        // salt = sha256(b"ooda.run/auth-key/v1\0" + email); pbkdf2_hmac("sha256", password, salt, 600000, 32).
        let standard = base64::engine::general_purpose::STANDARD;
        assert_eq!(standard.encode(client_salt("alice@acme.example")), "Ab7LY7+Yw3jpGOXkl6gRiBjmR/Of2RyFKk6oz1J8qWw=");
        let key = AuthKey::for_email("alice@acme.example", "correct horse battery staple").unwrap();
        assert_eq!(key.to_base64(), "kzq9NKlqdV5cZZ+rgOxRR1gP5UlMPYc+mDJVozLf3Tk=");
    }

    #[test]
    fn emails_are_checked_normalised_and_named_stably() {
        assert!(check_email("alice@acme.example").is_ok());
        for bad in
            ["Alice@acme.example", "alice", "alice@acme", "@acme.example", "a b@acme.example", "alice@-acme.example"]
        {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalise_email("  Alice@Acme.Example "), "alice@acme.example");
        assert_eq!(secret_name("alice@acme.example"), secret_name("alice@acme.example"));
        assert_ne!(secret_name("alice@acme.example"), secret_name("bob@acme.example"));
        assert_eq!(secret_name("alice@acme.example").len(), 5 + 32);
    }
}
