//! The gateway's writes to accounts: read, change, write back only if nothing changed meanwhile
//! (again, up to a few times, if something did), then wait until this replica's watch has the
//! write, so the caller's next request here already sees it (a sign-out refuses at once, an
//! invite's organisation opens at once).

use std::time::Duration;

use crate::accounts::{Account, AccountError, Admission, AuthKey, Kdf};
use crate::gateway::Gateway;
use crate::gateway::error::{ApiError, ApiResult};

/// Attempts at a write that keeps meeting a concurrent one.
const ATTEMPTS: usize = 5;
/// How long a write waits for this replica's cache to show it.
const READ_YOUR_WRITE: Duration = Duration::from_secs(5);

impl Gateway {
    /// Changes `email`'s account with `change`; `None` if there is no account.
    pub async fn update_account(
        &self,
        email: &str,
        change: impl Fn(&mut Account) -> Result<(), AccountError>,
    ) -> ApiResult<Option<Account>> {
        for _ in 0..ATTEMPTS {
            let Some(mut account) = self.accounts.get(email).await.map_err(account_error)? else { return Ok(None) };
            change(&mut account).map_err(account_error)?;
            match self.accounts.replace(&account).await {
                Err(AccountError::Conflict(_)) => continue,
                Err(AccountError::NotFound(_)) => return Ok(None),
                written => return Ok(Some(self.settled(written.map_err(account_error)?).await)),
            }
        }
        Err(busy())
    }

    /// Admits `organisation` to the credential `key` opens on `email`'s account, or to a new
    /// one; makes the account if the email has none. One key derivation either way.
    pub async fn admit_auth_key(&self, email: &str, key: AuthKey, organisation: &str) -> ApiResult<Account> {
        for _ in 0..ATTEMPTS {
            let existing = self.accounts.get(email).await.map_err(account_error)?;
            let kdf = match &existing {
                Some(account) if account.kdf.takes_auth_keys() => account.kdf.clone(),
                _ => Kdf::new(self.settings.auth_key_iterations).map_err(account_error)?,
            };
            let stored = self.derive_key(kdf.clone(), key.clone()).await?;
            let written = match existing {
                Some(mut account) => {
                    account.rehash(kdf.clone());
                    account.admit_key(stored, organisation).map_err(account_error)?;
                    self.accounts.replace(&account).await
                }
                None => {
                    let admitted = Admission::Organisations([organisation.to_owned()].into());
                    self.accounts.create(&Account::new(email, kdf, stored, admitted)).await
                }
            };
            match written {
                Err(AccountError::Conflict(_) | AccountError::Exists(_)) => continue,
                written => return Ok(self.settled(written.map_err(account_error)?).await),
            }
        }
        Err(busy())
    }

    /// `written`, once this replica's cache has it (or after [`READ_YOUR_WRITE`]).
    async fn settled(&self, written: Account) -> Account {
        self.caches.await_account(&written.email, written.resource_version(), READ_YOUR_WRITE).await;
        written
    }
}

fn busy() -> ApiError {
    ApiError::unavailable("the account kept changing; try again", 1)
}

/// What an account failure is to the caller.
pub fn account_error(error: AccountError) -> ApiError {
    match error {
        AccountError::Kube(e) => e.into(),
        AccountError::TooManyCredentials(_) => ApiError::conflict("too_many_credentials", error.to_string()),
        AccountError::Conflict(_) => busy(),
        AccountError::NotFound(_) => ApiError::unauthorized("the session has ended; sign in again"),
        AccountError::Corrupt(_) => {
            tracing::warn!(%error, "an account Secret is unreadable");
            ApiError::internal("the account is unreadable; ask a platform operator")
        }
        other => ApiError::bad_request(other.to_string()),
    }
}
