//! `ooda user` against the real API server: accounts are Secrets holding only a salted hash.

use std::io::Write;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use ooda::accounts::{AccountStore, AuthKey, DEFAULT_SERVER_ITERATIONS, secret_name};

use crate::harness::{TestNamespace, client, kubeconfig_path};

/// Runs `ooda user <args…>` with `password` on standard input; returns success and stderr.
pub fn ooda_user(namespace: &str, args: &[&str], password: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ooda"))
        .arg("user")
        .args(args)
        .args(["--password-stdin", "--namespace", namespace])
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ooda user");
    // `ooda user` refuses a bad email before it reads the password, and may be gone already.
    match child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write password: {e}"),
        _ => {}
    }
    let output = child.wait_with_output().expect("wait for ooda user");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn ooda_user_adds_accounts_as_hashed_secrets_and_resets_passwords() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "accounts").await;
    let email = "alice@acme.example";

    let (ok, stderr) = ooda_user(&ns.name, &["add", "--email", email], "first password, long");
    assert!(ok, "{stderr}");
    let secret = ns.api::<Secret>().get(&secret_name(email)).await.expect("the account's Secret");
    assert_eq!(secret.metadata.labels.as_ref().expect("labels")["ooda.run/user"], "true");
    let stored = secret.data.expect("data");
    let document: serde_json::Value = serde_json::from_slice(&stored["account"].0).expect("JSON");
    assert_eq!(document["kdf"]["iterations"], DEFAULT_SERVER_ITERATIONS, "parameters stored with the hash");
    assert_eq!(document["kdf"]["input"], "authKey", "a hash of the auth key a client derives");
    assert_eq!(document["credentials"][0]["admission"], "platform");
    let first_key = AuthKey::for_email(email, "first password, long").expect("a key");
    let stored_text = String::from_utf8_lossy(&stored["account"].0);
    assert!(!stored_text.contains("first password"), "no plaintext");
    assert!(!stored_text.contains(&first_key.to_base64()), "nor what signs in");
    let store = AccountStore::new(client.clone(), &ns.name);
    let account = store.get(email).await.expect("read").expect("account");
    assert!(account.credential_for(&account.kdf.derive(&first_key)).is_some(), "the client's key opens it");
    let first_credential = account.credentials[0].id.clone();

    // An account cannot be claimed twice, nor made with weak parameters or a bad email.
    let (ok, stderr) = ooda_user(&ns.name, &["add", "--email", email], "another password!!");
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let (ok, stderr) =
        ooda_user(&ns.name, &["add", "--email", "bob@acme.example", "--iterations", "999"], "a password, long");
    assert!(!ok && stderr.contains("at least 1000"), "{stderr}");
    let (ok, stderr) = ooda_user(&ns.name, &["add", "--email", "bob@acme.example"], "too short");
    assert!(!ok && stderr.contains("12 to 1024 bytes"), "{stderr}");
    let (ok, stderr) = ooda_user(&ns.name, &["add", "--email", "Bob@Acme"], "a password, long");
    assert!(!ok && stderr.contains("email"), "{stderr}");
    assert!(store.get("bob@acme.example").await.expect("read").is_none());

    let (ok, stderr) = ooda_user(&ns.name, &["reset-password", "--email", email], "second password, long");
    assert!(ok, "{stderr}");
    let account = store.get(email).await.expect("read").expect("account");
    let second_key = AuthKey::for_email(email, "second password, long").expect("a key");
    assert!(account.credential_for(&account.kdf.derive(&second_key)).is_some());
    assert!(account.credential_for(&account.kdf.derive(&first_key)).is_none(), "the old password stops working");
    assert!(account.credential(&first_credential).is_none(), "the old credential, and its sessions, are gone");
    let (ok, stderr) = ooda_user(&ns.name, &["reset-password", "--email", "carol@acme.example"], "a password, long");
    assert!(!ok && stderr.contains("no account"), "{stderr}");

    let secrets: Api<Secret> = ns.api();
    assert_eq!(secrets.list(&Default::default()).await.expect("list").items.len(), 1, "only alice's account exists");
    ns.cleanup().await;
}
